import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as Budget from "../Budget.js"
import type * as Model from "../Model.js"
import * as RunContext from "../RunContext.js"
import { BoundedUsers } from "./boundedUsers.js"

// ---------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------

/** One scope's caps, every one optional. Wall clock in millis. */
export interface Caps {
  readonly tokens: number | undefined
  readonly inputTokens: number | undefined
  readonly outputTokens: number | undefined
  readonly costUsd: number | undefined
  readonly wallClockMillis: number | undefined
}

/** A validated {@link Budget.Config}. */
export interface Resolved {
  readonly global: Caps
  readonly perUser: Caps
  readonly softWarningAt: number
  /** Length of the fixed per-user windows, or `undefined` for lifetime totals. */
  readonly windowMillis: number | undefined
}

/** The snake_case names of the caps: the block reasons. */
export interface CapNames {
  readonly tokens: string
  readonly inputTokens: string
  readonly outputTokens: string
  readonly costUsd: string
  readonly wallClock: string
}

export const globalNames: CapNames = {
  tokens: "max_tokens",
  inputTokens: "max_input_tokens",
  outputTokens: "max_output_tokens",
  costUsd: "max_cost_usd",
  wallClock: "max_wall_clock"
}

export const perUserNames: CapNames = {
  tokens: "per_user_max_tokens",
  inputTokens: "per_user_max_input_tokens",
  outputTokens: "per_user_max_output_tokens",
  costUsd: "per_user_max_cost_usd",
  wallClock: "per_user_max_wall_clock"
}

const DEFAULT_SOFT_WARNING_AT = 0.8
/** `maxUsers` when not given. */
export const DEFAULT_MAX_USERS = 100_000
/** `userIdleTtl` when not given. */
export const DEFAULT_USER_IDLE_TTL: Duration.DurationInput = "24 hours"

type Validated<A> = Either.Either<A, Budget.BudgetConfigError>

const invalid = (field: string, description: string) =>
  Either.left(new Budget.BudgetConfigError({ field, description }))

const show = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value)
  if (typeof value === "bigint") return `${value}n`
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

const isAbsent = (value: unknown): value is undefined | null => value === undefined || value === null

const numberCap = (kind: "tokens" | "usd") => (field: string, value: unknown): Validated<number | undefined> => {
  if (isAbsent(value)) return Either.right(undefined)
  const valid = typeof value === "number" && value >= 0 &&
    (kind === "tokens" ? Number.isInteger(value) : Number.isFinite(value))
  if (!valid) {
    const expected = kind === "tokens" ? "a non-negative integer" : "a non-negative finite number of USD"
    return invalid(field, `must be ${expected}, got ${show(value)}`)
  }
  return Either.right(value)
}

const tokenCap = numberCap("tokens")
const costCap = numberCap("usd")

const isNegativeDurationInput = (value: unknown): boolean => {
  if (typeof value === "number") return value < 0 || Number.isNaN(value)
  if (typeof value === "bigint") return value < 0n
  if (typeof value === "string") return /^\s*-/.test(value)
  if (Array.isArray(value)) return value.some((part) => typeof part === "number" && (part < 0 || Number.isNaN(part)))
  return false
}

/** Decodes a duration input to millis; `Infinity` for an infinite duration. */
export const durationMillis = (
  field: string,
  value: unknown,
  rule: "non-negative" | "positive" | "positive finite"
): Validated<number> => {
  if (isNegativeDurationInput(value)) return invalid(field, `must not be negative or NaN, got ${show(value)}`)
  const decoded = Duration.decodeUnknown(value)
  if (Option.isNone(decoded)) {
    return invalid(field, `is not a duration (such as "30 minutes" or a number of millis), got ${show(value)}`)
  }
  const millis = Duration.toMillis(decoded.value)
  if (rule !== "non-negative" && millis <= 0) return invalid(field, `must be longer than zero, got ${show(value)}`)
  if (rule === "positive finite" && !Number.isFinite(millis)) return invalid(field, `must be finite, got ${show(value)}`)
  return Either.right(millis)
}

const wallClockCap = (field: string, value: unknown): Validated<number | undefined> =>
  isAbsent(value) ? Either.right(undefined) : durationMillis(field, value, "non-negative")

