/**
 * The budget in PostgreSQL: one ledger shared by every process that uses
 * the same database, so N processes enforce one set of caps with no
 * overshoot from concurrency.
 *
 * - One row per scope (`global`, `user:<id>`) with committed usage and
 *   outstanding reservations as exact decimals, plus one row per
 *   outstanding reservation. Tables are created by migrations recorded in
 *   `jeeves_budget_migrations` (one process at a time).
 * - Check-and-reserve is one statement: it locks the global row and the
 *   user's row (always in that order), evaluates the caps on the locked
 *   rows and reserves on both with a conditional `UPDATE ... RETURNING` —
 *   on both or on neither. There is no read-then-write window.
 * - Settle and release delete the reservation row and apply it in the same
 *   statement, so each happens at most once, whichever process does it.
 * - Reservations carry a lease (`reservationTtl`). A reservation whose
 *   process died is reclaimed after it expires — charged in full, since its
 *   call may have run — by a background fiber of whichever process gets to
 *   it first.
 * - Postgres unreachable or slow (`timeout`) fails with
 *   `Budget.BudgetUnavailable`; the agent then fails the run without
 *   calling the model (fail closed).
 * - Every reservation and every settle is one statement that holds the
 *   global row's lock until it commits, so the commit's WAL flush bounds
 *   the throughput of the whole ledger. Connections opened with
 *   `-c synchronous_commit=off` (a `PgClient` URL with
 *   `?options=-c%20synchronous_commit%3Doff`) trade the last few hundred
 *   milliseconds of charges on a database crash for several times the rate.
 * - Per-user windows are kept in the row (`window_index`); the ledger never
 *   forgets a user (there is no `maxUsers` / `userIdleTtl`). The global wall
 *   clock (`maxWallClock`) runs from the moment this process built the
 *   layer; per-user wall clocks are stored in the ledger.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Redacted } from "effect"
 * import * as PgBudget from "jeevesagent/PgBudget"
 *
 * const BudgetLive = PgBudget.layer({ perUserMaxCostUsd: 5, perUserWindow: "1 day" }).pipe(
 *   Layer.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Budget from "./Budget.js"
import * as internal from "./internal/pgBudget.js"

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Lease of a reservation: after it, an unfinished reservation is reclaimed and charged in full. Default 15 minutes. */
  readonly reservationTtl?: Duration.DurationInput | undefined
  /** How often this process reclaims expired reservations; `null` never. Default 1 minute. */
  readonly reclaimInterval?: Duration.DurationInput | null | undefined
  /**
   * Longest wait for one database round trip before `BudgetUnavailable`.
   * Default 10 seconds. The statement itself is never interrupted (an
   * interrupted statement's cancel could hit another fiber's statement on
   * the same connection): it runs to its end in the background, and a
   * reservation it grants after the caller stopped waiting is released. Set
   * `statement_timeout` on the role or connection to bound it in the
   * database too.
   */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * The Postgres budget service: the budget service plus an administrative
 * `reclaimExpired`, which reclaims (and charges in full) every reservation
 * whose lease has expired, returning how many it reclaimed.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service extends Budget.Service {
  readonly reclaimExpired: Effect.Effect<number, Budget.BudgetUnavailable>
}

/**
 * The name of the migrations table.
 *
 * @since 0.1.0
 * @category constants
 */
export const migrationsTable: string = internal.MIGRATIONS_TABLE

/**
 * Runs the migrations on the `SqlClient` in context and builds the service;
 * the reclaiming fiber lives in the scope. Fails with
 * `Budget.BudgetConfigError` on a bad configuration and with
 * `Budget.BudgetUnavailable` when the database cannot be migrated.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  config: Budget.Config,
  options?: Options
) => Effect.Effect<Service, Budget.BudgetConfigError | Budget.BudgetUnavailable, SqlClient.SqlClient | Scope.Scope> =
  internal.make

/**
 * The layer of {@link make}, providing `Budget.Budget`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: Budget.Config,
  options?: Options
): Layer.Layer<Budget.Budget, Budget.BudgetConfigError | Budget.BudgetUnavailable, SqlClient.SqlClient> =>
  Layer.scoped(Budget.Budget, make(config, options))
