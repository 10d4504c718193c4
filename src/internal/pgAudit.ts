/**
 * The Postgres audit store: one chain shared by every process that uses the
 * same database and chain name.
 *
 * Appends are serialized in the database: each batch runs in a transaction
 * that locks the chain's head row (`SELECT ... FOR UPDATE`), so however many
 * processes append, `seq` and `prevHash` stay gap-free. Each entry is stored
 * as its canonical line (the source of truth, verified as such) next to
 * indexed columns for queries.
 *
 * @internal
 */
import { migrateLocked, readCommitted } from "./pgMigrate.js"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as AuditLog from "../AuditLog.js"
import { makeBatchWriter, type Store } from "./audit.js"
import { buildEntry, ChainVerifier, type Draft, GENESIS_HASH, type Head, parseLine, type SigningKey } from "./auditChain.js"
import { newId } from "./ids.js"

/** The migrations table of the audit log. @internal */
export const MIGRATIONS_TABLE = "jeeves_audit_migrations"

const MAX_BATCH = 256
const VERIFY_PAGE = 1000

const migrations = PgMigrator.fromRecord({
  "1_audit_log": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE jeeves_audit_chains (
      name text PRIMARY KEY,
      log_id text NOT NULL UNIQUE,
      seq bigint NOT NULL,
      hash text NOT NULL,
      timestamp_ms bigint NOT NULL
    )`
    yield* sql`CREATE TABLE jeeves_audit_entries (
      log_id text NOT NULL,
      seq bigint NOT NULL,
      ts timestamptz NOT NULL,
      session_id text NOT NULL,
      user_id text,
      run_id text NOT NULL,
      action text NOT NULL,
      entry text NOT NULL,
      PRIMARY KEY (log_id, seq)
    )`
    yield* sql`CREATE INDEX jeeves_audit_entries_user ON jeeves_audit_entries (log_id, user_id, seq)`
    yield* sql`CREATE INDEX jeeves_audit_entries_session ON jeeves_audit_entries (log_id, session_id, seq)`
    yield* sql`CREATE INDEX jeeves_audit_entries_run ON jeeves_audit_entries (log_id, run_id, seq)`
    yield* sql`CREATE INDEX jeeves_audit_entries_ts ON jeeves_audit_entries (log_id, ts)`
  })
})

const MIGRATION_LOCK = 0x6a65657665_02

/**
 * Runs the migrations, one process at a time.
 *
 * @internal
 */
export const migrate: Effect.Effect<void, unknown, SqlClient.SqlClient> = migrateLocked({
  lock: MIGRATION_LOCK,
  table: MIGRATIONS_TABLE,
  loader: migrations
})

/** @internal */
export interface PgStoreOptions {
  /** The chain's name; processes with the same name share one chain. */
  readonly chain?: string | undefined
  /** The bound on one append's transaction (lock wait and statements). */
  readonly timeout?: Duration.DurationInput | undefined
}

const DEFAULT_TIMEOUT = Duration.seconds(10)

interface HeadRow {
  readonly log_id: string
  readonly seq: string | number
  readonly hash: string
  readonly timestamp_ms: string | number
}

/** @internal */
/**
 * A value as the index columns hold it: Postgres `text` refuses NUL, and one
 * run's session id holding one would fail the whole batch, other users'
 * entries with it. The entry itself (what is signed, verified and returned)
 * keeps the value exactly, JSON-escaped; only the column used for filtering
 * has U+FFFD in place of a NUL or a lone surrogate.
 */
const column = (value: string): string => {
  const wellFormed = (value as unknown as { isWellFormed(): boolean; toWellFormed(): string }).isWellFormed() ?
    value :
    (value as unknown as { toWellFormed(): string }).toWellFormed()
  return wellFormed.includes("\u0000") ? wellFormed.replaceAll("\u0000", "\ufffd") : wellFormed
}

/** Whether `entry` has exactly the user, session, run and action `filter` names (those it names). */
const matchesExactly = (entry: AuditLog.AuditEntry, filter: AuditLog.QueryFilter | undefined): boolean =>
  filter === undefined ||
  ((filter.userId === undefined || entry.userId === filter.userId) &&
    (filter.sessionId === undefined || entry.sessionId === filter.sessionId) &&
    (filter.runId === undefined || entry.runId === filter.runId) &&
    (filter.action === undefined || entry.action === filter.action))

export const makePgStore = (
  options: PgStoreOptions,
  signing: SigningKey
): Effect.Effect<Store, AuditLog.AuditUnavailable, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    // Our own column names, whatever name transforms the application configured.
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const chain = options.chain ?? "default"
    const unavailable = (what: string) => (cause: unknown) =>
      new AuditLog.AuditUnavailable({
        description: `postgres audit chain ${JSON.stringify(chain)}: ${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause
      })

    const timeout = Duration.decodeUnknown(options.timeout ?? DEFAULT_TIMEOUT)
    if (timeout._tag === "None" || !Duration.isFinite(timeout.value) || Duration.toMillis(timeout.value) < 1) {
      return yield* new AuditLog.AuditUnavailable({
        description: `postgres audit chain ${JSON.stringify(chain)}: timeout must be a finite duration of at least 1 ms`
      })
    }
    // PostgreSQL takes at most 2^31 - 1 ms (about 24.8 days) for lock_timeout and statement_timeout.
    const bound = `${Math.min(Math.round(Duration.toMillis(timeout.value)), 2_147_483_647)}ms`

    // The migrator turns a failed migration into a defect: failed here, as every other failure to open.
    yield* migrate.pipe(
      Effect.mapError(unavailable("migration failed")),
      Effect.catchAllDefect((defect) => Effect.fail(unavailable("migration failed")(defect)))
    )
    yield* sql`INSERT INTO jeeves_audit_chains (name, log_id, seq, hash, timestamp_ms)
      VALUES (${chain}, ${newId("log")}, 0, ${GENESIS_HASH}, 0)
      ON CONFLICT (name) DO NOTHING`.pipe(Effect.mapError(unavailable("cannot create the chain")))
    const readHead = (lock: boolean) =>
      Effect.flatMap(
        lock
          ? sql<HeadRow>`SELECT log_id, seq, hash, timestamp_ms FROM jeeves_audit_chains WHERE name = ${chain} FOR UPDATE`
          : sql<HeadRow>`SELECT log_id, seq, hash, timestamp_ms FROM jeeves_audit_chains WHERE name = ${chain}`,
        (rows) =>
          rows.length === 1
            ? Effect.succeed({
              logId: rows[0]!.log_id,
              head: { seq: Number(rows[0]!.seq), hash: rows[0]!.hash, timestampMillis: Number(rows[0]!.timestamp_ms) } as Head
            })
            : Effect.fail(
              new AuditLog.AuditUnavailable({
                description: `postgres audit chain ${JSON.stringify(chain)} has no head row (deleted from jeeves_audit_chains?)`
              })
            )
      )
    const logId = (yield* readHead(false).pipe(Effect.mapError(unavailable("cannot read the chain")))).logId

    const commit = (drafts: ReadonlyArray<Draft>) =>
      sql.withTransaction(
        Effect.gen(function*() {
          // Under repeatable read, appends racing for the head row would fail to serialize instead of taking turns.
          yield* readCommitted(sql)
          // Bounded in the database: a lock held elsewhere fails this batch, not every later one forever.
          yield* sql`SELECT set_config('lock_timeout', ${bound}, true), set_config('statement_timeout', ${bound}, true)`
          const { head } = yield* readHead(true)
          const now = yield* Clock.currentTimeMillis
          let next = head
          const entries: Array<AuditLog.AuditEntry> = []
          const rows: Array<Record<string, unknown>> = []
          for (const draft of drafts) {
            const built = buildEntry(next, logId, signing, draft, now)
            entries.push(built.entry)
            rows.push({
              log_id: logId,
              seq: built.entry.seq,
              ts: built.entry.timestamp,
              session_id: column(built.entry.sessionId),
              user_id: built.entry.userId === null ? null : column(built.entry.userId),
              run_id: column(built.entry.runId),
              action: column(built.entry.action),
              entry: built.line
            })
            next = built.head
          }
          yield* sql`INSERT INTO jeeves_audit_entries ${sql.insert(rows)}`
          yield* sql`UPDATE jeeves_audit_chains
            SET seq = ${next.seq}, hash = ${next.hash}, timestamp_ms = ${next.timestampMillis}
            WHERE name = ${chain}`
          return (index: number) => entries[index]!
        })
      ).pipe(Effect.mapError(unavailable("append failed")))

    // A failed transaction changed nothing, so the next batch may succeed: no poisoning.
    const writer = yield* makeBatchWriter({
      commit,
      maxBatch: MAX_BATCH,
      poisonOnFailure: false,
      name: `postgres audit chain ${JSON.stringify(chain)}`
    })

    const query = (filter?: AuditLog.QueryFilter) => {
      const clauses = [sql`log_id = ${logId}`]
      if (filter?.userId === null) clauses.push(sql`user_id IS NULL`)
      else if (filter?.userId !== undefined) clauses.push(sql`user_id = ${column(filter.userId)}`)
      if (filter?.sessionId !== undefined) clauses.push(sql`session_id = ${column(filter.sessionId)}`)
      if (filter?.action !== undefined) clauses.push(sql`action = ${column(filter.action)}`)
      if (filter?.runId !== undefined) clauses.push(sql`run_id = ${column(filter.runId)}`)
      if (filter?.since !== undefined) clauses.push(sql`ts >= ${filter.since.toISOString()}`)
      if (filter?.until !== undefined) clauses.push(sql`ts < ${filter.until.toISOString()}`)
      return sql<{ readonly seq: string; readonly entry: string }>`SELECT seq, entry FROM jeeves_audit_entries
        WHERE ${sql.and(clauses)} ORDER BY seq`.pipe(
        Effect.mapError(unavailable("query failed")),
        Effect.flatMap((rows) =>
          Effect.forEach(rows, (row) => {
            const parsed = parseLine(row.entry)
            return "entry" in parsed
              ? Effect.succeed(parsed.entry)
              : Effect.fail(
                new AuditLog.AuditUnavailable({ description: `stored entry seq ${row.seq} is not an audit entry: ${parsed.problem}` })
              )
          })
        ),
        // The columns hold U+FFFD for a NUL or a lone surrogate ({@link column}): the entries themselves decide.
        Effect.map((entries) => entries.filter((entry) => matchesExactly(entry, filter)))
      )
    }

    // Verifies up to the head as it was when verification started, page by
    // page, then checks that the head row agrees with the last entry: deleting
    // the newest rows is caught too.
    const verify = Effect.gen(function*() {
      const { head } = yield* readHead(false)
      const verifier = new ChainVerifier(signing.verify, { logId })
      let after = 0
      let position = 0
      while (verifier.ok && after < head.seq) {
        const rows = yield* sql<{ readonly seq: string; readonly entry: string }>`SELECT seq, entry FROM jeeves_audit_entries
          WHERE log_id = ${logId} AND seq > ${after} AND seq <= ${head.seq} ORDER BY seq LIMIT ${VERIFY_PAGE}`
        if (rows.length === 0) break
        for (const row of rows) {
          if (!verifier.pushLine(row.entry, ++position)) break
        }
        after = Number(rows[rows.length - 1]!.seq)
      }
      if (verifier.ok) {
        const last = verifier.head
        if (last.seq !== head.seq) {
          verifier.fail("seq_gap", last.seq + 1, position + 1, `the chain head says ${head.seq} entries, but they end at seq ${last.seq}`)
        } else if (last.hash !== head.hash) {
          verifier.fail("chain", last.seq, position, `the chain head's hash does not match the hash of seq ${last.seq}`)
        }
      }
      return verifier.report()
    }).pipe(Effect.mapError(unavailable("verification could not read the log")))

    return { append: writer.append, submit: writer.submit, query, verify } satisfies Store
  })
