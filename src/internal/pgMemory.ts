import { migrateLocked, readCommitted } from "./pgMigrate.js"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as Memory from "../Memory.js"
import { MemoryError } from "../Memory.js"
import { ANONYMOUS_USER } from "../RunContext.js"
import { distinctWords, makeService, openFailure } from "./memoryStore.js"
import { makeSqlStore, type SqlDialect } from "./memorySql.js"

/** @internal */
export const MIGRATIONS_TABLE = "jeeves_memory_migrations"

/** Serializes migration runs of concurrent processes: the migrator's own table lock comes after it creates the table. */
const MIGRATION_LOCK = 0x6a65657665_01

const SENTINEL = `'${ANONYMOUS_USER}'`

/** The first schema, kept as it was for the migrations (and tests of upgrading from it). @internal */
export const SCHEMA_V1 = [
  // memory_blocks may already exist, written by the Python original.
  `CREATE TABLE IF NOT EXISTS memory_blocks (
    namespace TEXT NOT NULL DEFAULT 'default',
    user_id TEXT NOT NULL DEFAULT ${SENTINEL},
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    pinned_order INT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (namespace, user_id, name)
  )`,
  `ALTER TABLE memory_blocks ADD COLUMN IF NOT EXISTS namespace TEXT NOT NULL DEFAULT 'default'`,
  `ALTER TABLE memory_blocks ADD COLUMN IF NOT EXISTS user_id TEXT NOT NULL DEFAULT ${SENTINEL}`,
  `ALTER TABLE memory_blocks ADD COLUMN IF NOT EXISTS pinned_order INT NOT NULL DEFAULT 0`,
  `ALTER TABLE memory_blocks ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()`,
  // Legacy rows kept the anonymous bucket under ''. Where a block exists under
  // both keys, the newer one wins; then '' becomes the sentinel.
  `DELETE FROM memory_blocks legacy USING memory_blocks current
    WHERE legacy.user_id = '' AND current.user_id = ${SENTINEL}
      AND legacy.namespace = current.namespace AND legacy.name = current.name
      AND legacy.updated_at <= current.updated_at`,
  `DELETE FROM memory_blocks current USING memory_blocks legacy
    WHERE current.user_id = ${SENTINEL} AND legacy.user_id = ''
      AND legacy.namespace = current.namespace AND legacy.name = current.name`,
  `UPDATE memory_blocks SET user_id = ${SENTINEL} WHERE user_id = ''`,
  `ALTER TABLE memory_blocks ALTER COLUMN user_id SET DEFAULT ${SENTINEL}`,
  `ALTER TABLE memory_blocks ALTER COLUMN user_id SET NOT NULL`,
  // A table from before user ids had its key without user_id: re-key it.
  `DO $$
  DECLARE
    key_name text;
    key_columns text[];
  BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY a.attname::text) INTO key_name, key_columns
      FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
      WHERE c.conrelid = 'memory_blocks'::regclass AND c.contype = 'p'
      GROUP BY c.conname;
    IF key_name IS NULL OR key_columns <> ARRAY['name', 'namespace', 'user_id'] THEN
      IF key_name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE memory_blocks DROP CONSTRAINT %I', key_name);
      END IF;
      ALTER TABLE memory_blocks ADD PRIMARY KEY (namespace, user_id, name);
    END IF;
  END $$`,
  `CREATE TABLE memory_episodes (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    tool_calls JSONB NOT NULL DEFAULT '[]',
    search TSVECTOR NOT NULL
  )`,
  `CREATE INDEX memory_episodes_user_time ON memory_episodes (namespace, user_id, occurred_at DESC, seq DESC)`,
  `CREATE INDEX memory_episodes_user_session
    ON memory_episodes (namespace, user_id, session_id, occurred_at DESC, seq DESC)`,
  `CREATE INDEX memory_episodes_search ON memory_episodes USING GIN (search)`,
  `CREATE TABLE memory_facts (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    user_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    predicate TEXT NOT NULL,
    object TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL DEFAULT 1,
    valid_from TIMESTAMPTZ NOT NULL,
    valid_until TIMESTAMPTZ,
    recorded_at TIMESTAMPTZ NOT NULL,
    sources JSONB NOT NULL DEFAULT '[]',
    search TSVECTOR NOT NULL
  )`,
  `CREATE INDEX memory_facts_open ON memory_facts (namespace, user_id, subject, predicate) WHERE valid_until IS NULL`,
  `CREATE INDEX memory_facts_user_recorded ON memory_facts (namespace, user_id, recorded_at DESC, seq DESC)`,
  `CREATE INDEX memory_facts_search ON memory_facts USING GIN (search)`
]

