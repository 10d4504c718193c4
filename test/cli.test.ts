/**
 * The `jeevesagent audit` command line, run as a real process: once through
 * `tsx src/bin.ts` (the entry point as it is), and for the many cases from a
 * bundle of the same file (a TypeScript compile per case would dominate).
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile, spawn } from "node:child_process"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { bundleScript } from "./support/auditBundle.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const tsx = join(root, "node_modules", ".bin", "tsx")
const KEY = "cli-test-secret-0123456789"

interface Outcome {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const runProcess = (file: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Outcome> =>
  new Promise((resolve) => {
    execFile(file, args, { cwd: root, env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resolve({ code, stdout, stderr })
    })
  })

let dir = ""
let good = ""
let bundle = ""

const cli = (args: ReadonlyArray<string>, env?: Record<string, string>) => runProcess(process.execPath, [bundle, ...args], env)

beforeAll(async () => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-cli-"))
  bundle = await bundleScript(new URL("../src/bin.ts", import.meta.url), dir)
  good = join(dir, "audit.jsonl")
  const append = (action: string, userId: string | null) =>
    Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "model", action, payload: { note: action } })).pipe(
      RunContext.withUser(userId)
    )
  await Effect.runPromise(
    Effect.all([
      append("run_started", "alice"),
      append("tool_call", "alice"),
      append("tool_call", "bob"),
      append("tool_call", null),
      append("run_completed", "alice")
    ]).pipe(Effect.provide(AuditLog.layerFile({ path: good, secret: KEY }).pipe(Layer.provide(NodeFileSystem.layer))))
  )
})
afterAll(() => nodeFs.rmSync(dir, { recursive: true, force: true }))

const variant = (name: string, edit: (lines: Array<string>) => Array<string>, tail = "\n") => {
  const lines = nodeFs.readFileSync(good, "utf8").split("\n").filter((l) => l !== "")
  const path = join(dir, name)
  nodeFs.writeFileSync(path, edit(lines).join("\n") + tail)
  return path
}

describe("jeevesagent audit", () => {
  it.live("runs from source with tsx: valid is 0, tampered is 1", () =>
    Effect.promise(async () => {
      const tampered = variant("tampered-tsx.jsonl", (lines) => [lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)])
      const env = { AUDIT_KEY: KEY }
      const [valid, bad] = await Promise.all([
        runProcess(tsx, ["src/bin.ts", "audit", "verify", good, "--secret-env", "AUDIT_KEY"], env),
        runProcess(tsx, ["src/bin.ts", "audit", "verify", tampered, "--secret-env", "AUDIT_KEY"], env)
      ])
      assert.strictEqual(valid.code, 0, valid.stderr)
      assert.match(valid.stdout, /^OK: 5 entries verified/)
      assert.strictEqual(bad.code, 1, bad.stderr)
      assert.match(bad.stdout, /TAMPERED: seq_gap at seq 3 \(line 2\)/)
    }), 60_000)

  it.live("verify: exit 0 valid, 1 tampered, 2 unreadable or without a key; keyrings and torn tails", () =>
    Effect.promise(async () => {
      const tampered = variant("tampered.jsonl", (lines) => [lines[0]!, lines[1]!.replace("tool_call\"}", "tool_calx\"}"), ...lines.slice(2)])
      const torn = variant("torn.jsonl", (lines) => [...lines, lines[0]!.slice(0, 50)], "")
      const env = { AUDIT_KEY: KEY, OTHER_KEY: "unused-key-abcdef" }
      const [valid, bad, missing, unset, none, keyring, tornTail, json] = await Promise.all([
        cli(["audit", "verify", good, "--secret-env", "AUDIT_KEY"], env),
        cli(["audit", "verify", tampered, "--secret-env", "AUDIT_KEY"], env),
        cli(["audit", "verify", join(dir, "missing.jsonl"), "--secret-env", "AUDIT_KEY"], env),
        cli(["audit", "verify", good, "--secret-env", "JEEVES_NOT_SET_ANYWHERE"], env),
        cli(["audit", "verify", good], env),
        cli(["audit", "verify", good, "--secret-env", "default=AUDIT_KEY", "--secret-env", "old=OTHER_KEY"], env),
        cli(["audit", "verify", torn, "--secret-env", "AUDIT_KEY"], env),
        cli(["audit", "verify", tampered, "--secret-env", "AUDIT_KEY", "--json"], env)
      ])
      assert.strictEqual(valid.code, 0, valid.stderr)
      assert.match(valid.stdout, /^OK: 5 entries verified \(log log_\w+, last seq 5\)/)
      assert.strictEqual(bad.code, 1, bad.stderr)
      assert.match(bad.stdout, /TAMPERED: signature at seq 2 \(line 2\)/)
      assert.match(bad.stdout, /1 entries verified before it/)
      assert.strictEqual(missing.code, 2)
      assert.include(missing.stderr, "missing.jsonl")
      assert.strictEqual(unset.code, 2)
      assert.include(unset.stderr, "JEEVES_NOT_SET_ANYWHERE")
      assert.strictEqual(none.code, 2)
      assert.include(none.stderr, "--secret-env")
      assert.strictEqual(keyring.code, 0, keyring.stderr + keyring.stdout)
      assert.strictEqual(tornTail.code, 0, tornTail.stderr)
      assert.match(tornTail.stdout, /^OK: 5 entries/)
      assert.include(tornTail.stderr, "torn tail")
      assert.strictEqual(json.code, 1)
      const report = JSON.parse(json.stdout)
      assert.deepStrictEqual([report.valid, report.failure, report.firstBadSeq, report.validCount], [false, "signature", 2, 1])
      assert.notInclude(valid.stdout + valid.stderr + bad.stdout + bad.stderr, KEY, "the key is never printed")
    }), 120_000)

  it.live("verify --checkpoints: a file cut short is tampered (exit 1); an intact one is anchored; a duplicate key id is a usage error", () =>
    Effect.promise(async () => {
      const log = join(dir, "checkpointed.jsonl")
      const anchors = join(dir, "checkpointed.anchors.jsonl")
      await Effect.runPromise(
        Effect.forEach([1, 2, 3, 4, 5, 6, 7], (i) =>
          Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "step", payload: { i } })), { discard: true }).pipe(
            Effect.provide(
              AuditLog.layerFile({ path: log, secret: KEY, logId: "log_cli", checkpoints: { sink: AuditLog.checkpointFile(anchors), everyEntries: 3 } }).pipe(
                Layer.provide(NodeFileSystem.layer)
              )
            )
          )
      )
      const env = { AUDIT_KEY: KEY, TYPO_KEY: "some-other-key-abcdef" }
      const intact = await cli(["audit", "verify", log, "--secret-env", "AUDIT_KEY", "--checkpoints", anchors], env)
      assert.strictEqual(intact.code, 0, intact.stderr)
      assert.match(intact.stdout, /^OK: 7 entries verified \(log log_cli, last seq 7\), anchored by checkpoints up to seq 7/)
      const lines = nodeFs.readFileSync(log, "utf8").split("\n").filter((l) => l !== "")
      const cut = join(dir, "checkpointed-cut.jsonl")
      nodeFs.writeFileSync(cut, lines.slice(0, 5).map((l) => `${l}\n`).join(""))
      const [plain, checked, twice, secretAsName] = await Promise.all([
        cli(["audit", "verify", cut, "--secret-env", "AUDIT_KEY"], env),
        cli(["audit", "verify", cut, "--secret-env", "AUDIT_KEY", "--checkpoints", anchors], env),
        cli(["audit", "verify", log, "--secret-env", "default=AUDIT_KEY", "--secret-env", "default=TYPO_KEY"], env),
        cli(["audit", "verify", log, "--secret-env", "s3cr3t-value/with+chars"], env)
      ])
      assert.strictEqual(plain.code, 0, "the chain alone cannot tell")
      assert.strictEqual(checked.code, 1, checked.stdout + checked.stderr)
      assert.match(checked.stdout, /TAMPERED: checkpoint_missing at seq 6/)
      assert.strictEqual(twice.code, 2, twice.stdout + twice.stderr)
      assert.notMatch(twice.stdout, /TAMPERED/)
      assert.include(twice.stderr, "given twice")
      assert.strictEqual(secretAsName.code, 2)
      const empty = join(dir, "empty.jsonl")
      nodeFs.writeFileSync(empty, "")
      const [wrongKey, nothing] = await Promise.all([
        cli(["audit", "verify", log, "--secret-env", "TYPO_KEY"], env),
        cli(["audit", "verify", empty, "--secret-env", "AUDIT_KEY"], env)
      ])
      assert.strictEqual(wrongKey.code, 1)
      assert.include(wrongKey.stderr, "the key is not the one")
      assert.strictEqual(nothing.code, 0)
      assert.include(nothing.stderr, "no entries")
      assert.notInclude(secretAsName.stderr, "s3cr3t-value", "a key typed where its variable's name belongs is not printed")
    }), 120_000)

  it.live("query: a reader that closes the pipe (| head -1) ends the output quietly; control characters are escaped", () =>
    Effect.promise(async () => {
      const big = join(dir, "big.jsonl")
      await Effect.runPromise(
        Effect.forEach(Array.from({ length: 2000 }, (_, i) => i), (i) =>
          Effect.flatMap(AuditLog.AuditLog, (audit) =>
            audit.append({ actor: "model", action: i === 0 ? "evil\u001b[2J\u009b31m\nfake line" : "tool_call", payload: { note: "x".repeat(200), i } })), {
          discard: true
        }).pipe(Effect.provide(AuditLog.layerFile({ path: big, secret: KEY }).pipe(Layer.provide(NodeFileSystem.layer))))
      )
      const outcome = await new Promise<{ code: number | null; stderr: string; first: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [bundle, "audit", "query", big], { stdio: ["ignore", "pipe", "pipe"] })
        let stderr = ""
        let first = ""
        child.stderr.on("data", (chunk) => (stderr += String(chunk)))
        child.stdout.once("data", (chunk) => {
          first = String(chunk)
          child.stdout.destroy()
        })
        child.on("error", reject)
        child.on("close", (code) => resolve({ code, stderr, first }))
      })
      assert.strictEqual(outcome.stderr, "")
      assert.strictEqual(outcome.code, 0)
      const firstLine = outcome.first.split("\n")[0]!
      assert.include(firstLine, "evil\\u001b[2J\\u009b31m\\u000afake line")
      assert.notMatch(firstLine, /[\u0000-\u001f\u007f-\u009f]/)
    }), 120_000)

  it.live("verify: a reader that closed the pipe before the verdict does not turn a tampered log into exit 0", () =>
    Effect.promise(async () => {
      const tampered = variant("tampered-pipe.jsonl", (lines) => [lines[0]!, lines[1]!.replace("tool_call\"}", "tool_calx\"}"), ...lines.slice(2)])
      const code = await new Promise<number | null>((resolve, reject) => {
        const child = spawn(process.execPath, [bundle, "audit", "verify", tampered, "--secret-env", "AUDIT_KEY"], {
          stdio: ["ignore", "pipe", "ignore"],
          env: { ...process.env, AUDIT_KEY: KEY }
        })
        // `... | true` under `set -o pipefail`: nothing reads the verdict.
        child.stdout.destroy()
        child.on("error", reject)
        child.on("close", resolve)
      })
      assert.strictEqual(code, 1)
    }), 120_000)

  it.live("query: filters by user, anonymity and action; --json prints one entry per line", () =>
    Effect.promise(async () => {
      const [text, json, anonymous, usage, missing] = await Promise.all([
        cli(["audit", "query", good, "--user", "alice"]),
        cli(["audit", "query", good, "--user", "alice", "--action", "tool_call", "--json"]),
        cli(["audit", "query", good, "--anonymous", "--json"]),
        cli(["audit", "query", good, "--user", "alice", "--anonymous"]),
        cli(["audit", "query", join(dir, "missing.jsonl"), "--user", "alice"])
      ])
      assert.strictEqual(text.code, 0, text.stderr)
      const rows = text.stdout.trimEnd().split("\n")
      assert.strictEqual(rows.length, 3)
      assert.match(rows[0]!, /^\s+1 {2}\S+ {2}alice {2}model {2}run_started {2}\{"note":"run_started"\}$/)
      assert.strictEqual(json.code, 0, json.stderr)
      const entries = json.stdout.trim().split("\n").map((line) => JSON.parse(line) as AuditLog.AuditEntry)
      assert.deepStrictEqual(entries.map((e) => [e.seq, e.userId, e.action]), [[2, "alice", "tool_call"]])
      assert.deepStrictEqual(anonymous.stdout.trim().split("\n").map((line) => JSON.parse(line).seq), [4])
      assert.strictEqual(usage.code, 2)
      assert.strictEqual(missing.code, 2)
      assert.include(missing.stderr, "missing.jsonl")
    }), 120_000)

  it.live("a usage error exits 2", () =>
    Effect.promise(async () => {
      const outcome = await cli(["audit", "frobnicate"])
      assert.strictEqual(outcome.code, 2)
    }), 60_000)
})
