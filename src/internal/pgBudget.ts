import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Budget from "../Budget.js"
import type * as Model from "../Model.js"
import type * as PgBudget from "../PgBudget.js"
import * as RunContext from "../RunContext.js"
import { migrateLocked } from "./pgMigrate.js"
import { withServiceSpan } from "./spans.js"
import {
  blockedBy,
  type Caps,
  chargeOf,
  costCapped,
  currentUserKey,
  durationMillis,
  globalNames,
  type Load,
  perUserNames,
  type Resolved,
  resolveConfig,
  sanitizeEstimate,
  totalsOf,
  warningFor,
  windowIndex,
  zeroLoad
} from "./budget.js"

/** @internal */
export const MIGRATIONS_TABLE = "jeeves_budget_migrations"
/** @internal */
export const LEDGER_TABLE = "jeeves_budget_ledger"
/** @internal */
export const RESERVATIONS_TABLE = "jeeves_budget_reservations"

/** Serializes migration runs of concurrent processes (the migrator locks its table only once it exists). */
const MIGRATION_LOCK = 0x6a65657665_03
/** At most one process reclaims expired reservations at a time. */
const RECLAIM_LOCK = 0x6a65657665_04

const GLOBAL_SCOPE = "global"

/** The store's own spans (on with `serviceSpans: true`, as every service's) capture no stack trace. */
const noStack = { captureStackTrace: false } as const
const userScope = (userKey: string) => `user:${userKey}`

const DEFAULT_RESERVATION_TTL: Duration.DurationInput = "15 minutes"
const DEFAULT_RECLAIM_INTERVAL: Duration.DurationInput = "1 minute"
const DEFAULT_TIMEOUT: Duration.DurationInput = "10 seconds"
const MIGRATION_TIMEOUT_MILLIS = 60_000

const migrations = Migrator.fromRecord({
  "1_create_budget_ledger": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      // One row per scope: 'global', or 'user:<id>'. Amounts are exact decimals.
      sql`CREATE TABLE IF NOT EXISTS ${sql(LEDGER_TABLE)} (
        scope text PRIMARY KEY,
        window_index bigint NOT NULL DEFAULT 0,
        tokens_in numeric NOT NULL DEFAULT 0,
        tokens_out numeric NOT NULL DEFAULT 0,
        cost_usd numeric NOT NULL DEFAULT 0,
        reserved_in numeric NOT NULL DEFAULT 0,
        reserved_out numeric NOT NULL DEFAULT 0,
        reserved_cost numeric NOT NULL DEFAULT 0,
        started_at bigint
      )`,
      sql`INSERT INTO ${sql(LEDGER_TABLE)} (scope) VALUES (${GLOBAL_SCOPE}) ON CONFLICT (scope) DO NOTHING`,
      // An outstanding reservation: deleting its row is what makes settle/release/reclaim happen once.
      sql`CREATE TABLE IF NOT EXISTS ${sql(RESERVATIONS_TABLE)} (
        id text PRIMARY KEY,
        scope text NOT NULL,
        tokens_in numeric NOT NULL,
        tokens_out numeric NOT NULL,
        cost_usd numeric NOT NULL,
        expires_at bigint NOT NULL
      )`,
      sql`CREATE INDEX IF NOT EXISTS jeeves_budget_reservations_expires_at ON ${sql(RESERVATIONS_TABLE)} (expires_at)`
    ], { discard: true }))
})

/** Internal signal of the reserve statement: the user's ledger row does not exist yet. */
class MissingUserRow extends Data.TaggedError("MissingUserRow") {}

interface StateRow {
  readonly scope: string
  readonly reason: string | null
  readonly tokens_in: string
  readonly tokens_out: string
  readonly cost_usd: string
  readonly reserved_in: string
  readonly reserved_out: string
  readonly reserved_cost: string
  readonly started_at: string | null
}

const loadOf = (row: StateRow | undefined): Load =>
  row === undefined ? zeroLoad : {
    tokensIn: Number(row.tokens_in) + Number(row.reserved_in),
    tokensOut: Number(row.tokens_out) + Number(row.reserved_out),
    costUsd: Number(row.cost_usd) + Number(row.reserved_cost)
  }

const committedTotals = (rows: ReadonlyArray<Pick<StateRow, "tokens_in" | "tokens_out" | "cost_usd">>) => {
  const row = rows[0]
  return totalsOf(
    row === undefined ? zeroLoad : {
      tokensIn: Number(row.tokens_in),
      tokensOut: Number(row.tokens_out),
      costUsd: Number(row.cost_usd)
    }
  )
}

