import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Memory from "../Memory.js"
import type { MemoryError } from "../Memory.js"
import { ANONYMOUS_USER } from "../RunContext.js"
import { distinctWords, makeService, openFailure } from "./memoryStore.js"
import { makeSqlStore, type SqlDialect } from "./memorySql.js"

/** The migrations table, apart from the host application's own. @internal */
export const MIGRATIONS_TABLE = "jeeves_memory_migrations"

/** The tokenizer of the first schema, which indexed the raw text. */
const TOKENIZER_V1 = "unicode61 remove_diacritics 0"

/**
 * The full-text index of a user's rows carries one extra token, `owner`: `u`
 * and the hex of the user id's UTF-8 bytes (one token per user, never
 * shared). A search matches it and the query words, so FTS5 intersects with
 * the user's own rows instead of ranking every user's matches. The query
 * still checks `user_id` exactly.
 */
const OWNER = `'u' || hex(user_id)`

/** The first schema, kept as it was for the migrations (and tests of upgrading from it). @internal */
export const SCHEMA_V1 = [
  `CREATE TABLE memory_blocks (
    user_id TEXT NOT NULL DEFAULT '${ANONYMOUS_USER}',
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    pinned_order INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, name)
  )`,
  `CREATE TABLE memory_episodes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    tool_calls TEXT NOT NULL DEFAULT '[]',
    owner TEXT GENERATED ALWAYS AS (${OWNER}) VIRTUAL
  )`,
  `CREATE INDEX memory_episodes_user_time ON memory_episodes (user_id, occurred_at, seq)`,
  `CREATE INDEX memory_episodes_user_session ON memory_episodes (user_id, session_id, occurred_at, seq)`,
  `CREATE VIRTUAL TABLE memory_episodes_fts USING fts5(
    owner, input, output, content = 'memory_episodes', content_rowid = 'seq', tokenize = '${TOKENIZER_V1}'
  )`,
  `CREATE TRIGGER memory_episodes_fts_insert AFTER INSERT ON memory_episodes BEGIN
    INSERT INTO memory_episodes_fts (rowid, owner, input, output) VALUES (new.seq, new.owner, new.input, new.output);
  END`,
  `CREATE TRIGGER memory_episodes_fts_delete AFTER DELETE ON memory_episodes BEGIN
    INSERT INTO memory_episodes_fts (memory_episodes_fts, rowid, owner, input, output)
      VALUES ('delete', old.seq, old.owner, old.input, old.output);
  END`,
  `CREATE TRIGGER memory_episodes_fts_update AFTER UPDATE OF user_id, input, output ON memory_episodes BEGIN
    INSERT INTO memory_episodes_fts (memory_episodes_fts, rowid, owner, input, output)
      VALUES ('delete', old.seq, old.owner, old.input, old.output);
    INSERT INTO memory_episodes_fts (rowid, owner, input, output) VALUES (new.seq, new.owner, new.input, new.output);
  END`,
  `CREATE TABLE memory_facts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    predicate TEXT NOT NULL,
    object TEXT NOT NULL,
    confidence REAL NOT NULL DEFAULT 1.0,
    valid_from INTEGER NOT NULL,
    valid_until INTEGER,
    recorded_at INTEGER NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    owner TEXT GENERATED ALWAYS AS (${OWNER}) VIRTUAL
  )`,
  `CREATE INDEX memory_facts_open ON memory_facts (user_id, subject, predicate) WHERE valid_until IS NULL`,
  `CREATE INDEX memory_facts_user_recorded ON memory_facts (user_id, recorded_at, seq)`,
  `CREATE VIRTUAL TABLE memory_facts_fts USING fts5(
    owner, subject, predicate, object, content = 'memory_facts', content_rowid = 'seq', tokenize = '${TOKENIZER_V1}'
  )`,
  `CREATE TRIGGER memory_facts_fts_insert AFTER INSERT ON memory_facts BEGIN
    INSERT INTO memory_facts_fts (rowid, owner, subject, predicate, object)
      VALUES (new.seq, new.owner, new.subject, new.predicate, new.object);
  END`,
  `CREATE TRIGGER memory_facts_fts_delete AFTER DELETE ON memory_facts BEGIN
    INSERT INTO memory_facts_fts (memory_facts_fts, rowid, owner, subject, predicate, object)
      VALUES ('delete', old.seq, old.owner, old.subject, old.predicate, old.object);
  END`,
  `CREATE TRIGGER memory_facts_fts_update AFTER UPDATE OF user_id, subject, predicate, object ON memory_facts BEGIN
    INSERT INTO memory_facts_fts (memory_facts_fts, rowid, owner, subject, predicate, object)
      VALUES ('delete', old.seq, old.owner, old.subject, old.predicate, old.object);
    INSERT INTO memory_facts_fts (rowid, owner, subject, predicate, object)
      VALUES (new.seq, new.owner, new.subject, new.predicate, new.object);
  END`,
  // Supersession is part of the insert itself, so it is atomic and always
  // scoped to the inserting fact's own user.
  `CREATE TRIGGER memory_facts_supersede BEFORE INSERT ON memory_facts BEGIN
    UPDATE memory_facts SET valid_until = new.valid_from
    WHERE user_id = new.user_id AND subject = new.subject AND predicate = new.predicate
      AND valid_until IS NULL AND object <> new.object;
  END`
]

