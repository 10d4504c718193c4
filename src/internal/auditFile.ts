/**
 * The JSONL audit file: reading it line by line, verifying it, recovering a
 * torn tail, and the append-only writer.
 *
 * @internal
 */
import { readFileSync } from "node:fs"
import { basename, dirname, resolve } from "node:path"
import * as FileSystem from "@effect/platform/FileSystem"
import type { PlatformError } from "@effect/platform/Error"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Fiber from "effect/Fiber"
import { globalValue } from "effect/GlobalValue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as AuditLog from "../AuditLog.js"
import { makeBatchWriter, type Store } from "./audit.js"
import { inlineSigner, type Signer, workerSigner } from "./auditSigner.js"
import {
  ChainVerifier,
  type Draft,
  emptyHead,
  type EntryAt,
  type Head,
  matches,
  parseLine,
  sha256Hex,
  signCheckpoint,
  type SigningKey,
  type VerifyKeys
} from "./auditChain.js"
import type { Json } from "./auditJcs.js"
import { newId } from "./ids.js"

const NEWLINE = 0x0a
const CHUNK_SIZE = 64 * 1024
const MAX_BATCH = 512

/** One line of the file. `terminated` is false only for a final line without its newline. @internal */
export interface RawLine {
  readonly bytes: Uint8Array
  /** Byte offset of the line's first byte. */
  readonly offset: number
  /** 1-based line number. */
  readonly number: number
  readonly terminated: boolean
}

