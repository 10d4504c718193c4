/**
 * The `jeevesagent audit` command line, run as a real process: once through
 * `tsx src/bin.ts` (the entry point as it is), and for the many cases from a
 * bundle of the same file (a TypeScript compile per case would dominate).
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
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
