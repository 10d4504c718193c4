/**
 * Who signs the audit file's batches: the main thread itself, or the
 * process's signing worker (`auditSignWorker.ts`), which takes the canonical
 * JSON, the HMAC and the chain hash of every entry off the main thread.
 *
 * The worker is an optimization only. It is started in the background;
 * until it is ready, for small batches, and whenever it cannot sign a batch
 * (it could not start, died, did not answer in time, answered something
 * that does not fit), the batch is signed on the main thread. No append
 * waits for the worker to start, and none fails because of it.
 *
 * Given the log file ({@link FileTarget}), the worker also appends the batch
 * to it and syncs it. If it fails in a way that leaves unknown whether it
 * wrote (it died, did not answer, answered something that does not fit),
 * the file is cut back to where the batch began once the worker has
 * stopped, and the batch is signed and written on the main thread: nothing
 * is written twice. If it reports that appending or syncing failed, the
 * batch fails as a failed write on the main thread would.
 *
 * @internal
 */
import { fstatSync, fsyncSync, ftruncateSync } from "node:fs"
import { Worker } from "node:worker_threads"
import * as Effect from "effect/Effect"
import { batchEntryAt, type Draft, type EntryAt, type Head, signBatch, type SigningKey } from "./auditChain.js"
import { READY, READY_PREFIX, type SignReply, type SignRequest, WORKER_DATA } from "./auditSignProtocol.js"

/**
 * A signed batch: its entries (each built when asked for), the bytes to
 * append, the chain's new head. `written`: the signer appended the bytes to
 * the file itself (and synced it if asked), this many; `bytes` is then empty.
 *
 * @internal
 */
export interface Signed {
  readonly entryAt: EntryAt
  readonly bytes: Uint8Array
  readonly written?: number | undefined
  readonly head: Head
}

/** The log file a signer may append a batch to itself. @internal */
export interface FileTarget {
  /** Open for appending. */
  readonly fd: number
  readonly sync: boolean
  /** The file's size before this batch: where it is cut back to if part of the batch may be in it. */
  readonly size: number
}

/** @internal */
export interface Signer {
  /**
   * Signs `drafts` after `head`, and may append them to `file` itself
   * (`Signed.written`). Fails only when appending or syncing `file` failed,
   * so that it may hold part of the batch.
   */
  readonly sign: (
    head: Head,
    logId: string,
    drafts: ReadonlyArray<Draft>,
    now: number,
    file?: FileTarget
  ) => Effect.Effect<Signed, Error>
}

const encoder = new TextEncoder()

const signInline = (
  signing: SigningKey,
  head: Head,
  logId: string,
  drafts: ReadonlyArray<Draft>,
  now: number
): Signed => {
  const signed = signBatch(head, logId, signing, drafts, now)
  return {
    entryAt: batchEntryAt(head, logId, signing.keyId, drafts, signed),
    bytes: encoder.encode(signed.text),
    head: signed.head
  }
}

/** Signs on the calling thread. @internal */
export const inlineSigner = (signing: SigningKey): Signer => ({
  sign: (head, logId, drafts, now) => Effect.sync(() => signInline(signing, head, logId, drafts, now))
})

// ---- the worker ----------------------------------------------------------------------

/**
 * Batches smaller than this are signed on the main thread: a round trip to
 * the worker costs the main thread about as much as signing a few entries
 * (about 4 µs each) there.
 */
const MIN_WORKER_BATCH = 8

/**
 * Tests only: `makeWorker` makes the next workers (a broken one, say)
 * instead of the real one; the time limits can be shortened.
 *
 * @internal
 */
export const testing: {
  makeWorker: (() => Worker) | undefined
  /** How long a starting worker may take to listen. */
  startupTimeoutMillis: number
  /** How long the worker may take to answer a batch (it signs one in milliseconds). */
  answerTimeoutMillis: number
} = { makeWorker: undefined, startupTimeoutMillis: 10_000, answerTimeoutMillis: 10_000 }

/** After the worker fails, batches are signed on the main thread for this long before it is tried again. */
const COOL_DOWN_MILLIS = 30_000

/** Batches the signing worker has signed, and bytes it has appended, in this process (tests check it did the work). @internal */
export const workerStats = { batches: 0, written: 0 }

type Ok = Extract<SignReply, { readonly ok: true }>

