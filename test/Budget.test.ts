/**
 * The budget: the conformance suite, written once and run against every
 * backend (the in-memory `Budget.make` and `PgBudget.make` on a fresh
 * database), then the in-memory backend's own behaviour: configuration
 * errors, the bounded per-user table (LRU at maxUsers, idle TTL) and
 * Budget.none. PgBudget's own behaviour is in PgBudget.test.ts.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, describe, it, layer, type Vitest } from "@effect/vitest"
import { Clock, Effect, Either, Layer, TestClock } from "effect"
import type { Scope } from "effect"
import { Budget, RunContext } from "jeevesagent"
import type { Model } from "jeevesagent"
import * as PgBudget from "jeevesagent/PgBudget"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

type MakeBudget<R> = (config: Budget.Config) => Effect.Effect<Budget.Service, never, R | Scope.Scope>

const usage = (inputTokens: number, outputTokens: number, costUsd = 0): Model.Usage => ({
  inputTokens,
  outputTokens,
  costUsd
})

const ZERO = usage(0, 0)

const asUser = (userId: string | null) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(RunContext.withUser(userId), Effect.orDie)

const reserveAs = (budget: Budget.Service, userId: string | null, estimate: Model.Usage = ZERO) =>
  budget.reserve(estimate).pipe(asUser(userId))

/** Reserves `used` and settles it: the original's `consume`, through the public API. */
const consume = (budget: Budget.Service, userId: string | null, used: Model.Usage) =>
  Effect.flatMap(reserveAs(budget, userId, used), (reservation) =>
    reservation._tag === "Granted" ?
      Effect.orDie(reservation.settle(used)) :
      Effect.dieMessage(`unexpectedly blocked: ${reservation.reason}`))

const reasonOf = (reservation: Budget.Reservation): string =>
  reservation._tag === "Blocked" ? reservation.reason : `granted(${reservation.warning ?? "no warning"})`

const statusAs = (budget: Budget.Service, userId: string | null) => budget.allowsStep.pipe(asUser(userId))
const usageOf = (budget: Budget.Service, userId: string | null) => Effect.orDie(budget.usageFor(userId))
const globalOf = (budget: Budget.Service) => Effect.orDie(budget.globalUsage)

/**
 * Moves the TestClock to the next multiple of `millis`. The Postgres suite
 * shares one TestClock across its tests (one layer), so tests that depend on
 * window boundaries align first.
 */
const alignClockTo = (millis: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => now % millis === 0 ? Effect.void : TestClock.adjust(millis - (now % millis)))