/** The caps of one scope: `maxTokens`, ... or `perUserMaxTokens`, ... */
const capsOf = (config: Budget.Config, prefix: "" | "perUser"): Validated<Caps> =>
  Either.gen(function*() {
    const field = (name: `Max${string}`) => prefix === "" ? `m${name.slice(1)}` : `${prefix}${name}`
    const value = (name: `Max${string}`) => (config as Record<string, unknown>)[field(name)]
    return {
      tokens: yield* tokenCap(field("MaxTokens"), value("MaxTokens")),
      inputTokens: yield* tokenCap(field("MaxInputTokens"), value("MaxInputTokens")),
      outputTokens: yield* tokenCap(field("MaxOutputTokens"), value("MaxOutputTokens")),
      costUsd: yield* costCap(field("MaxCostUsd"), value("MaxCostUsd")),
      wallClockMillis: yield* wallClockCap(field("MaxWallClock"), value("MaxWallClock"))
    }
  })

/** Validates a budget configuration; the error names the first bad field. */
export const resolveConfig = (config: Budget.Config): Validated<Resolved> =>
  Either.gen(function*() {
    if (typeof config !== "object" || config === null) {
      return yield* invalid("config", `must be an object, got ${show(config)}`)
    }
    const global = yield* capsOf(config, "")
    const perUser = yield* capsOf(config, "perUser")
    const soft: unknown = config.softWarningAt
    let softWarningAt = DEFAULT_SOFT_WARNING_AT
    if (!isAbsent(soft)) {
      if (typeof soft !== "number" || !(soft > 0 && soft <= 1)) {
        return yield* invalid("softWarningAt", `must be a number in (0, 1], got ${show(soft)}`)
      }
      softWarningAt = soft
    }
    const windowMillis = isAbsent(config.perUserWindow) ?
      undefined :
      yield* durationMillis("perUserWindow", config.perUserWindow, "positive finite")
    return { global, perUser, softWarningAt, windowMillis }
  })

/** The in-memory table bounds; `null` disables one. */
export interface Bounds {
  readonly maxUsers: number | null
  readonly idleTtlMillis: number | null
}

/** Validates `{ maxUsers, userIdleTtl }`; absent fields take the defaults. */
export const resolveBounds = (options: Budget.LayerOptions | undefined): Validated<Bounds> =>
  Either.gen(function*() {
    const maxUsers: unknown = options?.maxUsers === undefined ? DEFAULT_MAX_USERS : options.maxUsers
    if (maxUsers !== null && (typeof maxUsers !== "number" || !Number.isInteger(maxUsers) || maxUsers < 1)) {
      return yield* invalid("maxUsers", `must be an integer of at least 1 (or null for no limit), got ${show(maxUsers)}`)
    }
    const ttl: unknown = options?.userIdleTtl === undefined ? DEFAULT_USER_IDLE_TTL : options.userIdleTtl
    const idleTtlMillis = ttl === null ? null : yield* durationMillis("userIdleTtl", ttl, "positive")
    return {
      maxUsers,
      idleTtlMillis: idleTtlMillis === null || !Number.isFinite(idleTtlMillis) ? null : idleTtlMillis
    }
  })

// ---------------------------------------------------------------------------
// the rule, shared by every backend
// ---------------------------------------------------------------------------

/**
 * Token and cost load of one scope: committed usage plus outstanding
 * reservations.
 */
export interface Load {
  readonly tokensIn: number
  readonly tokensOut: number
  readonly costUsd: number
}

export const zeroLoad: Load = { tokensIn: 0, tokensOut: 0, costUsd: 0 }

/**
 * Costs are summed in binary floating point, where $0.70 + $0.10 is
 * 0.7999999999999999: an exact `>=` would let one more call through at a
 * $0.80 cap. A cost cap therefore counts as reached within this fraction of
 * it (a billionth: a millionth of a cent on a $10 cap), which covers the
 * rounding of millions of additions. It errs on the closed side only.
 */
export const COST_CAP_TOLERANCE = 1e-9

/** Whether a cost load has reached a cost cap, within {@link COST_CAP_TOLERANCE}. */
export const costReached = (load: number, cap: number): boolean => load >= cap - cap * COST_CAP_TOLERANCE

/**
 * The first cap of a scope that `load` has reached, in the original's order
 * (total tokens, input, output, cost, wall clock); `undefined` when none.
 * `elapsedMillis` is `undefined` while the scope's clock has not started.
 */
