/**
 * One writer per audit file is what keeps its chain from forking (two
 * entries with the same seq), so two writers opening one file at once must
 * never both get its lock:
 * - two writers that both find a crashed process's lock and take it over
 *   (a restarted deployment, two replicas pointed at one volume);
 * - a writer that finds the other's lock while it is being created: a lock
 *   never exists without its content, which would read as a dead process's;
 * - a writer closing removes the lock only if it is still its own.
 *
 * The file systems below only force the interleavings (every call is the
 * real one) that two processes get when the scheduler runs them so.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Deferred, Effect, Exit, Layer, Scope } from "effect"
import { AuditLog } from "jeevesagent"

const SECRET = "lock-race-secret-0123456789abcdef"

const scratch = (name: string) => {
  const dir = nodeFs.mkdtempSync(join(tmpdir(), `jeeves-${name}-`))
  const path = join(dir, "audit.jsonl")
  return { dir, path, lockPath: `${path}.lock` }
}

const seqsOf = (path: string) =>
  nodeFs.existsSync(path) ?
    nodeFs.readFileSync(path, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line).seq as number) :
    []

/** Opens the file twice at once through `fs`; appends through each writer that opened; the exits and the file's seqs. */
const openTwice = (path: string, fs: Layer.Layer<FileSystem.FileSystem>, finished: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const open = Effect.exit(Scope.extend(AuditLog.makeFile({ path, secret: SECRET, signing: "inline" }), scope)).pipe(
      Effect.ensuring(finished),
      Effect.provide(fs)
    )
    const [a, b] = yield* Effect.all([open, open], { concurrency: "unbounded" })
    for (const exit of [a, b]) {
      if (Exit.isSuccess(exit)) yield* exit.value.append({ actor: "system", action: "opened", payload: {} })
    }
    yield* Scope.close(scope, Exit.void)
    return { exits: [a, b], seqs: seqsOf(path) }
  })

