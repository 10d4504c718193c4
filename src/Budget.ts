/**
 * Token, cost and wall-clock budgets, global and per user.
 *
 * Before every model call the agent reserves an estimate of the call
 * ({@link Service.reserve}); afterwards it settles the reservation to the
 * usage the model reported, or releases it if the call failed or was
 * interrupted — unless the provider had reported usage before the call
 * failed (a stream cut off after it began: that usage is charged), or part
 * of a streamed answer had reached the caller by then: the provider did the
 * work and its usage is unknown, so the whole estimate is charged (fail
 * closed). A blocked reservation ends the run with
 * `interrupted: true` and `interruptionReason: "budget:<field>"`.
 *
 * The rule, for every cap: a step is **blocked when the scope's committed
 * usage plus its outstanding reservations is already at or over the cap**
 * (`>=`, so a cap of 0 blocks the first step). The step's own estimate is
 * not part of the check — a lone run behaves exactly as if nothing were
 * reserved — but the estimates of calls still in flight are, so K concurrent
 * runs of one user cannot all pass the same last-headroom check: once a
 * call is in flight, the next one sees its estimate. With estimates that
 * bound the real usage, a cap is overshot by at most one call's usage. A
 * model without a `price` has a cost estimate of 0: a cost cap then bounds
 * only the cost already charged, so concurrent calls of one user can each
 * pass its last check; give the model a `price` (`AnthropicModel` has
 * one) for cost caps that hold under concurrency.
 * Global caps are checked first (`max_tokens`, `max_input_tokens`,
 * `max_output_tokens`, `max_cost_usd`, `max_wall_clock`), then the per-user
 * ones (`per_user_...`), then the soft warnings (`tokens at 85%`,
 * `cost at 90%`, `per-user tokens at 85%`, `per-user cost at 90%`).
 *
 * @example
 * ```ts
 * import { Agent, Budget, Model } from "jeevesagent"
 * import { Layer } from "effect"
 *
 * // 50 000 tokens per user per day, $20 for everybody in this process.
 * const BudgetLive = Budget.layer(
 *   { perUserMaxTokens: 50_000, perUserWindow: "1 day", maxCostUsd: 20 },
 *   { maxUsers: 10_000, userIdleTtl: "2 days" }
 * )
 *
 * const AgentLive = Agent.layer().pipe(
 *   Layer.provide(Model.layerEcho()),
 *   Layer.provide(Layer.mergeAll(Agent.layerDefaults, BudgetLive))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as internal from "./internal/budget.js"
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
 * A `Granted` reservation must be finished: `settle` with the usage the
 * model reported (it replaces the estimate; a figure that is not a finite
 * non-negative number is charged at the estimate), or `release` when the
 * call failed or was interrupted (it removes the estimate, charging
 * nothing). Only the first finish counts; later ones are no-ops. Settling
 * also starts the user's wall clock on their first charge.
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
  /**
   * Atomically checks the caps for the current user and, unless blocked,
   * reserves `estimate` against the user and the global totals.
   */
  readonly reserve: (estimate: Model.Usage) => Effect.Effect<Reservation, BudgetUnavailable>
  /**
   * A user's committed totals (`null` for anonymous), in the current window
   * when there are windows; zeros for an unknown or evicted user.
   * Outstanding reservations are not included.
   */
  readonly usageFor: (userId: string | null) => Effect.Effect<UsageTotals, BudgetUnavailable>
  /** Everybody's committed totals. */
  readonly globalUsage: Effect.Effect<UsageTotals, BudgetUnavailable>
  /**
   * Whether a cost cap (`maxCostUsd`, `perUserMaxCostUsd`) is configured.
   * `createAgent` then makes a Claude model without a known price a
   * configuration error instead of counting its calls as $0, which no cost
   * cap would ever block. Optional for services of your own.
   */
  readonly costCapped?: boolean | undefined
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

/**
 * The caps of a budget. Every field is optional; an absent cap never blocks.
 *
 * - Token caps are non-negative integers; `maxTokens` caps input + output.
 * - Cost caps are USD (non-negative, finite).
 * - Wall clocks are lifetimes, not per run: `maxWallClock` runs from the
 *   moment the budget was built, `perUserMaxWallClock` from the user's
 *   first charge (in the current window, when there are windows).
 * - `softWarningAt` (default 0.8, in (0, 1]) is the fraction of the total
 *   token and cost caps at which a step carries a warning.
 * - `perUserWindow`: fixed windows (`"1 day"`, aligned to the Clock's
 *   epoch). At a window boundary each user's totals and wall clock start
 *   again from zero, with no background job; global totals never reset.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  readonly maxTokens?: number | undefined
  readonly maxInputTokens?: number | undefined
  readonly maxOutputTokens?: number | undefined
  readonly maxCostUsd?: number | undefined
  readonly maxWallClock?: Duration.DurationInput | undefined
  readonly perUserMaxTokens?: number | undefined
  readonly perUserMaxInputTokens?: number | undefined
  readonly perUserMaxOutputTokens?: number | undefined
  readonly perUserMaxCostUsd?: number | undefined
  readonly perUserMaxWallClock?: Duration.DurationInput | undefined
  readonly softWarningAt?: number | undefined
  readonly perUserWindow?: Duration.DurationInput | undefined
}

/**
 * Bounds of the in-memory per-user table.
 *
 * - `maxUsers` (default 100 000): past it the least recently used user is
 *   forgotten — their totals and wall clock reset, as in the original.
 * - `userIdleTtl` (default 24 hours, or `perUserWindow` when that is
 *   longer): a user untouched for this long is forgotten. Every check,
 *   reservation, settle and `usageFor` touches. One shorter than
 *   `perUserWindow` is a `BudgetConfigError`: an idle user would be
 *   forgotten, with their spend, before their window ends.
 * - `null` disables either bound.
 *
 * A user with a call in flight (an outstanding reservation), or an agent
 * run in flight (between its calls too: a slow tool, a wait for an
 * approver), is never forgotten, so the table may briefly hold more than
 * `maxUsers` users; the end of the run counts as a touch.
 *
 * @since 0.1.0
 * @category models
 */
export interface LayerOptions {
  readonly maxUsers?: number | null | undefined
  readonly userIdleTtl?: Duration.DurationInput | null | undefined
}

/**
 * A budget configuration was rejected. `field` names the bad option.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetConfigError extends Schema.TaggedError<BudgetConfigError>("jeevesagent/BudgetConfigError")(
  "BudgetConfigError",
  { field: Schema.String, description: Schema.String }
) {
  override get message(): string {
    return `Invalid budget configuration: ${this.field} ${this.description}`
  }
}

/**
 * Builds an in-process budget: global totals plus a bounded table of
 * per-user totals. Check-and-reserve is one synchronous step, so it is
 * atomic across every fiber of the process. Fails with
 * {@link BudgetConfigError} on a bad configuration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (config: Config, options?: LayerOptions) => Effect.Effect<Service, BudgetConfigError> =
  internal.makeMemory

/**
 * The layer of {@link make}. The global wall clock starts when the layer is
 * built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config, options?: LayerOptions): Layer.Layer<Budget, BudgetConfigError> =>
  Layer.effect(Budget, make(config, options))
