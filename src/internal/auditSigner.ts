/**
 * Who signs the audit file's batches: the main thread itself, or the
 * process's signing worker (`auditSignWorker.ts`), which takes the HMAC, the
 * chain hash and the canonical JSON of every entry off the main thread.
 *
 * @internal
 */
import { Worker } from "node:worker_threads"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as AuditLog from "../AuditLog.js"
import { buildEntry, type Draft, entriesOfBatch, type Head, type SigningKey } from "./auditChain.js"
import { READY, type SignReply, type SignRequest, WORKER_DATA } from "./auditSignProtocol.js"

/** A signed batch: its entries, the bytes to append, the chain's new head. @internal */
export interface Signed {
  readonly entries: ReadonlyArray<AuditLog.AuditEntry>
  readonly bytes: Uint8Array
  readonly head: Head
}

/** @internal */
export interface Signer {
  /** Signs `drafts` after `head`. */
  readonly sign: (head: Head, logId: string, drafts: ReadonlyArray<Draft>, now: number) => Effect.Effect<Signed>
}

const encoder = new TextEncoder()

/** Signs on the calling thread. @internal */
export const inlineSigner = (signing: SigningKey): Signer => ({
  sign: (head, logId, drafts, now) =>
    Effect.sync(() => {
      let next = head
      const entries: Array<AuditLog.AuditEntry> = []
      let text = ""
      for (const draft of drafts) {
        const built = buildEntry(next, logId, signing, draft, now)
        entries.push(built.entry)
        text += `${built.line}\n`
        next = built.head
      }
      return { entries, bytes: encoder.encode(text), head: next }
    })
})

type Ok = Extract<SignReply, { readonly ok: true }>

/**
 * One worker thread per process, shared by every audit file. It keeps the
 * process alive only while a batch is being signed.
 */
class SignWorker {
  private readonly pending = new Map<number, (reply: Ok | string) => void>()
  private nextId = 1
  /** Why the worker can sign no more, once it cannot. */
  private gone: string | undefined

  constructor(private readonly worker: Worker, private readonly onGone: (self: SignWorker) => void) {
    worker.unref()
    worker.on("message", (reply: SignReply | typeof READY) => {
      if (reply === READY) return
      const settle = this.pending.get(reply.id)
      if (settle === undefined) return
      this.forget(reply.id)
      settle(reply.ok ? reply : `the signing worker failed: ${reply.error}`)
    })
    worker.on("error", (error) => this.fail(`the signing worker failed: ${error.message}`))
    worker.on("exit", (code) => this.fail(`the signing worker exited (code ${code})`))
  }

  get alive(): boolean {
    return this.gone === undefined
  }

  private forget(id: number): void {
    this.pending.delete(id)
    if (this.pending.size === 0) this.worker.unref()
  }

  private fail(reason: string): void {
    if (this.gone !== undefined) return
    this.gone = reason
    this.onGone(this)
    const settles = [...this.pending.values()]
    this.pending.clear()
    this.worker.unref()
    for (const settle of settles) settle(reason)
    void this.worker.terminate()
  }

  request(request: Omit<SignRequest, "id">): Effect.Effect<Ok, string> {
    return Effect.async<Ok, string>((resume) => {
      if (this.gone !== undefined) return resume(Effect.fail(this.gone))
      const id = this.nextId++
      this.pending.set(id, (reply) => resume(typeof reply === "string" ? Effect.fail(reply) : Effect.succeed(reply)))
      if (this.pending.size === 1) this.worker.ref()
      try {
        this.worker.postMessage({ ...request, id } satisfies SignRequest)
      } catch (error) {
        this.forget(id)
        return resume(Effect.fail(`the batch could not be sent to the signing worker: ${String(error)}`))
      }
      return Effect.sync(() => this.forget(id))
    })
  }

  /** Ends the worker (tests: a worker that dies mid-run). */
  terminate(): Promise<number> {
    return this.worker.terminate()
  }
}

/**
 * The worker: the module next to this one. Run from the TypeScript sources
 * (the tests), a bootstrap registers `tsx` in the worker first.
 */
const newWorker = (): Worker => {
  const here = import.meta.url
  if (!here.endsWith(".ts")) return new Worker(new URL("./auditSignWorker.js", here), { workerData: WORKER_DATA })
  const module = JSON.stringify(new URL("./auditSignWorker.ts", here).href)
  return new Worker(`import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${module}) })`, {
    eval: true,
    workerData: WORKER_DATA
  })
}