/**
 * Postgres refuses a tsvector over 1 MB; the distinct words a tsvector is
 * built from stop at this many bytes (each counted with room for its entry
 * and position), so a huge episode is stored (searchable by its first
 * distinct words) rather than failing the run that remembers it.
 */
const MAX_SEARCH_BYTES = 512 * 1024
const SEARCH_ENTRY_BYTES = 8

/** The longest lexeme a tsvector or tsquery holds; a longer word is not indexed, nor searched for. */
const MAX_WORD_BYTES = 2047

/**
 * The lexemes of a row's tsvector, space separated: the distinct words every
 * backend indexes ({@link distinctWords}), up to {@link MAX_SEARCH_BYTES}.
 * The tsvector is built from them verbatim (`array_to_tsvector`), never by a
 * text search parser, whose idea of a word depends on the server's locale.
 */
const searchText = (text: string) => {
  const kept: Array<string> = []
  let bytes = 0
  for (const word of distinctWords(text)) {
    const size = Buffer.byteLength(word)
    if (size > MAX_WORD_BYTES) continue
    bytes += size + SEARCH_ENTRY_BYTES
    if (bytes > MAX_SEARCH_BYTES) break
    kept.push(word)
  }
  return kept.join(" ")
}

/** The tsvector of {@link searchText} `text` (a bound parameter). */
const tsvectorOf = (sql: SqlClient.SqlClient, text: string) =>
  sql`array_to_tsvector(string_to_array(${searchText(text)}, ' '))`

const REINDEX_BATCH = 500

/**
 * Rebuilds the tsvector of every row of `table` that `text` (its indexed
 * text) holds a non-ASCII character in, from `words()` as it is now, a batch
 * at a time. Schema 1 parsed the words with `to_tsvector('simple', ...)`,
 * which gives the same lexemes for ASCII words; words with other characters
 * are folded now (see `words`), so their rows are indexed afresh.
 */
const reindexNonAscii = (sql: SqlClient.SqlClient, table: string, text: string) =>
  Effect.gen(function*() {
    let after = "0"
    while (true) {
      const rows = yield* sql.unsafe<{ seq: string; text: string }>(
        `SELECT seq::text AS seq, ${text} AS text FROM ${table}
          WHERE seq > $1::bigint AND octet_length(${text}) <> char_length(${text})
          ORDER BY seq LIMIT ${REINDEX_BATCH}`,
        [after]
      )
      if (rows.length === 0) return
      yield* Effect.forEach(
        rows,
        (row) =>
          sql`UPDATE ${sql(table)} SET search = ${tsvectorOf(sql, row.text)} WHERE seq = ${row.seq}::bigint`,
        { discard: true }
      )
      after = rows[rows.length - 1]!.seq
    }
  })

const migrations = Migrator.fromRecord({
  "0001_create_memory": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.forEach(SCHEMA_V1, (statement) => sql.unsafe(statement), { discard: true })),
  "0002_fold_words": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      reindexNonAscii(sql, "memory_episodes", "(input || ' ' || output)"),
      reindexNonAscii(sql, "memory_facts", "(subject || ' ' || predicate || ' ' || object)")
    ], { discard: true })),
  // When a fact was closed (transaction time), for recalls as the store knew the facts at a time. Facts
  // closed before it get the time the earliest later fact of theirs with another object was recorded (the
  // one that closed them), else their own valid_until.
  "0003_superseded_at": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.forEach([
      `ALTER TABLE memory_facts ADD COLUMN superseded_at TIMESTAMPTZ`,
      `UPDATE memory_facts f SET superseded_at = COALESCE(
        (SELECT MIN(n.recorded_at) FROM memory_facts n
          WHERE n.namespace = f.namespace AND n.user_id = f.user_id AND n.subject = f.subject
            AND n.predicate = f.predicate AND n.object <> f.object AND n.seq > f.seq),
        f.valid_until)
      WHERE f.valid_until IS NOT NULL`,
      // A process of an earlier version (a rolling deploy) closes facts without saying when: the database does.
      `CREATE OR REPLACE FUNCTION jeeves_memory_fact_closed() RETURNS trigger AS $$
      BEGIN
        IF OLD.valid_until IS NULL AND NEW.valid_until IS NOT NULL AND NEW.superseded_at IS NULL THEN
          NEW.superseded_at := now();
        END IF;
        RETURN NEW;
      END $$ LANGUAGE plpgsql`,
      `CREATE TRIGGER memory_facts_closed BEFORE UPDATE OF valid_until ON memory_facts
        FOR EACH ROW EXECUTE FUNCTION jeeves_memory_fact_closed()`
    ], (statement) => sql.unsafe(statement), { discard: true })),
  // Words are lower-cased after their decomposition too (styled letters such as `𝐋` decompose to capitals):
  // rows with non-ASCII text are indexed afresh.
  "0004_fold_case_after_decomposition": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      reindexNonAscii(sql, "memory_episodes", "(input || ' ' || output)"),
      reindexNonAscii(sql, "memory_facts", "(subject || ' ' || predicate || ' ' || object)")
    ], { discard: true }))
})

