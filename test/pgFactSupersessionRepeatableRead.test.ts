/**
 * PgMemory: "Appending a fact closes the same user's open facts atomically,
 * also across processes." Concurrent appends take turns on an advisory lock,
 * and each runs read committed whatever the database's default: under
 * `default_transaction_isolation = 'repeatable read'` the snapshot would be
 * taken when the lock's statement starts, before it waits, and the later
 * append would not see (nor close) the fact the earlier one committed. The
 * test makes the interleaving deterministic by holding the same advisory lock
 * from another connection until both appends wait on it. An append inside a
 * caller's own transaction still works (the isolation is only set on a
 * transaction the append began).
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Exit, Fiber, Layer } from "effect"
import { Memory, RunContext } from "jeevesagent"
import * as PgMemory from "jeevesagent/PgMemory"
import pg from "pg"
import { afterAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const databases: Array<{ url: string; drop: () => Promise<void> }> = []
afterAll(() => Promise.all(databases.map((db) => db.drop())))

describe.skipIf(!postgresAvailable)("PgMemory fact supersession across processes", () => {
  it.live("under default_transaction_isolation = 'repeatable read' two concurrent appends leave one open fact", () =>
    Effect.gen(function*() {
      const db = yield* Effect.promise(() => createTestDatabase("facts_rr"))
      databases.push(db)
      const admin = new pg.Client({ connectionString: db.url })
      yield* Effect.promise(() => admin.connect())
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.end()))
      yield* Effect.promise(() =>
        admin.query(`ALTER DATABASE "${new URL(db.url).pathname.slice(1)}" SET default_transaction_isolation = 'repeatable read'`)
      )

      // Two "processes": separate layers, separate connection pools.
      const processLayer = () => PgMemory.layer().pipe(Layer.provide(pgLayer(db.url)))
      const append = (object: string) =>
        Effect.flatMap(Memory.Memory, (m) => m.appendFact({ subject: "alice", predicate: "lives in", object })).pipe(
          RunContext.withUser("alice"),
          Effect.provide(processLayer())
        )
      // Migrate first, so the appends below only contend on the fact lock.
      yield* Effect.flatMap(Memory.Memory, (m) => m.working).pipe(RunContext.withUser("bob"), Effect.provide(processLayer()))

      // Another transaction holds the lock the appends take, until both wait on it.
      const key = JSON.stringify(["default", "alice", "alice", "lives in"])
      yield* Effect.promise(() => admin.query("BEGIN"))
      yield* Effect.promise(() => admin.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [key]))
      const oslo = yield* Effect.fork(Effect.exit(append("Oslo")))
      const paris = yield* Effect.fork(Effect.exit(append("Paris")))
      // Wait (no timing assertion) until both appends are blocked on the advisory lock.
      while (true) {
        const waiting = yield* Effect.promise(() =>
          admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
        if (waiting.rows[0]!.n >= 2) break
        yield* Effect.sleep("20 millis")
      }
      yield* Effect.promise(() => admin.query("COMMIT"))
      const exits = [yield* Fiber.join(oslo), yield* Fiber.join(paris)]

      const open = yield* Effect.promise(() =>
        admin.query<{ object: string }>("SELECT object FROM memory_facts WHERE user_id = 'alice' AND valid_until IS NULL")
      )
      const succeeded = exits.filter(Exit.isSuccess).length
      // Every successful append but the last one must have been closed by a later one.
      assert.isAtLeast(succeeded, 1)
      assert.strictEqual(open.rows.length, 1, `open facts: ${JSON.stringify(open.rows.map((r) => r.object))}`)

      // Inside a caller's own transaction (with the same client), the append runs in it and works.
      const inOwn = yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return yield* sql.withTransaction(
          Effect.flatMap(Memory.Memory, (m) => m.appendFact({ subject: "alice", predicate: "lives in", object: "Rome" }))
        )
      }).pipe(
        RunContext.withUser("alice"),
        Effect.provide(PgMemory.layer().pipe(Layer.provideMerge(pgLayer(db.url)))),
        Effect.exit
      )
      assert.isTrue(Exit.isSuccess(inOwn), Exit.isFailure(inOwn) ? String(inOwn.cause) : "")
    }).pipe(Effect.scoped))
})