export const blockedBy = (
  caps: Caps,
  names: CapNames,
  load: Load,
  elapsedMillis: number | undefined
): string | undefined => {
  if (caps.tokens !== undefined && load.tokensIn + load.tokensOut >= caps.tokens) return names.tokens
  if (caps.inputTokens !== undefined && load.tokensIn >= caps.inputTokens) return names.inputTokens
  if (caps.outputTokens !== undefined && load.tokensOut >= caps.outputTokens) return names.outputTokens
  if (caps.costUsd !== undefined && costReached(load.costUsd, caps.costUsd)) return names.costUsd
  if (caps.wallClockMillis !== undefined && elapsedMillis !== undefined && elapsedMillis >= caps.wallClockMillis) {
    return names.wallClock
  }
  return undefined
}

/**
 * A ratio formatted like Python's `{:.0%}`: times 100, rounded half to even
 * (`0.125` is `12%`, `0.135` is `14%`).
 */
export const formatPercent = (ratio: number): string => {
  const scaled = ratio * 100
  const floor = Math.floor(scaled)
  const rounded = scaled - floor === 0.5 ? (floor % 2 === 0 ? floor : floor + 1) : Math.round(scaled)
  return `${rounded}%`
}

const warningOf = (caps: Caps, load: Load, softWarningAt: number, label: string): string | undefined => {
  const tokens = load.tokensIn + load.tokensOut
  if (caps.tokens !== undefined && tokens >= caps.tokens * softWarningAt) {
    return `${label}tokens at ${formatPercent(tokens / caps.tokens)}`
  }
  if (caps.costUsd !== undefined && load.costUsd >= caps.costUsd * softWarningAt) {
    return `${label}cost at ${formatPercent(load.costUsd / caps.costUsd)}`
  }
  return undefined
}

/** The soft warning for a step that is not blocked: global first, then per user. */
export const warningFor = (config: Resolved, global: Load, user: Load): string | undefined =>
  warningOf(config.global, global, config.softWarningAt, "") ??
    warningOf(config.perUser, user, config.softWarningAt, "per-user ")

/**
 * The status of a step, with the loads the decision sees: global caps first,
 * then per-user caps, then the soft warnings.
 */
export const statusFor = (
  config: Resolved,
  global: Load,
  globalElapsed: number,
  user: Load,
  userElapsed: number | undefined
): Budget.BudgetStatus => {
  const reason = blockedBy(config.global, globalNames, global, globalElapsed) ??
    blockedBy(config.perUser, perUserNames, user, userElapsed)
  if (reason !== undefined) return { state: "blocked", reason }
  const warning = warningFor(config, global, user)
  return warning === undefined ? ok : { state: "warn", reason: warning }
}

const ok: Budget.BudgetStatus = Object.freeze({ state: "ok" })

/**
 * The usage charged for a call: each field the model reported as a finite
 * non-negative number, else the reservation's estimate of it (fail closed:
 * never charge zero for an unknown figure).
 */
export const chargeOf = (actual: Model.Usage, estimate: Model.Usage): Model.Usage => ({
  inputTokens: reportedOr(actual?.inputTokens, estimate.inputTokens),
  outputTokens: reportedOr(actual?.outputTokens, estimate.outputTokens),
  costUsd: reportedOr(actual?.costUsd, estimate.costUsd)
})

const reportedOr = (reported: unknown, fallback: number): number =>
  typeof reported === "number" && Number.isFinite(reported) && reported >= 0 ? reported : fallback

/** An estimate with every field a finite non-negative number (bad fields count as zero). */
export const sanitizeEstimate = (estimate: Model.Usage): Model.Usage => chargeOf(estimate, noUsage)

const noUsage: Model.Usage = { inputTokens: 0, outputTokens: 0, costUsd: 0 }

export const totalsOf = (load: Load): Budget.UsageTotals => ({
  tokensIn: load.tokensIn,
  tokensOut: load.tokensOut,
  tokensTotal: load.tokensIn + load.tokensOut,
  costUsd: load.costUsd
})

/** The fixed window `now` falls in (windows start at the epoch of the Clock). */
export const windowIndex = (config: Resolved, now: number): number =>
  config.windowMillis === undefined ? 0 : Math.floor(now / config.windowMillis)

/** The storage key of the current user. */
export const currentUserKey: Effect.Effect<string> = Effect.map(
  FiberRef.get(RunContext.ref),
  (context) => RunContext.userKey(context.userId)
)

