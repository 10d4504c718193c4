/**
 * `layerFile` creates the log's missing parent directories
 * (`makeDirectory(..., { recursive: true })`) and then fsyncs only the
 * log's immediate directory. The entry of each directory it just created
 * lives in *its* parent, which is never fsynced: after a power loss the new
 * directory — and with it the log and every acknowledged entry in it — can
 * be gone, although each append was acknowledged after an fsync. (Linux
 * fsync(2): "Calling fsync() does not necessarily ensure that the entry in
 * the directory containing the file has also reached disk. For that an
 * explicit fsync() on a file descriptor for the directory is also needed.")
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { faultyFileSystem, scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "mkdir-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-mkdir-")
afterAll(scratch.removeAll)

describe("layerFile: creating the log's directories", () => {
  it.effect("every directory it creates has its entry fsynced (its parent is fsynced) before the first append is acknowledged", () =>
    Effect.gen(function*() {
      const root = scratch.make()
      const path = join(root, "var", "audit", "audit.jsonl")
      assert.isFalse(nodeFs.existsSync(join(root, "var")))
      const recording = faultyFileSystem({})
      const entry = yield* Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "first", payload: {} })).pipe(
        Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(recording.layer)))
      )
      assert.strictEqual(entry.seq, 1)
      // var/audit holds the log's entry (synced before the fix too); var holds audit's, root holds var's.
      const synced = recording.counters.ops.filter((op) => op.startsWith("sync ")).map((op) => op.slice(5))
      for (const dir of [join(root, "var", "audit"), join(root, "var"), root]) {
        assert.include(synced, dir, `${dir} was never fsynced; synced: ${synced.join(", ")}`)
      }
    }))
})