const concatBytes = (parts: ReadonlyArray<Uint8Array>, total: number): Uint8Array => {
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(total)
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/**
 * The lines of a file, streamed: memory stays bounded by the longest line.
 * `bytesToRead` limits the read to a prefix (what a writer has acknowledged).
 *
 * @internal
 */
export const readLines = (
  fs: FileSystem.FileSystem,
  path: string,
  bytesToRead?: number
): Stream.Stream<RawLine, PlatformError> =>
  Stream.suspend(() => {
    let parts: Array<Uint8Array> = []
    let pending = 0
    let lineOffset = 0
    let lineNumber = 0
    const emit = (last: Uint8Array, terminated: boolean): RawLine => {
      parts.push(last)
      const bytes = concatBytes(parts, pending + last.length)
      const line: RawLine = { bytes, offset: lineOffset, number: ++lineNumber, terminated }
      lineOffset += bytes.length + (terminated ? 1 : 0)
      parts = []
      pending = 0
      return line
    }
    const options: FileSystem.StreamOptions = bytesToRead === undefined
      ? { chunkSize: CHUNK_SIZE }
      : { chunkSize: CHUNK_SIZE, bytesToRead }
    return fs.stream(path, options).pipe(
      Stream.mapConcat((chunk) => {
        const lines: Array<RawLine> = []
        let start = 0
        let index = chunk.indexOf(NEWLINE, start)
        while (index !== -1) {
          lines.push(emit(chunk.subarray(start, index), true))
          start = index + 1
          index = chunk.indexOf(NEWLINE, start)
        }
        if (start < chunk.length) {
          parts.push(chunk.subarray(start))
          pending += chunk.length - start
        }
        return lines
      }),
      Stream.concat(Stream.suspend(() => (pending > 0 ? Stream.make(emit(new Uint8Array(0), false)) : Stream.empty)))
    )
  })

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** The text of a line, or `undefined` when it is not valid UTF-8. @internal */
export const decodeLine = (bytes: Uint8Array): string | undefined => {
  try {
    return decoder.decode(bytes)
  } catch {
    return undefined
  }
}

const unreadable = (path: string, cause: unknown) =>
  new AuditLog.AuditUnavailable({ description: `cannot read ${path}: ${describe(cause)}`, cause })

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** The outcome of reading a whole file through a verifier. @internal */
export interface Scan {
  readonly verifier: ChainVerifier
  readonly tornBytes: Uint8Array | undefined
}

/**
 * Verifies a file line by line, stopping at the first problem.
 *
 * @internal
 */
export const scanFile = (
  fs: FileSystem.FileSystem,
  path: string,
  keys: VerifyKeys,
  options?: AuditLog.VerifyOptions & { readonly bytesToRead?: number | undefined }
): Effect.Effect<Scan, AuditLog.AuditUnavailable> =>
  Effect.suspend(() => {
    const verifier = new ChainVerifier(keys, { logId: options?.logId, checkpoints: options?.checkpoints })
    let tornBytes: Uint8Array | undefined
    const push = (line: RawLine) => {
      if (!line.terminated) {
        tornBytes = line.bytes
        verifier.tornTail(line.offset, line.bytes.length)
        return
      }
      const text = decodeLine(line.bytes)
      if (text === undefined) verifier.fail("bad_json", verifier.head.seq + 1, line.number, `line ${line.number}: not valid UTF-8`)
      else verifier.pushLine(text, line.number)
    }
    return readLines(fs, path, options?.bytesToRead).pipe(
      Stream.takeWhile(() => verifier.ok),
      Stream.runForEachChunk((lines) =>
        Effect.sync(() => {
          for (const line of lines) if (verifier.ok) push(line)
        })
      ),
      Effect.mapError((cause) => unreadable(path, cause)),
      Effect.map((): Scan => ({ verifier, tornBytes }))
    )
  })

/**
 * The entries of a file that match `filter`, streamed. A final line without
 * its newline was never acknowledged and is skipped; any other line that is
 * not an entry fails the stream.
 *
 * @internal
 */
export const streamEntries = (
  fs: FileSystem.FileSystem,
  path: string,
  filter?: AuditLog.QueryFilter,
  bytesToRead?: number
): Stream.Stream<AuditLog.AuditEntry, AuditLog.AuditUnavailable> =>
  readLines(fs, path, bytesToRead).pipe(
    Stream.mapError((cause) => unreadable(path, cause)),
    Stream.mapChunksEffect((lines) =>
      Effect.suspend(() => {
        const entries: Array<AuditLog.AuditEntry> = []
        for (const line of lines) {
          if (!line.terminated) continue
          const text = decodeLine(line.bytes)
          const parsed = text === undefined ? { problem: "not valid UTF-8" } : parseLine(text)
          if ("problem" in parsed) {
            return Effect.fail(
              new AuditLog.AuditUnavailable({
                description: `line ${line.number} of ${path} is not an audit entry: ${parsed.problem}`
              })
            )
          }
          if (matches(parsed.entry, filter)) entries.push(parsed.entry)
        }
        return Effect.succeed(Chunk.unsafeFromArray(entries))
      })
    )
  )

// ---- the writer -------------------------------------------------------------------

/**
 * The lock files this process holds (shared by every copy of the library
 * loaded in it): a lock naming this process's pid that is not among them
 * was left by an earlier process that had the same pid (PID 1 in a
 * container restarted after a crash).
 */
const heldLocks = globalValue(Symbol.for("jeevesagent/auditFile/heldLocks"), () => new Set<string>())

/** This boot of the machine (Linux), written into lock files: a lock from an earlier boot is stale whatever its pid. */
const bootId: string | undefined = (() => {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || undefined
  } catch {
    return undefined
  }
})()

/**
 * When process `pid` started (Linux: clock ticks after boot, field 22 of
 * `/proc/<pid>/stat`), written into lock files: a lock naming a pid whose
 * process started at another time was left by an earlier process that had
 * the pid (PID 1 in a restarted container), while every thread of one
 * process (worker threads have globals of their own) agrees on it.
 */
const processStart = (pid: number): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name (field 2) is in parentheses and may hold spaces: fields 3 on follow the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] || undefined
  } catch {
    return undefined
  }
}

const ownStart = processStart(process.pid)

/**
 * Takes the `<path>.lock` file for this process. A lock left by a process
 * that no longer exists (it crashed), by an earlier process with the same
 * pid, or before the machine last booted, is taken over.
 *
 * The lock is written aside and hard-linked into place, so it never exists
 * without its content (a second writer reading it half-written would take
 * it for a dead process's). A stale lock is taken over by renaming it aside
 * (atomic: of two writers taking it over at once, one moves it, the other
 * moves the first one's new lock), checking that what was moved is the
 * stale lock that was judged dead, and linking a new one in; a writer that
 * moved a live lock puts it back and fails. Each lock carries a nonce, so
 * closing removes the lock only if it is still this writer's.
 */
