/**
 * `jeevesagent audit query FILE --json` prints each entry as
 * `JSON.stringify` of the parsed entry. When a payload has integer-like
 * member names (HTTP status counts, per-index maps), JavaScript objects put
 * them in numeric order ("200" before "1000") while JCS orders by UTF-16 code
 * units ("1000" before "200"), so the printed line is not in JCS form.
 *
 * The file format (README, "a contract — verify it without our code") is one
 * JSON object per line whose signature is the HMAC of JCS(entry without
 * signature) and whose chain hash is SHA-256 of JCS(entry): member order in the
 * line is not part of it, and the entries printed are untouched. Yet `audit
 * verify` of the untouched, complete export says TAMPERED (exit 1,
 * "not in canonical (JCS) form"): a false tampering alarm for anyone who
 * archives or ships a log through `query --json` (or re-serializes it with any
 * JSON tool).
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { bundleScript } from "./support/auditBundle.js"

const KEY = "cli-export-secret-0123456789"

const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [bundle, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    })
  })

let dir = ""
let bundle = ""
let log = ""

beforeAll(async () => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-cli-export-"))
  bundle = await bundleScript(new URL("../src/bin.ts", import.meta.url), dir)
  log = join(dir, "audit.jsonl")
  await Effect.runPromise(
    Effect.forEach([1, 2], (i) =>
      Effect.flatMap(AuditLog.AuditLog, (audit) =>
        audit.append({ actor: "system", action: "http_summary", payload: { statusCounts: { "200": 3 * i, "1000": i } } })), { discard: true }).pipe(
        RunContext.withUser("alice"),
        Effect.provide(AuditLog.layerFile({ path: log, secret: KEY }).pipe(Layer.provide(NodeFileSystem.layer)))
      )
  )
})
afterAll(() => nodeFs.rmSync(dir, { recursive: true, force: true }))

describe("jeevesagent audit query --json, then verify", () => {
  it.live("the complete, untouched export of a valid log verifies", () =>
    Effect.promise(async () => {
      const env = { AUDIT_KEY: KEY }
      const original = await run(["audit", "verify", log, "--secret-env", "AUDIT_KEY"], env)
      assert.strictEqual(original.code, 0, original.stdout + original.stderr)

      const exported = await run(["audit", "query", log, "--json"])
      assert.strictEqual(exported.code, 0, exported.stderr)
      const copy = join(dir, "export.jsonl")
      nodeFs.writeFileSync(copy, exported.stdout)
      // Same entries, same values: only the member order inside the payload differs.
      const parse = (text: string) => text.trim().split("\n").map((line) => JSON.parse(line))
      assert.deepStrictEqual(parse(exported.stdout), parse(nodeFs.readFileSync(log, "utf8")))

      const verified = await run(["audit", "verify", copy, "--secret-env", "AUDIT_KEY"], env)
      assert.strictEqual(verified.code, 0, `an untouched export is reported as tampered: ${verified.stdout}`)
    }), 60_000)
})
