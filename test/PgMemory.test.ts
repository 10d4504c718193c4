import { assert, describe, it } from "@effect/vitest"
import { Migrator, SqlClient } from "@effect/sql"
import { Effect, Layer } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { MIGRATIONS_TABLE, SCHEMA_V1 } from "jeevesagent/internal/pgMemory"
import { migrateLocked } from "jeevesagent/internal/pgMigrate"
import * as PgMemory from "jeevesagent/PgMemory"
import pg from "pg"
import { afterAll } from "vitest"
import { type Ack, memoryConformance, runWriter, runWritersTogether, upgradedSearchHolds } from "./support/memoryConformance.js"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const databases: Array<{ url: string; drop: () => Promise<void> }> = []
afterAll(() => Promise.all(databases.map((db) => db.drop())))

const newDatabase = async (prefix: string) => {
  const db = await createTestDatabase(prefix)
  databases.push(db)
  return db.url
}

const shared = postgresAvailable ? await newDatabase("memory") : "postgres://unavailable"

let namespaces = 0
const freshNamespace = () => `test_${process.pid}_${namespaces++}`

const as = (userId: string | null, sessionId = "s1") => RunContext.withUser(userId, { sessionId })

/** Runs plain SQL against `url`, outside Effect, for seeding and inspecting. */
const query = async <Row>(url: string, text: string, values?: Array<unknown>): Promise<Array<Row>> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text, values)).rows as Array<Row>
  } finally {
    await client.end()
  }
}

/** The `memory_blocks` table of the Python original (0.9.7), before the sentinel existed. */
const LEGACY_BLOCKS = `CREATE TABLE memory_blocks (
  namespace TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '',
  name TEXT NOT NULL,
  content TEXT NOT NULL,
  pinned_order INT NOT NULL DEFAULT 0,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (namespace, user_id, name)
)`