const acquireLock = (fs: FileSystem.FileSystem, path: string): Effect.Effect<void, AuditLog.AuditUnavailable, Scope.Scope> => {
  const lockPath = `${path}.lock`
  const key = resolve(lockPath)
  const nonce = newId("lock")
  const content = `${process.pid}\n${bootId ?? ""}\n${ownStart ?? ""}\n${nonce}\n`
  const cannotLock = (cause: unknown) =>
    new AuditLog.AuditUnavailable({ description: `cannot lock ${path}: ${describe(cause)}`, cause })
  const alreadyOpen = (who: string) =>
    new AuditLog.AuditUnavailable({
      description: `${path} is already open for writing by ${who} (lock file ${basename(lockPath)}); ` +
        "one writer per file: give each process its own file or use PgAuditLog"
    })
  const exists = (error: PlatformError) => error._tag === "SystemError" && error.reason === "AlreadyExists"
  const aside = (what: string) => `${lockPath}.${nonce}.${what}`
  /**
   * Links a complete lock into place: fails with AlreadyExists when there is
   * one. On a file system without hard links (FAT, some network mounts) it
   * is created in place instead (exclusively; briefly empty while written).
   */
  const create = Effect.acquireUseRelease(
    Effect.as(fs.writeFileString(aside("new"), content), aside("new")),
    (written) =>
      fs.link(written, lockPath).pipe(
        Effect.catchIf((error) => !exists(error), () => fs.writeFileString(lockPath, content, { flag: "wx" })),
        Effect.zipRight(Effect.sync(() => void heldLocks.add(key)))
      ),
    (written) => Effect.ignore(fs.remove(written))
  )
  const readHolder = (file: string) => Effect.orElseSucceed(fs.readFileString(file), () => "")
  const parse = (text: string) => {
    const [pid, boot, start] = text.split("\n")
    return { pid: Number.parseInt(pid!.trim(), 10), boot: boot?.trim() || undefined, start: start?.trim() || undefined }
  }
  /** Whether the lock's process is the one running as `pid` now (unknown start times: assumed so). */
  const sameStart = (pid: number, start: string | undefined) => {
    if (start === undefined) return undefined
    const now = pid === process.pid ? ownStart : processStart(pid)
    return now === undefined ? undefined : now === start
  }
  const isLive = ({ boot, pid, start }: ReturnType<typeof parse>) => {
    const sameBoot = boot === undefined || bootId === undefined || boot === bootId
    return Number.isSafeInteger(pid) && pid > 0 && sameBoot &&
      // This pid: this process (any of its threads) if it started when the lock's did; without start
      // times, if this thread holds it. Another pid: alive, and not a later process reusing it.
      (pid === process.pid ? sameStart(pid, start) ?? heldLocks.has(key) : isAlive(pid) && sameStart(pid, start) !== false)
  }
  const whoHolds = (pid: number) => (pid === process.pid ? "this process" : `process ${pid}`)
  const takeOver = (stale: string): Effect.Effect<void, AuditLog.AuditUnavailable> => {
    const holder = parse(stale)
    if (isLive(holder)) return Effect.fail(alreadyOpen(whoHolds(holder.pid)))
    const moved = aside("stale")
    return Effect.logWarning(`audit log ${path}: taking over the lock of a process that is gone (pid ${holder.pid})`).pipe(
      Effect.zipRight(fs.rename(lockPath, moved)),
      Effect.zipRight(readHolder(moved)),
      // The lock went away meanwhile (its holder closed): there is nothing to take over, only to create.
      Effect.catchIf(
        (error) => error._tag === "SystemError" && error.reason === "NotFound",
        () => Effect.succeed<string | undefined>(undefined)
      ),
      Effect.flatMap((found): Effect.Effect<void, PlatformError | AuditLog.AuditUnavailable> =>
        found === undefined ?
          create :
          found === stale ?
          Effect.zipRight(fs.remove(moved), create) :
          // Another writer took the stale lock over first: this moved its live lock. Put it back.
          Effect.zipRight(
            Effect.ignore(Effect.zipRight(fs.link(moved, lockPath), fs.remove(moved))),
            Effect.fail(alreadyOpen(whoHolds(parse(found).pid)))
          )
      ),
      Effect.catchAll((error) =>
        error._tag === "AuditUnavailable" ?
          Effect.fail(error) :
          Effect.fail(exists(error) ? alreadyOpen("another writer that took the stale lock over first") : cannotLock(error))
      )
    )
  }
  const take = create.pipe(
    Effect.catchAll((error) => exists(error) ? Effect.flatMap(readHolder(lockPath), takeOver) : Effect.fail(cannotLock(error)))
  )
  // Only this writer's own lock is removed (after a wrong takeover, the lock there may be another's).
  const release = Effect.zipRight(
    Effect.sync(() => void heldLocks.delete(key)),
    Effect.ignore(Effect.flatMap(readHolder(lockPath), (text) => (text === content ? fs.remove(lockPath) : Effect.void)))
  )
  return Effect.acquireRelease(take, () => release)
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Makes a directory entry (a created file) durable. Not every platform can open directories: best effort. */
const syncDirectory = (fs: FileSystem.FileSystem, path: string) =>
  Effect.ignore(Effect.scoped(Effect.flatMap(fs.open(path, { flag: "r" }), (dir) => dir.sync)))

/**
 * Creates `dir` and the directories above it that are missing, and syncs the
 * parent of each it created: a new directory's entry lives in its parent, so
 * without that a power loss could take the whole directory, and the log with
 * its acknowledged entries, away.
 */
const makeDirectories = (fs: FileSystem.FileSystem, dir: string) =>
  Effect.gen(function*() {
    const missing: Array<string> = []
    for (let current = dir; !(yield* fs.exists(current)); current = dirname(current)) {
      missing.push(current)
      if (dirname(current) === current) break
    }
    if (missing.length === 0) return
    yield* fs.makeDirectory(dir, { recursive: true })
    for (const created of missing) yield* syncDirectory(fs, dirname(created))
  })

/** Options of the file store (the public `FileOptions` without the key). @internal */
export interface FileStoreOptions {
  readonly path: string
  readonly durability?: "fsync" | "none" | undefined
  readonly logId?: string | undefined
  readonly signing?: "worker" | "inline" | undefined
  readonly checkpoints?: AuditLog.CheckpointOptions | undefined
}

// ---- checkpoints ------------------------------------------------------------------

const DEFAULT_CHECKPOINT_ENTRIES = 100
const DEFAULT_CHECKPOINT_INTERVAL = Duration.minutes(1)
/** How long one checkpoint may take to publish; a slower sink is logged, and the next one tried later. */
const PUBLISH_TIMEOUT = Duration.seconds(30)
/** After a failed checkpoint the sink rests this long, doubled on each failure in a row, at most the interval. */
const FIRST_BACKOFF_MILLIS = 1_000

/** The checkpoint publisher of a file log: `written` after each batch, `close` once the writer has drained. */
interface CheckpointPublisher {
  readonly written: (seq: number) => void
}

/**
 * Publishes signed checkpoints of the head `current()` reads to the sink,
 * one at a time, from a fiber of its own: when `everyEntries` entries were
 * written since the last one, when `interval` passed with new entries, and
 * once more when the scope closes (the writer has drained by then: this is
 * made before it, so it closes after it). Never fails the log.
 */
const makeCheckpointPublisher = (
  options: AuditLog.CheckpointOptions,
  logIdGiven: string | undefined,
  signing: SigningKey,
  path: string,
  current: () => { readonly head: Head; readonly logId: string }
): Effect.Effect<CheckpointPublisher, AuditLog.AuditUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    if (logIdGiven === undefined) {
      return yield* new AuditLog.AuditUnavailable({
        description: `${path}: checkpoints need a fixed logId, so that a file emptied or replaced and written again ` +
          "is still the log its checkpoints name (a new id would make them another log's)"
      })
    }
    const every = options.everyEntries ?? DEFAULT_CHECKPOINT_ENTRIES
    if (!Number.isSafeInteger(every) || every < 1) {
      return yield* new AuditLog.AuditUnavailable({ description: `${path}: checkpoints.everyEntries must be a positive integer, got ${every}` })
    }
    const interval = Duration.decodeUnknown(options.interval ?? DEFAULT_CHECKPOINT_INTERVAL)
    if (interval._tag === "None" || !Duration.isFinite(interval.value) || Duration.toMillis(interval.value) <= 0) {
      return yield* new AuditLog.AuditUnavailable({ description: `${path}: checkpoints.interval must be a positive duration` })
    }
    let publishedSeq = current().head.seq
    let wake: (() => void) | undefined
    /** `everyEntries` reached while a checkpoint was being stored: the loop goes again without waiting. */
    let due = false
    /** The sink call under way (it may outlive a wait that timed out): the next waits for it, one at a time. */
    let inFlight: Fiber.RuntimeFiber<void> | undefined
    /** Checkpoints not published in a row: the loop backs off before the next (a down sink is not called per batch). */
    let failures = 0
    const logNotPublished = (seq: number, why: string) =>
      Effect.logWarning(`audit log ${path}: the checkpoint of seq ${seq} was not published: ${why}`)
    const warn = (seq: number, why: string) => Effect.zipRight(Effect.sync(() => void failures++), logNotPublished(seq, why))
    const tooLong = `it took longer than ${Duration.format(PUBLISH_TIMEOUT)}`
    /** Waits (bounded) for the sink call under way; false if it is still running. */
    const idle = Effect.suspend(() =>
      inFlight === undefined ? Effect.succeed(true) : Effect.map(Effect.timeout(Fiber.await(inFlight), PUBLISH_TIMEOUT), () => true)
    ).pipe(Effect.catchTag("TimeoutException", () => Effect.succeed(false)))
    const publish = Effect.flatMap(idle, (free) =>
      Effect.suspend(() => {
        const { head, logId } = current()
        if (head.seq <= publishedSeq) return Effect.void
        if (!free) return warn(head.seq, "the sink has not finished storing the previous one")
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const checkpoint = signCheckpoint(signing, logId, head, now)
          // A call that timed out was counted as a failure then: failing later, it is the same failure.
          let timedOut = false
          const call = Effect.suspend(() => {
            const sent = options.sink(checkpoint)
            return Effect.isEffect(sent) ? sent : Effect.tryPromise({ try: () => Promise.resolve(sent), catch: (cause) => cause })
          }).pipe(
            Effect.matchCauseEffect({
              onFailure: (cause) => (timedOut ? logNotPublished : warn)(head.seq, describeCause(cause)),
              onSuccess: () =>
                Effect.sync(() => {
                  publishedSeq = Math.max(publishedSeq, head.seq)
                  failures = 0
                })
            })
          )
          // On a fiber of its own, never interrupted: a sink call cannot be taken back (a Promise's
          // write goes on), so nothing calls the sink again before this one has ended.
          return Effect.flatMap(Effect.forkDaemon(Effect.uninterruptible(call)), (fiber) => {
            inFlight = fiber
            return Effect.timeout(Fiber.await(fiber), PUBLISH_TIMEOUT).pipe(
              Effect.asVoid,
              Effect.catchTag("TimeoutException", () =>
                Effect.zipRight(Effect.sync(() => void (timedOut = true)), warn(head.seq, tooLong)))
            )
          })
        })
      }))
    const woken = Effect.async<void>((resume) => {
      if (due) return resume(Effect.void)
      wake = () => {
        wake = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        wake = undefined
      })
    })
    const intervalMillis = Duration.toMillis(interval.value)
    const backoff = Effect.suspend(() =>
      failures === 0 ?
        Effect.void :
        Effect.sleep(Math.min(FIRST_BACKOFF_MILLIS * 2 ** Math.min(failures - 1, 30), intervalMillis))
    )
    const loop = Effect.forever(
      Effect.zipRight(
        Effect.raceFirst(woken, Effect.sleep(interval.value)),
        Effect.zipRight(Effect.sync(() => (due = false)), Effect.zipRight(publish, backoff))
      )
    )
    // Forked inside the (uninterruptible) acquire: interruptible again, so the race and the close can stop it.
    // The close's own publish waits for a sink call still under way before it calls the sink again.
    yield* Effect.acquireRelease(Effect.forkDaemon(Effect.interruptible(loop)), (fiber) => Effect.zipRight(Fiber.interrupt(fiber), publish))
    return {
      written: (seq) => {
        if (seq - publishedSeq < every) return
        if (wake !== undefined) wake()
        else due = true
      }
    }
  })

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const squashed = Cause.squash(cause)
  return squashed instanceof Error ? squashed.message : typeof squashed === "string" ? squashed : String(squashed)
}