/**
 * Schema 6: a fact ends only the facts valid when it starts (those that
 * start no later: an open one is closed there; a closed one that a fact
 * learnt late falls inside is cut short, keeping when it was closed); one
 * learnt late, older in valid time than an open fact, is itself closed
 * where the newer one starts, by the insert.
 */
const SUPERSEDE_IN_ORDER = [
  `DROP TRIGGER memory_facts_supersede`,
  `CREATE TRIGGER memory_facts_supersede BEFORE INSERT ON memory_facts BEGIN
    UPDATE memory_facts SET valid_until = new.valid_from, superseded_at = COALESCE(superseded_at, new.recorded_at)
    WHERE user_id = new.user_id AND subject = new.subject AND predicate = new.predicate
      AND object <> new.object AND valid_from <= new.valid_from
      AND (valid_until IS NULL OR valid_until > new.valid_from);
  END`
]

/**
 * Schema 4 records when a fact was closed (transaction time), for recalls
 * as the store knew the facts at a time. Facts closed before it get the
 * time the earliest later fact of theirs with another object was recorded
 * (the one that closed them), else their own `valid_until`.
 */
const SUPERSEDED_AT = [
  `ALTER TABLE memory_facts ADD COLUMN superseded_at INTEGER`,
  `UPDATE memory_facts SET superseded_at = COALESCE(
    (SELECT MIN(n.recorded_at) FROM memory_facts n
      WHERE n.user_id = memory_facts.user_id AND n.subject = memory_facts.subject
        AND n.predicate = memory_facts.predicate AND n.object <> memory_facts.object AND n.seq > memory_facts.seq),
    valid_until)
  WHERE valid_until IS NOT NULL`,
  `DROP TRIGGER memory_facts_supersede`,
  `CREATE TRIGGER memory_facts_supersede BEFORE INSERT ON memory_facts BEGIN
    UPDATE memory_facts SET valid_until = new.valid_from, superseded_at = new.recorded_at
    WHERE user_id = new.user_id AND subject = new.subject AND predicate = new.predicate
      AND valid_until IS NULL AND object <> new.object;
  END`
]

/**
 * The text the full-text index holds for a row: its distinct words as
 * {@link distinctWords} gives them, space separated. FTS5 never tokenizes the
 * raw text (unicode61 splits, folds and drops characters its own way), and the
 * `ascii` tokenizer splits this text exactly at the spaces: ASCII letters and
 * digits are already lower case and every other character of a word is a
 * token character to it.
 */
const searchText = (text: string) => distinctWords(text).join(" ")