/**
 * Why the worker did not sign a batch. `wrote`: whether it may have appended
 * part of it to the file — `true` when it said appending or syncing failed,
 * `"unknown"` when it never said (it died, did not answer, could not be read).
 */
interface Unsigned {
  readonly reason: string
  readonly wrote: boolean | "unknown"
}

/**
 * The ready worker. It keeps the process alive only while it has a batch to
 * answer.
 */
class SignWorker {
  private readonly pending = new Map<number, (reply: Ok | Unsigned) => void>()
  private nextId = 1
  /** Why the worker can sign no more, once it cannot. */
  private gone: string | undefined
  /** Settles once the ended worker's thread has stopped. */
  private stopping: Promise<unknown> | undefined

  constructor(private readonly worker: Worker, private readonly onGone: (self: SignWorker, reason: string) => void) {
    worker.on("message", (reply: SignReply) => {
      const settle = this.pending.get(reply.id)
      if (settle === undefined) return
      this.forget(reply.id)
      // A failure that does not say it wrote nothing may have written something: the file is checked.
      settle(reply.ok ? reply : { reason: `it failed: ${reply.error}`, wrote: reply.wrote === false ? false : reply.wrote ?? "unknown" })
    })
    worker.on("messageerror", (error) => this.fail(`an answer could not be read: ${error.message}`))
    worker.on("error", (error) => this.fail(`it failed: ${error.message}`))
    worker.on("exit", (code) => this.fail(`it exited (code ${code})`))
    // After the listeners: adding a "message" listener makes the port keep the process alive again.
    worker.unref()
  }

  get alive(): boolean {
    return this.gone === undefined
  }

  private forget(id: number): void {
    this.pending.delete(id)
    if (this.pending.size === 0) this.worker.unref()
  }

  /** Fails every batch it has and ends it. */
  fail(reason: string): void {
    if (this.gone !== undefined) return
    this.gone = reason
    const settles = [...this.pending.values()]
    this.pending.clear()
    this.worker.unref()
    this.stopping = this.worker.terminate()
    for (const settle of settles) settle({ reason, wrote: "unknown" })
    this.onGone(this, reason)
  }

  /** Waits until the thread of this ended worker has stopped: nothing it was doing is under way any more. */
  stopped(): Effect.Effect<void> {
    return Effect.promise(() => (this.stopping ?? this.worker.terminate()).then(() => undefined, () => undefined))
  }

  request(request: Omit<SignRequest, "id">): Effect.Effect<Ok, Unsigned> {
    return Effect.async<Ok, Unsigned>((resume) => {
      if (this.gone !== undefined) return resume(Effect.fail({ reason: this.gone, wrote: false }))
      const id = this.nextId++
      const limit = testing.answerTimeoutMillis
      const deadline = setTimeout(() => this.fail(`it did not answer a batch within ${limit / 1000} s`), limit)
      deadline.unref()
      this.pending.set(id, (reply) => {
        clearTimeout(deadline)
        resume("ok" in reply ? Effect.succeed(reply) : Effect.fail(reply))
      })
      if (this.pending.size === 1) this.worker.ref()
      try {
        this.worker.postMessage({ ...request, id } satisfies SignRequest)
      } catch (error) {
        clearTimeout(deadline)
        this.forget(id)
        return resume(Effect.fail({ reason: `the batch could not be sent to it: ${String(error)}`, wrote: false }))
      }
      return Effect.sync(() => {
        clearTimeout(deadline)
        this.forget(id)
      })
    })
  }

  terminate(): Promise<number> {
    return this.worker.terminate()
  }
}

/**
 * A new worker on the module next to this one; the literal
 * `new Worker(new URL(..., import.meta.url))` lets bundlers that support it
 * emit the worker too. Run from the TypeScript sources (the tests), a
 * bootstrap registers `tsx` in the worker first.
 */
const newWorker = (): Worker => {
  if (!import.meta.url.endsWith(".ts")) {
    return new Worker(new URL("./auditSignWorker.js", import.meta.url), { workerData: WORKER_DATA })
  }
  const module = JSON.stringify(new URL("./auditSignWorker.ts", import.meta.url).href)
  return new Worker(`import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${module}) })`, {
    eval: true,
    workerData: WORKER_DATA
  })
}

/** Why the worker last failed: `permanent` when trying again cannot help. */
interface Failure {
  readonly reason: string
  readonly permanent: boolean
  readonly retryAt: number
  /** Counts failures, so each log warns once per failure. */
  readonly generation: number
}