const conformance = <R>(it: Vitest.MethodsNonLive<R>, make: MakeBudget<R>) => {
  describe("caps", () => {
    const rows: ReadonlyArray<readonly [Budget.Config, Model.Usage, Model.Usage, string]> = [
      [{ maxTokens: 100 }, usage(60, 39), usage(0, 1), "max_tokens"],
      [{ maxInputTokens: 50 }, usage(49, 900), usage(1, 0), "max_input_tokens"],
      [{ maxOutputTokens: 50 }, usage(900, 49), usage(0, 1), "max_output_tokens"],
      [{ maxCostUsd: 0.5 }, usage(0, 0, 0.25), usage(0, 0, 0.25), "max_cost_usd"],
      [{ perUserMaxTokens: 100 }, usage(60, 39), usage(1, 0), "per_user_max_tokens"],
      [{ perUserMaxInputTokens: 50 }, usage(49, 900), usage(1, 0), "per_user_max_input_tokens"],
      [{ perUserMaxOutputTokens: 50 }, usage(900, 49), usage(0, 1), "per_user_max_output_tokens"],
      [{ perUserMaxCostUsd: 0.5 }, usage(0, 0, 0.375), usage(0, 0, 0.125), "per_user_max_cost_usd"]
    ]
    for (const [config, below, last, reason] of rows) {
      it.scoped(`${reason}: allowed just below the cap, blocked at it`, () =>
        Effect.gen(function*() {
          const budget = yield* make({ ...config, softWarningAt: 1 })
          yield* consume(budget, "alice", below)
          assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "ok" })
          yield* consume(budget, "alice", last)
          assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), reason)
          assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "blocked", reason })
          const bob = yield* reserveAs(budget, "bob")
          // A global cap blocks everybody; a per-user cap only the offender.
          assert.strictEqual(reasonOf(bob), reason.startsWith("per_user") ? "granted(no warning)" : reason)
        }))
    }

    it.scoped("decimal costs that sum to a cost cap reach it ($0.70 + $0.10 at $0.80: floats sum to 0.7999999999999999)", () =>
      Effect.gen(function*() {
        const budget = yield* make({ maxCostUsd: 0.9, perUserMaxCostUsd: 0.8, softWarningAt: 1 })
        yield* consume(budget, "alice", usage(0, 0, 0.7))
        yield* consume(budget, "alice", usage(0, 0, 0.1))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_cost_usd")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "bob")), "granted(no warning)")
        const global = yield* make({ maxCostUsd: 0.9, softWarningAt: 1 })
        yield* consume(global, "alice", usage(0, 0, 0.3))
        yield* consume(global, "bob", usage(0, 0, 0.6))
        assert.strictEqual(reasonOf(yield* reserveAs(global, "carol")), "max_cost_usd")
      }))

    it.scoped("a cap of 0 blocks the very first step, global and per user", () =>
      Effect.gen(function*() {
        const global = yield* make({ maxTokens: 0 })
        assert.strictEqual(reasonOf(yield* reserveAs(global, "alice")), "max_tokens")
        const perUser = yield* make({ perUserMaxCostUsd: 0 })
        assert.strictEqual(reasonOf(yield* reserveAs(perUser, "alice")), "per_user_max_cost_usd")
        assert.strictEqual(reasonOf(yield* reserveAs(perUser, null)), "per_user_max_cost_usd")
        assert.deepStrictEqual(yield* statusAs(perUser, "carol"), { state: "blocked", reason: "per_user_max_cost_usd" })
      }))

    it.scoped("global caps are checked before per-user caps, then in field order", () =>
      Effect.gen(function*() {
        const budget = yield* make({
          maxTokens: 100,
          maxCostUsd: 1,
          perUserMaxTokens: 50,
          perUserMaxInputTokens: 10,
          softWarningAt: 1
        })
        yield* consume(budget, "carol", usage(10, 0))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "carol")), "per_user_max_input_tokens")
        // Both per-user caps reached: total tokens come first.
        yield* consume(budget, "alice", usage(10, 40))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_tokens")
        // Global caps (tokens and cost both reached) come before any per-user cap.
        yield* consume(budget, "bob", usage(0, 40, 1))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "max_tokens")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "dave")), "max_tokens")
      }))

    it.scoped("the anonymous bucket is its own user", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 10 })
        yield* consume(budget, null, usage(10, 0))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, null)), "per_user_max_tokens")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "granted(no warning)")
        assert.strictEqual((yield* usageOf(budget, null)).tokensTotal, 10)
        assert.strictEqual((yield* usageOf(budget, "alice")).tokensTotal, 0)
      }))
  })

  describe("warnings", () => {
    it.scoped("the four warning strings, global first", () =>
      Effect.gen(function*() {
        const tokens = yield* make({ maxTokens: 100 })
        yield* consume(tokens, "alice", usage(50, 35))
        assert.strictEqual(reasonOf(yield* reserveAs(tokens, "bob")), "granted(tokens at 85%)")
        assert.deepStrictEqual(yield* statusAs(tokens, "bob"), { state: "warn", reason: "tokens at 85%" })

        const cost = yield* make({ maxCostUsd: 2, perUserMaxTokens: 10 })
        yield* consume(cost, "alice", usage(9, 0, 1.8))
        assert.strictEqual(reasonOf(yield* reserveAs(cost, "alice")), "granted(cost at 90%)")

        const perUser = yield* make({ perUserMaxTokens: 200, perUserMaxCostUsd: 1 })
        yield* consume(perUser, "alice", usage(100, 70))
        assert.strictEqual(reasonOf(yield* reserveAs(perUser, "alice")), "granted(per-user tokens at 85%)")
        assert.strictEqual(reasonOf(yield* reserveAs(perUser, "bob")), "granted(no warning)")

        const perUserCost = yield* make({ perUserMaxCostUsd: 1 })
        yield* consume(perUserCost, "alice", usage(0, 0, 0.9))
        assert.strictEqual(reasonOf(yield* reserveAs(perUserCost, "alice")), "granted(per-user cost at 90%)")
      }))

    it.scoped("input, output and wall-clock caps never warn; softWarningAt moves the threshold", () =>
      Effect.gen(function*() {
        const budget = yield* make({
          maxInputTokens: 10,
          maxOutputTokens: 10,
          perUserMaxInputTokens: 10,
          maxWallClock: "10 minutes",
          softWarningAt: 0.1
        })
        yield* consume(budget, "alice", usage(9, 9))
        yield* TestClock.adjust("9 minutes")
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "ok" })

        const early = yield* make({ maxTokens: 1000, softWarningAt: 0.5 })
        yield* consume(early, "alice", usage(499, 0))
        assert.deepStrictEqual(yield* statusAs(early, "alice"), { state: "ok" })
        yield* consume(early, "alice", usage(1, 0))
        assert.deepStrictEqual(yield* statusAs(early, "alice"), { state: "warn", reason: "tokens at 50%" })
      }))

    it.scoped("percentages are formatted like Python's {:.0%} (round half to even)", () =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<readonly [number, string]> = [
          [125, "tokens at 12%"], // 12.5 -> 12
          [375, "tokens at 38%"], // 37.5 -> 38
          [625, "tokens at 62%"], // 62.5 -> 62
          [999, "tokens at 100%"], // 99.9 -> 100, still only a warning
          [551, "tokens at 55%"]
        ]
        for (const [used, expected] of cases) {
          const budget = yield* make({ maxTokens: 1000, softWarningAt: 0.1 })
          yield* consume(budget, "alice", usage(used, 0))
          assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "warn", reason: expected })
        }
      }))
  })

  describe("reservations", () => {
    it.scoped("outstanding reservations count toward the check; release removes them", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 100 })
        const first = yield* reserveAs(budget, "alice", usage(10, 90))
        assert.strictEqual(first._tag, "Granted")
        // committed 0 + outstanding 100 >= 100
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice", usage(1, 1))), "per_user_max_tokens")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "bob", usage(1, 1))), "granted(no warning)")
        if (first._tag === "Granted") yield* first.release
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice", usage(1, 1))), "granted(no warning)")
        assert.deepStrictEqual(yield* usageOf(budget, "alice"), Budget.zeroTotals)
      }))

    it.scoped("the step's own estimate is not part of its check", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 100 })
        yield* consume(budget, "alice", usage(99, 0))
        assert.strictEqual((yield* reserveAs(budget, "alice", usage(10, 4096)))._tag, "Granted")
      }))

    it.scoped("settle replaces the estimate with the reported usage, exactly once", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 1000 })
        const reservation = yield* reserveAs(budget, "alice", usage(500, 4096, 0.5))
        if (reservation._tag !== "Granted") return assert.fail("blocked")
        yield* Effect.orDie(reservation.settle(usage(12, 30, 0.25)))
        yield* Effect.orDie(reservation.settle(usage(12, 30, 0.25)))
        yield* reservation.release
        const expected = { tokensIn: 12, tokensOut: 30, tokensTotal: 42, costUsd: 0.25 }
        assert.deepStrictEqual(yield* usageOf(budget, "alice"), expected)
        assert.deepStrictEqual(yield* globalOf(budget), expected)
        // The 4596-token estimate is gone: 42 < 1000.
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "ok" })
      }))

    it.scoped("concurrent settles of one reservation charge it once", () =>
      Effect.gen(function*() {
        const budget = yield* make({})
        const reservation = yield* reserveAs(budget, "alice", usage(10, 10))
        if (reservation._tag !== "Granted") return assert.fail("blocked")
        yield* Effect.all(
          [
            ...Array.from({ length: 5 }, () => Effect.orDie(reservation.settle(usage(3, 4)))),
            reservation.release
          ],
          { concurrency: "unbounded" }
        )
        const charged = (yield* usageOf(budget, "alice")).tokensTotal
        assert.isTrue(charged === 7 || charged === 0, `charged ${charged}`)
        assert.strictEqual((yield* globalOf(budget)).tokensTotal, charged)
      }))

    it.scoped("release is idempotent and a released reservation cannot be settled", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 10 })
        const reservation = yield* reserveAs(budget, "alice", usage(5, 5))
        if (reservation._tag !== "Granted") return assert.fail("blocked")
        yield* reservation.release
        yield* reservation.release
        yield* Effect.orDie(reservation.settle(usage(5, 5)))
        assert.deepStrictEqual(yield* usageOf(budget, "alice"), Budget.zeroTotals)
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice", usage(5, 5))), "granted(no warning)")
      }))

    it.scoped("a usage figure that is not a finite non-negative number is charged at the estimate", () =>
      Effect.gen(function*() {
        const budget = yield* make({})
        const reservation = yield* reserveAs(budget, "alice", usage(100, 200, 0.5))
        if (reservation._tag !== "Granted") return assert.fail("blocked")
        yield* Effect.orDie(reservation.settle({ inputTokens: Number.NaN, outputTokens: 7, costUsd: -1 }))
        assert.deepStrictEqual(yield* usageOf(budget, "alice"), {
          tokensIn: 100,
          tokensOut: 7,
          tokensTotal: 107,
          costUsd: 0.5
        })
      }))

    it.scoped("usageFor and globalUsage report committed usage only", () =>
      Effect.gen(function*() {
        const budget = yield* make({})
        yield* consume(budget, "alice", usage(100, 50, 0.0625))
        yield* consume(budget, "bob", usage(200, 80, 0.125))
        yield* reserveAs(budget, "bob", usage(1000, 1000, 1))
        assert.deepStrictEqual(yield* usageOf(budget, "alice"), {
          tokensIn: 100,
          tokensOut: 50,
          tokensTotal: 150,
          costUsd: 0.0625
        })
        assert.deepStrictEqual(yield* usageOf(budget, "bob"), { tokensIn: 200, tokensOut: 80, tokensTotal: 280, costUsd: 0.125 })
        assert.deepStrictEqual(yield* usageOf(budget, "nobody"), Budget.zeroTotals)
        assert.deepStrictEqual(yield* globalOf(budget), { tokensIn: 300, tokensOut: 130, tokensTotal: 430, costUsd: 0.1875 })
      }))

    it.scoped("100 concurrent reservations against a $5 cap at $0.125 each: exactly 40 admitted", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxCostUsd: 5 })
        const reservations = yield* Effect.all(
          Array.from({ length: 100 }, () => reserveAs(budget, "alice", usage(1, 1, 0.125))),
          { concurrency: "unbounded" }
        )
        const admitted = reservations.filter((reservation) => reservation._tag === "Granted")
        assert.strictEqual(admitted.length, 40)
        for (const reservation of reservations) {
          if (reservation._tag === "Blocked") assert.strictEqual(reservation.reason, "per_user_max_cost_usd")
        }
      }))

    it.scoped("200 concurrent reservations of 10 users: each user and the total stay within their caps", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxCostUsd: 1, maxCostUsd: 5 })
        const users = Array.from({ length: 200 }, (_, i) => `user-${i % 10}`)
        const reservations = yield* Effect.all(
          users.map((user) => Effect.map(reserveAs(budget, user, usage(0, 0, 0.125)), (r) => [user, r] as const)),
          { concurrency: "unbounded" }
        )
        const admitted = reservations.filter(([, reservation]) => reservation._tag === "Granted")
        assert.strictEqual(admitted.length, 40)
        for (let i = 0; i < 10; i++) {
          assert.isAtMost(admitted.filter(([user]) => user === `user-${i}`).length, 8)
        }
      }))
  })

  describe("wall clocks (TestClock)", () => {
    it.scoped("the global clock runs from construction, for everybody", () =>
      Effect.gen(function*() {
        yield* TestClock.adjust("5 minutes")
        const budget = yield* make({ maxWallClock: "1 hour" })
        yield* TestClock.adjust("59 minutes")
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "ok" })
        yield* TestClock.adjust("1 minute")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "max_wall_clock")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "bob")), "max_wall_clock")
      }))

    it.scoped("a user's clock starts at their first charge and is a lifetime, not per run", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxWallClock: "10 minutes" })
        yield* consume(budget, "bob", ZERO)
        yield* TestClock.adjust("1 hour")
        // alice has never been charged: her clock has not started.
        const first = yield* reserveAs(budget, "alice")
        assert.strictEqual(reasonOf(first), "granted(no warning)")
        yield* TestClock.adjust("3 minutes")
        if (first._tag === "Granted") yield* Effect.orDie(first.settle(ZERO))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "bob")), "per_user_max_wall_clock")
        yield* TestClock.adjust("9 minutes")
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "ok" })
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "blocked", reason: "per_user_max_wall_clock" })
      }))
  })

  describe("per-user windows (TestClock)", () => {
    it.scoped("usage resets at the window boundary; global totals do not", () =>
      Effect.gen(function*() {
        yield* alignClockTo(24 * 3_600_000)
        const budget = yield* make({ perUserMaxTokens: 100, perUserWindow: "1 day", maxTokens: 1000 })
        yield* TestClock.adjust("10 hours")
        yield* consume(budget, "alice", usage(100, 0))
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_tokens")
        yield* TestClock.adjust(14 * 3_600_000 - 1) // one millisecond before midnight
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_tokens")
        assert.strictEqual((yield* usageOf(budget, "alice")).tokensTotal, 100)
        yield* TestClock.adjust(1)
        assert.strictEqual((yield* usageOf(budget, "alice")).tokensTotal, 0)
        yield* consume(budget, "alice", usage(40, 0))
        assert.strictEqual((yield* usageOf(budget, "alice")).tokensTotal, 40)
        assert.strictEqual((yield* globalOf(budget)).tokensTotal, 140)
      }))

    it.scoped("a call settled after the boundary is charged to the new window; its hold is released", () =>
      Effect.gen(function*() {
        yield* alignClockTo(3_600_000)
        const budget = yield* make({ perUserMaxTokens: 100, perUserWindow: "1 hour", perUserMaxWallClock: "30 minutes" })
        yield* consume(budget, "alice", usage(90, 0))
        yield* TestClock.adjust("31 minutes")
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_wall_clock")
        const reservation = yield* reserveAs(budget, "bob", usage(50, 50))
        yield* TestClock.adjust("30 minutes")
        // New window: alice's totals and wall clock start over.
        assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "granted(no warning)")
        if (reservation._tag === "Granted") yield* Effect.orDie(reservation.settle(usage(3, 4)))
        assert.strictEqual((yield* usageOf(budget, "bob")).tokensTotal, 7)
        assert.deepStrictEqual(yield* statusAs(budget, "bob"), { state: "ok" })
      }))
  })

  describe("original test rows (test_user_id_isolation_full.py)", () => {
    it.scoped("test_budget_consume_partitions_by_user", () =>
      Effect.gen(function*() {
        const budget = yield* make({})
        yield* consume(budget, "alice", usage(100, 50, 0.01))
        yield* consume(budget, "bob", usage(200, 80, 0.02))
        const alice = yield* usageOf(budget, "alice")
        const bob = yield* usageOf(budget, "bob")
        assert.strictEqual(alice.tokensTotal, 150)
        assert.strictEqual(alice.costUsd, 0.01)
        assert.strictEqual(bob.tokensTotal, 280)
        assert.strictEqual(bob.costUsd, 0.02)
      }))

    it.scoped("test_budget_per_user_max_tokens_blocks_only_offender", () =>
      Effect.gen(function*() {
        const budget = yield* make({ perUserMaxTokens: 100 })
        yield* consume(budget, "alice", usage(60, 50))
        yield* consume(budget, "bob", usage(10, 10))
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "blocked", reason: "per_user_max_tokens" })
        assert.notStrictEqual((yield* statusAs(budget, "bob")).state, "blocked")
      }))

    it.scoped("test_budget_global_cap_still_works_alongside_per_user", () =>
      Effect.gen(function*() {
        const budget = yield* make({ maxTokens: 500, perUserMaxTokens: 400 })
        yield* consume(budget, "alice", usage(200, 100))
        yield* consume(budget, "bob", usage(200, 60))
        assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "blocked", reason: "max_tokens" })
        assert.deepStrictEqual(yield* statusAs(budget, "bob"), { state: "blocked", reason: "max_tokens" })
      }))
  })
}

