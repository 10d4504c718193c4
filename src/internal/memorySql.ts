/**
 * The SQL store shared by the SQLite and Postgres backends. The statements
 * are the same; a {@link SqlDialect} supplies what differs: how a user's rows
 * are selected (Postgres adds a namespace), how times are stored, the
 * full-text search, and the writes that need dialect features.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import type * as Memory from "../Memory.js"
import { MemoryError } from "../Memory.js"
import { asKnownAt, type BlockWrite, decodeUser, orderBlocks, type Store } from "./memoryStore.js"

/**
 * Rows as the stores select them. Times are epoch millis (SQLite) or Dates
 * (Postgres); JSON columns are text (SQLite) or parsed (Postgres).
 */
interface EpisodeRow {
  readonly id: string
  readonly session_id: string
  readonly user_id: string
  readonly occurred_at: number | Date
  readonly input: string
  readonly output: string
  readonly tool_calls: string | Memory.Episode["toolCalls"]
}

interface FactRow {
  readonly id: string
  readonly user_id: string
  readonly subject: string
  readonly predicate: string
  readonly object: string
  readonly confidence: number
  readonly valid_from: number | Date
  readonly valid_until: number | Date | null
  readonly recorded_at: number | Date
  readonly superseded_at: number | Date | null
  readonly sources: string | ReadonlyArray<string>
}

interface BlockRow {
  readonly name: string
  readonly content: string
  readonly pinned_order: number
  readonly updated_at: number | Date
}

const EPISODE_COLUMNS = "e.id, e.session_id, e.user_id, e.occurred_at, e.input, e.output, e.tool_calls"
const FACT_COLUMNS =
  "f.id, f.user_id, f.subject, f.predicate, f.object, f.confidence, f.valid_from, f.valid_until, f.recorded_at, " +
  "f.superseded_at, f.sources"

/**
 * A word search: what to select from, the match condition (the row holds any
 * of the terms), and an expression counting how many of the distinct terms
 * the row holds.
 *
 * Rows rank by that count, then newest first, then by insertion order: the
 * order of the in-memory backend, computed from the row and the query alone.
 * No relevance score with collection statistics (FTS5's bm25, which counts
 * every user's rows of the shared index) and no length or repetition weights
 * (ts_rank): those would make the backends disagree, and would let one
 * user's writes reorder another user's recall.
 */
export interface Search {
  readonly from: Statement.Fragment
  readonly match: Statement.Fragment
  /** Undefined when every matching row holds all the terms (a single term). */
  readonly matched: Statement.Fragment | undefined
}

/**
 * What differs between the SQL backends. Tables are aliased `b` (blocks),
 * `e` (episodes) and `f` (facts).
 *
 * @internal
 */
export interface SqlDialect {
  /** The condition selecting `user`'s rows of the table aliased `alias`. */
  readonly owner: (alias: string, user: string) => Statement.Fragment
  /** A time as the tables store it. */
  readonly time: (date: Date) => number | string | Date
  readonly writeBlock: (user: string, block: BlockWrite) => Effect.Effect<unknown, SqlError>
  readonly insertEpisode: (user: string, episode: Memory.Episode) => Effect.Effect<unknown, SqlError>
  /**
   * `Store.insertFact`, atomically: closes the user's open facts with the
   * same subject and predicate and another object that start no later than
   * `fact`, and inserts it, closed at the start of the earliest such open
   * fact that starts after it; returns the inserted row's `valid_until`.
   */
  readonly insertFact: (
    user: string,
    fact: Memory.Fact
  ) => Effect.Effect<ReadonlyArray<{ readonly valid_until: number | string | Date | null }>, SqlError>
  /** A search of `user`'s episodes (`e`) holding any of `terms`. */
  readonly searchEpisodes: (user: string, terms: ReadonlyArray<string>) => Search
  /** A search of `user`'s facts (`f`) holding any of `terms`. */
  readonly searchFacts: (user: string, terms: ReadonlyArray<string>) => Search
  /** A text as the database can hold it (Postgres: no NUL); applied to session ids read by. */
  readonly text?: ((value: string) => string) | undefined
  /** Runs after a `forget` that deleted rows, outside its transaction. */
  readonly afterForget?: Effect.Effect<void, SqlError> | undefined
}

const fromJson = <A>(value: string | A): A => (typeof value === "string" ? JSON.parse(value) as A : value)

const toEpisode = (row: EpisodeRow): Memory.Episode => ({
  id: row.id,
  sessionId: row.session_id,
  userId: decodeUser(row.user_id),
  occurredAt: new Date(row.occurred_at),
  input: row.input,
  output: row.output,
  toolCalls: fromJson(row.tool_calls)
})

