import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/**
 * `SET TRANSACTION ISOLATION LEVEL READ COMMITTED` as the first statement of
 * a transaction this code began (not inside a caller's own, where it would
 * fail): whatever the database's default, a statement that waited for a lock
 * then sees what the holder committed. Under repeatable read the snapshot
 * would be taken before the wait.
 *
 * @internal
 */
export const readCommitted = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError> =>
  Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
    Option.isSome(transaction) && transaction.value[1] === 0 ?
      Effect.asVoid(sql`SET TRANSACTION ISOLATION LEVEL READ COMMITTED`) :
      Effect.void)

/**
 * Runs a module's migrations inside one transaction holding a Postgres
 * advisory lock, so processes starting together migrate one at a time.
 *
 * `Migrator.make({})` is the migrator `PgMigrator` wraps, without the
 * FileSystem/Path/CommandExecutor requirements its schema dumps need.
 *
 * @internal
 */
export const migrateLocked = (options: {
  /** An advisory lock id unique to the module. */
  readonly lock: number
  /** The module's own migrations table. */
  readonly table: string
  readonly loader: Migrator.Loader<never>
}) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(
      Effect.all([
        sql`SELECT pg_advisory_xact_lock(${sql.literal(String(options.lock))})`,
        // The migrator probes for its table with a query that would abort this
        // transaction when the table is missing, so it is created up front — only
        // when missing: `CREATE TABLE IF NOT EXISTS` needs CREATE on the schema even
        // when the table exists, which an application role of least privilege (the
        // schema migrated by its owner) does not have.
        Effect.flatMap(
          sql<{ readonly present: boolean }>`SELECT to_regclass(${options.table}) IS NOT NULL AS present`,
          (rows) =>
            rows[0]?.present === true ? Effect.void : sql`CREATE TABLE IF NOT EXISTS ${sql(options.table)} (
              migration_id integer PRIMARY KEY,
              created_at timestamp with time zone NOT NULL DEFAULT now(),
              name text NOT NULL
            )`
        ),
        Migrator.make({})({ loader: options.loader, table: options.table })
      ], { discard: true })
    ))
