/**
 * On a file system without hard links (FAT/exFAT volumes, several FUSE and
 * SMB mounts: `link(2)` fails with EPERM), the audit file's writer still
 * takes its lock — it creates the lock file exclusively in place instead of
 * linking it — appends, and removes its lock on close.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { SystemError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Exit, Layer, Scope } from "effect"
import { AuditLog } from "jeevesagent"

/** Node's file system, except that `link` fails as Linux's does on a volume without hard links (EPERM). */
const noHardLinks = Layer.effect(
  FileSystem.FileSystem,
  Effect.map(FileSystem.FileSystem, (fs): FileSystem.FileSystem => ({
    ...fs,
    link: (from) =>
      Effect.fail(
        new SystemError({
          reason: "PermissionDenied",
          module: "FileSystem",
          method: "link",
          syscall: "link",
          pathOrDescriptor: from,
          description: "EPERM: operation not permitted (the file system does not support hard links)"
        })
      )
  }))
).pipe(Layer.provide(NodeFileSystem.layer))

describe("AuditLog.layerFile on a file system without hard links", () => {
  it.live("opens, appends and releases its lock", () =>
    Effect.gen(function*() {
      const dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-nolink-"))
      const path = join(dir, "audit.jsonl")
      const scope = yield* Scope.make()
      const opened = yield* Effect.exit(
        Scope.extend(AuditLog.makeFile({ path, secret: "nolink-secret-0123456789abcdef", signing: "inline" }), scope)
      ).pipe(Effect.provide(noHardLinks))
      assert.isTrue(Exit.isSuccess(opened), `the audit file did not open: ${Exit.isFailure(opened) ? String(opened.cause) : ""}`)
      if (Exit.isSuccess(opened)) yield* opened.value.append({ actor: "system", action: "opened", payload: {} })
      yield* Scope.close(scope, Exit.void)
      const left = nodeFs.readdirSync(dir).sort()
      nodeFs.rmSync(dir, { recursive: true, force: true })
      // Only the log itself is left: the lock (and anything written aside for it) is gone.
      assert.deepStrictEqual(left.filter((name) => name.includes(".lock")), [])
    }))
})