const makeMemory = (config: Budget.Config, options?: Budget.LayerOptions) => Effect.orDie(Budget.make(config, options))

describe("Budget conformance: in memory", () => {
  conformance(it, (config) => makeMemory(config))
})

const database = postgresAvailable ? await createTestDatabase("budget_conformance") : undefined
afterAll(async () => {
  await database?.drop()
})

describe.skipIf(!postgresAvailable)("Budget conformance: PgBudget", () => {
  if (database === undefined) return
  // Commits without waiting for the WAL flush: same locking and visibility, faster tests.
  const url = new URL(database.url)
  url.searchParams.set("options", "-c synchronous_commit=off")
  layer(pgLayer(url.toString()), { timeout: "30 seconds" })((it) => {
    const make: MakeBudget<SqlClient.SqlClient> = (config) =>
      Effect.gen(function*() {
        const budget = yield* PgBudget.make(config, { reclaimInterval: null })
        // A clean ledger for every test: the tables are shared by the whole file.
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE jeeves_budget_ledger, jeeves_budget_reservations`
        yield* sql`INSERT INTO jeeves_budget_ledger (scope) VALUES ('global')`
        return budget
      }).pipe(Effect.orDie)
    conformance(it, make)
  })
})

describe("Budget.make configuration", () => {
  const bad: ReadonlyArray<readonly [string, Budget.Config, Budget.LayerOptions | undefined]> = [
    ["maxTokens", { maxTokens: -1 }, undefined],
    ["maxTokens", { maxTokens: Number.NaN }, undefined],
    ["maxTokens", { maxTokens: 1.5 }, undefined],
    ["maxInputTokens", { maxInputTokens: -5 }, undefined],
    ["maxOutputTokens", { maxOutputTokens: Number.POSITIVE_INFINITY }, undefined],
    ["maxCostUsd", { maxCostUsd: -0.01 }, undefined],
    ["maxCostUsd", { maxCostUsd: Number.NaN }, undefined],
    ["maxWallClock", { maxWallClock: -1 }, undefined],
    ["maxWallClock", { maxWallClock: "-5 seconds" }, undefined],
    ["maxWallClock", { maxWallClock: "soon" as never }, undefined],
    ["perUserMaxTokens", { perUserMaxTokens: -100 }, undefined],
    ["perUserMaxInputTokens", { perUserMaxInputTokens: Number.NaN }, undefined],
    ["perUserMaxOutputTokens", { perUserMaxOutputTokens: "10" as never }, undefined],
    ["perUserMaxCostUsd", { perUserMaxCostUsd: -1 }, undefined],
    ["perUserMaxWallClock", { perUserMaxWallClock: Number.NaN }, undefined],
    ["softWarningAt", { softWarningAt: 0 }, undefined],
    ["softWarningAt", { softWarningAt: 1.01 }, undefined],
    ["softWarningAt", { softWarningAt: -0.5 }, undefined],
    ["softWarningAt", { softWarningAt: Number.NaN }, undefined],
    ["perUserWindow", { perUserWindow: 0 }, undefined],
    ["perUserWindow", { perUserWindow: Number.POSITIVE_INFINITY }, undefined],
    ["maxUsers", {}, { maxUsers: 0 }],
    ["maxUsers", {}, { maxUsers: 2.5 }],
    ["userIdleTtl", {}, { userIdleTtl: 0 }],
    ["userIdleTtl", {}, { userIdleTtl: "0 seconds" }],
    ["userIdleTtl", {}, { userIdleTtl: -10 }]
  ]
  for (const [field, config, options] of bad) {
    const shown = JSON.stringify({ ...config, ...options }, (_, v) => typeof v === "number" && !Number.isFinite(v) ? String(v) : v)
    it.effect(`rejects ${field} in ${shown}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Budget.make(config, options))
        assert.strictEqual(error._tag, "BudgetConfigError")
        assert.strictEqual(error.field, field)
        assert.include(error.message, `Invalid budget configuration: ${field} `)
      }))
  }

  it.effect("the layer fails with the same error", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.either(Layer.build(Budget.layer({ softWarningAt: 2 })).pipe(Effect.scoped))
      assert.isTrue(Either.isLeft(exit))
      if (Either.isLeft(exit)) assert.strictEqual(exit.left.field, "softWarningAt")
    }))

  it.effect("accepts the edges: zero caps, softWarningAt 1, infinite wall clock, null bounds", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make(
        { maxTokens: 0, maxCostUsd: 0, maxWallClock: 0, softWarningAt: 1, perUserMaxWallClock: Number.POSITIVE_INFINITY },
        { maxUsers: null, userIdleTtl: null }
      )
      assert.deepStrictEqual(yield* statusAs(budget, "alice"), { state: "blocked", reason: "max_tokens" })
    }))
})

