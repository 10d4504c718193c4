import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Secrets from "../Secrets.js"
import { describeFailure } from "./describe.js"

/**
 * How a guarded user callback (approval handler or hook) ended.
 *
 * @internal
 */
export type Guarded<A> =
  | { readonly _tag: "Done"; readonly value: A }
  | { readonly _tag: "Failed"; readonly cause: Cause.Cause<unknown> }
  | { readonly _tag: "TimedOut" }

const timedOut: Guarded<never> = { _tag: "TimedOut" }

const settled = <A>(exit: Exit.Exit<A, unknown>): Guarded<A> =>
  Exit.isSuccess(exit) ? { _tag: "Done", value: exit.value } : { _tag: "Failed", cause: exit.cause }

/**
 * Runs a user callback with a deadline. A synchronous throw, a failure, a
 * defect and a self-interruption all become `Failed`. The callback runs
 * disconnected, so neither the deadline nor an interruption of the caller
 * waits for a callback that ignores interruption.
 *
 * A callback that answers with an already-completed effect (`Effect.succeed`,
 * `Effect.fail`, ...) cannot outlive any deadline, so its answer is taken as
 * is: no fiber, no timer.
 *
 * @internal
 */
export const guard = <A>(
  callback: () => Effect.Effect<A, unknown>,
  timeout: Duration.Duration
): Effect.Effect<Guarded<A>> =>
  Effect.suspend(() => {
    const guarded = guardNow(callback, timeout)
    return Effect.isEffect(guarded) ? guarded : Effect.succeed(guarded)
  })

/**
 * {@link guard} called now, in the caller's step: the outcome itself when
 * the callback threw or answered with an already-completed effect, else
 * the effect that waits for it. Call it where the callback may run (inside
 * the effect that stands for the call).
 *
 * @internal
 */
export const guardNow = <A>(
  callback: () => Effect.Effect<A, unknown>,
  timeout: Duration.Duration
): Guarded<A> | Effect.Effect<Guarded<A>> => {
  let answer: Effect.Effect<A, unknown>
  try {
    answer = callback()
  } catch (error) {
    return { _tag: "Failed", cause: Cause.die(error) }
  }
  if (Exit.isExit(answer)) return settled(answer as Exit.Exit<A, unknown>)
  if (!Effect.isEffect(answer)) {
    // A plain function's value, or a Promise (an async function given where an Effect belongs).
    return { _tag: "Failed", cause: Cause.die(new TypeError(`the callback answered ${describeAnswer(answer)}, not an Effect`)) }
  }
  return answer.pipe(
    Effect.disconnect,
    Effect.exit,
    Effect.timeoutTo({ duration: timeout, onSuccess: settled, onTimeout: () => timedOut })
  )
}

const describeAnswer = (answer: unknown): string =>
  answer === null ? "null" : typeof answer === "object" && typeof (answer as PromiseLike<unknown>).then === "function" ?
  "a Promise (use the layerPromise constructor for async functions)" :
  typeof answer

/**
 * Adapts a Promise callback: its signal aborts when the deadline passes or
 * the caller is interrupted; a synchronous throw or a rejection is a failure.
 *
 * @internal
 */
export const fromPromise = <A>(run: (signal: AbortSignal) => PromiseLike<A> | A): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: (signal) => Promise.resolve(run(signal)), catch: (error) => error })

/**
 * The redaction of a layer: the Secrets service's when one is in its context
 * (it also masks handed-out values), the key-shape patterns otherwise.
 *
 * @internal
 */
export const layerRedact: Effect.Effect<(text: string) => string> = Effect.map(
  Effect.serviceOption(Secrets.Secrets),
  Option.match({ onNone: () => Secrets.redactPatterns, onSome: (secrets) => secrets.redact })
)

/** @internal */
export const safeJson = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** @internal */
export const describeCause = (cause: Cause.Cause<unknown>): string => describeFailure(Cause.squash(cause))
