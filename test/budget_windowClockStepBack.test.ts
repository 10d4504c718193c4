import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, describe, it, layer } from "@effect/vitest"
import { Clock, Effect, TestClock } from "effect"
import type { Scope } from "effect"
import { Budget, RunContext } from "jeevesagent"
import type { Model } from "jeevesagent"
import * as PgBudget from "jeevesagent/PgBudget"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

/**
 * Per-user windows and a wall clock that steps back across a window boundary
 * (an NTP step, a VM resumed, a leap-second step: `Clock` is `Date.now()`).
 * The user spends their whole per-user cap just after a window boundary; the
 * clock then reads a moment before the boundary, and later the boundary
 * again. On both backends a step back never erases the spend of a newer
 * window: the user stays blocked (PgBudget only ever moves a user's row
 * forward, and the in-memory budget does the same).
 */
const HOUR = 3_600_000

const usage = (inputTokens: number, outputTokens: number): Model.Usage => ({ inputTokens, outputTokens, costUsd: 0 })

const asAlice = <A, E, R>(self: Effect.Effect<A, E, R>) => self.pipe(RunContext.withUser("alice"), Effect.orDie)

const reasonOf = (reservation: Budget.Reservation): string =>
  reservation._tag === "Blocked" ? reservation.reason : "granted"

const scenario = <R>(make: (config: Budget.Config) => Effect.Effect<Budget.Service, never, R | Scope.Scope>) =>
  Effect.gen(function*() {
    // A window boundary 10 seconds ago.
    const now = yield* Clock.currentTimeMillis
    const boundary = (Math.floor(now / HOUR) + 1) * HOUR
    yield* TestClock.setTime(boundary + 10_000)
    const budget = yield* make({ perUserMaxTokens: 100, perUserWindow: "1 hour" })

    const granted = yield* asAlice(budget.reserve(usage(60, 40)))
    assert.strictEqual(granted._tag, "Granted")
    if (granted._tag === "Granted") yield* asAlice(granted.settle(usage(60, 40)))
    assert.strictEqual(reasonOf(yield* asAlice(budget.reserve(usage(1, 1)))), "per_user_max_tokens")

    // The wall clock steps back 20 seconds: it now reads the previous window.
    yield* TestClock.setTime(boundary - 10_000)
    // Alice spent her cap in the newest window; a clock step must not hand her a fresh one.
    assert.strictEqual(reasonOf(yield* asAlice(budget.reserve(usage(1, 1)))), "per_user_max_tokens")

    // And forward again, still within the window she spent it in.
    yield* TestClock.setTime(boundary + 20_000)
    assert.strictEqual(reasonOf(yield* asAlice(budget.reserve(usage(1, 1)))), "per_user_max_tokens")
    assert.strictEqual((yield* asAlice(budget.usageFor("alice"))).tokensTotal, 100)
  })

describe("Budget windows: the clock stepping back across a boundary (in memory)", () => {
  it.scoped("the spend of the newest window is not forgotten", () =>
    scenario((config) => Effect.orDie(Budget.make(config))))
})

const database = postgresAvailable ? await createTestDatabase("review_window_step_back") : undefined
afterAll(async () => {
  await database?.drop()
})

describe.skipIf(!postgresAvailable)("Budget windows: the clock stepping back across a boundary (PgBudget)", () => {
  if (database === undefined) return
  layer(pgLayer(database.url), { timeout: "30 seconds" })((it) => {
    it.scoped("the spend of the newest window is not forgotten (reference: passes)", () =>
      scenario((config) =>
        Effect.gen(function*() {
          const budget = yield* PgBudget.make(config, { reclaimInterval: null })
          const sql = yield* SqlClient.SqlClient
          yield* sql`TRUNCATE jeeves_budget_ledger, jeeves_budget_reservations`
          yield* sql`INSERT INTO jeeves_budget_ledger (scope) VALUES ('global')`
          return budget as Budget.Service
        }).pipe(Effect.orDie)
      ))
  })
})