describe("Budget eviction", () => {
  it.effect("allowsStep and a blocked reserve create no user", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({ maxTokens: 1 }, { maxUsers: 1 })
      yield* consume(budget, "alice", usage(1, 0))
      for (let i = 0; i < 5; i++) {
        yield* statusAs(budget, `visitor-${i}`)
        assert.strictEqual(reasonOf(yield* reserveAs(budget, `visitor-${i}`)), "max_tokens")
      }
      // alice is still the one user held: the visitors did not evict her.
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 1)
    }))

  it.effect("past maxUsers the least recently used user is forgotten (original test row)", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { maxUsers: 2 })
      yield* consume(budget, "alice", usage(10, 0))
      yield* consume(budget, "bob", usage(20, 0))
      yield* consume(budget, "charlie", usage(30, 0))
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 20)
      assert.strictEqual((yield* budget.usageFor("charlie")).tokensTotal, 30)
      // Global totals keep everything.
      assert.strictEqual((yield* budget.globalUsage).tokensTotal, 60)
    }))

  it.effect("a read refreshes the LRU position", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { maxUsers: 2 })
      yield* consume(budget, "alice", usage(10, 0))
      yield* consume(budget, "bob", usage(20, 0))
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 10)
      yield* consume(budget, "charlie", usage(30, 0))
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 0)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 10)
      assert.strictEqual((yield* budget.usageFor("charlie")).tokensTotal, 30)
    }))

  it.effect("eviction resets the user's totals and wall clock, so the cap starts over", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({ perUserMaxTokens: 10, perUserMaxWallClock: "1 minute" }, { maxUsers: 1 })
      yield* consume(budget, "alice", usage(10, 0))
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_tokens")
      yield* consume(budget, "bob", usage(1, 0))
      assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "granted(no warning)")
    }))

  it.effect("a user with a call in flight is never evicted", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({ perUserMaxTokens: 100 }, { maxUsers: 1 })
      const inFlight = yield* reserveAs(budget, "alice", usage(60, 60))
      yield* consume(budget, "bob", usage(1, 0))
      // alice's reservation still counts against her.
      assert.strictEqual(reasonOf(yield* reserveAs(budget, "alice")), "per_user_max_tokens")
      if (inFlight._tag === "Granted") yield* inFlight.settle(usage(5, 5))
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 10)
    }))

  it.effect("an idle user is forgotten after userIdleTtl (TestClock)", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { userIdleTtl: "1 hour" })
      yield* consume(budget, "alice", usage(10, 0))
      yield* consume(budget, "bob", usage(20, 0))
      yield* TestClock.adjust("59 minutes")
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 20) // a touch
      yield* TestClock.adjust("1 minute")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 20)
      yield* TestClock.adjust("1 hour")
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 0)
    }))

  it.effect("the default bounds: 100 000 users, 24 hours", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({})
      yield* consume(budget, "alice", usage(10, 0))
      yield* TestClock.adjust("23 hours")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 10)
      yield* TestClock.adjust("24 hours")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
    }))

  it.effect("null disables both bounds", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { maxUsers: null, userIdleTtl: null })
      for (let i = 0; i < 200; i++) yield* consume(budget, `user-${i}`, usage(i, 0))
      yield* TestClock.adjust("3650 days")
      for (let i = 0; i < 200; i++) assert.strictEqual((yield* budget.usageFor(`user-${i}`)).tokensTotal, i)
    }))
})

