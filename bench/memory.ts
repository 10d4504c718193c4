/**
 * Memory recall latency and in-memory footprint.
 *
 * 1. `recall` p50 / p95 with 100 000 episodes across 1 000 users, for the
 *    in-memory, SQLite and (when PostgreSQL answers at JEEVES_TEST_PG_URL,
 *    default the local server) Postgres backends. Queries are three words of
 *    the same vocabulary, run as a random user, limit 3 — what the agent
 *    asks before every run. The SQL stores are bulk-loaded in one
 *    transaction; recall goes through the service.
 * 2. In-memory bytes per user: heap growth per user holding 100 episodes,
 *    and per light user (one block, one episode, one fact).
 *
 * Run: node --expose-gc --import tsx bench/memory.ts [--users 1000] [--episodes 100] [--queries 2000]
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Effect, Layer } from "effect"
import { Memory, RunContext } from "jeevesagent"
import * as PgMemory from "jeevesagent/PgMemory"
import * as SqliteMemory from "jeevesagent/SqliteMemory"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import pg from "pg"
import { createTestDatabase, pgLayer, postgresAvailable } from "../test/support/postgres.js"

const argValue = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? Number(process.argv[index + 1]) : fallback
}

const USERS = argValue("users", 1_000)
const EPISODES_PER_USER = argValue("episodes", 100)
const QUERIES = argValue("queries", 2_000)
const VOCABULARY = 5_000

// A deterministic generator, so every backend gets the same data and queries.
let seed = 42
const random = () => {
  seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff
  return seed / 0x7fffffff
}
const vocabulary = Array.from({ length: VOCABULARY }, (_, i) => `w${i.toString(36)}x`)
const words = (n: number) => Array.from({ length: n }, () => vocabulary[Math.floor(random() * VOCABULARY)]).join(" ")
const userId = (i: number) => `user_${i}`

interface Row {
  readonly id: string
  readonly user: string
  readonly session: string
  readonly at: number
  readonly input: string
  readonly output: string
}

const rows: Array<Row> = []
for (let u = 0; u < USERS; u++) {
  for (let e = 0; e < EPISODES_PER_USER; e++) {
    rows.push({
      id: `ep_${u}_${e}`,
      user: userId(u),
      session: `sess_${u}_${Math.floor(e / 10)}`,
      at: 1_700_000_000_000 + e * 60_000,
      input: words(8),
      output: words(12)
    })
  }
}
const queries = Array.from({ length: QUERIES }, () => ({ user: userId(Math.floor(random() * USERS)), text: words(3) }))

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

/** Runs every query through `recall`; returns p50 / p95 in ms and the mean hits. */
const measureRecall = Effect.gen(function*() {
  const memory = yield* Memory.Memory
  const timings: Array<number> = []
  let hits = 0
  // Warm-up: statement caches, JIT.
  for (const query of queries.slice(0, 50)) yield* memory.recall(query.text, { limit: 3 }).pipe(RunContext.withUser(query.user))
  for (const query of queries) {
    const started = performance.now()
    const found = yield* memory.recall(query.text, { limit: 3 }).pipe(RunContext.withUser(query.user))
    timings.push(performance.now() - started)
    hits += found.length
  }
  timings.sort((a, b) => a - b)
  return { p50: percentile(timings, 0.5), p95: percentile(timings, 0.95), hits: hits / queries.length }
})

const report = (backend: string, result: { p50: number; p95: number; hits: number }, loadMs: number) =>
  console.log(
    `${backend.padEnd(10)} recall p50 ${result.p50.toFixed(3)} ms  p95 ${result.p95.toFixed(3)} ms  ` +
      `(mean hits ${result.hits.toFixed(2)}, load ${(loadMs / 1000).toFixed(1)} s)`
  )

const total = rows.length
console.log(`${total} episodes across ${USERS} users, ${QUERIES} queries of 3 words, limit 3`)

// ---- in-memory ---------------------------------------------------------------

const inMemory = Effect.gen(function*() {
  const memory = yield* Memory.Memory
  const started = performance.now()
  for (const row of rows) {
    yield* memory.remember({ sessionId: row.session, input: row.input, output: row.output, occurredAt: new Date(row.at) })
      .pipe(RunContext.withUser(row.user))
  }
  report("in-memory", yield* measureRecall, performance.now() - started)
}).pipe(Effect.provide(Memory.layerInMemory()))

// ---- SQLite --------------------------------------------------------------------