/** A tsquery matching any of `terms`, as tsquery input (terms are letters and digits only, so quoting is enough). */
const matchAny = (terms: ReadonlyArray<string>) => terms.map((term) => `'${term}'`).join(" | ")

/** Postgres's side of the SQL store: every row also carries the namespace. */
const dialect = (sql: SqlClient.SqlClient, namespace: string): SqlDialect => {
  const owner = (alias: string, user: string) =>
    sql`${sql(alias)}.namespace = ${namespace} AND ${sql(alias)}.user_id = ${user}`
  /**
   * The query lexemes are the terms verbatim (a `::tsquery` cast, no parser),
   * as the stored ones are. The count is one `@@` per term on the matching
   * rows' tsvectors: no ts_rank, which weighs by position and repetition.
   */
  const search = (alias: "e" | "f", table: string, allTerms: ReadonlyArray<string>) => {
    const terms = allTerms.filter((term) => Buffer.byteLength(term) <= MAX_WORD_BYTES)
    const column = sql`${sql(alias)}.search`
    return {
      from: sql`${sql(table)} ${sql(alias)}`,
      match: terms.length === 0 ? sql`FALSE` : sql`${column} @@ ${matchAny(terms)}::tsquery`,
      matched: terms.length <= 1 ?
        undefined :
        sql.join(" + ", true)(terms.map((term) => sql`(${column} @@ ${matchAny([term])}::tsquery)::int`))
    }
  }
  return {
    owner,
    time: pgTime,
    text: pgText,
    writeBlock: (user, block) =>
      sql`INSERT INTO memory_blocks AS b (namespace, user_id, name, content, pinned_order, updated_at)
        VALUES (${namespace}, ${user}, ${pgText(block.name)}, ${pgText(block.content)},
          (SELECT COALESCE(MAX(pinned_order) + 1, 0) FROM memory_blocks o WHERE ${owner("o", user)}),
          ${pgTime(block.now)})
        ON CONFLICT (namespace, user_id, name) DO UPDATE SET
          content = ${block.append ? sql.literal("b.content || EXCLUDED.content") : sql.literal("EXCLUDED.content")},
          updated_at = EXCLUDED.updated_at`,
    insertEpisode: (user, episode) =>
      sql`INSERT INTO memory_episodes
        (id, namespace, user_id, session_id, occurred_at, input, output, tool_calls, search)
        VALUES (${episode.id}, ${namespace}, ${user}, ${pgText(episode.sessionId)}, ${pgTime(episode.occurredAt)},
          ${pgText(episode.input)}, ${pgText(episode.output)}, ${pgJson(episode.toolCalls)}::jsonb,
          ${tsvectorOf(sql, `${episode.input} ${episode.output}`)})`,
    insertFact: (user, fact) =>
      sql.withTransaction(Effect.all([
        // Under repeatable read the snapshot would be taken by the lock's statement, before its wait, and
        // miss the fact the append it waited for committed.
        readCommitted(sql),
        // Concurrent appends for one (user, subject, predicate) take turns,
        // so each sees the facts the others committed and closes them.
        sql`SELECT pg_advisory_xact_lock(hashtextextended(${
          pgText(JSON.stringify([namespace, user, fact.subject, fact.predicate]))
        }, 0))`,
        // The facts valid when it starts end there (a closed one cut short keeps when it was closed); an
        // open one starting after it closes the new one.
        sql`UPDATE memory_facts f SET valid_until = ${pgTime(fact.validFrom)},
            superseded_at = COALESCE(f.superseded_at, ${pgTime(fact.recordedAt)}::timestamptz)
          WHERE ${owner("f", user)} AND f.subject = ${pgText(fact.subject)} AND f.predicate = ${pgText(fact.predicate)}
            AND f.object <> ${pgText(fact.object)} AND f.valid_from <= ${pgTime(fact.validFrom)}
            AND (f.valid_until IS NULL OR f.valid_until > ${pgTime(fact.validFrom)})`,
        sql<{ readonly valid_until: Date | string | null }>`INSERT INTO memory_facts (id, namespace, user_id, subject, predicate,
            object, confidence, valid_from, valid_until, recorded_at, superseded_at, sources, search)
          SELECT ${fact.id}::text, ${namespace}::text, ${user}::text, ${pgText(fact.subject)}::text,
            ${pgText(fact.predicate)}::text, ${pgText(fact.object)}::text,
            ${fact.confidence}::double precision, ${pgTime(fact.validFrom)}::timestamptz, later.first,
            ${pgTime(fact.recordedAt)}::timestamptz,
            CASE WHEN later.first IS NULL THEN NULL ELSE ${pgTime(fact.recordedAt)}::timestamptz END,
            ${pgJson(fact.sources)}::jsonb, ${tsvectorOf(sql, `${fact.subject} ${fact.predicate} ${fact.object}`)}
          FROM (SELECT MIN(o.valid_from) AS first FROM memory_facts o
            WHERE ${owner("o", user)} AND o.subject = ${pgText(fact.subject)} AND o.predicate = ${pgText(fact.predicate)}
              AND o.valid_until IS NULL AND o.object <> ${pgText(fact.object)} AND o.valid_from > ${pgTime(fact.validFrom)}) AS later
          RETURNING valid_until`
      ]).pipe(Effect.map(([, , , inserted]) => inserted))),
    searchEpisodes: (_user, terms) => search("e", "memory_episodes", terms),
    searchFacts: (_user, terms) => search("f", "memory_facts", terms)
  }
}