const toFact = (row: FactRow): Memory.Fact => ({
  id: row.id,
  userId: decodeUser(row.user_id),
  subject: row.subject,
  predicate: row.predicate,
  object: row.object,
  confidence: Number(row.confidence),
  validFrom: new Date(row.valid_from),
  validUntil: row.valid_until === null ? null : new Date(row.valid_until),
  recordedAt: new Date(row.recorded_at),
  supersededAt: row.superseded_at === null ? null : new Date(row.superseded_at),
  sources: fromJson(row.sources)
})

const toBlock = (row: BlockRow): Memory.MemoryBlock => ({
  name: row.name,
  content: row.content,
  pinnedOrder: row.pinned_order,
  updatedAt: new Date(row.updated_at)
})

/**
 * Runs a query of `method` and decodes its rows; a failure of either is a
 * {@link MemoryError} of `method`.
 */
const runQuery = <A, B>(
  method: string,
  query: Effect.Effect<A, SqlError>,
  decode: (rows: A) => B
): Effect.Effect<B, MemoryError> =>
  Effect.flatMap(
    Effect.mapError(query, (cause) => new MemoryError({ method, description: cause.message, cause })),
    (rows) =>
      Effect.try({
        try: () => decode(rows),
        catch: (cause) => new MemoryError({ method, description: "a stored row could not be read", cause })
      })
  )

/**
 * The store over `sql` in `dialect`.
 *
 * @internal
 */
