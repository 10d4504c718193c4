/**
 * The Node FileSystem with faults injected into open files' `writeAll` and
 * `sync`, counters of both and a log of opens, syncs and truncates: for
 * fsync-failure, disk-full, group-commit and durability-order tests of the
 * audit file writer. Also scratch directories for those tests.
 */
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as FileSystem from "@effect/platform/FileSystem"
import { SystemError } from "@effect/platform/Error"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"

export interface Faults {
  /** Called with the 1-based number of the sync (across all files); true makes it fail with EIO. */
  readonly failSync?: (n: number) => boolean
  /** Called with the 1-based number of the writeAll and the text written; true makes it fail with ENOSPC. */
  readonly failWrite?: (n: number, text: string) => boolean
}

export interface Counters {
  syncs: number
  writes: number
  /** Every open, sync and truncate, in order, with the path opened: `open <path>`, `sync <path>`, `truncate <path>`. */
  readonly ops: Array<string>
}

const ioError = (method: string, description: string, fd: FileSystem.File.Descriptor) =>
  new SystemError({ module: "FileSystem", method, reason: "Unknown", pathOrDescriptor: fd, description })

export const faultyFileSystem = (faults: Faults): { readonly layer: Layer.Layer<FileSystem.FileSystem>; readonly counters: Counters } => {
  const counters: Counters = { syncs: 0, writes: 0, ops: [] }
  const wrap = (file: FileSystem.File, path: string): FileSystem.File => ({
    [FileSystem.FileTypeId]: FileSystem.FileTypeId,
    fd: file.fd,
    get stat() {
      return file.stat
    },
    seek: (offset, from) => file.seek(offset, from),
    read: (buffer) => file.read(buffer),
    readAlloc: (size) => file.readAlloc(size),
    truncate: (length) => Effect.zipLeft(file.truncate(length), Effect.sync(() => void counters.ops.push(`truncate ${path}`))),
    write: (buffer) => file.write(buffer),
    get sync() {
      return Effect.suspend(() => {
        const n = ++counters.syncs
        if (faults.failSync?.(n)) return Effect.fail(ioError("sync", "EIO: injected fsync failure", file.fd))
        return Effect.zipLeft(file.sync, Effect.sync(() => void counters.ops.push(`sync ${path}`)))
      })
    },
    writeAll: (buffer) =>
      Effect.suspend(() => {
        const n = ++counters.writes
        return faults.failWrite?.(n, new TextDecoder().decode(buffer))
          ? Effect.fail(ioError("writeAll", "ENOSPC: injected disk full", file.fd))
          : file.writeAll(buffer)
      })
  })
  const layer = Layer.effect(
    FileSystem.FileSystem,
    Effect.map(FileSystem.FileSystem, (fs) => ({
      ...fs,
      open: (path: string, options?: FileSystem.OpenFileOptions) =>
        Effect.map(fs.open(path, options), (file) => {
          counters.ops.push(`open ${path}`)
          return wrap(file, path)
        })
    }))
  ).pipe(Layer.provide(NodeFileSystem.layer))
  return { layer, counters }
}

/** Scratch directories for one test file; `removeAll` in `afterAll`. */
export const scratchDirectories = (prefix: string) => {
  const made: Array<string> = []
  return {
    make: (): string => {
      const dir = nodeFs.mkdtempSync(join(tmpdir(), prefix))
      made.push(dir)
      return dir
    },
    removeAll: (): void => {
      for (const dir of made.splice(0)) nodeFs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