/**
 * Schema 2 indexes a stored `search` column (see {@link searchText}) instead
 * of the raw text, so stored text and queries are split into the same words.
 * The index is dropped, the column filled from the stored rows, and the index
 * rebuilt from it.
 */
const SEARCH_V2_DROP = [
  `DROP TRIGGER memory_episodes_fts_insert`,
  `DROP TRIGGER memory_episodes_fts_delete`,
  `DROP TRIGGER memory_episodes_fts_update`,
  `DROP TABLE memory_episodes_fts`,
  `DROP TRIGGER memory_facts_fts_insert`,
  `DROP TRIGGER memory_facts_fts_delete`,
  `DROP TRIGGER memory_facts_fts_update`,
  `DROP TABLE memory_facts_fts`,
  `ALTER TABLE memory_episodes ADD COLUMN search TEXT NOT NULL DEFAULT ''`,
  `ALTER TABLE memory_facts ADD COLUMN search TEXT NOT NULL DEFAULT ''`
]

/** The FTS5 index of `table` over its `search` words, kept by triggers, rebuilt from the stored rows. */
const searchIndexV2 = (table: "memory_episodes" | "memory_facts") => [
  `CREATE VIRTUAL TABLE ${table}_fts USING fts5(
    owner, search, content = '${table}', content_rowid = 'seq', tokenize = 'ascii'
  )`,
  `CREATE TRIGGER ${table}_fts_insert AFTER INSERT ON ${table} BEGIN
    INSERT INTO ${table}_fts (rowid, owner, search) VALUES (new.seq, new.owner, new.search);
  END`,
  `CREATE TRIGGER ${table}_fts_delete AFTER DELETE ON ${table} BEGIN
    INSERT INTO ${table}_fts (${table}_fts, rowid, owner, search)
      VALUES ('delete', old.seq, old.owner, old.search);
  END`,
  `CREATE TRIGGER ${table}_fts_update AFTER UPDATE OF user_id, search ON ${table} BEGIN
    INSERT INTO ${table}_fts (${table}_fts, rowid, owner, search)
      VALUES ('delete', old.seq, old.owner, old.search);
    INSERT INTO ${table}_fts (rowid, owner, search) VALUES (new.seq, new.owner, new.search);
  END`,
  `INSERT INTO ${table}_fts (${table}_fts) VALUES ('rebuild')`
]

const SEARCH_V2_CREATE = [...searchIndexV2("memory_episodes"), ...searchIndexV2("memory_facts")]

const FILL_BATCH = 500

/**
 * Sets `search` of every row of `table` from its `text` expression, a batch
 * of rows at a time (`changedOnly`: only where it changes, so the index's
 * update trigger re-indexes just those rows).
 */
const fillSearch = (sql: SqlClient.SqlClient, table: string, text: string, changedOnly = false) =>
  Effect.gen(function*() {
    let after = 0
    while (true) {
      const rows = yield* sql.unsafe<{ seq: number; text: string; search: string }>(
        `SELECT seq, ${text} AS text, search FROM ${table} WHERE seq > ? ORDER BY seq LIMIT ${FILL_BATCH}`,
        [after]
      )
      if (rows.length === 0) return
      yield* Effect.forEach(
        rows,
        (row) => {
          const search = searchText(row.text)
          return changedOnly && search === row.search ?
            Effect.void :
            sql.unsafe(`UPDATE ${table} SET search = ? WHERE seq = ?`, [search, row.seq])
        },
        { discard: true }
      )
      after = rows[rows.length - 1]!.seq
    }
  })

const statements = (sql: SqlClient.SqlClient, list: ReadonlyArray<string>) =>
  Effect.forEach(list, (statement) => sql.unsafe(statement), { discard: true })

