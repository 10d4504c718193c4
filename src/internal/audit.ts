/**
 * The audit service in front of a store, the in-memory store, and the
 * single-writer batching used by the file and Postgres stores.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as AuditLog from "../AuditLog.js"
import * as RunContext from "../RunContext.js"
import * as Secrets from "../Secrets.js"
import { buildEntry, type Draft, emptyHead, type EntryAt, matches, type SigningKey, signingKey, verifyAll } from "./auditChain.js"
import { toJson, wellFormed } from "./auditJcs.js"
import { describeFailure } from "./describe.js"
import { newId } from "./ids.js"
import { serviceSpans, withServiceSpan } from "./spans.js"

/**
 * How a submitted entry ended: durable, or why not. A submitted entry's
 * object is never read, so none is built for it.
 *
 * @internal
 */
export type Outcome = Exit.Exit<void, AuditLog.AuditUnavailable>

/** The outcome of every durable submitted entry. */
const durable: Outcome = Exit.void

/** What a backend implements; the service adds the run context and redaction. @internal */
export interface Store {
  readonly append: (draft: Draft) => Effect.Effect<AuditLog.AuditEntry, AuditLog.AuditUnavailable>
  /**
   * Takes the entry now, in order with every other append, and calls `done`
   * once it is durable (or failed) — without the caller waiting. `now` reads
   * the caller's clock. Optional: a store without it is awaited instead.
   */
  readonly submit?: (draft: Draft, now: () => number, done: (outcome: Outcome) => void) => void
  readonly query: (filter?: AuditLog.QueryFilter) => Effect.Effect<ReadonlyArray<AuditLog.AuditEntry>, AuditLog.AuditUnavailable>
  readonly verify: Effect.Effect<AuditLog.VerifyReport, AuditLog.AuditUnavailable>
}

/**
 * The redaction audit payloads go through: the Secrets service's (which also
 * masks every value it handed out) when one is in context, else the patterns.
 *
 * @internal
 */
export const currentRedact: Effect.Effect<(text: string) => string> = Effect.map(
  Effect.serviceOption(Secrets.Secrets),
  Option.match({ onNone: () => Secrets.redactPatterns, onSome: (secrets) => secrets.redact })
)

/** The signing key of `options`, or an `AuditUnavailable` saying what is wrong with them. @internal */
export const requireSigningKey = (options: AuditLog.KeyOptions): Effect.Effect<SigningKey, AuditLog.AuditUnavailable> => {
  const signing = signingKey(options)
  return typeof signing === "string"
    ? Effect.fail(new AuditLog.AuditUnavailable({ description: `invalid audit key configuration: ${signing}` }))
    : Effect.succeed(signing)
}

/**
 * Hands an entry to the log on `fiber` (its run context and clock) without
 * waiting for it to be durable: the entry takes its place in the chain at
 * once, and `done` is called with the outcome. Returns false, taking
 * nothing, when the entry must go through `append` instead (service spans
 * on: they time each append).
 *
 * @internal
 */
export type Submit = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  input: AuditLog.AppendInput,
  done: (outcome: Outcome) => void
) => boolean

/**
 * The submit of a service made here, keyed by the service's own `append`:
 * a wrapper that replaces `append` (`{ ...audit, append: mine }`) finds
 * none, so its `append` is still the one called.
 */
const submitters = new WeakMap<AuditLog.Service["append"], Submit>()

/**
 * The {@link Submit} of `service`, if it was made by {@link makeService}
 * over a store that can take entries without the caller waiting.
 *
 * @internal
 */
export const submitterOf = (service: AuditLog.Service): Submit | undefined => submitters.get(service.append)