let ready: SignWorker | undefined
let starting: Promise<void> | undefined
let failure: Failure | undefined
let generation = 0

const failed = (reason: string, permanent: boolean): void => {
  failure = { reason, permanent, retryAt: Date.now() + COOL_DOWN_MILLIS, generation: ++generation }
}

/** The error codes of a worker whose module cannot be found. */
const MODULE_MISSING = new Set<unknown>(["MODULE_NOT_FOUND", "ERR_MODULE_NOT_FOUND", "ERR_WORKER_PATH"])

/** Starts a worker; resolves once it listens, rejects with a reason (and whether it is permanent). */
const start = (): Promise<SignWorker> =>
  new Promise<SignWorker>((resolve, reject) => {
    let worker: Worker
    try {
      worker = (testing.makeWorker ?? newWorker)()
    } catch (error) {
      return reject({ reason: `it could not be created: ${String(error)}`, permanent: true })
    }
    // A starting worker never keeps the process alive.
    worker.unref()
    const limit = testing.startupTimeoutMillis
    const timer = setTimeout(() => {
      cleanup()
      void worker.terminate()
      reject({ reason: `it did not start within ${limit / 1000} s`, permanent: false })
    }, limit)
    timer.unref()
    const cleanup = () => {
      clearTimeout(timer)
      worker.off("message", onMessage)
      worker.off("error", onError)
      worker.off("exit", onExit)
    }
    const onMessage = (message: unknown) => {
      if (typeof message !== "string" || !message.startsWith(READY_PREFIX)) return
      cleanup()
      if (message !== READY) {
        void worker.terminate()
        return reject({ reason: `its protocol (${message}) is not this library's (${READY})`, permanent: true })
      }
      resolve(
        new SignWorker(worker, (self, reason) => {
          if (ready !== self) return
          ready = undefined
          failed(reason, false)
        })
      )
    }
    const onError = (error: Error & { readonly code?: unknown }) => {
      cleanup()
      void worker.terminate()
      // The worker's module missing (a bundle that left it out): trying again cannot help.
      reject({ reason: error.message, permanent: MODULE_MISSING.has(error.code) })
    }
    const onExit = (code: number) => {
      cleanup()
      reject({ reason: `it exited (code ${code}) before listening`, permanent: false })
    }
    worker.on("message", onMessage)
    worker.on("error", onError)
    worker.on("exit", onExit)
    // Listening for its first message references the worker again.
    worker.unref()
  })

/** Starts a worker in the background, unless one is ready or starting, or the last failure says to wait. */
const kick = (): void => {
  if ((ready !== undefined && ready.alive) || starting !== undefined) return
  if (failure !== undefined && (failure.permanent || Date.now() < failure.retryAt)) return
  starting = start().then(
    (worker) => {
      ready = worker
      failure = undefined
    },
    (why: { readonly reason: string; readonly permanent: boolean }) => failed(why.reason, why.permanent)
  ).finally(() => {
    starting = undefined
  })
}

/**
 * The answer fits the batch: its bytes (or, when it wrote them, how many),
 * one signature and one hash per draft, the head that many entries on.
 */
const fits = (reply: Ok, head: Head, drafts: ReadonlyArray<Draft>, wrote: boolean): boolean =>
  (wrote ?
    typeof reply.written === "number" && Number.isSafeInteger(reply.written) && reply.written > 0 :
    reply.bytes instanceof Uint8Array && reply.written === undefined) &&
  typeof reply.chain === "string" && reply.chain.length === 128 * drafts.length &&
  typeof reply.head === "object" && reply.head !== null && reply.head.seq === head.seq + drafts.length &&
  typeof reply.head.hash === "string" && reply.head.hash.length === 64 && typeof reply.head.timestampMillis === "number"

/** How many bytes `file` holds past the size the log knew; a description of the failure if it cannot tell. */
const grownBy = (file: FileTarget): number | string => {
  try {
    return fstatSync(file.fd).size - file.size
  } catch (error) {
    return `an unknown number (fstat failed: ${error instanceof Error ? error.message : String(error)})`
  }
}

/**
 * A signer on the process's signing worker (see the module comment). `warn`
 * is told, once per failure, why the worker cannot sign.
 *
 * @internal
 */