/**
 * The fiber running the current step, read inside `Effect.sync` as
 * `@effect/experimental`'s `Machine` does: one runtime step, where
 * `Effect.withFiberRuntime` plus the `Effect.succeed` it must return is two,
 * and the extra step costs about as much as the budget's own bookkeeping.
 */
const currentFiber = (): Fiber.RuntimeFiber<unknown, unknown> => Option.getOrThrow(Fiber.getCurrentFiber())

/** The fiber's Clock service (a TestClock in tests). */
const clockOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Clock.Clock =>
  Context.get(fiber.currentDefaultServices, Clock.Clock)

/** The storage key of the fiber's current user. */
const userKeyOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): string =>
  RunContext.userKey(fiber.getFiberRef(RunContext.ref).userId)

// ---------------------------------------------------------------------------
// the in-memory backend
// ---------------------------------------------------------------------------

/**
 * Committed usage and outstanding reservations of one scope. Mutable; changed
 * only inside one synchronous step of a fiber. The ledger is its own
 * {@link Load} (committed plus reserved), so a decision allocates nothing.
 */
class Ledger implements Load {
  committedIn = 0
  committedOut = 0
  committedCost = 0
  reservedIn = 0
  reservedOut = 0
  reservedCost = 0
  outstanding = 0

  get tokensIn(): number {
    return this.committedIn + this.reservedIn
  }

  get tokensOut(): number {
    return this.committedOut + this.reservedOut
  }

  get costUsd(): number {
    return this.committedCost + this.reservedCost
  }

  committed(): Load {
    return { tokensIn: this.committedIn, tokensOut: this.committedOut, costUsd: this.committedCost }
  }

  hold(estimate: Model.Usage): void {
    this.reservedIn += estimate.inputTokens
    this.reservedOut += estimate.outputTokens
    this.reservedCost += estimate.costUsd
    this.outstanding++
  }

  unhold(estimate: Model.Usage): void {
    this.outstanding--
    if (this.outstanding === 0) {
      // Exact zero: no floating-point residue from add-then-subtract.
      this.reservedIn = 0
      this.reservedOut = 0
      this.reservedCost = 0
    } else {
      this.reservedIn -= estimate.inputTokens
      this.reservedOut -= estimate.outputTokens
      this.reservedCost -= estimate.costUsd
    }
  }

  charge(usage: Model.Usage): void {
    this.committedIn += usage.inputTokens
    this.committedOut += usage.outputTokens
    this.committedCost += usage.costUsd
  }
}

class UserLedger extends Ledger {
  /** Clock millis of the first charge (in the current window); starts the per-user wall clock. */
  startedAt: number | undefined = undefined
  lastTouched = 0

  constructor(public window: number) {
    super()
  }

  /** Agent runs of the user in flight: the ledger is in use between their calls too (a slow tool, an approval). */
  runs = 0

  get pinned(): boolean {
    return this.outstanding > 0 || this.runs > 0
  }

  /** Forgets the committed usage of a past window; outstanding reservations stay. */
  enterWindow(window: number): void {
    // Only forward: a clock stepped back (an NTP step, a resumed VM) never erases a newer window's spend.
    if (window <= this.window) return
    this.window = window
    this.committedIn = 0
    this.committedOut = 0
    this.committedCost = 0
    this.startedAt = undefined
  }
}

/** The ledgers of one in-memory budget: everybody's, and a bounded table of the users'. */
class MemoryLedgers {
  readonly global = new Ledger()
  readonly users: BoundedUsers<UserLedger>

  constructor(readonly config: Resolved, bounds: Bounds, readonly startedAt: number) {
    this.users = new BoundedUsers<UserLedger>("budget", bounds.maxUsers, bounds.idleTtlMillis)
  }

  /** The user's ledger, touched and moved into the current window; `undefined` when absent. */
  existing(key: string, now: number): UserLedger | undefined {
    const ledger = this.users.get(key, now)
    ledger?.enterWindow(windowIndex(this.config, now))
    return ledger
  }

  statusOf(user: UserLedger | undefined, now: number): Budget.BudgetStatus {
    return statusFor(
      this.config,
      this.global,
      now - this.startedAt,
      user ?? zeroLoad,
      user?.startedAt === undefined ? undefined : now - user.startedAt
    )
  }