/** The log's signer: the process's signing worker unless `inline` is asked for. */
const makeSigner = (options: FileStoreOptions, signing: SigningKey, path: string): Effect.Effect<Signer> =>
  options.signing === "inline" ?
    Effect.succeed(inlineSigner(signing)) :
    Effect.sync(() =>
      workerSigner(signing, (reason) =>
        Effect.logWarning(`audit log ${path}: entries are signed on the main thread for now; the signing worker: ${reason}`))
    )

/**
 * Opens (or creates) the file, recovers its head, moves a torn tail aside and
 * starts the writer.
 *
 * @internal
 */
export const makeFileStore = (
  options: FileStoreOptions,
  signing: SigningKey
): Effect.Effect<Store, AuditLog.AuditUnavailable | AuditLog.AuditCorrupted, FileSystem.FileSystem | Scope.Scope> =>
  // The store's own resources go in a scope of their own whose finalizers run one after another, in
  // reverse order, whatever the caller's scope does (a scope with parallel finalizers would otherwise
  // close the file, and stop the writer, while the writer drains, or the signing worker writes to it).
  Effect.flatMap(Scope.Scope, (outer) =>
    Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (own) => Scope.extend(openFileStore(options, signing), own)))

const openFileStore = (
  options: FileStoreOptions,
  signing: SigningKey
): Effect.Effect<Store, AuditLog.AuditUnavailable | AuditLog.AuditCorrupted, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = options.path
    const fsync = (options.durability ?? "fsync") === "fsync"
    const failWith = (what: string) => (cause: unknown) =>
      new AuditLog.AuditUnavailable({ description: `${path}: ${what}: ${describe(cause)}`, cause })

    yield* makeDirectories(fs, dirname(path)).pipe(Effect.mapError(failWith("cannot create its directory")))
    yield* acquireLock(fs, path)

    const existed = yield* fs.exists(path).pipe(Effect.mapError(failWith("cannot stat")))
    let head: Head = emptyHead
    let logId = options.logId
    let recovered: { readonly [key: string]: Json } | undefined
    if (existed) {
      const { tornBytes, verifier } = yield* scanFile(fs, path, signing.verify, { logId })
      const report = verifier.report()
      if (!report.valid) return yield* new AuditLog.AuditCorrupted({ path, report })
      head = verifier.head
      logId = verifier.currentLogId ?? logId
      if (report.tornTail !== undefined && tornBytes !== undefined) {
        recovered = yield* moveTornTail(fs, path, report.tornTail.offset, tornBytes).pipe(
          Effect.mapError(failWith("cannot move its torn tail aside"))
        )
      }
    }
    const chainLogId = logId ?? newId("log")

    const file = yield* fs.open(path, { flag: "a" }).pipe(Effect.mapError(failWith("cannot open for appending")))
    if (!existed) {
      yield* file.sync.pipe(Effect.mapError(failWith("cannot sync")))
      yield* syncDirectory(fs, dirname(path))
    }
    let committedBytes = Number((yield* file.stat.pipe(Effect.mapError(failWith("cannot stat")))).size)

    const checkpoints = options.checkpoints === undefined ?
      undefined :
      yield* makeCheckpointPublisher(options.checkpoints, options.logId, signing, path, () => ({ head, logId: chainLogId }))
    const signer = yield* makeSigner(options, signing, path)
    // Made once: a generator closure per batch costs V8 about 2 µs to set up.
    const writeBatch = Effect.fnUntraced(function*(drafts: ReadonlyArray<Draft>) {
      const now = yield* Clock.currentTimeMillis
      // The signing worker appends and syncs the batch itself when it signs it (`written`).
      const signed = yield* signer.sign(head, chainLogId, drafts, now, { fd: file.fd, sync: fsync, size: committedBytes })
      if (signed.written === undefined) {
        yield* file.writeAll(signed.bytes)
        if (fsync) yield* file.sync
      }
      head = signed.head
      committedBytes += signed.written ?? signed.bytes.length
      checkpoints?.written(head.seq)
      return signed.entryAt
    })
    const writeFailed = failWith("write failed; the log accepts no more entries")
    const commit = (drafts: ReadonlyArray<Draft>): Effect.Effect<EntryAt, AuditLog.AuditUnavailable> =>
      Effect.mapError(writeBatch(drafts), writeFailed)

    const writer = yield* makeBatchWriter({ commit, maxBatch: MAX_BATCH, poisonOnFailure: true, name: `audit log ${path}` })

    if (recovered !== undefined) {
      yield* Effect.logWarning(
        `audit log ${path}: a torn final line (${recovered.dropped_bytes} bytes, crash mid-write, never acknowledged) ` +
          `was moved to ${recovered.broken_file}`
      )
      yield* writer.append({ sessionId: "", userId: null, runId: "", actor: "system", action: "log_recovered", payload: recovered })
    }

    return {
      append: writer.append,
      submit: writer.submit,
      query: (filter) =>
        Effect.suspend(() => Stream.runCollect(streamEntries(fs, path, filter, committedBytes))).pipe(
          Effect.map((chunk) => Array.from(chunk))
        ),
      // Up to what the log has acknowledged, then checked against the writer's head (as the Postgres
      // store checks its head row): every byte read was acknowledged, so entries missing at the end,
      // or a line cut short, is tampering, not a crash.
      verify: Effect.suspend(() => {
        const expected = head
        return Effect.map(
          scanFile(fs, path, signing.verify, { logId: chainLogId, bytesToRead: committedBytes }),
          ({ verifier }) => {
            if (verifier.ok) {
              const last = verifier.head
              if (last.seq !== expected.seq) {
                verifier.fail(
                  "seq_gap",
                  last.seq + 1,
                  last.seq + 1,
                  `the log has acknowledged ${expected.seq} entries, but the file's entries end at seq ${last.seq}`
                )
              } else if (last.hash !== expected.hash) {
                verifier.fail("chain", last.seq, last.seq, `the hash of seq ${last.seq} is not the one the log acknowledged`)
              }
            }
            return verifier.report()
          }
        )
      })
    } satisfies Store
  })

/**
 * Appends the torn bytes to `<path>.broken` (kept, never overwritten), syncs
 * it, then cuts them off the log and syncs that. A crash in between leaves the
 * bytes in both places, never in neither.
 */
const moveTornTail = (
  fs: FileSystem.FileSystem,
  path: string,
  offset: number,
  bytes: Uint8Array
): Effect.Effect<{ readonly [key: string]: Json }, PlatformError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const brokenPath = `${path}.broken`
      const broken = yield* fs.open(brokenPath, { flag: "a" })
      yield* broken.writeAll(bytes)
      yield* broken.sync
      // A new `.broken`'s entry too, before the bytes leave the log.
      yield* syncDirectory(fs, dirname(path))
      const log = yield* fs.open(path, { flag: "r+" })
      yield* log.truncate(offset)
      yield* log.sync
      return {
        reason: "torn_tail",
        offset,
        dropped_bytes: bytes.length,
        dropped_sha256: sha256Hex(bytes),
        broken_file: basename(brokenPath)
      }
    })
  )
