/**
 * Token, cost and wall-clock budgets, global and per user.
 *
 * Before every model call the agent reserves an estimate of the call
 * ({@link Service.reserve}); afterwards it settles the reservation to the
 * usage the model reported, or releases it if the call failed or was
 * interrupted. A blocked reservation ends the run with
 * `interrupted: true` and `interruptionReason: "budget:<field>"`.
 *
 * @example
 * ```ts
 * import { Budget } from "jeevesagent"
 *
 * // No limits at all.
 * const Unmetered = Budget.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Model from "./Model.js"

/**
 * Running totals of one user, or of everybody.
 *
 * @since 0.1.0
 * @category models
 */
export interface UsageTotals {
  readonly tokensIn: number
  readonly tokensOut: number
  readonly tokensTotal: number
  readonly costUsd: number
}

/**
 * All zeros.
 *
 * @since 0.1.0
 * @category constants
 */
export const zeroTotals: UsageTotals = Object.freeze({ tokensIn: 0, tokensOut: 0, tokensTotal: 0, costUsd: 0 })

/**
 * The result of a check: `ok`, `warn` (with a reason such as
 * `per-user tokens at 85%`) or `blocked` (with the snake_case field name of
 * the cap, such as `per_user_max_tokens`).
 *
 * @since 0.1.0
 * @category models
 */
export type BudgetStatus =
  | { readonly state: "ok" }
  | { readonly state: "warn"; readonly reason: string }
  | { readonly state: "blocked"; readonly reason: string }

/**
 * The answer to {@link Service.reserve}.
 *
 * A `Granted` reservation must be finished exactly once: `settle` with the
 * usage the model reported, or `release` when the call failed or was
 * interrupted. Finishing twice is a no-op.
 *
 * @since 0.1.0
 * @category models
 */
export type Reservation =
  | { readonly _tag: "Blocked"; readonly reason: string }
  | {
    readonly _tag: "Granted"
    /** A soft-warning reason when usage is past `softWarningAt`. */
    readonly warning: string | undefined
    readonly settle: (actual: Model.Usage) => Effect.Effect<void, BudgetUnavailable>
    readonly release: Effect.Effect<void>
  }

/**
 * The budget backend could not be reached. The run is blocked (fail closed):
 * no model call is made unmetered.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetUnavailable extends Schema.TaggedError<BudgetUnavailable>("jeevesagent/BudgetUnavailable")(
  "BudgetUnavailable",
  { description: Schema.String, cause: Schema.optional(Schema.Defect) }
) {
  override get message(): string {
    return `Budget unavailable: ${this.description}`
  }
}

/**
 * The budget service. Every method without a `userId` argument acts for the
 * user of the current `RunContext`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Checks the caps for the current user without reserving anything. */
  readonly allowsStep: Effect.Effect<BudgetStatus, BudgetUnavailable>
  /** Atomically checks the caps and reserves `estimate` for the current user. */
  readonly reserve: (estimate: Model.Usage) => Effect.Effect<Reservation, BudgetUnavailable>
  /** A user's totals (`null` for anonymous); zeros for an unknown or evicted user. */
  readonly usageFor: (userId: string | null) => Effect.Effect<UsageTotals, BudgetUnavailable>
  /** Everybody's totals. */
  readonly globalUsage: Effect.Effect<UsageTotals, BudgetUnavailable>
}

/**
 * The budget service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Budget extends Context.Tag("jeevesagent/Budget")<Budget, Service>() {}

const granted: Reservation = Object.freeze({
  _tag: "Granted",
  warning: undefined,
  settle: () => Effect.void,
  release: Effect.void
})

/**
 * A budget that never blocks and tracks nothing (`usageFor` is always zero).
 * The agent skips the budget gate entirely when it sees this service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({
  allowsStep: Effect.succeed({ state: "ok" } as const),
  reserve: () => Effect.succeed(granted),
  usageFor: () => Effect.succeed(zeroTotals),
  globalUsage: Effect.succeed(zeroTotals)
})

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<Budget> = Layer.succeed(Budget, none)
