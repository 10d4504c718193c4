import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Memory from "../Memory.js"
import type { MemoryError } from "../Memory.js"
import { ANONYMOUS_USER } from "../RunContext.js"
import { makeService, openFailure } from "./memoryStore.js"
import { makeSqlStore, type SqlDialect } from "./memorySql.js"

/** The migrations table, apart from the host application's own. @internal */
export const MIGRATIONS_TABLE = "jeeves_memory_migrations"

const TOKENIZER = "unicode61 remove_diacritics 0"

/**
 * The full-text index of a user's rows carries one extra token, `owner`: `u`
 * and the hex of the user id's UTF-8 bytes (one token per user, never
 * shared). A search matches it and the query words, so FTS5 intersects with
 * the user's own rows instead of ranking every user's matches. The query
 * still checks `user_id` exactly.
 */
const OWNER = `'u' || hex(user_id)`

const SCHEMA_V1 = [
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
    owner, input, output, content = 'memory_episodes', content_rowid = 'seq', tokenize = '${TOKENIZER}'
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
    owner, subject, predicate, object, content = 'memory_facts', content_rowid = 'seq', tokenize = '${TOKENIZER}'
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

const migrations = Migrator.fromRecord({
  "0001_create_memory": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.forEach(SCHEMA_V1, (statement) => sql.unsafe(statement), { discard: true }))
})

/**
 * An FTS5 query for `user`'s rows (see {@link OWNER}) holding any of `terms`
 * in `columns` (terms are letters and digits only, so quoting is enough).
 */
const matchAny = (user: string, columns: string, terms: ReadonlyArray<string>) =>
  `owner : "u${Buffer.from(user, "utf8").toString("hex")}" AND {${columns}} : (${
    terms.map((term) => `"${term}"`).join(" OR ")
  })`

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
    sql`INSERT INTO memory_episodes (id, user_id, session_id, occurred_at, input, output, tool_calls)
      VALUES (${episode.id}, ${user}, ${episode.sessionId}, ${episode.occurredAt.getTime()},
        ${episode.input}, ${episode.output}, ${JSON.stringify(episode.toolCalls)})`,
  insertFact: (user, fact) =>
    sql`INSERT INTO memory_facts
      (id, user_id, subject, predicate, object, confidence, valid_from, valid_until, recorded_at, sources)
      VALUES (${fact.id}, ${user}, ${fact.subject}, ${fact.predicate}, ${fact.object}, ${fact.confidence},
        ${fact.validFrom.getTime()}, NULL, ${fact.recordedAt.getTime()}, ${JSON.stringify(fact.sources)})`,
  searchEpisodes: (user, terms) => ({
    from: sql`memory_episodes_fts JOIN memory_episodes e ON e.seq = memory_episodes_fts.rowid`,
    match: sql`memory_episodes_fts MATCH ${matchAny(user, "input output", terms)}`,
    rank: sql`bm25(memory_episodes_fts, 0, 1, 1)`
  }),
  searchFacts: (user, terms) => ({
    from: sql`memory_facts_fts JOIN memory_facts f ON f.seq = memory_facts_fts.rowid`,
    match: sql`memory_facts_fts MATCH ${matchAny(user, "subject predicate object", terms)}`,
    rank: sql`bm25(memory_facts_fts, 0, 1, 1, 1)`
  })
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