export const makeSqlStore = (sql: SqlClient.SqlClient, dialect: SqlDialect): Store => {
  const { owner, time } = dialect
  const text = dialect.text ?? ((value: string) => value)
  const done = () => undefined
  const limitTo = (limit: number | undefined) => (limit === undefined ? sql`` : sql`LIMIT ${limit}`)

  const blocksOf = (user: string, method = "working") =>
    runQuery(
      method,
      sql<BlockRow>`SELECT b.name, b.content, b.pinned_order, b.updated_at FROM memory_blocks b WHERE ${owner("b", user)}`,
      (rows) => orderBlocks(rows.map(toBlock))
    )

  const factsOf = (method: string, user: string, order: "ASC" | "DESC", limit?: number) =>
    runQuery(
      method,
      sql<FactRow>`SELECT ${sql.literal(FACT_COLUMNS)} FROM memory_facts f WHERE ${owner("f", user)}
        ORDER BY f.recorded_at ${sql.literal(order)}, f.seq ${sql.literal(order)} ${limitTo(limit)}`,
      (rows) => rows.map(toFact)
    )

  /** Selects from a search when there are terms, else everything: most matched terms first, then newest. */
  const searched = <Row extends object>(
    table: string,
    alias: "e" | "f",
    columns: string,
    newest: string,
    search: Search | undefined,
    conditions: ReadonlyArray<Statement.Fragment>,
    limit: number
  ) =>
    sql<Row>`SELECT ${sql.literal(columns)}
      FROM ${search === undefined ? sql`${sql(table)} ${sql(alias)}` : search.from}
      WHERE ${sql.and(search === undefined ? conditions : [search.match, ...conditions])}
      ORDER BY ${search?.matched === undefined ? sql`` : sql`${search.matched} DESC, `}${sql.literal(newest)} LIMIT ${limit}`

  const count = (table: string, alias: string, user: string) =>
    sql`(SELECT CAST(COUNT(*) AS INTEGER) FROM ${sql(table)} ${sql(alias)} WHERE ${owner(alias, user)})`

  return {
    working: (user) => blocksOf(user),
    writeBlock: (user, block) => runQuery(block.append ? "appendBlock" : "updateBlock", dialect.writeBlock(user, block), done),
    insertEpisode: (user, episode) => runQuery("remember", dialect.insertEpisode(user, episode), done),
    recall: (user, query) => {
      const conditions = [owner("e", user)]
      if (query.since !== undefined) conditions.push(sql`e.occurred_at >= ${time(query.since)}`)
      if (query.until !== undefined) conditions.push(sql`e.occurred_at <= ${time(query.until)}`)
      if (query.excludeSessionId !== undefined) conditions.push(sql`e.session_id <> ${text(query.excludeSessionId)}`)
      const search = query.terms.length === 0 ? undefined : dialect.searchEpisodes(user, query.terms)
      return runQuery(
        "recall",
        searched<EpisodeRow>("memory_episodes", "e", EPISODE_COLUMNS, "e.occurred_at DESC, e.seq DESC", search, conditions, query.limit),
        (rows) => rows.map(toEpisode)
      )
    },
    insertFact: (user, fact) =>
      runQuery("appendFact", dialect.insertFact(user, fact), (rows) => {
        const until = rows[0]?.valid_until ?? null
        return until === null ? null : new Date(until)
      }),
    recallFacts: (user, query) => {
      const at = time(query.validAt)
      const known = query.knownAt === undefined ? undefined : time(query.knownAt)
      const conditions = known === undefined ?
        [owner("f", user), sql`f.valid_from <= ${at}`, sql`(f.valid_until IS NULL OR ${at} < f.valid_until)`] :
        [
          owner("f", user),
          sql`f.recorded_at <= ${known}`,
          sql`f.valid_from <= ${at}`,
          // Closed after `knownAt`: open as the store knew it then.
          sql`(f.valid_until IS NULL OR f.superseded_at > ${known} OR ${at} < f.valid_until)`
        ]
      const search = query.terms.length === 0 ? undefined : dialect.searchFacts(user, query.terms)
      return runQuery(
        "recallFacts",
        searched<FactRow>("memory_facts", "f", FACT_COLUMNS, "f.recorded_at DESC, f.seq DESC", search, conditions, query.limit),
        (rows) => rows.map((row) => asKnownAt(toFact(row), query.knownAt)!)
      )
    },
    sessionEpisodes: (user, sessionId, limit) =>
      runQuery(
        "sessionMessages",
        sql<EpisodeRow>`SELECT * FROM (
            SELECT ${sql.literal(EPISODE_COLUMNS)}, e.seq FROM memory_episodes e
            WHERE ${owner("e", user)} AND e.session_id = ${text(sessionId)}
            ORDER BY e.occurred_at DESC, e.seq DESC LIMIT ${limit}
          ) latest ORDER BY occurred_at, seq`,
        (rows) => rows.map(toEpisode)
      ),
    profile: (user) =>
      Effect.all({
        counts: runQuery(
          "profile",
          sql<{ blocks: number; episodes: number; facts: number; last_seen: number | Date | null }>`SELECT
            ${count("memory_blocks", "b", user)} AS blocks,
            ${count("memory_episodes", "e", user)} AS episodes,
            ${count("memory_facts", "f", user)} AS facts,
            (SELECT MAX(e.occurred_at) FROM memory_episodes e WHERE ${owner("e", user)}) AS last_seen`,
          (rows) => rows[0]!
        ),
        sessions: runQuery(
          "profile",
          sql<{ session_id: string }>`SELECT session_id FROM (
              SELECT e.session_id, e.occurred_at, e.seq,
                ROW_NUMBER() OVER (PARTITION BY e.session_id ORDER BY e.occurred_at DESC, e.seq DESC) AS position
              FROM memory_episodes e WHERE ${owner("e", user)}
            ) latest WHERE position = 1 ORDER BY occurred_at DESC, seq DESC LIMIT 10`,
          (rows) => rows.map((row) => row.session_id)
        ),
        facts: factsOf("profile", user, "DESC", 10)
      }).pipe(Effect.map(({ counts, facts, sessions }) => ({
        blocks: Number(counts.blocks),
        episodes: Number(counts.episodes),
        facts: Number(counts.facts),
        lastSeen: counts.last_seen === null ? null : new Date(counts.last_seen),
        recentSessions: sessions,
        recentFacts: facts
      }))),
    forget: (user, filter) => {
      const before = filter.before === undefined ? undefined : time(filter.before)
      const beforeIf = (column: string) => (before === undefined ? sql`1 = 1` : sql`${sql.literal(column)} < ${before}`)
      const episodes = [owner("e", user), beforeIf("e.occurred_at")]
      if (filter.sessionId !== undefined) episodes.push(sql`e.session_id = ${text(filter.sessionId)}`)
      const deletions = [sql`DELETE FROM memory_episodes AS e WHERE ${sql.and(episodes)} RETURNING 1`]
      if (filter.sessionId === undefined) {
        deletions.push(sql`DELETE FROM memory_facts AS f WHERE ${owner("f", user)} AND ${beforeIf("f.recorded_at")} RETURNING 1`)
        deletions.push(sql`DELETE FROM memory_blocks AS b WHERE ${owner("b", user)} AND ${beforeIf("b.updated_at")} RETURNING 1`)
      }
      const total = Effect.reduce(deletions, 0, (sum, deletion) => Effect.map(deletion, (rows) => sum + rows.length))
      const after = dialect.afterForget
      const forgotten = sql.withTransaction(total)
      return runQuery("forget", after === undefined ? forgotten : Effect.tap(forgotten, (n) => (n > 0 ? after : Effect.void)), (n) => n)
    },
    export: (user) =>
      Effect.all({
        blocks: blocksOf(user, "export"),
        episodes: runQuery(
          "export",
          sql<EpisodeRow>`SELECT ${sql.literal(EPISODE_COLUMNS)} FROM memory_episodes e WHERE ${owner("e", user)}
            ORDER BY e.occurred_at, e.seq`,
          (rows) => rows.map(toEpisode)
        ),
        facts: factsOf("export", user, "ASC")
      })
  }
}
