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
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "mkdir-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-mkdir-")
afterAll(scratch.removeAll)

/** The Node FileSystem, recording the path of every sync of an opened file or directory. */
const recordingFileSystem = (synced: Array<string>): Layer.Layer<FileSystem.FileSystem> =>
  Layer.effect(
    FileSystem.FileSystem,
    Effect.map(FileSystem.FileSystem, (fs) => ({
      ...fs,
      open: (path: string, options?: FileSystem.OpenFileOptions) =>
        Effect.map(fs.open(path, options), (file): FileSystem.File => ({
          [FileSystem.FileTypeId]: FileSystem.FileTypeId,
          fd: file.fd,
          get stat() {
            return file.stat
          },
          seek: (offset, from) => file.seek(offset, from),
          read: (buffer) => file.read(buffer),
          readAlloc: (size) => file.readAlloc(size),
          truncate: (length) => file.truncate(length),
          write: (buffer) => file.write(buffer),
          writeAll: (buffer) => file.writeAll(buffer),
          get sync() {
            return Effect.zipLeft(file.sync, Effect.sync(() => synced.push(path)))
          }
        }))
    }))
  ).pipe(Layer.provide(NodeFileSystem.layer))

describe("layerFile: creating the log's directories", () => {
  it.effect("every directory it creates has its entry fsynced (its parent is fsynced) before the first append is acknowledged", () =>
    Effect.gen(function*() {
      const root = scratch.make()
      const path = join(root, "var", "audit", "audit.jsonl")
      assert.isFalse(nodeFs.existsSync(join(root, "var")))
      const synced: Array<string> = []
      const entry = yield* Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "first", payload: {} })).pipe(
        Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(recordingFileSystem(synced))))
      )
      assert.strictEqual(entry.seq, 1)
      // var/audit holds the log's entry (synced before the fix too); var holds audit's, root holds var's.
      for (const dir of [join(root, "var", "audit"), join(root, "var"), root]) {
        assert.include(synced, dir, `${dir} was never fsynced; synced: ${synced.join(", ")}`)
      }
    }))
})