/** @internal */
export const makeService = (store: Store, redact: (text: string) => string): AuditLog.Service => {
  const draftOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>, input: AuditLog.AppendInput, action: string): Draft => {
    const context = fiber.getFiberRef(RunContext.ref)
    const payload = toJson(input.payload, redact)
    return {
      // Well-formed, as every string of the entry (the user id is validated so): a lone surrogate is not
      // I-JSON, and a verifier in another language would not compute the same signature.
      sessionId: wellFormed(context.sessionId),
      userId: context.userId,
      runId: wellFormed(context.runId),
      actor: input.actor,
      action,
      // The format's payload is an object: anything else (a parsed array or null, a toJSON giving a
      // string) is kept under `value`, not written as an entry its own verifier would reject.
      payload: payload !== null && typeof payload === "object" && !Array.isArray(payload) ? payload : { value: payload }
    }
  }
  // The hot path (about nine appends per agent turn): the run context and the
  // span switch are read in one step rather than one effect each.
  const append: AuditLog.Service["append"] = (input) => {
    const action = redact(wellFormed(input.action))
    return Effect.withFiberRuntime((fiber) => {
      if (!fiber.getFiberRef(serviceSpans)) return store.append(draftOf(fiber, input, action))
      // No stack capture per span.
      return Effect.withSpan(Effect.suspend(() => store.append(draftOf(fiber, input, action))), "AuditLog.append", {
        attributes: { action },
        captureStackTrace: false
      })
    })
  }
  const storeSubmit = store.submit
  if (storeSubmit !== undefined) {
    submitters.set(append, (fiber, input, done) => {
      if (fiber.getFiberRef(serviceSpans)) return false
      const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
      storeSubmit(draftOf(fiber, input, redact(wellFormed(input.action))), () => clock.unsafeCurrentTimeMillis(), done)
      return true
    })
  }
  return {
    enabled: true,
    append,
    query: (filter) => store.query(filter).pipe(withServiceSpan("AuditLog.query")),
    verify: store.verify.pipe(withServiceSpan("AuditLog.verify"))
  }
}

// ---- memory --------------------------------------------------------------------

/** @internal */
export const makeMemoryStore = (signing: SigningKey, logId: string = newId("log")): Store => {
  const entries: Array<AuditLog.AuditEntry> = []
  let head = emptyHead
  const push = (draft: Draft, now: number): AuditLog.AuditEntry => {
    const built = buildEntry(head, logId, signing, draft, now)
    entries.push(built.entry)
    head = built.head
    return built.entry
  }
  return {
    // The read of the clock and the append happen in one synchronous step, so
    // concurrent appends cannot interleave between building and storing.
    append: (draft) =>
      Effect.withFiberRuntime((fiber) => {
        const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
        return Effect.succeed(push(draft, now))
      }),
    submit: (draft, now, done) => {
      push(draft, now())
      done(durable)
    },
    query: (filter) => Effect.sync(() => entries.filter((entry) => matches(entry, filter))),
    verify: Effect.sync(() => verifyAll(entries, signing.verify, { logId }))
  }
}

// ---- single writer with group commit ---------------------------------------------

/**
 * Settles one entry of a batch with its outcome and, once the batch is
 * committed, the batch's entries by index (`index` is the entry's): an
 * awaited append builds its entry from them, a submitted one reads none.
 */
type Settle = (outcome: Outcome, entryAt: EntryAt | undefined, index: number) => void

/** @internal */
export interface BatchWriterOptions {
  /**
   * Writes a batch atomically and gives its entries by index (each built
   * only when asked for); fails the whole batch otherwise.
   */
  readonly commit: (drafts: ReadonlyArray<Draft>) => Effect.Effect<EntryAt, AuditLog.AuditUnavailable>
  readonly maxBatch: number
  /**
   * After a failed commit, fail every later append too. Right for files: after
   * a failed write or fsync the state of the file is unknown (fsyncgate).
   */
  readonly poisonOnFailure: boolean
  readonly name: string
}

/** @internal */
export interface BatchWriter {
  /** Appends an entry and waits until it is durable; gives the entry. */
  readonly append: (draft: Draft) => Effect.Effect<AuditLog.AuditEntry, AuditLog.AuditUnavailable>
  /**
   * Takes an entry now, in order with every other, and calls `done` once it
   * is durable (or failed), as `Store.submit`; `now` is not read (each batch
   * reads the writer's clock).
   */
  readonly submit: (draft: Draft, now: () => number, done: (outcome: Outcome) => void) => void
}

/**
 * One fiber takes appends from a queue in batches and commits each batch as
 * a whole; a caller's append completes once the batch holding it is durable.
 * While one batch is being written and synced, the next one accumulates: that
 * is the group commit. Closing the scope drains what was already submitted.
 *
 * @internal
 */
