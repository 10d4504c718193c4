/**
 * Memory in PostgreSQL, shared by every process that uses the same database
 * and namespace.
 *
 * Tables are created and upgraded by migrations recorded in
 * `jeeves_memory_migrations` (one process at a time); recall uses full-text
 * search (`tsvector`, GIN). Anonymous data is stored under
 * `RunContext.ANONYMOUS_USER`: the migration rewrites the legacy `''` user
 * id of an existing `memory_blocks` table to it and makes it the column
 * default, and no real user id can equal it. Appending a fact closes the
 * same user's open facts atomically, also across processes.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Redacted } from "effect"
 * import * as PgMemory from "jeevesagent/PgMemory"
 *
 * const MemoryLive = PgMemory.layer().pipe(
 *   Layer.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/pgMemory.js"
import * as Memory from "./Memory.js"

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Separates agents sharing one database; each sees only its own data. Default `"default"`. */
  readonly namespace?: string | undefined
}

/**
 * The name of the migrations table.
 *
 * @since 0.1.0
 * @category constants
 */
export const migrationsTable: string = internal.MIGRATIONS_TABLE

/**
 * Runs the migrations on the `SqlClient` in context and builds the service.
 * Fails with a `MemoryError` (method `open`) when they cannot run.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options?: Options) => Effect.Effect<Memory.Service, Memory.MemoryError, SqlClient.SqlClient> =
  internal.make

/**
 * The layer of {@link make}. Provide a `PgClient` layer to it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Memory.Memory, Memory.MemoryError, SqlClient.SqlClient> =>
  Layer.effect(Memory.Memory, make(options))