  /**
   * Check-and-reserve for the fiber's user, in one synchronous step: atomic
   * across every fiber of the process.
   */
  reserve(fiber: Fiber.RuntimeFiber<unknown, unknown>, rawEstimate: Model.Usage): Budget.Reservation {
    const key = userKeyOf(fiber)
    const clock = clockOf(fiber)
    const now = clock.unsafeCurrentTimeMillis()
    const found = this.existing(key, now)
    const decision = this.statusOf(found, now)
    if (decision.state === "blocked") return { _tag: "Blocked", reason: decision.reason }
    const estimate = sanitizeEstimate(rawEstimate)
    const user = found ?? new UserLedger(windowIndex(this.config, now))
    user.hold(estimate)
    this.global.hold(estimate)
    // Inserted after the hold: pinned, so making room never evicts the new user itself.
    if (found === undefined) this.users.insert(key, user, now)
    return new Grant(decision.state === "warn" ? decision.reason : undefined, this, key, user, estimate, clock)
  }

  /**
   * Holds the user's ledger while one of their runs is in flight, so that
   * neither the idle TTL nor `maxUsers` forgets what the run spent between
   * its calls; the returned function releases it at a time, as a touch.
   */
  holdRun(key: string, now: number): (now: number) => void {
    let user = this.existing(key, now)
    if (user === undefined) {
      user = new UserLedger(windowIndex(this.config, now))
      user.runs++
      // Inserted held: making room never evicts the new user itself.
      this.users.insert(key, user, now)
    } else {
      user.runs++
    }
    const held = user
    let released = false
    return (at) => {
      if (released) return
      released = true
      held.runs--
      // Held until this step, so it is still the one the table holds for the user.
      this.users.touch(key, held, at)
    }
  }

  /** Removes a reservation's hold and charges `charge`, if any, at `now`. */
  finish(key: string, user: UserLedger, estimate: Model.Usage, charge: Model.Usage | undefined, now: number): void {
    user.unhold(estimate)
    this.global.unhold(estimate)
    // The ledger was pinned until this step, so it is still the one the table holds for the user.
    this.users.touch(key, user, now)
    user.enterWindow(windowIndex(this.config, now))
    if (charge === undefined) return
    this.global.charge(charge)
    user.charge(charge)
    if (user.startedAt === undefined) user.startedAt = now
  }
}

/**
 * A granted in-memory reservation. A class rather than an object of
 * closures: the budget's share of a model call is a few hundred
 * nanoseconds, and the closures built per reservation were a good part of it.
 */
export class Grant {
  readonly _tag = "Granted"
  #finished = false
  readonly #ledgers: MemoryLedgers
  readonly #key: string
  readonly #user: UserLedger
  readonly #estimate: Model.Usage
  /** The Clock of the fiber that reserved; finishing reads the time from it too. */
  readonly #clock: Clock.Clock

  constructor(
    readonly warning: string | undefined,
    ledgers: MemoryLedgers,
    key: string,
    user: UserLedger,
    estimate: Model.Usage,
    clock: Clock.Clock
  ) {
    this.#ledgers = ledgers
    this.#key = key
    this.#user = user
    this.#estimate = estimate
    this.#clock = clock
  }