const migrations = Migrator.fromRecord({
  "0001_create_memory": Effect.flatMap(SqlClient.SqlClient, (sql) => statements(sql, SCHEMA_V1)),
  "0002_index_words": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      statements(sql, SEARCH_V2_DROP),
      fillSearch(sql, "memory_episodes", "input || ' ' || output"),
      fillSearch(sql, "memory_facts", "subject || ' ' || predicate || ' ' || object"),
      statements(sql, SEARCH_V2_CREATE)
    ], { discard: true })),
  // FTS5 otherwise keeps a deleted row's words in its index segments until they merge.
  "0003_secure_delete": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    statements(sql, ["memory_episodes_fts", "memory_facts_fts"].map((fts) => `INSERT INTO ${fts} (${fts}, rank) VALUES ('secure-delete', 1)`))),
  "0004_superseded_at": Effect.flatMap(SqlClient.SqlClient, (sql) => statements(sql, SUPERSEDED_AT)),
  // Words are lower-cased after their decomposition too (styled letters such as `𝚨` decompose to capitals,
  // which the `ascii` tokenizer folds only for Latin letters): rows whose words changed are indexed afresh.
  "0005_fold_case_after_decomposition": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      fillSearch(sql, "memory_episodes", "input || ' ' || output", true),
      fillSearch(sql, "memory_facts", "subject || ' ' || predicate || ' ' || object", true)
    ], { discard: true })),
  "0006_supersede_in_order": Effect.flatMap(SqlClient.SqlClient, (sql) => statements(sql, SUPERSEDE_IN_ORDER))
})

/** The index token of `user`'s rows (see {@link OWNER}). */
const ownerToken = (user: string) => `u${Buffer.from(user, "utf8").toString("hex")}`

/**
 * An FTS5 query for `user`'s rows holding any of `terms` (terms are letters
 * and digits only, so quoting is enough).
 */
const matchAny = (user: string, terms: ReadonlyArray<string>) =>
  `owner : "${ownerToken(user)}" AND search : (${terms.map((term) => `"${term}"`).join(" OR ")})`

/**
 * The number of `terms` the row `rowid` of `fts` holds: one FTS5 lookup per
 * term, each run once per query (an uncorrelated IN list) over the user's
 * own rows, so the count costs index lookups, not reading the rows' text.
 * Counting in SQL keeps recall exact over all of the user's rows and returns
 * only `limit` of them; ranking in JS instead would mean fetching every match
 * (with its text) or only the most recent ones (missing older, better ones).
 */
const matchedTerms = (sql: SqlClient.SqlClient, fts: string, rowid: string, user: string, terms: ReadonlyArray<string>) =>
  terms.length === 1 ?
    undefined :
    sql.join(" + ", true)(terms.map((term) =>
      sql`(${sql.literal(rowid)} IN (SELECT rowid FROM ${sql(fts)} WHERE ${sql(fts)} MATCH ${matchAny(user, [term])}))`
    ))

/**
 * SQLite's side of the SQL store. Every write is one statement, so
 * concurrent processes on the same file serialize on SQLite's write lock;
 * fact supersession happens in the insert's trigger.
 */