export const makeBatchWriter = (
  options: BatchWriterOptions
): Effect.Effect<BatchWriter, never, Scope.Scope> =>
  Effect.gen(function*() {
    // The hand-off is two plain arrays (the drafts, ready to commit as they
    // are, and how to settle each) and the writer's resume callback: an
    // effect `Queue` builds each batch as a persistent Chunk, one node per append.
    let drafts: Array<Draft> = []
    let settles: Array<Settle> = []
    let wake: (() => void) | undefined
    let closed = false
    let poisoned: AuditLog.AuditUnavailable | undefined

    const wakeWriter = () => {
      const resume = wake
      wake = undefined
      resume?.()
    }

    /** Waits until there is something to write, or the writer is closing. */
    const work = Effect.async<void>((resume) => {
      if (drafts.length > 0 || closed) return resume(Effect.void)
      wake = () => resume(Effect.void)
      return Effect.sync(() => {
        wake = undefined
      })
    })

    /** Settles every entry of a batch, in place: one effect for the batch, not one per entry. */
    const settle = (batch: ReadonlyArray<Settle>, outcome: Outcome, entryAt?: EntryAt) =>
      Effect.sync(() => {
        for (let i = 0; i < batch.length; i++) batch[i]!(outcome, entryAt, i)
      })

    const commitBatch = (batch: ReadonlyArray<Draft>, batchSettles: ReadonlyArray<Settle>) => {
      if (poisoned !== undefined) return settle(batchSettles, Exit.fail(poisoned))
      return options.commit(batch).pipe(
        // A defect (a bug) fails the batch like a failed write, rather than killing the writer with every append waiting.
        Effect.catchAllDefect((defect) =>
          Effect.fail(
            new AuditLog.AuditUnavailable({
              description: `${options.name}: a batch could not be committed (a bug): ${describeFailure(defect)}`,
              cause: defect
            })
          )
        ),
        Effect.matchEffect({
          onFailure: (error) => {
            if (options.poisonOnFailure) poisoned = error
            return Effect.zipRight(Effect.logError(`${options.name}: ${error.message}`), settle(batchSettles, Exit.fail(error)))
          },
          onSuccess: (entryAt) => settle(batchSettles, durable, entryAt)
        })
      )
    }

    const loop: Effect.Effect<void> = Effect.gen(function*() {
      const max = options.maxBatch
      while (true) {
        if (drafts.length === 0) {
          // Closed and drained: every append made before the close is settled.
          if (closed) return
          yield* work
          continue
        }
        // Everything waiting is taken at once; what arrives meanwhile waits for the next round.
        const taken = drafts
        const takenSettles = settles
        drafts = []
        settles = []
        if (taken.length <= max) {
          yield* commitBatch(taken, takenSettles)
          continue
        }
        // A backlog is committed in full batches, in order: slices of it, rather than
        // splicing each batch off the front of the queue (which moves all the rest). Its
        // last, partial batch goes back before what arrived meanwhile, to fill a batch with it.
        let at = 0
        for (; taken.length - at >= max; at += max) {
          yield* commitBatch(taken.slice(at, at + max), takenSettles.slice(at, at + max))
        }
        if (at < taken.length) {
          drafts = taken.slice(at).concat(drafts)
          settles = takenSettles.slice(at).concat(settles)
        }
      }
    })
    const fiber = yield* Effect.forkScoped(loop)
    // Registered after the fork, so it runs first on close: drain, then stop.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        wakeWriter()
        return Fiber.await(fiber)
      })
    )

    // The hand-off in one step, settled through the appending fiber's resume
    // callback (a no-op once it was interrupted) or the submitter's own: the
    // queue is unbounded, so an offer never waits, and a `Deferred` per append
    // costs more than the rest of the hand-off.
    const enqueue = (draft: Draft, settle: Settle) => {
      if (closed) settle(Exit.fail(new AuditLog.AuditUnavailable({ description: `${options.name} is closed` })), undefined, 0)
      else if (poisoned !== undefined) settle(Exit.fail(poisoned), undefined, 0)
      else {
        drafts.push(draft)
        settles.push(settle)
        if (wake !== undefined) wakeWriter()
      }
    }
    return {
      append: (draft) =>
        Effect.async<AuditLog.AuditEntry, AuditLog.AuditUnavailable>((resume) =>
          enqueue(draft, (outcome, entryAt, index) => resume(entryOfOutcome(outcome, entryAt, index)))
        ),
      // The caller's callback settles the entry itself; the entries are not read.
      submit: (draft, _now, done) => enqueue(draft, done)
    }
  })

/** What an awaited append gives for its entry's outcome: the entry at `index` of its batch, or the failure. */
const entryOfOutcome = (
  outcome: Outcome,
  entryAt: EntryAt | undefined,
  index: number
): Exit.Exit<AuditLog.AuditEntry, AuditLog.AuditUnavailable> => {
  if (outcome._tag === "Failure") return Exit.failCause(outcome.cause)
  if (entryAt === undefined) return Exit.die(new Error("a committed batch gave no entries"))
  try {
    return Exit.succeed(entryAt(index))
  } catch (error) {
    return Exit.die(error)
  }
}
