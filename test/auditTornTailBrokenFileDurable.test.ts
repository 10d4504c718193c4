/**
 * Torn-tail recovery moves the torn bytes to `<path>.broken` and then cuts
 * them off the log. `moveTornTail` (auditFile.ts) says "A crash in between
 * leaves the bytes in both places, never in neither" — but when it creates
 * `<path>.broken` it fsyncs the new file's data only, never the directory
 * that holds its name, before it truncates (and fsyncs) the log. After a
 * power loss the truncation of the log (an inode already on disk) can be
 * durable while the new directory entry of `.broken` is not: the torn bytes
 * are then in neither place. The log's own creation does fsync the parent
 * directory (syncDirectory); `.broken`'s creation must too, before the cut.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { dirname, join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { faultyFileSystem, scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "broken-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-broken-")
afterAll(scratch.removeAll)

const append = (action: string) => Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action, payload: {} }))

describe("torn-tail recovery durability", () => {
  it.effect("the directory entry of a newly created <path>.broken is fsynced before the log is truncated", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      const dir = dirname(path)
      yield* Effect.zipRight(append("a"), append("b")).pipe(
        Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer)))
      )
      // A crash mid-write: the start of a third line, without its newline.
      nodeFs.appendFileSync(path, `{"action":"c","actor":"sys`)
      assert.isFalse(nodeFs.existsSync(`${path}.broken`))

      const recording = faultyFileSystem({})
      const entry = yield* append("after recovery").pipe(
        Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(recording.layer)))
      )
      assert.strictEqual(entry.seq, 4) // 2 kept, log_recovered, this one
      assert.isTrue(nodeFs.existsSync(`${path}.broken`))

      const ops = recording.counters.ops
      const created = ops.indexOf(`open ${path}.broken`)
      const truncated = ops.indexOf(`truncate ${path}`)
      assert.isAtLeast(created, 0, ops.join("\n"))
      assert.isAbove(truncated, created, ops.join("\n"))
      const between = ops.slice(created, truncated)
      assert.include(between, `sync ${dir}`, `no fsync of ${dir} between creating .broken and cutting the log:\n${ops.join("\n")}`)
    }))
})