  readonly settle = (actual: Model.Usage): Effect.Effect<void> => {
    const charge = chargeOf(actual, this.#estimate)
    return Effect.sync(() => this.#finish(charge))
  }

  /** `settle` run now, on the fiber that reserved (see {@link syncReserveOf}). */
  unsafeSettle(actual: Model.Usage): void {
    this.#finish(chargeOf(actual, this.#estimate))
  }

  /** An own property, not a getter: wrappers copy reservations with `{ ...reservation }`. */
  readonly release: Effect.Effect<void> = Effect.sync(() => this.#finish(undefined))

  /** Only the first finish counts. */
  #finish(charge: Model.Usage | undefined): void {
    if (this.#finished) return
    this.#finished = true
    this.#ledgers.finish(this.#key, this.#user, this.#estimate, charge, this.#clock.unsafeCurrentTimeMillis())
  }
}

/** The in-memory budget service. */
export const makeMemory = (
  config: Budget.Config,
  options?: Budget.LayerOptions
): Effect.Effect<Budget.Service, Budget.BudgetConfigError> =>
  Effect.flatMap(
    Either.flatMap(Either.all([resolveConfig(config), resolveBounds(options)]), ([resolved, bounds]) =>
      Either.map(boundsForWindow(resolved, bounds, options?.userIdleTtl !== undefined), (fitted) => [resolved, fitted] as const)),
    ([resolved, bounds]) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => memoryService(new MemoryLedgers(resolved, bounds, clock.unsafeCurrentTimeMillis()), costCapped(resolved)))
      )
  )

/**
 * The bounds fitted to the per-user window: a user idle for `userIdleTtl`
 * is forgotten with their spend, so a window longer than it would start
 * afresh after every pause (a weekly cap spent again each day). The
 * default TTL grows to the window; one given shorter is a configuration
 * error.
 */
const boundsForWindow = (resolved: Resolved, bounds: Bounds, ttlGiven: boolean): Validated<Bounds> => {
  const window = resolved.windowMillis
  if (window === undefined || bounds.idleTtlMillis === null || bounds.idleTtlMillis >= window) return Either.right(bounds)
  if (!ttlGiven) return Either.right({ ...bounds, idleTtlMillis: window })
  return invalid(
    "userIdleTtl",
    `must be at least perUserWindow (${Duration.format(Duration.millis(window))}), got ${
      Duration.format(Duration.millis(bounds.idleTtlMillis))
    }: an idle user would be forgotten, with their spend, before their window ends`
  )
}

/**
 * The in-memory budget's reserve as a plain function of the running fiber,
 * for the agent to call inside a step it already runs (no effect of its
 * own). Present only while `reserve` is the service's own: a wrapper that
 * spreads the service and replaces `reserve` still gets its `reserve` called.
 */
const syncReserveKey = Symbol.for("jeevesagent/internal/budget/syncReserve")

interface SyncReserve {
  readonly reserve: Budget.Service["reserve"]
  readonly unsafe: (fiber: Fiber.RuntimeFiber<unknown, unknown>, estimate: Model.Usage) => Budget.Reservation
  readonly holdRun: (user: string, now: number) => (now: number) => void
}

/** @internal */
export const syncReserveOf = (
  service: Budget.Service
): ((fiber: Fiber.RuntimeFiber<unknown, unknown>, estimate: Model.Usage) => Budget.Reservation) | undefined => {
  const marker = (service as { readonly [syncReserveKey]?: SyncReserve })[syncReserveKey]
  return marker !== undefined && marker.reserve === service.reserve ? marker.unsafe : undefined
}

/**
 * The in-memory budget's run hold ({@link MemoryLedgers.holdRun}) for the
 * agent: the user's ledger is in use while a run of theirs is in flight.
 * Present only while `reserve` is the service's own, as {@link syncReserveOf}.
 *
 * @internal
 */
export const runHoldOf = (service: Budget.Service): ((user: string, now: number) => (now: number) => void) | undefined => {
  const marker = (service as { readonly [syncReserveKey]?: SyncReserve })[syncReserveKey]
  return marker !== undefined && marker.reserve === service.reserve ? marker.holdRun : undefined
}

/** Whether `resolved` caps cost, globally or per user. @internal */
export const costCapped = (resolved: Resolved): boolean =>
  resolved.global.costUsd !== undefined || resolved.perUser.costUsd !== undefined

const memoryService = (ledgers: MemoryLedgers, capsCost: boolean): Budget.Service => {
  const reserve: Budget.Service["reserve"] = (estimate) => Effect.sync(() => ledgers.reserve(currentFiber(), estimate))
  const service = {
    ...memoryServiceRest(ledgers),
    reserve,
    costCapped: capsCost,
    [syncReserveKey]: {
      reserve,
      unsafe: (fiber, estimate) => ledgers.reserve(fiber, estimate),
      holdRun: (user, now) => ledgers.holdRun(user, now)
    } satisfies SyncReserve
  }
  return service
}

const memoryServiceRest = (ledgers: MemoryLedgers): Omit<Budget.Service, "reserve"> => ({
  allowsStep: Effect.sync(() => {
    const fiber = currentFiber()
    const now = clockOf(fiber).unsafeCurrentTimeMillis()
    return ledgers.statusOf(ledgers.existing(userKeyOf(fiber), now), now)
  }),
  usageFor: (userId) =>
    Effect.clockWith((clock) =>
      Effect.sync(() => {
        const now = clock.unsafeCurrentTimeMillis()
        return totalsOf(ledgers.existing(RunContext.userKey(userId), now)?.committed() ?? zeroLoad)
      })
    ),
  globalUsage: Effect.sync(() => totalsOf(ledgers.global.committed()))
})