describe("Budget.none", () => {
  it.effect("never blocks and tracks nothing", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      assert.strictEqual(budget, Budget.none)
      const reservation = yield* reserveAs(budget, "alice", usage(1e9, 1e9, 1e9))
      assert.strictEqual(reasonOf(reservation), "granted(no warning)")
      if (reservation._tag === "Granted") yield* reservation.settle(usage(5, 5))
      assert.deepStrictEqual(yield* budget.usageFor("alice"), Budget.zeroTotals)
    }).pipe(Effect.provide(Budget.layerNone)))
})

describe("original test rows (test_bounded_per_user_state.py)", () => {
  it.effect("test_budget_ttl_evicts_idle_user: touching with bob drops an idle alice", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { userIdleTtl: 50 })
      yield* consume(budget, "alice", usage(10, 0))
      yield* TestClock.adjust(100)
      yield* consume(budget, "bob", usage(20, 0))
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 20)
    }))

  it.effect("test_budget_unbounded_when_kwargs_none: 50 users are all kept", () =>
    Effect.gen(function*() {
      const budget = yield* makeMemory({}, { maxUsers: null, userIdleTtl: null })
      for (let i = 0; i < 50; i++) yield* consume(budget, `u${i}`, usage(1, 0))
      for (let i = 0; i < 50; i++) assert.strictEqual((yield* budget.usageFor(`u${i}`)).tokensTotal, 1)
    }))
})