/** How long a starting worker may take to listen before the log signs inline instead. */
const STARTUP_TIMEOUT = Duration.seconds(10)

let shared: SignWorker | undefined
let starting: Promise<SignWorker> | undefined

/** Tests only: makes the next workers (a broken one, say) instead of the real one. @internal */
export const testing: { makeWorker: (() => Worker) | undefined } = { makeWorker: undefined }

const start = (): Promise<SignWorker> =>
  new Promise<SignWorker>((resolve, reject) => {
    const worker = (testing.makeWorker ?? newWorker)()
    const onGone = (self: SignWorker) => {
      if (shared === self) shared = undefined
    }
    const cleanup = () => {
      worker.off("message", onMessage)
      worker.off("error", onError)
      worker.off("exit", onExit)
    }
    const onMessage = (message: unknown) => {
      if (message !== READY) return
      cleanup()
      resolve(new SignWorker(worker, onGone))
    }
    const onError = (error: Error) => {
      cleanup()
      void worker.terminate()
      reject(error)
    }
    const onExit = (code: number) => {
      cleanup()
      reject(new Error(`it exited (code ${code}) before listening`))
    }
    worker.on("message", onMessage)
    worker.on("error", onError)
    worker.on("exit", onExit)
  })

/** The process's signing worker, started on first use (and again after one has died). */
const sharedWorker: Effect.Effect<SignWorker, string> = Effect.suspend(() => {
  if (shared !== undefined && shared.alive) return Effect.succeed(shared)
  if (starting === undefined) {
    starting = start().then(
      (worker) => {
        shared = worker
        starting = undefined
        return worker
      },
      (error: unknown) => {
        starting = undefined
        throw error
      }
    )
    // Marked handled: a caller that timed out no longer waits for it.
    starting.catch(() => undefined)
  }
  const pending = starting
  return Effect.tryPromise({
    try: () => pending,
    catch: (error) => (error instanceof Error ? error.message : String(error))
  }).pipe(
    Effect.timeoutFail({ duration: STARTUP_TIMEOUT, onTimeout: () => `it did not start within ${Duration.format(STARTUP_TIMEOUT)}` })
  )
})

/** After the worker fails, batches are signed inline for this long before it is tried again. */
const COOL_DOWN_MILLIS = 30_000

/** Batches the signing worker has signed in this process (tests check the worker did the work). @internal */
export const workerStats = { batches: 0 }

/**
 * A signer on the process's signing worker, started here. Signing has no
 * side effect, so whenever the worker cannot sign a batch (it could not
 * start, died, or the batch could not be sent) that batch is signed inline
 * and `warn` is told why; the worker is tried again (a new one started if
 * needed) after a cool-down. No batch fails because of the worker.
 *
 * @internal
 */
export const workerSigner = (signing: SigningKey, warn: (reason: string) => Effect.Effect<void>): Effect.Effect<Signer> =>
  Effect.suspend(() => {
    const inline = inlineSigner(signing)
    // A compact copy: a Buffer may be a view of a larger pool, all of which a message would copy.
    const key = new Uint8Array(signing.key.bytes)
    const keyId = signing.keyId
    let retryAt = 0
    const fellBack = (reason: string) =>
      Effect.suspend(() => {
        retryAt = Date.now() + COOL_DOWN_MILLIS
        return warn(reason)
      })
    const signer: Signer = {
      sign: (head, logId, drafts, now) => {
        if (retryAt > Date.now()) return inline.sign(head, logId, drafts, now)
        return Effect.flatMap(sharedWorker, (worker) => worker.request({ keyId, key, logId, head, now, drafts })).pipe(
          Effect.matchEffect({
            onFailure: (reason) => Effect.zipRight(fellBack(reason), inline.sign(head, logId, drafts, now)),
            onSuccess: (reply) => {
              workerStats.batches++
              return Effect.succeed({
                entries: entriesOfBatch(head, logId, keyId, drafts, reply),
                bytes: reply.bytes,
                head: reply.head
              })
            }
          })
        )
      }
    }
    // Started now, so the first batch does not wait for it.
    return Effect.as(Effect.catchAll(sharedWorker, fellBack), signer)
  })

/** Ends the process's signing worker, if one runs (tests). @internal */
export const terminateSharedWorker = (): Promise<void> =>
  shared === undefined ? Promise.resolve() : shared.terminate().then(() => undefined)
