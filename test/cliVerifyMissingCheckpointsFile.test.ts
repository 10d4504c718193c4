/**
 * `jeevesagent audit verify LOG --checkpoints FILE` when FILE does not exist
 * (a typo, a checkpoint volume not mounted on the machine that verifies, a
 * file removed): `AuditLog.readCheckpoints` gives no checkpoints, the verifier
 * treats "no checkpoints" as "checkpoints not asked for", and a log rolled back
 * to fewer entries than were checkpointed verifies with exit 0 ("anchored by
 * checkpoints up to seq 0"). The README says that with checkpoints "at least
 * one must be the file's"; a missing log file is exit 2, a missing
 * checkpoints file should not silently disable the rollback check.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { bundleScript } from "./support/auditBundle.js"

const KEY = "cli-ckpt-secret-0123456789"

let dir = ""
let bundle = ""

const run = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [bundle, ...args], { env: { ...process.env, AUDIT_KEY: KEY }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    })
  })

beforeAll(async () => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-cli-ckpt-"))
  bundle = await bundleScript(new URL("../src/bin.ts", import.meta.url), dir)
})
afterAll(() => nodeFs.rmSync(dir, { recursive: true, force: true }))

describe("jeevesagent audit verify --checkpoints with a missing checkpoints file", () => {
  it.live("a rolled-back log is not reported valid (exit 0) because the checkpoints file is missing", () =>
    Effect.promise(async () => {
      const log = join(dir, "audit.jsonl")
      const anchors = join(dir, "audit.checkpoints.jsonl")
      await Effect.runPromise(
        Effect.forEach([1, 2, 3, 4, 5, 6, 7], (i) =>
          Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "step", payload: { i } })), { discard: true }).pipe(
            Effect.provide(
              AuditLog.layerFile({ path: log, secret: KEY, logId: "log_ckpt", checkpoints: { sink: AuditLog.checkpointFile(anchors), everyEntries: 3 } }).pipe(
                Layer.provide(NodeFileSystem.layer)
              )
            )
          )
      )
      const lines = nodeFs.readFileSync(log, "utf8").split("\n").filter((l) => l !== "")
      const cut = join(dir, "cut.jsonl")
      nodeFs.writeFileSync(cut, lines.slice(0, 5).map((l) => `${l}\n`).join(""))

      const withCheckpoints = await run(["audit", "verify", cut, "--secret-env", "AUDIT_KEY", "--checkpoints", anchors])
      assert.strictEqual(withCheckpoints.code, 1, "with the real checkpoints file the cut is caught")

      const typo = join(dir, "audit.checkpionts.jsonl")
      const missing = await run(["audit", "verify", cut, "--secret-env", "AUDIT_KEY", "--checkpoints", typo])
      assert.notStrictEqual(
        missing.code,
        0,
        `--checkpoints naming a file that does not exist verified a rolled-back log: ${missing.stdout}${missing.stderr}`
      )
    }), 60_000)
})
