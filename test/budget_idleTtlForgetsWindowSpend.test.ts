import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, TestClock } from "effect"
import { Budget, RunContext } from "jeevesagent"
import type { Model } from "jeevesagent"

/**
 * A weekly per-user cap with the in-memory budget's default bounds: the user
 * spends the whole weekly cap on day 1, then stays away for 25 hours. The
 * default idle TTL (24 hours) grows to the window, so the user is not
 * forgotten with a window's spend that has six more days to run, and stays
 * blocked until the boundary, as PgBudget keeps them; an idle TTL given
 * shorter than the window is a configuration error.
 */
const DAY = 24 * 3_600_000
const WEEK = 7 * DAY

const usage = (inputTokens: number, outputTokens: number): Model.Usage => ({ inputTokens, outputTokens, costUsd: 0 })
const asAlice = <A, E, R>(self: Effect.Effect<A, E, R>) => self.pipe(RunContext.withUser("alice"), Effect.orDie)

describe("Budget: per-user window longer than the idle TTL (default bounds)", () => {
  it.effect("a weekly cap spent on day 1 still blocks on day 2", () =>
    Effect.gen(function*() {
      // Start of a 7-day window (windows are aligned to the Clock's epoch).
      const now = yield* Clock.currentTimeMillis
      yield* TestClock.setTime((Math.floor(now / WEEK) + 1) * WEEK)
      const budget = yield* Effect.orDie(Budget.make({ perUserMaxTokens: 1000, perUserWindow: "7 days" }))

      const reservation = yield* asAlice(budget.reserve(usage(600, 400)))
      assert.strictEqual(reservation._tag, "Granted")
      if (reservation._tag === "Granted") yield* asAlice(reservation.settle(usage(600, 400)))
      assert.deepStrictEqual(yield* asAlice(budget.allowsStep), { state: "blocked", reason: "per_user_max_tokens" })

      // 25 hours later, still in the same weekly window.
      yield* TestClock.adjust(DAY + 3_600_000)
      const next = yield* asAlice(budget.reserve(usage(600, 400)))
      assert.strictEqual(next._tag, "Blocked")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 1000)
    }))

  it.effect("an idle TTL given shorter than the window is a BudgetConfigError naming it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Budget.make({ perUserMaxTokens: 1000, perUserWindow: "7 days" }, { userIdleTtl: "1 day" }))
      assert.strictEqual(error._tag, "BudgetConfigError")
      assert.strictEqual(error.field, "userIdleTtl")
      assert.include(error.message, "must be at least perUserWindow")
      // Longer, equal, or no bound at all: fine.
      for (const userIdleTtl of ["8 days", "7 days", null] as const) {
        yield* Budget.make({ perUserMaxTokens: 1000, perUserWindow: "7 days" }, { userIdleTtl })
      }
    }))
})
