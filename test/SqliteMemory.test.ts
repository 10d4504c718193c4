import { assert, describe, it } from "@effect/vitest"
import { Migrator, SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Effect, Layer } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { MIGRATIONS_TABLE, SCHEMA_V1 } from "jeevesagent/internal/sqliteMemory"
import * as SqliteMemory from "jeevesagent/SqliteMemory"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { type Ack, memoryConformance, runWriter, upgradedSearchHolds } from "./support/memoryConformance.js"

const directory = mkdtempSync(join(tmpdir(), "jeeves-sqlite-memory-"))
afterAll(() => rmSync(directory, { recursive: true, force: true }))

let files = 0
const newFile = () => join(directory, `memory-${files++}.db`)

const as = (userId: string | null, sessionId = "s1") => RunContext.withUser(userId, { sessionId })

/** A raw client on `filename`, for looking under the service. */
const rawClient = (filename: string) => SqliteClient.layer({ filename })

describe("SqliteMemory", () => {
  memoryConformance(it, () => SqliteMemory.layer({ filename: newFile() }), { numRuns: 15 })

  it.effect("keeps everything, per user, across a reopen", () =>
    Effect.gen(function*() {
      const filename = newFile()
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* m.updateBlock("prefs", "alice: tea").pipe(as("alice"))
        yield* m.updateBlock("prefs", "bob: coffee").pipe(as("bob"))
        yield* m.updateBlock("prefs", "anonymous: water").pipe(as(null))
        yield* m.remember({ input: "I moved to Lisbon", output: "Noted" }).pipe(as("alice", "chat"))
        yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Porto" }).pipe(as("alice"))
        yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Lisbon" }).pipe(as("alice"))
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))

      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        assert.deepStrictEqual((yield* m.working.pipe(as("alice"))).map((b) => b.content), ["alice: tea"])
        assert.deepStrictEqual((yield* m.working.pipe(as("bob"))).map((b) => b.content), ["bob: coffee"])
        assert.deepStrictEqual((yield* m.working.pipe(as(null))).map((b) => b.content), ["anonymous: water"])
        assert.deepStrictEqual((yield* m.recall("Lisbon").pipe(as("alice"))).map((e) => e.input), ["I moved to Lisbon"])
        assert.deepStrictEqual(yield* m.recall("Lisbon").pipe(as("bob")), [])
        assert.deepStrictEqual((yield* m.sessionMessages("chat").pipe(as("alice"))).map((msg) => msg.content), [
          "I moved to Lisbon",
          "Noted"
        ])
        const facts = (yield* m.export.pipe(as("alice"))).facts
        assert.deepStrictEqual(facts.map((f) => [f.object, f.validUntil === null]), [["Porto", false], ["Lisbon", true]])
        // A reopened store keeps accepting writes.
        yield* m.updateBlock("prefs", "alice: green tea").pipe(as("alice"))
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))

      // Migrations ran once; the anonymous bucket is stored under the sentinel.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const migrations = yield* sql<{ migration_id: number }>`SELECT migration_id FROM jeeves_memory_migrations`
        assert.deepStrictEqual(migrations.map((row) => row.migration_id), [1, 2, 3, 4, 5, 6])
        const owners = yield* sql<{ user_id: string }>`SELECT user_id FROM memory_blocks ORDER BY user_id`
        assert.deepStrictEqual(owners.map((row) => row.user_id), [RunContext.ANONYMOUS_USER, "alice", "bob"])
        const journal = yield* sql<{ journal_mode: string }>`PRAGMA journal_mode`
        assert.strictEqual(journal[0]!.journal_mode, "wal")
      }).pipe(Effect.provide(rawClient(filename)))
    }))

  it.effect("upgrading a schema-4 file re-indexes rows whose words now fold to lower case (styled Greek letters)", () =>
    Effect.gen(function*() {
      const filename = newFile()
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* m.remember({ input: "visited \u{1D6A8}\u{1D6A9}\u{1D6AA} today", output: "ok" }).pipe(as("alice"))
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))
      // The file as schema 4 left it: the styled letters indexed as capital Greek (lower-cased before the
      // decomposition only), and migrations 5 on not yet run.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE memory_episodes SET search = ${"visited \u0391\u0392\u0393 today"}`
        yield* sql`DELETE FROM jeeves_memory_migrations WHERE migration_id >= 5`
      }).pipe(Effect.provide(rawClient(filename)))
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        const found = yield* m.recall("\u03b1\u03b2\u03b3").pipe(as("alice"))
        assert.deepStrictEqual(found.map((e) => e.input), ["visited \u{1D6A8}\u{1D6A9}\u{1D6AA} today"])
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))
    }))

  it.effect("upgrading a schema-1 file re-indexes the stored rows by their words", () =>
    Effect.gen(function*() {
      const filename = newFile()
      // The file as schema 1 left it: the raw text in a unicode61 index.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const v1 = Migrator.fromRecord({
          "0001_create_memory": Effect.forEach(SCHEMA_V1, (statement) => sql.unsafe(statement), { discard: true })
        })
        yield* Migrator.make({})({ loader: v1, table: MIGRATIONS_TABLE })
        const episodes: Array<[string, string, number, string]> = [
          ["ep_1", "alice", 1000, "Lisbon, Lisbon, Lisbon!"],
          ["ep_2", "alice", 2000, "I finally moved to Lisbon with my whole family"],
          ["ep_3", "alice", 3000, "I moved to İstanbul"],
          ["ep_4", "alice", 4000, "cafe\u0301 au lait in Lisbon"],
          ["ep_5", "bob", 5000, "lisbon porto"]
        ]
        for (const [id, user, at, input] of episodes) {
          yield* sql`INSERT INTO memory_episodes (id, user_id, session_id, occurred_at, input, output)
            VALUES (${id}, ${user}, 's1', ${at}, ${input}, 'ok')`
        }
        // fact_1 closes fact_0 (schema 1's trigger), recorded 500 ms later: the upgrade finds out when.
        yield* sql`INSERT INTO memory_facts (id, user_id, subject, predicate, object, valid_from, recorded_at)
          VALUES ('fact_0', 'alice', 'user', 'lives in', 'Porto', 0, 0)`
        yield* sql`INSERT INTO memory_facts (id, user_id, subject, predicate, object, valid_from, recorded_at)
          VALUES ('fact_1', 'alice', 'user', 'lives in', 'İzmir', 0, 500)`
      }).pipe(Effect.provide(rawClient(filename)))

      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        // Writes and deletions after the upgrade keep the index in step.
        const recall = yield* upgradedSearchHolds
        assert.strictEqual(yield* m.forget({ sessionId: "s2" }).pipe(as("alice")), 1)
        const facts = (yield* m.export.pipe(as("alice"))).facts
        assert.deepStrictEqual(facts.map((f) => [f.id, f.validUntil?.getTime() ?? null, f.supersededAt?.getTime() ?? null]), [
          ["fact_0", 0, 500],
          ["fact_1", null, null]
        ])
        // Closed from now on by the new trigger, which records when.
        const next = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon" }).pipe(as("alice"))
        const izmir = (yield* m.export.pipe(as("alice"))).facts.find((f) => f.id === "fact_1")!
        assert.strictEqual(izmir.supersededAt?.getTime(), next.recordedAt.getTime())
        assert.deepStrictEqual(yield* recall("istanbul"), ["ep_3"])
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))

      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const migrations = yield* sql<{ migration_id: number }>`SELECT migration_id FROM jeeves_memory_migrations`
        assert.deepStrictEqual(migrations.map((row) => row.migration_id), [1, 2, 3, 4, 5, 6])
        for (const fts of ["memory_episodes_fts", "memory_facts_fts"]) {
          const check = yield* Effect.either(sql.unsafe(`INSERT INTO ${fts} (${fts}) VALUES ('integrity-check')`))
          assert.strictEqual(check._tag, "Right", `${fts} matches its table`)
        }
        const [row] = yield* sql<{ search: string }>`SELECT search FROM memory_episodes WHERE id = 'ep_3'`
        assert.strictEqual(row!.search, "i moved to istanbul ok")
      }).pipe(Effect.provide(rawClient(filename)))
    }))

  it.effect("forget erases the forgotten text from the database's files, not just from its tables", () =>
    Effect.gen(function*() {
      const filename = newFile()
      const secrets = ["quokkapassport", "wombatdiagnosis", "numbatsalary", "dingoaddress"]
      const onDisk = () => {
        const bytes = [filename, `${filename}-wal`].filter(existsSync).map((file) => readFileSync(file).toString("latin1")).join("")
        return secrets.filter((word) => bytes.includes(word))
      }
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        for (let i = 0; i < 20; i++) {
          yield* m.remember({ input: `my ${secrets[0]} number ${i}`, output: `noted ${secrets[1]}` }).pipe(as("alice"))
        }
        yield* m.appendFact({ subject: "alice", predicate: "earns", object: secrets[2]! }).pipe(as("alice"))
        yield* m.updateBlock("profile", `lives at ${secrets[3]}`).pipe(as("alice"))
        yield* m.remember({ input: "bob keeps his words", output: "ok" }).pipe(as("bob"))
        assert.deepStrictEqual(onDisk(), secrets, "the words are on disk before forget")
        assert.strictEqual(yield* m.forget({}).pipe(as("alice")), 22)
        // Gone while the store is open (the WAL included) ...
        assert.deepStrictEqual(onDisk(), [])
        assert.deepStrictEqual((yield* m.recall("words").pipe(as("bob"))).map((e) => e.input), ["bob keeps his words"])
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))
      // ... and after it closed.
      assert.deepStrictEqual(onDisk(), [])
    }))

  it.effect("make sets synchronous = FULL on the connection", () =>
    Effect.gen(function*() {
      yield* SqliteMemory.make
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ synchronous: number }>`PRAGMA synchronous`
      assert.strictEqual(rows[0]!.synchronous, 2)
    }).pipe(Effect.provide(rawClient(newFile()))))

  it.effect("a file that cannot be opened fails with MemoryError(open)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Layer.build(SqliteMemory.layer({ filename: join(directory, "missing", "x.db") })))
      assert.strictEqual(error._tag, "MemoryError")
      assert.strictEqual(error.method, "open")
      assert.include(error.message, "cannot open")
    }).pipe(Effect.scoped))

  it.effect("a file that is not a database fails with MemoryError(open)", () =>
    Effect.gen(function*() {
      const filename = join(directory, "not-a-db")
      mkdirSync(filename)
      const error = yield* Effect.flip(Layer.build(SqliteMemory.layer({ filename })))
      assert.strictEqual(error.method, "open")
    }).pipe(Effect.scoped))

  it.live("acknowledged writes survive SIGKILL of the writing process", () =>
    Effect.gen(function*() {
      const filename = newFile()
      const users = ["user_1", "user_10", null] as const
      const acked: Array<Ack> = []
      for (let round = 0; round < 3; round++) {
        const killAfterAcks = 3 + Math.floor(Math.random() * 15)
        const result = yield* Effect.promise(() =>
          runWriter(["sqlite", filename, `crash${round}`, "forever", "user_1,user_10,-"], { killAfterAcks })
        )
        assert.strictEqual(result.signal, "SIGKILL", result.stderr)
        assert.isAtLeast(result.acks.length, killAfterAcks)
        acked.push(...result.acks)
      }

      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        assert.deepStrictEqual(yield* sql`PRAGMA integrity_check`, [{ integrity_check: "ok" }])
        const fts = yield* sql`INSERT INTO memory_episodes_fts (memory_episodes_fts) VALUES ('integrity-check')`.pipe(
          Effect.either
        )
        assert.strictEqual(fts._tag, "Right", "the full-text index matches its table")
      }).pipe(Effect.provide(rawClient(filename)))

      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        for (const userId of users) {
          const exported = yield* m.export.pipe(as(userId))
          const ids = new Set(exported.episodes.map((e) => e.id))
          const log = exported.blocks.find((b) => b.name === "log")?.content ?? ""
          for (const ack of acked) {
            const owner = users[Number(ack.input.split("-")[1]) % users.length]
            if (owner !== userId) continue
            assert.isTrue(ids.has(ack.id), `acked episode ${ack.input} of ${userId} is missing`)
            assert.include(log, `${ack.input};`)
            assert.isTrue(exported.facts.some((f) => f.object === ack.input), `acked fact ${ack.input} is missing`)
            // The full-text index has it too.
            const recalled = yield* m.recall(ack.input.replace("-", " "), { limit: 500 }).pipe(as(userId))
            assert.isTrue(recalled.some((e) => e.id === ack.id), `${ack.input} is not in the full-text index`)
          }
          assert.isAtMost(exported.facts.filter((f) => f.validUntil === null).length, 1)
        }
        // The store still takes writes.
        yield* m.remember({ input: "after the crash", output: "ok" }).pipe(as("user_1"))
      }).pipe(Effect.provide(SqliteMemory.layer({ filename })))
    }), 60_000)
})