describe.skipIf(!postgresAvailable)("PgMemory", () => {
  it.layer(pgLayer(shared), { timeout: "30 seconds" })((it) => {
    memoryConformance(it, () => PgMemory.layer({ namespace: freshNamespace() }), { numRuns: 10 })

    it.effect("namespaces are separate stores", () =>
      Effect.gen(function*() {
        const [a, b] = [freshNamespace(), freshNamespace()]
        yield* Effect.flatMap(Memory.Memory, (m) => m.updateBlock("prefs", "in a")).pipe(
          as("alice"),
          Effect.provide(PgMemory.layer({ namespace: a }))
        )
        const inB = yield* Effect.flatMap(Memory.Memory, (m) => m.working).pipe(
          as("alice"),
          Effect.provide(PgMemory.layer({ namespace: b }))
        )
        assert.deepStrictEqual(inB, [])
        const error = yield* Effect.flip(Layer.build(PgMemory.layer({ namespace: " " })).pipe(Effect.scoped))
        assert.strictEqual(error.method, "open")
      }))

    it.effect("a huge episode (more distinct words than a tsvector holds) is stored, and found by its first words", () =>
      Effect.gen(function*() {
        const input = Array.from({ length: 150_000 }, (_, i) => `w${i.toString(36)}x`).join(" ")
        yield* Effect.gen(function*() {
          const memory = yield* Memory.Memory
          yield* memory.remember({ input, output: "stored" }).pipe(as("alice"))
          const found = yield* memory.recall("w0x w1x").pipe(as("alice"))
          assert.deepStrictEqual(found.map((episode) => [episode.input.length, episode.output]), [[input.length, "stored"]])
        }).pipe(Effect.provide(PgMemory.layer({ namespace: freshNamespace() })))
      }))

    it.effect("anonymous blocks are stored under the sentinel, which the column defaults to", () =>
      Effect.gen(function*() {
        const namespace = freshNamespace()
        yield* Effect.flatMap(Memory.Memory, (m) => m.updateBlock("prefs", "anonymous")).pipe(
          as(null),
          Effect.provide(PgMemory.layer({ namespace }))
        )
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ user_id: string }>`SELECT user_id FROM memory_blocks WHERE namespace = ${namespace}`
        assert.deepStrictEqual(rows.map((row) => row.user_id), [RunContext.ANONYMOUS_USER])
        const [column] = yield* sql<{ column_default: string; is_nullable: string }>`SELECT column_default, is_nullable
          FROM information_schema.columns WHERE table_name = 'memory_blocks' AND column_name = 'user_id'`
        assert.include(column!.column_default, RunContext.ANONYMOUS_USER)
        assert.strictEqual(column!.is_nullable, "NO")
      }))
  })

  it.live("keeps everything across a reopen with a new pool", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const open = () => PgMemory.layer({ namespace }).pipe(Layer.provide(pgLayer(shared)))
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* m.updateBlock("prefs", "tea").pipe(as("alice"))
        yield* m.remember({ input: "I moved to Lisbon", output: "Noted" }).pipe(as("alice", "chat"))
        yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Porto" }).pipe(as("alice"))
        yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Lisbon" }).pipe(as("alice"))
        yield* m.updateBlock("prefs", "water").pipe(as(null))
      }).pipe(Effect.provide(open()))
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        assert.deepStrictEqual((yield* m.working.pipe(as("alice"))).map((b) => b.content), ["tea"])
        assert.deepStrictEqual((yield* m.working.pipe(as(null))).map((b) => b.content), ["water"])
        assert.deepStrictEqual((yield* m.recall("Lisbon").pipe(as("alice"))).map((e) => e.input), ["I moved to Lisbon"])
        assert.deepStrictEqual((yield* m.sessionMessages("chat").pipe(as("alice"))).length, 2)
        const facts = (yield* m.export.pipe(as("alice"))).facts
        assert.deepStrictEqual(facts.map((f) => [f.object, f.validUntil === null]), [["Porto", false], ["Lisbon", true]])
      }).pipe(Effect.provide(open()))
    }))

  it.live("the migration rewrites legacy '' user ids to the sentinel and sets the column default", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => newDatabase("legacy"))
      yield* Effect.promise(async () => {
        await query(url, LEGACY_BLOCKS)
        await query(
          url,
          `INSERT INTO memory_blocks (namespace, user_id, name, content, pinned_order, updated_at) VALUES
            ('default', '', 'prefs', 'legacy anonymous prefs', 0, '2024-01-01'),
            ('default', '', 'notes', 'legacy anonymous notes (older)', 1, '2024-01-01'),
            ('default', '__jeeves_anon_user__', 'notes', 'newer anonymous notes', 0, '2024-06-01'),
            ('default', '', 'todo', 'legacy anonymous todo (newer)', 2, '2024-06-01'),
            ('default', '__jeeves_anon_user__', 'todo', 'older anonymous todo', 1, '2024-01-01'),
            ('default', 'alice', 'prefs', 'alice prefs', 0, '2024-01-01'),
            ('other', '', 'prefs', 'another namespace', 0, '2024-01-01')`
        )
      })
      const anonymous = yield* Effect.flatMap(Memory.Memory, (m) => m.working).pipe(
        as(null),
        Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url))))
      )
      assert.deepStrictEqual(anonymous.map((b) => b.content).sort(), [
        "legacy anonymous prefs",
        "legacy anonymous todo (newer)",
        "newer anonymous notes"
      ])
      const rows = yield* Effect.promise(() =>
        query<{ namespace: string; user_id: string; name: string }>(
          url,
          "SELECT namespace, user_id, name FROM memory_blocks ORDER BY namespace, user_id, name"
        )
      )
      assert.deepStrictEqual(rows.map((r) => `${r.namespace}/${r.user_id}/${r.name}`), [
        "default/__jeeves_anon_user__/notes",
        "default/__jeeves_anon_user__/prefs",
        "default/__jeeves_anon_user__/todo",
        "default/alice/prefs",
        "other/__jeeves_anon_user__/prefs"
      ])
      const [column] = yield* Effect.promise(() =>
        query<{ column_default: string }>(
          url,
          "SELECT column_default FROM information_schema.columns WHERE table_name = 'memory_blocks' AND column_name = 'user_id'"
        )
      )
      assert.strictEqual(column!.column_default, "'__jeeves_anon_user__'::text")
      // A row inserted without a user id lands in the anonymous bucket.
      yield* Effect.promise(() =>
        query(url, "INSERT INTO memory_blocks (namespace, name, content) VALUES ('default', 'raw', 'raw insert')")
      )
      const after = yield* Effect.flatMap(Memory.Memory, (m) => m.working).pipe(
        as(null),
        Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url))))
      )
      assert.isTrue(after.some((b) => b.content === "raw insert"))
    }))

  it.live("upgrading from schema 1 re-indexes rows with non-ASCII words by their folded words", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => newDatabase("words"))
      // The database as schema 1 left it: tsvectors parsed from the unfolded words.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const v1 = Migrator.fromRecord({
          "0001_create_memory": Effect.forEach(SCHEMA_V1, (statement) => sql.unsafe(statement), { discard: true })
        })
        yield* migrateLocked({ lock: 1, table: MIGRATIONS_TABLE, loader: v1 })
        const v1Words = (text: string) => [...new Set(text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [])].join(" ")
        const episodes: Array<[string, string, number, string]> = [
          ["ep_1", "alice", 1000, "Lisbon, Lisbon, Lisbon!"],
          ["ep_2", "alice", 2000, "I finally moved to Lisbon with my whole family"],
          ["ep_3", "alice", 3000, "I moved to İstanbul"],
          ["ep_4", "alice", 4000, "cafe\u0301 au lait in Lisbon"],
          ["ep_5", "bob", 5000, "lisbon porto"]
        ]
        for (const [id, user, at, input] of episodes) {
          yield* sql`INSERT INTO memory_episodes (id, namespace, user_id, session_id, occurred_at, input, output, search)
            VALUES (${id}, 'default', ${user}, 's1', ${new Date(at)}, ${input}, 'ok',
              to_tsvector('simple', ${v1Words(`${input} ok`)}))`
        }
        // fact_1 closed fact_0, recorded 500 ms later: the upgrade finds out when.
        yield* sql`INSERT INTO memory_facts (id, namespace, user_id, subject, predicate, object, valid_from, valid_until, recorded_at, search)
          VALUES ('fact_0', 'default', 'alice', 'user', 'lives in', 'Porto', ${new Date(0)}, ${new Date(0)}, ${new Date(0)},
            to_tsvector('simple', ${v1Words("user lives in Porto")}))`
        yield* sql`INSERT INTO memory_facts (id, namespace, user_id, subject, predicate, object, valid_from, recorded_at, search)
          VALUES ('fact_1', 'default', 'alice', 'user', 'lives in', 'İzmir', ${new Date(0)}, ${new Date(500)},
            to_tsvector('simple', ${v1Words("user lives in İzmir")}))`
      }).pipe(Effect.provide(pgLayer(url)))

      yield* Effect.gen(function*() {
        yield* upgradedSearchHolds
        const m = yield* Memory.Memory
        const facts = (yield* m.export.pipe(RunContext.withUser("alice"))).facts
        assert.deepStrictEqual(facts.map((f) => [f.id, f.validUntil?.getTime() ?? null, f.supersededAt?.getTime() ?? null]), [
          ["fact_0", 0, 500],
          ["fact_1", null, null]
        ])
      }).pipe(Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url)))))

      const rows = yield* Effect.promise(() =>
        query<{ id: string; search: string }>(url, "SELECT id, search::text AS search FROM memory_episodes ORDER BY seq")
      )
      assert.deepStrictEqual(rows.slice(0, 4).map((row) => [row.id, row.search]), [
        // An ASCII row keeps its schema-1 tsvector (the same lexemes).
        ["ep_1", "'lisbon':1 'ok':2"],
        ["ep_2", "'family':9 'finally':2 'i':1 'lisbon':5 'moved':3 'my':7 'ok':10 'to':4 'whole':8 'with':6"],
        ["ep_3", "'i' 'istanbul' 'moved' 'ok' 'to'"],
        ["ep_4", "'au' 'cafe' 'in' 'lait' 'lisbon' 'ok'"]
      ])
      const migrations = yield* Effect.promise(() =>
        query<{ migration_id: number }>(url, "SELECT migration_id FROM jeeves_memory_migrations ORDER BY migration_id")
      )
      assert.deepStrictEqual(migrations.map((row) => row.migration_id), [1, 2, 3, 4])

      // A process of the earlier version (a rolling deploy) closes a fact as it did, without superseded_at:
      // the database records when.
      yield* Effect.promise(() => query(url, "UPDATE memory_facts SET valid_until = now() WHERE id = 'fact_1'"))
      const [closed] = yield* Effect.promise(() =>
        query<{ closed_now: boolean }>(url, "SELECT superseded_at > now() - interval '1 minute' AS closed_now FROM memory_facts WHERE id = 'fact_1'")
      )
      assert.isTrue(closed!.closed_now)
    }))

  it.live("the migration re-keys a memory_blocks table from before user ids", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => newDatabase("prekey"))
      yield* Effect.promise(async () => {
        await query(url, `CREATE TABLE memory_blocks (
          namespace TEXT NOT NULL, name TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (namespace, name))`)
        await query(url, "INSERT INTO memory_blocks VALUES ('default', 'prefs', 'from before users')")
      })
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        assert.deepStrictEqual((yield* m.working.pipe(as(null))).map((b) => b.content), ["from before users"])
        yield* m.updateBlock("prefs", "alice's own").pipe(as("alice"))
        assert.deepStrictEqual((yield* m.working.pipe(as("alice"))).map((b) => b.content), ["alice's own"])
        assert.deepStrictEqual((yield* m.working.pipe(as(null))).map((b) => b.content), ["from before users"])
      }).pipe(Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url)))))
    }))

  it.live("4 processes migrating and writing the same users at once lose nothing", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => newDatabase("writers"))
      const perWriter = 12
      const results = yield* Effect.promise(() =>
        runWritersTogether([0, 1, 2, 3].map((k) => ["pg", url, `w${k}`, String(perWriter), "user_1,user_10,-"]))
      )
      const acked: Array<Ack> = []
      for (const result of results) {
        assert.strictEqual(result.code, 0, result.stderr)
        assert.strictEqual(result.acks.length, perWriter)
        acked.push(...result.acks)
      }
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        for (const [index, userId] of (["user_1", "user_10", null] as const).entries()) {
          const exported = yield* m.export.pipe(as(userId))
          const mine = acked.filter((ack) => Number(ack.input.split("-")[1]) % 3 === index)
          assert.deepStrictEqual(
            exported.episodes.map((e) => e.id).sort(),
            mine.map((ack) => ack.id).sort(),
            `${userId}'s episodes`
          )
          // Concurrent appends to one block: every piece exactly once.
          const log = exported.blocks.find((b) => b.name === "log")!.content
          assert.deepStrictEqual(log.split(";").filter((s) => s !== "").sort(), mine.map((ack) => ack.input).sort())
          // Concurrent supersession: every fact kept, exactly one still open.
          assert.strictEqual(exported.facts.length, mine.length)
          assert.strictEqual(exported.facts.filter((f) => f.validUntil === null).length, 1)
        }
      }).pipe(Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url)))))
    }), 60_000)

  it.live("acknowledged writes survive SIGKILL of the writing process", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => newDatabase("crash"))
      const killAfterAcks = 3 + Math.floor(Math.random() * 15)
      const result = yield* Effect.promise(() =>
        runWriter(["pg", url, "crash", "forever", "user_1,-"], { killAfterAcks })
      )
      assert.strictEqual(result.signal, "SIGKILL", result.stderr)
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        for (const [index, userId] of (["user_1", null] as const).entries()) {
          const exported = yield* m.export.pipe(as(userId))
          const ids = new Set(exported.episodes.map((e) => e.id))
          for (const ack of result.acks.filter((a) => Number(a.input.split("-")[1]) % 2 === index)) {
            assert.isTrue(ids.has(ack.id), `acked ${ack.input} of ${userId} is missing`)
            assert.isTrue(exported.facts.some((f) => f.object === ack.input))
          }
          assert.isAtMost(exported.facts.filter((f) => f.validUntil === null).length, 1)
        }
      }).pipe(Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(url)))))
    }), 60_000)
})