describe("AuditLog.layerFile: two writers opening one file at once", () => {
  it.live("both find a dead process's lock: only one of them takes it over", () =>
    Effect.gen(function*() {
      const { dir, lockPath, path } = scratch("lock-takeover")
      nodeFs.writeFileSync(lockPath, "2147483646\n") // a process that is gone
      // Released once both openers have read the stale lock, and once the first one's new lock exists.
      const bothRead = yield* Deferred.make<void>()
      const firstCreated = yield* Deferred.make<void>()
      let reads = 0
      let takeovers = 0
      const created = Deferred.succeed(firstCreated, undefined)
      // The second opener to move (or remove) the lock does it only once the first has made its own.
      const secondWaits = <A, E>(step: Effect.Effect<A, E>) =>
        Effect.suspend(() => (++takeovers === 1 ? step : Effect.zipRight(Deferred.await(firstCreated), step)))
      const racing = Layer.effect(
        FileSystem.FileSystem,
        Effect.map(FileSystem.FileSystem, (fs): FileSystem.FileSystem => ({
          ...fs,
          readFileString: (p, encoding) =>
            p !== lockPath ? fs.readFileString(p, encoding) : Effect.zipLeft(
              fs.readFileString(p, encoding),
              Effect.suspend(() => (++reads >= 2 ? Deferred.succeed(bothRead, undefined) : Effect.void)).pipe(
                Effect.zipRight(Deferred.await(bothRead))
              )
            ),
          rename: (from, to) => (from !== lockPath ? fs.rename(from, to) : secondWaits(fs.rename(from, to))),
          remove: (p, options) => (p !== lockPath ? fs.remove(p, options) : secondWaits(fs.remove(p, options))),
          link: (from, to) => Effect.tap(fs.link(from, to), () => (to === lockPath && takeovers >= 1 ? created : Effect.void)),
          writeFileString: (p, data, options) =>
            Effect.tap(fs.writeFileString(p, data, options), () => (p === lockPath && takeovers >= 1 ? created : Effect.void))
        }))
      ).pipe(Layer.provide(NodeFileSystem.layer))
      const { exits, seqs } = yield* openTwice(path, racing, Effect.zipRight(Deferred.succeed(bothRead, undefined), created))
      nodeFs.rmSync(dir, { recursive: true, force: true })
      assert.strictEqual(exits.filter(Exit.isSuccess).length, 1, `both writers opened the file; it holds seqs ${JSON.stringify(seqs)}`)
      assert.deepStrictEqual(seqs, [1])
      const failed = exits.find(Exit.isFailure)
      assert.include(failed === undefined ? "" : String(failed.cause), "already open for writing")
    }))

  it.live("a lock is never seen without its content, so a writer creating it is never taken for a dead one", () =>
    Effect.gen(function*() {
      const { dir, lockPath, path } = scratch("lock-create")
      const secondRead = yield* Deferred.make<void>()
      /** Each time the lock file was seen empty (it would read as a dead process's). */
      const seenEmpty: Array<string> = []
      const look = (when: string) =>
        Effect.sync(() => {
          try {
            if (nodeFs.readFileSync(lockPath, "utf8") === "") seenEmpty.push(when)
          } catch {
            // Absent: fine.
          }
        })
      let creates = 0
      const racing = Layer.effect(
        FileSystem.FileSystem,
        Effect.map(FileSystem.FileSystem, (fs): FileSystem.FileSystem => ({
          ...fs,
          readFileString: (p, encoding) =>
            p !== lockPath ? fs.readFileString(p, encoding) : Effect.tap(
              fs.readFileString(p, encoding),
              () => Deferred.succeed(secondRead, undefined)
            ),
          link: (from, to) => Effect.zipRight(look("before a link"), Effect.zipLeft(fs.link(from, to), look("after a link"))),
          writeFileString: (p, data, options) => {
            if (p !== lockPath || options?.flag !== "wx") return fs.writeFileString(p, data, options)
            // Creating the lock in place: open it (O_EXCL) now, write its content once the other opener looked.
            return Effect.suspend(() => {
              if (++creates !== 1) return fs.writeFileString(p, data, options)
              const fd = nodeFs.openSync(p, "wx")
              return Effect.zipRight(
                Effect.zipRight(look("while created in place"), Deferred.await(secondRead)),
                Effect.sync(() => {
                  nodeFs.writeSync(fd, data)
                  nodeFs.closeSync(fd)
                })
              )
            })
          }
        }))
      ).pipe(Layer.provide(NodeFileSystem.layer))
      const { exits, seqs } = yield* openTwice(path, racing, Deferred.succeed(secondRead, undefined))
      nodeFs.rmSync(dir, { recursive: true, force: true })
      assert.deepStrictEqual(seenEmpty, [])
      assert.strictEqual(exits.filter(Exit.isSuccess).length, 1, `both writers opened the file; it holds seqs ${JSON.stringify(seqs)}`)
      assert.deepStrictEqual(seqs, [1])
    }))

  it.live("closing removes the lock only while it is still this writer's", () =>
    Effect.gen(function*() {
      const { dir, lockPath, path } = scratch("lock-release")
      const scope = yield* Scope.make()
      yield* Scope.extend(AuditLog.makeFile({ path, secret: SECRET, signing: "inline" }), scope).pipe(
        Effect.provide(NodeFileSystem.layer)
      )
      assert.match(nodeFs.readFileSync(lockPath, "utf8"), new RegExp(`^${process.pid}\\n`))
      // Another writer's lock took its place (a takeover that judged this one dead).
      nodeFs.rmSync(lockPath)
      nodeFs.writeFileSync(lockPath, "12345\n\n\nlock_other\n")
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(nodeFs.readFileSync(lockPath, "utf8"), "12345\n\n\nlock_other\n")
      nodeFs.rmSync(dir, { recursive: true, force: true })
    }))
})