const randomId = (): string => {
  const bytes = new Uint8Array(16)
  globalThis.crypto.getRandomValues(bytes)
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")
}

/** The driver's own words (`connection refused`, `database ... does not exist`), when there are any. */
const reasonOf = (cause: unknown): string => {
  const inner = typeof cause === "object" && cause !== null && "cause" in cause ? cause.cause : undefined
  const source = inner instanceof Error ? inner : cause
  return source instanceof Error && source.message !== "" ? `: ${source.message}` : ""
}

const unavailable = (what: string) => (cause: unknown) =>
  new Budget.BudgetUnavailable({ description: `PostgreSQL: ${what} failed${reasonOf(cause)}`, cause })

/**
 * The SQL of the budget rule over a ledger row aliased `l`: the same rule as
 * the in-memory backend (`blockedBy`), on exact numerics, plus the fixed
 * per-user windows (a user row of an older window counts as zero).
 */
const makeExpressions = (sql: SqlClient.SqlClient, config: Resolved) => {
  const windowed = config.windowMillis !== undefined
  const number = (value: number) => sql.literal(String(value))
  const text = (value: string) => sql.literal(`'${value.replace(/'/g, "''")}'`)
  const column = (name: string) => sql.literal(`l.${name}`)

  /** True for a user row whose stored totals belong to an earlier window. */
  const stale = (window: number) => sql`(l.scope <> ${text(GLOBAL_SCOPE)} AND l.window_index < ${window}::bigint)`
  const current = (name: "tokens_in" | "tokens_out" | "cost_usd", window: number): Statement.Fragment =>
    windowed ? sql`(CASE WHEN ${stale(window)} THEN 0 ELSE ${column(name)} END)` : column(name)
  const startedAt = (window: number): Statement.Fragment =>
    windowed ? sql`(CASE WHEN ${stale(window)} THEN NULL ELSE l.started_at END)` : column("started_at")

  const reasonCases = (caps: Caps, names: typeof globalNames, window: number, now: number | undefined) => {
    const tokensIn = sql`(${current("tokens_in", window)} + l.reserved_in)`
    const tokensOut = sql`(${current("tokens_out", window)} + l.reserved_out)`
    const cost = sql`(${current("cost_usd", window)} + l.reserved_cost)`
    const cases: Array<Statement.Fragment> = []
    const when = (condition: Statement.Fragment, reason: string) => cases.push(sql`WHEN ${condition} THEN ${text(reason)}`)
    if (caps.tokens !== undefined) when(sql`${tokensIn} + ${tokensOut} >= ${number(caps.tokens)}`, names.tokens)
    if (caps.inputTokens !== undefined) when(sql`${tokensIn} >= ${number(caps.inputTokens)}`, names.inputTokens)
    if (caps.outputTokens !== undefined) when(sql`${tokensOut} >= ${number(caps.outputTokens)}`, names.outputTokens)
    if (caps.costUsd !== undefined) when(sql`${cost} >= ${number(caps.costUsd)}`, names.costUsd)
    // The global wall clock belongs to the process (checked in JavaScript); the per-user one to the row.
    if (now !== undefined && caps.wallClockMillis !== undefined && Number.isFinite(caps.wallClockMillis)) {
      const started = startedAt(window)
      when(sql`${started} IS NOT NULL AND ${now}::bigint - ${started} >= ${number(caps.wallClockMillis)}`, names.wallClock)
    }
    return cases.length === 0 ? sql`NULL::text` : sql`(CASE ${sql.join(" ", false)(cases)} ELSE NULL END)`
  }

  /** The first cap the row has reached, or NULL. */
  const reason = (window: number, now: number) =>
    sql`(CASE WHEN l.scope = ${text(GLOBAL_SCOPE)} THEN ${reasonCases(config.global, globalNames, window, undefined)} ELSE ${
      reasonCases(config.perUser, perUserNames, window, now)
    } END)`

  /** The global row and the user's row, global first, with the reason and the current-window totals. */
  const state = (scope: string, window: number, now: number, lock: boolean) =>
    sql<StateRow>`SELECT l.scope, ${reason(window, now)} AS reason,
        ${current("tokens_in", window)} AS tokens_in, ${current("tokens_out", window)} AS tokens_out,
        ${current("cost_usd", window)} AS cost_usd, l.reserved_in, l.reserved_out, l.reserved_cost,
        ${startedAt(window)} AS started_at
      FROM ${sql(LEDGER_TABLE)} AS l
      WHERE l.scope IN (${GLOBAL_SCOPE}, ${scope})
      ORDER BY l.scope${sql.literal(lock ? " FOR UPDATE" : "")}`

  /** SET items that move a user row into the current window (nothing without windows). */
  const rollWindow = (window: number): Array<Statement.Fragment> =>
    windowed ?
      [
        sql`window_index = CASE WHEN ${stale(window)} THEN ${window}::bigint ELSE l.window_index END`,
        sql`tokens_in = ${current("tokens_in", window)}`,
        sql`tokens_out = ${current("tokens_out", window)}`,
        sql`cost_usd = ${current("cost_usd", window)}`,
        sql`started_at = ${startedAt(window)}`
      ] :
      []

  /**
   * Check-and-reserve in one statement: lock both rows (global first, the
   * order every statement here locks in), decide on the locked versions, and
   * the conditional UPDATE ... RETURNING reserves on both rows or on none.
   */
  const reserve = (
    scope: string,
    estimate: Model.Usage,
    window: number,
    now: number,
    id: string,
    expiresAt: number
  ) =>
    sql<StateRow & { readonly reserved_rows: string }>`WITH locked AS (${state(scope, window, now, true)}),
      decision AS (SELECT count(*) = 2 AND bool_and(reason IS NULL) AS ok FROM locked),
      reserved AS (
        UPDATE ${sql(LEDGER_TABLE)} AS l SET ${
      sql.csv([
        ...rollWindow(window),
        sql`reserved_in = l.reserved_in + ${estimate.inputTokens}::numeric`,
        sql`reserved_out = l.reserved_out + ${estimate.outputTokens}::numeric`,
        sql`reserved_cost = l.reserved_cost + ${estimate.costUsd}::numeric`
      ])
    }
        FROM decision
        WHERE decision.ok AND l.scope IN (${GLOBAL_SCOPE}, ${scope})
        RETURNING l.scope
      ),
      hold AS (
        INSERT INTO ${sql(RESERVATIONS_TABLE)} (id, scope, tokens_in, tokens_out, cost_usd, expires_at)
        SELECT ${id}::text, ${scope}::text, ${estimate.inputTokens}::numeric, ${estimate.outputTokens}::numeric,
          ${estimate.costUsd}::numeric, ${expiresAt}::bigint
        FROM decision WHERE decision.ok
      )
      SELECT locked.*, (SELECT count(*) FROM reserved) AS reserved_rows FROM locked`

  /**
   * Finishes reservations: `finished` (a CTE deleting reservation rows, with
   * `charge_*` columns) is applied to the users' rows and to the global row in
   * one statement; only the statement that deleted a reservation applies it.
   */
  const finish = (finished: Statement.Fragment, window: number, now: number) =>
    sql<{ readonly finished: string }>`WITH finished AS (${finished}),
      totals AS (
        SELECT scope, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(cost_usd) AS cost_usd,
          sum(charge_in) AS charge_in, sum(charge_out) AS charge_out, sum(charge_cost) AS charge_cost,
          bool_or(charged) AS charged
        FROM finished GROUP BY scope
        UNION ALL
        SELECT ${GLOBAL_SCOPE}::text, sum(tokens_in), sum(tokens_out), sum(cost_usd),
          sum(charge_in), sum(charge_out), sum(charge_cost), bool_or(charged)
        FROM finished HAVING count(*) > 0
      ),
      locked AS (
        SELECT l.scope FROM ${sql(LEDGER_TABLE)} AS l
        WHERE l.scope IN (SELECT scope FROM totals) ORDER BY l.scope FOR UPDATE
      ),
      applied AS (
        UPDATE ${sql(LEDGER_TABLE)} AS l SET ${
      sql.csv([
        ...(windowed ? [sql`window_index = CASE WHEN ${stale(window)} THEN ${window}::bigint ELSE l.window_index END`] : []),
        sql`tokens_in = ${current("tokens_in", window)} + t.charge_in`,
        sql`tokens_out = ${current("tokens_out", window)} + t.charge_out`,
        sql`cost_usd = ${current("cost_usd", window)} + t.charge_cost`,
        sql`started_at = CASE WHEN t.charged AND l.scope <> ${text(GLOBAL_SCOPE)}
          THEN COALESCE(${startedAt(window)}, ${now}::bigint) ELSE ${startedAt(window)} END`,
        sql`reserved_in = l.reserved_in - t.tokens_in`,
        sql`reserved_out = l.reserved_out - t.tokens_out`,
        sql`reserved_cost = l.reserved_cost - t.cost_usd`
      ])
    }
        FROM totals AS t, (SELECT count(*) AS n FROM locked) AS lock_all
        WHERE l.scope = t.scope AND lock_all.n >= 0
        RETURNING l.scope
      )
      SELECT (SELECT count(*) FROM finished) AS finished, (SELECT count(*) FROM applied) AS applied`

  /** Settle (`charge` = the usage) or release (`charge` = undefined) of one reservation. */
  const finishOne = (id: string, charge: Model.Usage | undefined, window: number, now: number) =>
    finish(
      sql`DELETE FROM ${sql(RESERVATIONS_TABLE)} WHERE id = ${id}::text
        RETURNING scope, tokens_in, tokens_out, cost_usd,
          ${charge?.inputTokens ?? 0}::numeric AS charge_in, ${charge?.outputTokens ?? 0}::numeric AS charge_out,
          ${charge?.costUsd ?? 0}::numeric AS charge_cost, ${charge !== undefined}::boolean AS charged`,
      window,
      now
    )

  /** Expired reservations are charged in full: the call may have run (fail closed). */
  const reclaim = (window: number, now: number) =>
    finish(
      sql`DELETE FROM ${sql(RESERVATIONS_TABLE)}
        WHERE expires_at <= ${now}::bigint AND (SELECT pg_try_advisory_xact_lock(${number(RECLAIM_LOCK)}))
        RETURNING scope, tokens_in, tokens_out, cost_usd,
          tokens_in AS charge_in, tokens_out AS charge_out, cost_usd AS charge_cost, true AS charged`,
      window,
      now
    )

  const ensureUser = (scope: string, window: number) =>
    sql`INSERT INTO ${sql(LEDGER_TABLE)} (scope, window_index) VALUES (${scope}, ${window}::bigint)
      ON CONFLICT (scope) DO NOTHING`

  const usage = (scope: string, window: number) =>
    sql<Pick<StateRow, "tokens_in" | "tokens_out" | "cost_usd">>`SELECT
        ${current("tokens_in", window)} AS tokens_in, ${current("tokens_out", window)} AS tokens_out,
        ${current("cost_usd", window)} AS cost_usd
      FROM ${sql(LEDGER_TABLE)} AS l WHERE l.scope = ${scope}`

  return { ensureUser, finishOne, reclaim, reserve, state, usage }
}

