/**
 * `AuditLog.checkpointFile` is meant for a file the process writing the log
 * cannot rewrite (an append-only mount, say). After a crash cut a checkpoint
 * line short, the next write cannot truncate the torn line there, so it ends
 * it with a newline; `readCheckpoints` must skip that line wherever it is,
 * or one crash would leave the checkpoint file unreadable for good.
 *
 * The append-only file (chattr +a: truncate fails with EPERM) is simulated
 * by making `FileHandle.truncate` fail as the kernel does there.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll, vi } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const appendOnly = vi.hoisted(() => ({ paths: new Set<string>() }))

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>()
  const open: typeof actual.open = async (path, ...rest) => {
    const handle = await actual.open(path, ...rest)
    if (appendOnly.paths.has(String(path))) {
      // What ftruncate(2) gives on a file with the append-only attribute.
      handle.truncate = () => Promise.reject(Object.assign(new Error("EPERM: operation not permitted, ftruncate"), { code: "EPERM" }))
    }
    return handle
  }
  return { ...actual, default: { ...actual, open }, open }
})

const SECRET = "append-only-test-secret-0123456789"
const LOG_ID = "log_append_only"
const scratch = scratchDirectories("jeeves-audit-append-only-")
afterAll(scratch.removeAll)

const writeLog = (path: string, count: number, sink: AuditLog.CheckpointOptions["sink"], first = 1) =>
  Effect.scoped(
    Effect.gen(function*() {
      const audit = yield* AuditLog.makeFile({ path, secret: SECRET, logId: LOG_ID, checkpoints: { sink, everyEntries: 100 }, signing: "inline" })
      for (let i = first; i < first + count; i++) yield* audit.append({ actor: "system", action: "step", payload: { i } })
    })
  ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)

describe("checkpointFile on an append-only file", () => {
  it.effect("after a checkpoint write cut short by a crash, the checkpoints written next can still be read and used", () =>
    Effect.gen(function*() {
      const dir = scratch.make()
      const log = join(dir, "audit.jsonl")
      const anchors = join(dir, "checkpoints.jsonl")
      const sink = AuditLog.checkpointFile(anchors)
      appendOnly.paths.add(anchors)

      yield* writeLog(log, 3, sink)
      // The process crashed while storing its next checkpoint.
      nodeFs.appendFileSync(anchors, `{"logId":"${LOG_ID}","seq":`)
      yield* writeLog(log, 2, sink, 4)

      const read = yield* Effect.either(AuditLog.readCheckpoints(anchors).pipe(Effect.provide(NodeFileSystem.layer)))
      assert.strictEqual(read._tag, "Right", read._tag === "Left" ? read.left.message : "")
      if (read._tag === "Left") return
      assert.deepStrictEqual(read.right.map((c) => c.seq), [3, 5])
      const report = yield* AuditLog.verifyFile(log, SECRET, { checkpoints: read.right }).pipe(Effect.provide(NodeFileSystem.layer))
      assert.deepStrictEqual([report.valid, report.anchoredSeq], [true, 5])
    }))
})
