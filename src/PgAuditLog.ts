/**
 * The audit log in PostgreSQL: one tamper-evident chain shared by every
 * process that uses the same database.
 *
 * Appends are serialized in the database (a transaction that locks the
 * chain's head row), so with N processes `seq` stays gap-free and each
 * `prevHash` is the hash of the entry before it. Each process batches its
 * concurrent appends into one transaction. The tables are created by
 * migrations (`PgMigrator`, table `jeeves_audit_migrations`). Entries have
 * the same format as the audit file and verify with the same functions.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Config, Effect, Layer } from "effect"
 * import { AuditLog, RunContext } from "jeevesagent"
 * import * as PgAuditLog from "jeevesagent/PgAuditLog"
 *
 * const AuditLive = Layer.unwrapEffect(
 *   Effect.map(Config.redacted("AUDIT_KEY"), (secret) => PgAuditLog.layer({ secret }))
 * ).pipe(Layer.provide(PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })))
 *
 * const program = Effect.gen(function*() {
 *   const audit = yield* AuditLog.AuditLog
 *   yield* audit.append({ actor: "system", action: "deploy", payload: { version: "1.2.0" } })
 *   return yield* audit.verify // { valid: true, ... }
 * }).pipe(RunContext.withUser("ops"), Effect.provide(AuditLive))
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Duration from "effect/Duration"
import * as AuditLog from "./AuditLog.js"
import * as internalAudit from "./internal/audit.js"
import * as internal from "./internal/pgAudit.js"

/**
 * Options of {@link layer}: the key (a `secret` or a `keyring`) and the
 * chain's name (default `"default"`): processes using the same name share one
 * chain; different names are separate logs in the same tables.
 *
 * @since 0.1.0
 * @category models
 */
export type Options = AuditLog.KeyOptions & {
  readonly chain?: string | undefined
  /**
   * How long one append's transaction may wait for the chain's head row and
   * run (default 10 seconds; PostgreSQL's `lock_timeout` and
   * `statement_timeout` for that transaction). A transaction of another
   * process stuck on the head (crashed mid-append, paused, partitioned
   * away) then fails the appends waiting behind it with `AuditUnavailable`
   * — the agent denies destructive tools — instead of holding every run.
   * Longer than PostgreSQL takes (2^31 - 1 ms, about 24.8 days) is that.
   */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * The name of the migrations table.
 *
 * @since 0.1.0
 * @category constants
 */
export const migrationsTable: string = internal.MIGRATIONS_TABLE

/**
 * Runs the migrations, creates the chain if it does not exist, and starts the
 * process's writer. Payloads are redacted with the `Secrets` service's
 * `redact` when one is provided to this layer, else with
 * `Secrets.redactPatterns`. If the database is unreachable, construction
 * fails with `AuditUnavailable`; a failed append later fails only that append
 * (its transaction changed nothing).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<AuditLog.Service, AuditLog.AuditUnavailable, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const signing = yield* internalAudit.requireSigningKey(options)
    const redact = yield* internalAudit.currentRedact
    const store = yield* internal.makePgStore(options, signing)
    return internalAudit.makeService(store, redact)
  })

/**
 * The layer of {@link make}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<AuditLog.AuditLog, AuditLog.AuditUnavailable, SqlClient.SqlClient> =>
  Layer.scoped(AuditLog.AuditLog, make(options))