/** Runs the migrations, one process at a time. */
const migrate = migrateLocked({ lock: MIGRATION_LOCK, table: MIGRATIONS_TABLE, loader: migrations })

/** @internal */
export const make = (
  config: Budget.Config,
  options?: PgBudget.Options
): Effect.Effect<PgBudget.Service, Budget.BudgetConfigError | Budget.BudgetUnavailable, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolveConfig(config)
    const reservationTtl = yield* durationMillis(
      "reservationTtl",
      options?.reservationTtl ?? DEFAULT_RESERVATION_TTL,
      "positive"
    )
    const reclaimEvery = options?.reclaimInterval === null ?
      undefined :
      yield* durationMillis("reclaimInterval", options?.reclaimInterval ?? DEFAULT_RECLAIM_INTERVAL, "positive finite")
    const timeoutMillis = yield* durationMillis("timeout", options?.timeout ?? DEFAULT_TIMEOUT, "positive")

    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const queries = makeExpressions(sql, resolved)

    /**
     * A database round trip: bounded in time, failures mapped to
     * BudgetUnavailable (fail closed). The statement itself is never
     * interrupted: it runs to its end on a fiber of its own, and a caller
     * that stops waiting (its timeout, its own interruption) only stops
     * waiting. (@effect/sql-pg cancels an interrupted statement with
     * `pg_cancel_backend` on its connection; when the statement has just
     * finished, that cancel lands on whatever statement of another fiber
     * runs there next — another user's reserve or settle failed.) When
     * the caller has gone and the statement succeeded, `abandoned` undoes
     * what it did.
     */
    const guardedFor = (millis: number) =>
    <A, E, R>(
      what: string,
      effect: Effect.Effect<A, E, R>,
      abandoned?: (value: A) => Effect.Effect<unknown, unknown>
    ): Effect.Effect<A, Budget.BudgetUnavailable, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          // "waiting" until one side finishes first: the statement ("done") or the caller ("gone").
          let state: "waiting" | "done" | "gone" = "waiting"
          let result: A | undefined
          const statement = effect.pipe(
            Effect.mapError(unavailable(what)),
            Effect.catchAllDefect((defect) => Effect.fail(unavailable(what)(defect))),
            Effect.tap((value) => {
              if (state === "gone") return abandoned === undefined ? Effect.void : Effect.ignore(abandoned(value))
              state = "done"
              result = value
              return Effect.void
            })
          )
          const fiber = yield* Effect.forkDaemon(statement)
          // Bounded by its own timer even where the caller cannot be interrupted (a settle inside the
          // agent's mask): the wait ends when the statement does or the time is up, whichever is first;
          // an interruptible caller's interruption ends it too. The statement goes on on its daemon fiber.
          const waited = Effect.async<A, Budget.BudgetUnavailable>((resume) => {
            const observer = (exit: Exit.Exit<A, Budget.BudgetUnavailable>) => {
              clearTimeout(timer)
              resume(exit)
            }
            const timer = setTimeout(() => {
              fiber.removeObserver(observer)
              resume(Effect.fail(
                new Budget.BudgetUnavailable({
                  description: `PostgreSQL: ${what} timed out after ${Duration.format(Duration.millis(millis))}`
                })
              ))
            }, millis)
            fiber.addObserver(observer)
            return Effect.sync(() => {
              clearTimeout(timer)
              fiber.removeObserver(observer)
            })
          })
          return yield* restore(waited).pipe(
            Effect.onExit((exit) => {
              if (exit._tag === "Success") return Effect.void
              if (state !== "done") {
                state = "gone"
                return Effect.void
              }
              // It finished as the caller stopped waiting: undo in the background.
              const value = result as A
              return abandoned === undefined ? Effect.void : Effect.asVoid(Effect.forkDaemon(Effect.ignore(abandoned(value))))
            })
          )
        })
      )
    const guarded = guardedFor(timeoutMillis)

    // Migrations may wait for another process's migrations: a longer bound than one operation.
    yield* guardedFor(Math.max(timeoutMillis, MIGRATION_TIMEOUT_MILLIS))("migrating the budget ledger",
      Effect.provideService(migrate, SqlClient.SqlClient, sql)
    )
    const startedAt = yield* Clock.currentTimeMillis

    const globalElapsed = (now: number) => now - startedAt
    const globalWallClockReached = (now: number) =>
      resolved.global.wallClockMillis !== undefined && globalElapsed(now) >= resolved.global.wallClockMillis

    /** The decision over the two rows, in the rule's order. */
    const decide = (rows: ReadonlyArray<StateRow>, scope: string, now: number): Budget.BudgetStatus => {
      const global = rows.find((row) => row.scope === GLOBAL_SCOPE)
      const user = rows.find((row) => row.scope === scope)
      const reason = global?.reason ??
        (globalWallClockReached(now) ? globalNames.wallClock : undefined) ??
        (user === undefined ? blockedBy(resolved.perUser, perUserNames, zeroLoad, undefined) : user.reason ?? undefined)
      if (reason !== undefined) return { state: "blocked", reason }
      const warning = warningFor(resolved, loadOf(global), loadOf(user))
      return warning === undefined ? { state: "ok" } : { state: "warn", reason: warning }
    }

    const readState = (scope: string, now: number) =>
      guarded("reading the budget", queries.state(scope, windowIndex(resolved, now), now, false))

    const finish = (id: string, charge: Model.Usage | undefined) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        guarded(
          charge === undefined ? "releasing a reservation" : "settling a reservation",
          queries.finishOne(id, charge, windowIndex(resolved, now), now)
        )).pipe(Effect.asVoid)

    const granted = (
      id: string,
      estimate: Model.Usage,
      warning: string | undefined
    ): Budget.Reservation => {
      let finished = false
      // The database makes finishing idempotent (the reservation row is deleted once);
      // the flag only saves a round trip.
      const once = (charge: Model.Usage | undefined) =>
        Effect.suspend(() =>
          finished ? Effect.void : Effect.tap(finish(id, charge), () => Effect.sync(() => (finished = true)))
        )
      return {
        _tag: "Granted",
        warning,
        settle: (actual) => once(chargeOf(actual, estimate)).pipe(withServiceSpan("PgBudget.settle", noStack)),
        // Release cannot fail by its type; a reservation whose release did not
        // reach the database is reclaimed (charged) when its lease expires.
        release: Effect.catchAll(
          once(undefined),
          (error) => Effect.logWarning(`${error.message}; the reservation is charged when its lease expires`)
        )
      }
    }

    const attemptReserve = (scope: string, estimate: Model.Usage, now: number, id: string) =>
      Effect.flatMap(
        queries.reserve(scope, estimate, windowIndex(resolved, now), now, id, now + reservationTtl),
        (rows) => {
          if (!rows.some((row) => row.scope === GLOBAL_SCOPE)) {
            return Effect.dieMessage(`the ${LEDGER_TABLE} table has no '${GLOBAL_SCOPE}' row`)
          }
          return rows.some((row) => row.scope === scope) ? Effect.succeed(rows) : Effect.fail(new MissingUserRow())
        }
      )

    const reserve = (rawEstimate: Model.Usage): Effect.Effect<Budget.Reservation, Budget.BudgetUnavailable> =>
      Effect.gen(function*() {
        const key = yield* currentUserKey
        const scope = userScope(key)
        const now = yield* Clock.currentTimeMillis
        if (globalWallClockReached(now)) return yield* blocked(decide(yield* readState(scope, now), scope, now))
        const estimate = sanitizeEstimate(rawEstimate)
        const id = randomId()
        const rows = yield* guarded(
          "reserving",
          attemptReserve(scope, estimate, now, id).pipe(
            Effect.catchTag("MissingUserRow", () =>
              Effect.zipRight(
                queries.ensureUser(scope, windowIndex(resolved, now)),
                attemptReserve(scope, estimate, now, id)
              )),
            // Failed after the statement may have committed: undo, if it did.
            Effect.onExit((exit) => exit._tag === "Success" ? Effect.void : Effect.ignore(finish(id, undefined)))
          ),
          // Granted after the caller stopped waiting: nobody will settle it.
          () => finish(id, undefined)
        )
        const status = decide(rows, scope, now)
        if (Number(rows[0]?.reserved_rows ?? 0) === 2) {
          return granted(id, estimate, status.state === "warn" ? status.reason : undefined)
        }
        return yield* blocked(status)
      }).pipe(withServiceSpan("PgBudget.reserve", noStack))

    const service: PgBudget.Service = {
      costCapped: costCapped(resolved),
      allowsStep: Effect.gen(function*() {
        const scope = userScope(yield* currentUserKey)
        const now = yield* Clock.currentTimeMillis
        return decide(yield* readState(scope, now), scope, now)
      }).pipe(withServiceSpan("PgBudget.allowsStep", noStack)),
      reserve,
      usageFor: (userId) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const rows = yield* guarded(
            "reading usage",
            queries.usage(userScope(RunContext.userKey(userId)), windowIndex(resolved, now))
          )
          return committedTotals(rows)
        }),
      globalUsage: Effect.map(guarded("reading usage", queries.usage(GLOBAL_SCOPE, 0)), committedTotals),
      reclaimExpired: Effect.flatMap(Clock.currentTimeMillis, (now) =>
        guarded("reclaiming expired reservations", queries.reclaim(windowIndex(resolved, now), now)).pipe(
          Effect.map((rows) => Number(rows[0]?.finished ?? 0))
        ))
    }

    if (reclaimEvery !== undefined) {
      yield* service.reclaimExpired.pipe(
        Effect.tap((count) =>
          count > 0 ? Effect.logInfo(`PgBudget: reclaimed ${count} expired reservation(s), charged in full`) : Effect.void
        ),
        Effect.catchAll((error) => Effect.logWarning(error.message)),
        Effect.repeat(Schedule.spaced(Duration.millis(reclaimEvery))),
        Effect.interruptible,
        Effect.forkScoped
      )
    }
    return service
  })

const blocked = (status: Budget.BudgetStatus): Effect.Effect<Budget.Reservation> =>
  status.state === "blocked" ?
    Effect.succeed({ _tag: "Blocked", reason: status.reason }) :
    // The statement locked both rows, found no cap reached, and still reserved nothing.
    Effect.dieMessage("PgBudget: a reservation was refused without a reason")