const directory = mkdtempSync(join(tmpdir(), "jeeves-bench-memory-"))
const sqlite = Effect.gen(function*() {
  const filename = join(directory, "memory.db")
  const started = performance.now()
  yield* Effect.gen(function*() {
    yield* SqliteMemory.make
    const sql = yield* SqliteClient.SqliteClient
    yield* sql.withTransaction(Effect.forEach(rows, (row) =>
      sql`INSERT INTO memory_episodes (id, user_id, session_id, occurred_at, input, output)
        VALUES (${row.id}, ${row.user}, ${row.session}, ${row.at}, ${row.input}, ${row.output})`, { discard: true }))
  }).pipe(Effect.provide(SqliteClient.layer({ filename })))
  const loadMs = performance.now() - started
  report("sqlite", yield* Effect.provide(measureRecall, SqliteMemory.layer({ filename })), loadMs)
}).pipe(Effect.ensuring(Effect.sync(() => rmSync(directory, { recursive: true, force: true }))))

// ---- Postgres ------------------------------------------------------------------

const postgres = Effect.gen(function*() {
  if (!postgresAvailable) {
    console.log("postgres   skipped: no server")
    return
  }
  const db = yield* Effect.promise(() => createTestDatabase("bench_memory"))
  yield* Effect.gen(function*() {
    const started = performance.now()
    const MemoryLive = PgMemory.layer().pipe(Layer.provide(pgLayer(db.url)))
    yield* Effect.scoped(Layer.build(MemoryLive))
    yield* Effect.promise(async () => {
      const client = new pg.Client({ connectionString: db.url })
      await client.connect()
      try {
        const batch = 5_000
        for (let i = 0; i < rows.length; i += batch) {
          const slice = rows.slice(i, i + batch)
          await client.query(
            `INSERT INTO memory_episodes (id, namespace, user_id, session_id, occurred_at, input, output, search)
             SELECT id, 'default', user_id, session_id, to_timestamp(at / 1000.0), input, output,
                    to_tsvector('simple', input || ' ' || output)
             FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[])
               AS t(id, user_id, session_id, at, input, output)`,
            [
              slice.map((r) => r.id),
              slice.map((r) => r.user),
              slice.map((r) => r.session),
              slice.map((r) => r.at),
              slice.map((r) => r.input),
              slice.map((r) => r.output)
            ]
          )
        }
        await client.query("ANALYZE memory_episodes")
      } finally {
        await client.end()
      }
    })
    const loadMs = performance.now() - started
    report("postgres", yield* Effect.provide(measureRecall, MemoryLive), loadMs)
  }).pipe(Effect.ensuring(Effect.promise(() => db.drop())))
})

// ---- bytes per user --------------------------------------------------------------

const gc = (globalThis as { gc?: () => void }).gc

const heapAfterGc = () => {
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed
}

const bytesPerUser = (label: string, users: number, fill: (user: string) => Effect.Effect<unknown, unknown, Memory.Memory>) =>
  Effect.gen(function*() {
    const memory = yield* Memory.makeInMemory({ maxUsers: null, userIdleTtl: null })
    const before = heapAfterGc()
    for (let u = 0; u < users; u++) yield* Effect.provideService(fill(userId(u)), Memory.Memory, memory)
    const after = heapAfterGc()
    console.log(`in-memory  ${label}: ${Math.round((after - before) / users)} bytes per user (${users} users)`)
    // Keeps the store alive until measured.
    return memory
  })

const footprint = Effect.gen(function*() {
  if (gc === undefined) console.log("(run with --expose-gc for steadier heap figures)")
  // Fresh text for every episode: the strings are part of what a user costs.
  yield* bytesPerUser(`${EPISODES_PER_USER} episodes of 20 words`, USERS, (user) =>
    Effect.flatMap(Memory.Memory, (m) =>
      Effect.forEach(Array.from({ length: EPISODES_PER_USER }), (_, e) =>
        m.remember({ sessionId: `sess_${Math.floor(e / 10)}`, input: words(8), output: words(12) }))).pipe(
        RunContext.withUser(user)
      ))
  yield* bytesPerUser("one block + one episode + one fact", 10_000, (user) =>
    Effect.flatMap(Memory.Memory, (m) =>
      Effect.all([
        m.updateBlock("prefs", "likes short answers"),
        m.remember({ input: "what's the weather?", output: "Sunny, 21°C." }),
        m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon" })
      ])).pipe(RunContext.withUser(user)))
})

Effect.runPromise(Effect.all([inMemory, sqlite, postgres, footprint], { discard: true })).catch((error) => {
  console.error(error)
  process.exit(1)
})