/**
 * A time as Postgres gets it: the instant in UTC (ISO 8601). node-postgres
 * writes a Date in the process's local zone with its offset cut to whole
 * minutes, which moves a historical time in a zone whose offset then had
 * seconds (Africa/Monrovia until 1972: -0:44:30). Years outside 1 to 9999
 * (no 4-digit ISO form) go as the Date.
 *
 * @internal
 */
export const pgTime = (date: Date): string | Date => {
  const year = date.getUTCFullYear()
  return year >= 1 && year <= 9999 ? date.toISOString() : date
}

/**
 * A text as Postgres can hold it: `text` and `jsonb` refuse NUL (U+0000),
 * which the other backends store. It becomes U+FFFD, as the driver already
 * makes a lone surrogate, so a prompt holding one does not fail the run at
 * its end.
 */
const pgText = (value: string): string => (value.includes("\u0000") ? value.replaceAll("\u0000", "\ufffd") : value)

/** JSON for a `jsonb` column: NUL in its strings as in {@link pgText}. */
const pgJson = (value: unknown): string => {
  const json = JSON.stringify(value)
  // `\u0000` escapes, not an escaped backslash followed by the text "u0000".
  return json.includes("\\u0000") ? json.replace(/(?<!\\)((?:\\\\)*)\\u0000/g, "$1\\ufffd") : json
}

/**
 * Runs the migrations (one process at a time), then builds the service on
 * the `SqlClient` in context.
 *
 * @internal
 */
export const make = (
  options?: { readonly namespace?: string | undefined }
): Effect.Effect<Memory.Service, MemoryError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const namespace = options?.namespace ?? "default"
    if (namespace.trim() === "") {
      return yield* new MemoryError({ method: "open", description: "namespace must be a non-empty string" })
    }
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* migrateLocked({ lock: MIGRATION_LOCK, table: MIGRATIONS_TABLE, loader: migrations }).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.catchAll((error) => Effect.fail(openFailure(error))),
      Effect.catchAllDefect((defect) => Effect.fail(openFailure(defect)))
    )
    return makeService(makeSqlStore(sql, dialect(sql, namespace)))
  })