const dialect = (sql: SqlClient.SqlClient): SqlDialect => ({
  owner: (alias, user) => sql`${sql(alias)}.user_id = ${user}`,
  time: (date) => date.getTime(),
  writeBlock: (user, block) =>
    sql`INSERT INTO memory_blocks (user_id, name, content, pinned_order, updated_at)
      VALUES (${user}, ${block.name}, ${block.content},
        (SELECT COALESCE(MAX(pinned_order) + 1, 0) FROM memory_blocks WHERE user_id = ${user}),
        ${block.now.getTime()})
      ON CONFLICT (user_id, name) DO UPDATE SET
        content = ${block.append ? sql.literal("memory_blocks.content || excluded.content") : sql.literal("excluded.content")},
        updated_at = excluded.updated_at`,
  insertEpisode: (user, episode) =>
    sql`INSERT INTO memory_episodes (id, user_id, session_id, occurred_at, input, output, tool_calls, search)
      VALUES (${episode.id}, ${user}, ${episode.sessionId}, ${episode.occurredAt.getTime()},
        ${episode.input}, ${episode.output}, ${JSON.stringify(episode.toolCalls)},
        ${searchText(`${episode.input} ${episode.output}`)})`,
  // The trigger closes the open facts that start no later; an open one starting after it closes this one.
  insertFact: (user, fact) =>
    sql<{ readonly valid_until: number | null }>`INSERT INTO memory_facts
      (id, user_id, subject, predicate, object, confidence, valid_from, valid_until, recorded_at, superseded_at, sources, search)
      SELECT ${fact.id}, ${user}, ${fact.subject}, ${fact.predicate}, ${fact.object}, ${fact.confidence},
        ${fact.validFrom.getTime()}, later.first, ${fact.recordedAt.getTime()},
        CASE WHEN later.first IS NULL THEN NULL ELSE ${fact.recordedAt.getTime()} END, ${JSON.stringify(fact.sources)},
        ${searchText(`${fact.subject} ${fact.predicate} ${fact.object}`)}
      FROM (SELECT MIN(valid_from) AS first FROM memory_facts
        WHERE user_id = ${user} AND subject = ${fact.subject} AND predicate = ${fact.predicate}
          AND valid_until IS NULL AND object <> ${fact.object} AND valid_from > ${fact.validFrom.getTime()}) AS later
      RETURNING valid_until`,
  searchEpisodes: (user, terms) => ({
    from: sql`memory_episodes_fts JOIN memory_episodes e ON e.seq = memory_episodes_fts.rowid`,
    match: sql`memory_episodes_fts MATCH ${matchAny(user, terms)}`,
    matched: matchedTerms(sql, "memory_episodes_fts", "e.seq", user, terms)
  }),
  searchFacts: (user, terms) => ({
    from: sql`memory_facts_fts JOIN memory_facts f ON f.seq = memory_facts_fts.rowid`,
    match: sql`memory_facts_fts MATCH ${matchAny(user, terms)}`,
    matched: matchedTerms(sql, "memory_facts_fts", "f.seq", user, terms)
  }),
  // The WAL still holds the pages as they were before the deletion: copy the zeroed ones
  // back and empty it (best effort: another connection reading keeps the frames it needs).
  // Best effort: the rows are gone either way, so a failed checkpoint is logged, never the forget's failure.
  afterForget: sql`PRAGMA wal_checkpoint(TRUNCATE)`.pipe(
    Effect.asVoid,
    Effect.catchAll((error) => Effect.logWarning(`SqliteMemory: the WAL checkpoint after forget failed: ${error.message}`))
  )
})

/**
 * The Memory service on the SQLite database behind `SqlClient`: sets WAL,
 * `synchronous = FULL` and a busy timeout on its connection, then migrates.
 *
 * @internal
 */
export const make: Effect.Effect<Memory.Service, MemoryError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  yield* sql`PRAGMA journal_mode = WAL`
  yield* sql`PRAGMA synchronous = FULL`
  yield* sql`PRAGMA busy_timeout = 5000`
  // Deleted rows are overwritten with zeros, so `forget` erases the text from the file, not just from the tables.
  yield* sql`PRAGMA secure_delete = ON`
  yield* Migrator.make({})({ loader: migrations, table: MIGRATIONS_TABLE })
  return makeService(makeSqlStore(sql, dialect(sql)))
}).pipe(
  Effect.catchAll((error) => Effect.fail(openFailure(error))),
  Effect.catchAllDefect((defect) => Effect.fail(openFailure(defect)))
)

/**
 * Opens `filename` with its own client and builds the service on it; the
 * database is closed with the scope.
 *
 * @internal
 */
export const makeFile = (filename: string): Effect.Effect<Memory.Service, MemoryError, Scope.Scope> =>
  SqliteClient.make({ filename }).pipe(
    Effect.provide(Reactivity.layer),
    Effect.catchAllDefect((defect) =>
      Effect.fail(openFailure({ message: `cannot open ${JSON.stringify(filename)}`, cause: defect }))
    ),
    Effect.flatMap((client) => Effect.provideService(make, SqlClient.SqlClient, client))
  )
