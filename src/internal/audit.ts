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
import { buildEntry, type Draft, emptyHead, matches, type SigningKey, signingKey, verifyAll } from "./auditChain.js"
import { toJson } from "./auditJcs.js"
import { describeFailure } from "./describe.js"
import { newId } from "./ids.js"
import { serviceSpans, withServiceSpan } from "./spans.js"

/** How an append ended. @internal */
export type Outcome = Exit.Exit<AuditLog.AuditEntry, AuditLog.AuditUnavailable>

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
    return {
      sessionId: context.sessionId,
      userId: context.userId,
      runId: context.runId,
      actor: input.actor,
      action,
      payload: toJson(input.payload, redact)
    }
  }
  // The hot path (about nine appends per agent turn): the run context and the
  // span switch are read in one step rather than one effect each.
  const append: AuditLog.Service["append"] = (input) => {
    const action = redact(input.action)
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
      storeSubmit(draftOf(fiber, input, redact(input.action)), () => clock.unsafeCurrentTimeMillis(), done)
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
    submit: (draft, now, done) => done(Exit.succeed(push(draft, now()))),
    query: (filter) => Effect.sync(() => entries.filter((entry) => matches(entry, filter))),
    verify: Effect.sync(() => verifyAll(entries, signing.verify, { logId }))
  }
}

// ---- single writer with group commit ---------------------------------------------

interface Pending {
  readonly draft: Draft
  /** Resumes the appending fiber (a no-op once it was interrupted), or reports a submitted entry. */
  readonly resume: (outcome: Outcome) => void
}

/** @internal */
export interface BatchWriterOptions {
  /** Writes a batch atomically and returns its entries in order; fails the whole batch otherwise. */
  readonly commit: (drafts: ReadonlyArray<Draft>) => Effect.Effect<ReadonlyArray<AuditLog.AuditEntry>, AuditLog.AuditUnavailable>
  readonly maxBatch: number
  /**
   * After a failed commit, fail every later append too. Right for files: after
   * a failed write or fsync the state of the file is unknown (fsyncgate).
   */
  readonly poisonOnFailure: boolean
  readonly name: string
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
): Effect.Effect<Pick<Store, "append"> & Required<Pick<Store, "submit">>, never, Scope.Scope> =>
  Effect.gen(function*() {
    // The hand-off is a plain array and the writer's resume callback: an effect
    // `Queue` builds each batch as a persistent Chunk, one node per append.
    let pending: Array<Pending> = []
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
      if (pending.length > 0 || closed) return resume(Effect.void)
      wake = () => resume(Effect.void)
      return Effect.sync(() => {
        wake = undefined
      })
    })

    /** Completes every append of `batch`, in place: one effect for the batch, not one per append. */
    const settle = (batch: ReadonlyArray<Pending>, exitOf: (i: number) => Outcome) =>
      Effect.sync(() => {
        for (let i = 0; i < batch.length; i++) batch[i]!.resume(exitOf(i))
      })

    const commitBatch = (batch: ReadonlyArray<Pending>) => {
      if (poisoned !== undefined) {
        const failed = Exit.fail(poisoned)
        return settle(batch, () => failed)
      }
      return options.commit(batch.map((pending) => pending.draft)).pipe(
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
            const failed = Exit.fail(error)
            return Effect.zipRight(Effect.logError(`${options.name}: ${error.message}`), settle(batch, () => failed))
          },
          onSuccess: (entries) => settle(batch, (i) => Exit.succeed(entries[i]!))
        })
      )
    }

    const loop: Effect.Effect<void> = Effect.gen(function*() {
      while (true) {
        if (pending.length === 0) {
          // Closed and drained: every append made before the close is settled.
          if (closed) return
          yield* work
          continue
        }
        let batch: Array<Pending>
        if (pending.length <= options.maxBatch) {
          batch = pending
          pending = []
        } else {
          batch = pending.splice(0, options.maxBatch)
        }
        yield* commitBatch(batch)
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

    // The hand-off in one step, with the fiber's own resume callback: the queue
    // is unbounded, so an offer never waits, and a `Deferred` per append costs
    // more than the rest of the hand-off.
    const enqueue = (draft: Draft, resume: (outcome: Outcome) => void) => {
      if (closed) resume(Exit.fail(new AuditLog.AuditUnavailable({ description: `${options.name} is closed` })))
      else if (poisoned !== undefined) resume(Exit.fail(poisoned))
      else {
        pending.push({ draft, resume })
        if (wake !== undefined) wakeWriter()
      }
    }
    return {
      append: (draft: Draft) => Effect.async<AuditLog.AuditEntry, AuditLog.AuditUnavailable>((resume) => enqueue(draft, resume)),
      submit: (draft: Draft, _now: () => number, done: (outcome: Outcome) => void) => enqueue(draft, done)
    }
  })
