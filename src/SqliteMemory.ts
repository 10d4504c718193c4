/**
 * Memory in a SQLite file: the embedded default for persistence.
 *
 * The database runs in WAL mode with `synchronous = FULL`, so an
 * acknowledged write survives a crash of the process (and of the machine,
 * where the disk honours flushes). Tables are created and upgraded by
 * migrations recorded in `jeeves_memory_migrations`; recall uses FTS5
 * full-text indexes. `forget` erases the text from the file, not just the
 * tables: deleted rows and index entries are overwritten with zeros
 * (`secure_delete`, FTS5 `secure-delete`), and the WAL is checkpointed and
 * emptied (best effort: a connection reading at that moment keeps its
 * frames until the next checkpoint). Anonymous data is stored under
 * `RunContext.ANONYMOUS_USER`, which no real user id can equal.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Memory, RunContext } from "jeevesagent"
 * import * as SqliteMemory from "jeevesagent/SqliteMemory"
 *
 * const program = Effect.gen(function*() {
 *   const memory = yield* Memory.Memory
 *   yield* memory.remember({ input: "I moved to Lisbon", output: "Noted." })
 *   return yield* memory.recall("Lisbon")
 * }).pipe(RunContext.withUser("alice"), Effect.provide(SqliteMemory.layer({ filename: "memory.db" })))
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/sqliteMemory.js"
import * as Memory from "./Memory.js"

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The database file; created when missing. Its directory must exist. */
  readonly filename: string
}

/**
 * The name of the migrations table.
 *
 * @since 0.1.0
 * @category constants
 */
export const migrationsTable: string = internal.MIGRATIONS_TABLE

/**
 * Builds the service on the SQLite database of the `SqlClient` in context
 * (from `@effect/sql-sqlite-node`): sets WAL, `synchronous = FULL` and a
 * 5 second busy timeout on the connection, then runs the migrations.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Memory.Service, Memory.MemoryError, SqlClient.SqlClient> = internal.make

/**
 * Memory in the SQLite file `filename`, with its own connection, closed
 * when the layer is released. Fails with a `MemoryError` (method `open`)
 * when the file cannot be opened or migrated.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Memory.Memory, Memory.MemoryError> =>
  Layer.scoped(Memory.Memory, internal.makeFile(options.filename))