export const workerSigner = (signing: SigningKey, warn: (reason: string) => Effect.Effect<void>): Signer => {
  // A compact copy: a Buffer may be a view of a larger pool, all of which a message would copy.
  const key = new Uint8Array(signing.key.bytes)
  const keyId = signing.keyId
  let warned = 0
  const inline = (head: Head, logId: string, drafts: ReadonlyArray<Draft>, now: number) =>
    Effect.suspend(() => {
      const signed = signInline(signing, head, logId, drafts, now)
      if (failure === undefined || failure.generation <= warned) return Effect.succeed(signed)
      warned = failure.generation
      return Effect.as(warn(failure.reason), signed)
    })
  /**
   * After `worker` failed a batch it may have written part of: once its
   * thread has stopped, the file goes back to the size it had before the
   * batch (synced), so the batch can be written again from the start.
   */
  const cutBack = (worker: SignWorker, file: FileTarget): Effect.Effect<void, Error> =>
    Effect.flatMap(worker.stopped(), () =>
      Effect.try({
        try: () => {
          const size = fstatSync(file.fd).size
          if (size === file.size) return
          // Shorter than what the log has written: cut back to a larger size would pad it with zeros.
          if (size < file.size) throw new Error(`it holds ${size} bytes, fewer than the ${file.size} the log has written`)
          ftruncateSync(file.fd, file.size)
          if (file.sync) fsyncSync(file.fd)
        },
        catch: (error) =>
          new Error(`the signing worker may have written part of a batch, and the file could not be cut back: ${
            error instanceof Error ? error.message : String(error)
          }`, {
            cause: error
          })
      }))
  kick()
  return {
    sign: (head, logId, drafts, now, file) =>
      Effect.suspend(() => {
        if (drafts.length < MIN_WORKER_BATCH) return inline(head, logId, drafts, now)
        kick()
        const worker = ready
        if (worker === undefined || !worker.alive) return inline(head, logId, drafts, now)
        const request = {
          keyId,
          key,
          logId,
          head,
          now,
          drafts: JSON.stringify(drafts),
          fd: file?.fd,
          sync: file?.sync
        }
        /** Signs (and has the caller write) on the main thread; first undoes what the worker may have written. */
        const instead = (reason: string, wrote: boolean | "unknown") => {
          // A worker that failed a batch is not trusted with the next: it is ended (a no-op if it is gone already).
          worker.fail(reason)
          const signed = inline(head, logId, drafts, now)
          return file === undefined || wrote === false ? signed : Effect.zipRight(cutBack(worker, file), signed)
        }
        return Effect.matchEffect(worker.request(request), {
          onFailure: (unsigned): Effect.Effect<Signed, Error> =>
            // The file may hold part of the batch and could not take it: the batch fails as a failed write would.
            unsigned.wrote === true ?
              Effect.fail(new Error(`the signing worker could not append the batch: ${unsigned.reason}`)) :
              instead(unsigned.reason, unsigned.wrote),
          onSuccess: (reply) => {
            if (!fits(reply, head, drafts, file !== undefined)) return instead("its answer does not fit the batch", "unknown")
            // What it says it wrote is what the file grew by (one fstat): else the log's idea of its size, and
            // with it every later read and cut-back, would drift from the file.
            if (file !== undefined) {
              const grown = grownBy(file)
              if (grown !== reply.written) {
                return instead(`it reported appending ${reply.written} bytes, but the file grew by ${grown}`, "unknown")
              }
            }
            workerStats.batches++
            if (reply.written !== undefined) workerStats.written += reply.written
            return Effect.succeed({
              entryAt: batchEntryAt(head, logId, keyId, drafts, reply),
              bytes: reply.bytes,
              written: reply.written,
              head: reply.head
            })
          }
        })
      })
  }
}

/** Tests only: starts the worker (if it can) and waits until it is ready or has failed. @internal */
export const startWorker = async (): Promise<void> => {
  kick()
  await starting
}

/** Tests only: ends the ready worker as a crash would (its failure is recorded). @internal */
export const crashWorker = async (): Promise<void> => {
  await ready?.terminate()
}

/** Tests only: ends the worker (once any start under way has settled) and forgets past failures. @internal */
export const resetWorker = async (): Promise<void> => {
  await starting
  const worker = ready
  // Cleared first, so ending it records no failure.
  ready = undefined
  failure = undefined
  await worker?.terminate()
}

/** Tests only: whether a worker is ready. @internal */
export const workerReady = (): boolean => ready !== undefined && ready.alive
