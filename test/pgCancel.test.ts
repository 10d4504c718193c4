/**
 * Postgres under callers that stop waiting and locks held elsewhere: an
 * interrupted budget call never cancels another fiber's statement, and an
 * audit append behind a stuck head row fails after its timeout instead of
 * holding every run.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import pg from "pg"
import { AuditLog, Budget, RunContext } from "jeevesagent"
import type { Model as ModelTypes } from "jeevesagent"
import * as PgBudget from "jeevesagent/PgBudget"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const usage = (inputTokens: number, outputTokens: number, costUsd = 0): ModelTypes.Usage => ({
  inputTokens,
  outputTokens,
  costUsd
})

const reserveAs = (budget: Budget.Service, userId: string | null, estimate: ModelTypes.Usage) =>
  budget.reserve(estimate).pipe(RunContext.withUser(userId))

const truncate = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.zipRight(
    sql`TRUNCATE jeeves_budget_ledger, jeeves_budget_reservations`,
    sql`INSERT INTO jeeves_budget_ledger (scope) VALUES ('global')`
  ))

const makeFresh = (config: Budget.Config, options?: PgBudget.Options) =>
  Effect.flatMap(PgBudget.make(config, { reclaimInterval: null, ...options }), (budget) => Effect.as(truncate, budget))

const database = postgresAvailable ? await createTestDatabase("pg_cancel") : undefined
afterAll(async () => {
  await database?.drop()
})

describe.skipIf(!postgresAvailable)("PgBudget: callers that stop waiting", () => {
  if (database === undefined) return
  const Pg = pgLayer(database.url).pipe(Layer.orDie)

  it.live("interrupting one user's reserve never fails another user's settle or reserve", () =>
    Effect.gen(function*() {
      const budget = yield* makeFresh({ perUserMaxTokens: 1_000_000 })
      // Runs that are cancelled mid-reserve (a client disconnects, a caller's timeout fires).
      const cancelled = Effect.forEach(Array.from({ length: 1500 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(reserveAs(budget, `gone-${i % 10}`, usage(1, 1)))
          const spins = Math.floor(Math.random() * 40)
          for (let k = 0; k < spins; k++) yield* Effect.promise(() => new Promise<void>((r) => setImmediate(r)))
          const exit = yield* Fiber.interrupt(fiber)
          if (exit._tag === "Success" && exit.value._tag === "Granted") yield* exit.value.release
        }), { concurrency: 100, discard: true })
      // Another user's calls, never interrupted: every reserve and settle must succeed.
      const victim = Effect.forEach(Array.from({ length: 1000 }, (_, i) => i), () =>
        Effect.gen(function*() {
          const reservation = yield* Effect.either(reserveAs(budget, "victim", usage(5, 5)))
          if (reservation._tag === "Left") return `reserve: ${reservation.left.message}`
          if (reservation.right._tag !== "Granted") return "blocked"
          const settled = yield* Effect.either(reservation.right.settle(usage(1, 1)))
          return settled._tag === "Left" ? `settle: ${settled.left.message}` : "ok"
        }), { concurrency: 10 })
      const [, outcomes] = yield* Effect.all([cancelled, victim], { concurrency: "unbounded" })
      const failures = outcomes.filter((o) => o !== "ok")
      assert.deepStrictEqual(failures.slice(0, 3), [])
      assert.deepStrictEqual(yield* budget.usageFor("victim"), { tokensIn: 1000, tokensOut: 1000, tokensTotal: 2000, costUsd: 0 })
      // Reserves granted after their caller stopped waiting are released in the background: no hold is left.
      const sql = yield* SqlClient.SqlClient
      let left = -1
      for (let i = 0; i < 100 && left !== 0; i++) {
        left = Number((yield* sql<{ n: string }>`SELECT count(*) AS n FROM jeeves_budget_reservations`)[0]!.n)
        if (left !== 0) yield* Effect.sleep("50 millis")
      }
      assert.strictEqual(left, 0, "holds left behind by interrupted reserves")
    }).pipe(Effect.scoped, Effect.provide(Pg), Effect.orDie), 120_000)

})

describe.skipIf(!postgresAvailable)("PgAuditLog: a stuck head row", () => {
  if (database === undefined) return

  it.live("an append blocked by a stuck transaction on the chain head fails with AuditUnavailable instead of hanging", () =>
    Effect.gen(function*() {
      const chain = "stuck_head"
      const layer = PgAuditLog.layer({ secret: "stuck-head-secret-0123456789", chain, timeout: "1 second" }).pipe(
        Layer.provide(pgLayer(database.url))
      )
      const outcome = yield* Effect.gen(function*() {
        const audit = yield* AuditLog.AuditLog
        yield* audit.append({ actor: "system", action: "before", payload: {} })
        // Another process holds the head row (crashed mid-append, paused, or partitioned away).
        const stuck = new pg.Client({ connectionString: database.url })
        yield* Effect.promise(() => stuck.connect())
        yield* Effect.promise(() =>
          stuck.query(`BEGIN; SELECT * FROM jeeves_audit_chains WHERE name = '${chain}' FOR UPDATE`)
        )
        const result = yield* audit.append({ actor: "system", action: "during", payload: {} }).pipe(
          Effect.either,
          // The transaction gives up after its timeout (here 1 second) instead of waiting forever.
          Effect.timeout("15 seconds"),
          Effect.option
        )
        yield* Effect.promise(() => stuck.query("ROLLBACK").then(() => stuck.end()))
        // The failed batch changed nothing: the chain goes on.
        yield* audit.append({ actor: "system", action: "after", payload: {} })
        assert.strictEqual((yield* audit.verify).valid, true)
        assert.deepStrictEqual((yield* audit.query()).map((e) => e.action), ["before", "after"])
        return result
      }).pipe(RunContext.withUser("alice"), Effect.provide(layer))
      assert.isTrue(outcome._tag === "Some", "the append was still waiting after 15 seconds")
      if (outcome._tag === "Some") {
        assert.isTrue(outcome.value._tag === "Left")
        if (outcome.value._tag === "Left") assert.strictEqual(outcome.value.left._tag, "AuditUnavailable")
      }
    }).pipe(Effect.orDie), 60_000)
})
