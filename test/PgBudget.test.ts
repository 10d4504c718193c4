/**
 * PgBudget's own behaviour: the shared ledger across connections and
 * processes, atomicity, leases, and failing closed. The rules it shares with
 * the in-memory budget are in BudgetConformance.test.ts.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Layer, TestClock, Tracer } from "effect"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { Agent, Budget, Model, RunContext, Telemetry } from "jeevesagent"
import type { Model as ModelTypes } from "jeevesagent"
import * as PgBudget from "jeevesagent/PgBudget"
import { adminUrl, createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const usage = (inputTokens: number, outputTokens: number, costUsd = 0): ModelTypes.Usage => ({
  inputTokens,
  outputTokens,
  costUsd
})

/**
 * Connections of these tests commit without waiting for the WAL flush:
 * locking and visibility are unchanged, only crash durability (irrelevant to
 * a scratch database) is traded for speed.
 */
const fastCommits = (url: string) => {
  const parsed = new URL(url)
  parsed.searchParams.set("options", "-c synchronous_commit=off")
  return parsed.toString()
}

const adminQuery = async (text: string) => {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
}

const reserveAs = (budget: Budget.Service, userId: string | null, estimate: ModelTypes.Usage) =>
  budget.reserve(estimate).pipe(RunContext.withUser(userId))

/** A fresh ledger: the tables are shared by the tests of a database. */
const truncate = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.zipRight(
    sql`TRUNCATE jeeves_budget_ledger, jeeves_budget_reservations`,
    sql`INSERT INTO jeeves_budget_ledger (scope) VALUES ('global')`
  ))

const makeFresh = (config: Budget.Config, options?: PgBudget.Options) =>
  Effect.flatMap(PgBudget.make(config, { reclaimInterval: null, ...options }), (budget) => Effect.as(truncate, budget))

describe("PgBudget configuration", () => {
  it.effect("a bad configuration fails before touching the database", () =>
    Effect.gen(function*() {
      const noDatabase = Layer.succeed(SqlClient.SqlClient, {} as SqlClient.SqlClient)
      const config = yield* Effect.flip(Effect.scoped(PgBudget.make({ perUserMaxCostUsd: -1 })).pipe(Effect.provide(noDatabase)))
      assert.strictEqual(config._tag, "BudgetConfigError")
      if (config._tag === "BudgetConfigError") assert.strictEqual(config.field, "perUserMaxCostUsd")
      const lease = yield* Effect.flip(
        Effect.scoped(PgBudget.make({}, { reservationTtl: 0 })).pipe(Effect.provide(noDatabase))
      )
      assert.strictEqual(lease._tag === "BudgetConfigError" ? lease.field : lease._tag, "reservationTtl")
    }))
})

const database = postgresAvailable ? await createTestDatabase("pg_budget") : undefined
afterAll(async () => {
  await database?.drop()
})

describe.skipIf(!postgresAvailable)("PgBudget", () => {
  if (database === undefined) return
  const url = fastCommits(database.url)
  const Pg = pgLayer(url).pipe(Layer.orDie)

  it.effect("migrations are recorded, idempotent, and safe to run from many layers at once", () =>
    Effect.gen(function*() {
      yield* Effect.all(
        Array.from({ length: 4 }, () => Effect.scoped(PgBudget.make({}, { reclaimInterval: null })).pipe(Effect.provide(Pg))),
        { concurrency: "unbounded" }
      )
      const sql = yield* SqlClient.SqlClient
      const recorded = yield* sql<{ migration_id: number; name: string }>`SELECT migration_id, name FROM ${
        sql(PgBudget.migrationsTable)
      }`
      assert.deepStrictEqual(recorded.map((row) => [row.migration_id, row.name]), [[1, "create_budget_ledger"]])
      const globals = yield* sql`SELECT scope FROM jeeves_budget_ledger WHERE scope = 'global'`
      assert.strictEqual(globals.length, 1)
    }).pipe(Effect.provide(Pg), Effect.orDie))

  it.scoped("check-and-reserve is all or nothing across the global and the user row", () =>
    Effect.gen(function*() {
      const budget = yield* makeFresh({ maxTokens: 100, perUserMaxTokens: 50 })
      const sql = yield* SqlClient.SqlClient
      const reserved = () =>
        sql<{ scope: string; reserved_in: string; reserved_out: string }>`SELECT scope, reserved_in, reserved_out
          FROM jeeves_budget_ledger ORDER BY scope`
      // Blocked by the per-user cap: the global row must not keep a reservation.
      const bob = yield* reserveAs(budget, "bob", usage(50, 0))
      assert.strictEqual(bob._tag, "Granted")
      assert.deepStrictEqual(yield* reserveAs(budget, "bob", usage(1, 0)), { _tag: "Blocked", reason: "per_user_max_tokens" })
      assert.deepStrictEqual((yield* reserved()).map((row) => [row.scope, row.reserved_in]), [
        ["global", "50"],
        ["user:bob", "50"]
      ])
      // Blocked by the global cap: the user's row must not keep one either.
      const carol = yield* reserveAs(budget, "carol", usage(0, 50))
      assert.strictEqual(carol._tag, "Granted")
      assert.deepStrictEqual(yield* reserveAs(budget, "alice", usage(7, 7)), { _tag: "Blocked", reason: "max_tokens" })
      const rows = yield* reserved()
      assert.deepStrictEqual(rows.find((row) => row.scope === "user:alice"), {
        scope: "user:alice",
        reserved_in: "0",
        reserved_out: "0"
      })
      const holds = yield* sql<{ n: string }>`SELECT count(*) AS n FROM jeeves_budget_reservations`
      assert.strictEqual(holds[0]!.n, "2")
    }).pipe(Effect.provide(Pg), Effect.orDie))

  it.scoped("concurrent reservations through separate pools never overshoot", () =>
    Effect.gen(function*() {
      // Three independent pools of up to 10 connections each stand in for three processes.
      yield* Effect.scoped(makeFresh({})).pipe(Effect.provide(Pg))
      const budgets = yield* Effect.forEach([1, 2, 3], () =>
        Effect.flatMap(Layer.build(Pg), (pool) =>
          PgBudget.make({ perUserMaxCostUsd: 5, maxCostUsd: 12 }, { reclaimInterval: null }).pipe(Effect.provide(pool))))
      // It says it caps cost (createAgent then refuses a Claude model without a price).
      assert.isTrue(budgets[0]!.costCapped)
      const attempts = Array.from({ length: 300 }, (_, i) => ({ budget: budgets[i % 3]!, user: `user-${i % 4}` }))
      const results = yield* Effect.all(
        attempts.map(({ budget, user }) => Effect.map(reserveAs(budget, user, usage(1, 1, 0.125)), (r) => [user, r] as const)),
        { concurrency: "unbounded" }
      )
      const granted = results.filter(([, reservation]) => reservation._tag === "Granted")
      // $12 global at $0.125 each: 96 holds; no user past $5 (40 holds).
      assert.strictEqual(granted.length, 96)
      for (let i = 0; i < 4; i++) assert.isAtMost(granted.filter(([user]) => user === `user-${i}`).length, 40)
      // Settling from whichever pool: exact totals.
      yield* Effect.forEach(
        granted,
        ([, reservation]) => reservation._tag === "Granted" ? reservation.settle(usage(1, 1, 0.0625)) : Effect.void,
        { concurrency: 20 }
      )
      assert.deepStrictEqual(yield* budgets[0]!.globalUsage, { tokensIn: 96, tokensOut: 96, tokensTotal: 192, costUsd: 6 })
    }).pipe(Effect.orDie))

  it.effect("an expired reservation is reclaimed once, charged in full; a late settle changes nothing", () =>
    Effect.gen(function*() {
      const budget = yield* makeFresh({ perUserMaxTokens: 10_000 }, { reservationTtl: "1 minute" })
      const stuck = yield* reserveAs(budget, "alice", usage(100, 4096, 0.5))
      const done = yield* reserveAs(budget, "alice", usage(100, 4096, 0.5))
      if (done._tag === "Granted") yield* done.settle(usage(1, 1))
      assert.strictEqual(yield* budget.reclaimExpired, 0)
      yield* TestClock.adjust("61 seconds")
      const [first, second] = yield* Effect.all([budget.reclaimExpired, budget.reclaimExpired], { concurrency: 2 })
      assert.strictEqual(first + second, 1)
      const charged = { tokensIn: 101, tokensOut: 4097, tokensTotal: 4198, costUsd: 0.5 }
      assert.deepStrictEqual(yield* budget.usageFor("alice"), charged)
      if (stuck._tag === "Granted") yield* stuck.settle(usage(1, 1))
      assert.deepStrictEqual(yield* budget.usageFor("alice"), charged)
      assert.deepStrictEqual(yield* budget.globalUsage, charged)
      const status = yield* budget.allowsStep.pipe(RunContext.withUser("alice"))
      assert.deepStrictEqual(status, { state: "ok" })
    }).pipe(Effect.scoped, Effect.provide(Pg), Effect.orDie))

  it.effect("its own spans are service spans: off by default and with Telemetry.layer(), on with serviceSpans: true", () =>
    Effect.gen(function*() {
      const spansOf = (telemetry: Layer.Layer<Telemetry.Telemetry> | undefined) =>
        Effect.gen(function*() {
          const inner = yield* Effect.tracer
          const names: Array<string> = []
          const recording = Tracer.make({ span: (name, ...rest) => (names.push(name), inner.span(name, ...rest)), context: inner.context })
          const layers = telemetry === undefined ? Layer.setTracer(recording) : Layer.merge(telemetry, Layer.setTracer(recording))
          yield* Effect.gen(function*() {
            const budget = yield* makeFresh({ perUserMaxTokens: 10_000 })
            yield* budget.allowsStep.pipe(RunContext.withUser("alice"))
            const granted = yield* reserveAs(budget, "alice", usage(10, 10))
            if (granted._tag === "Granted") yield* granted.settle(usage(1, 1))
          }).pipe(Effect.provide(layers))
          return names.filter((name) => name.startsWith("PgBudget."))
        })
      assert.deepStrictEqual(yield* spansOf(undefined), [])
      assert.deepStrictEqual(yield* spansOf(Telemetry.layer()), [])
      assert.deepStrictEqual(yield* spansOf(Telemetry.layer({ serviceSpans: true })), [
        "PgBudget.allowsStep",
        "PgBudget.reserve",
        "PgBudget.settle"
      ])
    }).pipe(Effect.scoped, Effect.provide(Pg), Effect.orDie))

  it.live("a lock held longer than the timeout fails with BudgetUnavailable, not a hang", () =>
    Effect.gen(function*() {
      const budget = yield* makeFresh({}, { timeout: "300 millis" })
      const blocker = new pg.Client({ connectionString: url })
      yield* Effect.promise(() => blocker.connect())
      yield* Effect.promise(() => blocker.query("BEGIN; SELECT * FROM jeeves_budget_ledger WHERE scope = 'global' FOR UPDATE"))
      const exit = yield* Effect.exit(reserveAs(budget, "alice", usage(1, 1)))
      yield* Effect.promise(() => blocker.query("ROLLBACK").then(() => blocker.end()))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.strictEqual(failure?._tag, "BudgetUnavailable")
        assert.include(failure?.message ?? "", "timed out")
      }
      // Nothing is left reserved by the abandoned statement: it ran on once the lock was released, and what it
      // reserved is undone in the background (on a loaded machine, after the next reserve below).
      const granted = yield* reserveAs(budget, "alice", usage(1, 1))
      assert.strictEqual(granted._tag, "Granted")
      const sql = yield* SqlClient.SqlClient
      const holdsCount = Effect.map(sql<{ n: string }>`SELECT count(*) AS n FROM jeeves_budget_reservations`, (rows) => rows[0]!.n)
      let holds = yield* holdsCount
      for (let wait = 0; holds !== "1" && wait < 100; wait++) {
        yield* Effect.sleep("50 millis")
        holds = yield* holdsCount
      }
      assert.strictEqual(holds, "1")
    }).pipe(Effect.scoped, Effect.provide(Pg), Effect.orDie))

  it.effect("through the agent: a user over the cap is blocked with turns 0; others run", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(makeFresh({})).pipe(Effect.provide(Pg))
      let calls = 0
      const layer = Agent.layer().pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, PgBudget.layer({ perUserMaxTokens: 100 }))),
        Layer.provide(Model.layerScripted(() => {
          calls++
          return { text: "ok", usage: { inputTokens: 60, outputTokens: 60 } }
        })),
        Layer.provide(Pg),
        Layer.orDie
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        assert.strictEqual((yield* agent.run("hi", { userId: "alice" })).turns, 1)
        const blocked = yield* agent.run("hi", { userId: "alice" })
        assert.strictEqual(blocked.turns, 0)
        assert.strictEqual(blocked.interruptionReason, "budget:per_user_max_tokens")
        assert.strictEqual(calls, 1)
        assert.isFalse((yield* agent.run("hi", { userId: "bob" })).interrupted)
        const budget = yield* Budget.Budget
        assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 120)
        assert.strictEqual((yield* budget.globalUsage).tokensTotal, 240)
      }).pipe(Effect.provide(layer))
    }))

  it.effect("4 processes hammering 20 users: the ledger is exactly the reported usage, no cap overshot", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(makeFresh({})).pipe(Effect.provide(Pg))
      const CAP = 300
      const outputs = yield* Effect.all(
        Array.from({ length: 4 }, (_, index) => runWorker({ url, seed: index + 1, ops: 120, users: 20, cap: CAP })),
        { concurrency: "unbounded" }
      )
      const expected = new Map<string, { tokensIn: number; tokensOut: number; costUsd: number }>()
      let largestCall = 0
      for (const output of outputs) {
        largestCall = Math.max(largestCall, output.largestCall)
        for (const [user, sum] of Object.entries(output.perUser)) {
          const total = expected.get(user) ?? { tokensIn: 0, tokensOut: 0, costUsd: 0 }
          expected.set(user, {
            tokensIn: total.tokensIn + sum.tokensIn,
            tokensOut: total.tokensOut + sum.tokensOut,
            costUsd: total.costUsd + sum.costUsd
          })
        }
      }
      assert.isAbove(outputs.reduce((n, output) => n + output.blocked, 0), 0, "the caps were never reached")
      const layer = PgBudget.layer({}, { reclaimInterval: null }).pipe(Layer.provideMerge(Pg))
      yield* Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const global = { tokensIn: 0, tokensOut: 0, costUsd: 0 }
        for (let user = 0; user < 20; user++) {
          const sum = expected.get(`user-${user}`) ?? { tokensIn: 0, tokensOut: 0, costUsd: 0 }
          const ledger = yield* budget.usageFor(`user-${user}`)
          assert.deepStrictEqual(ledger, { ...sum, tokensTotal: sum.tokensIn + sum.tokensOut }, `user-${user}`)
          assert.isBelow(ledger.tokensTotal, CAP + largestCall + 1, `user-${user} overshot`)
          global.tokensIn += sum.tokensIn
          global.tokensOut += sum.tokensOut
          global.costUsd += sum.costUsd
        }
        assert.deepStrictEqual(yield* budget.globalUsage, { ...global, tokensTotal: global.tokensIn + global.tokensOut })
        const sql = yield* SqlClient.SqlClient
        const holds = yield* sql<{ n: string }>`SELECT count(*) AS n FROM jeeves_budget_reservations`
        assert.strictEqual(holds[0]!.n, "0")
      }).pipe(Effect.provide(layer), Effect.orDie)
    }), { timeout: 120_000 })
})

describe.skipIf(!postgresAvailable)("PgBudget with PostgreSQL down", () => {
  it.live("fails closed: BudgetUnavailable from every method, and the agent never calls the model", () =>
    Effect.gen(function*() {
      const scratch = yield* Effect.promise(() => createTestDatabase("pg_budget_down"))
      yield* Effect.addFinalizer(() => Effect.promise(() => scratch.drop()))
      const name = new URL(scratch.url).pathname.slice(1)
      let calls = 0
      const layer = Agent.layer().pipe(
        Layer.provideMerge(
          Layer.mergeAll(Agent.layerDefaults, PgBudget.layer({ perUserMaxTokens: 100 }, { timeout: "5 seconds" }))
        ),
        Layer.provide(Model.layerScripted(() => {
          calls++
          return { text: "ok" }
        })),
        Layer.provide(pgLayer(scratch.url)),
        Layer.orDie
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const budget = yield* Budget.Budget
        assert.strictEqual((yield* agent.run("hi", { userId: "alice" })).turns, 1)
        // The server goes away for this database: no new connections, existing ones killed.
        yield* Effect.promise(() =>
          adminQuery(`ALTER DATABASE "${name}" WITH ALLOW_CONNECTIONS false`).then(() =>
            adminQuery(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`)
          )
        )
        const failure = yield* Effect.flip(agent.run("hi", { userId: "alice" }))
        assert.strictEqual(failure._tag, "BudgetUnavailable")
        assert.strictEqual(calls, 1)
        const methods: ReadonlyArray<Effect.Effect<unknown, Budget.BudgetUnavailable | RunContext.InvalidUserId>> = [
          budget.allowsStep.pipe(RunContext.withUser("alice")),
          reserveAs(budget, "alice", usage(1, 1)),
          budget.usageFor("alice"),
          budget.globalUsage
        ]
        for (const method of methods) {
          const result = yield* Effect.either(method)
          assert.isTrue(Either.isLeft(result) && result.left._tag === "BudgetUnavailable")
        }
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), { timeout: 60_000 })
})

// ---------------------------------------------------------------------------
// the worker processes
// ---------------------------------------------------------------------------

interface WorkerOptions {
  readonly url: string
  readonly seed: number
  readonly ops: number
  readonly users: number
  readonly cap: number
}

interface WorkerOutput {
  readonly perUser: Record<string, { tokensIn: number; tokensOut: number; costUsd: number }>
  readonly blocked: number
  readonly largestCall: number
}

const srcUrl = (module: string) => new URL(`../src/${module}`, import.meta.url).href

/**
 * One worker process: 4 fibers reserve and then settle (or, one time in
 * five, release) for random users with a seeded generator; usage never
 * exceeds the estimate. Prints what it settled, per user.
 */
const WORKER = `
import { Effect, Layer, Redacted } from "effect"
import * as PgClient from "@effect/sql-pg/PgClient"
const { Budget, RunContext } = await import(process.env.JEEVES_SRC_INDEX)
const PgBudget = await import(process.env.JEEVES_SRC_PGBUDGET)
const options = JSON.parse(process.env.JEEVES_WORKER)
let state = options.seed
const random = (n) => { state = (state * 1103515245 + 12345) % 2147483648; return state % n }
const perUser = {}
let blocked = 0
let largestCall = 0
const layer = PgBudget.layer({ perUserMaxTokens: options.cap }, { reclaimInterval: null }).pipe(
  Layer.provide(PgClient.layer({ url: Redacted.make(options.url), maxConnections: 4 }))
)
const fiber = (count) => Effect.gen(function*() {
  const budget = yield* Budget.Budget
  for (let i = 0; i < count; i++) {
    const user = "user-" + random(options.users)
    const estimate = { inputTokens: 10, outputTokens: 50, costUsd: 1 / 16 }
    const reservation = yield* budget.reserve(estimate).pipe(RunContext.withUser(user))
    if (reservation._tag === "Blocked") { blocked++; continue }
    if (random(5) === 0) { yield* reservation.release; continue }
    const used = { inputTokens: random(11), outputTokens: random(51), costUsd: random(65) / 1024 }
    yield* reservation.settle(used)
    const sum = perUser[user] ?? (perUser[user] = { tokensIn: 0, tokensOut: 0, costUsd: 0 })
    sum.tokensIn += used.inputTokens; sum.tokensOut += used.outputTokens; sum.costUsd += used.costUsd
    largestCall = Math.max(largestCall, used.inputTokens + used.outputTokens)
  }
})
const fibers = Array.from({ length: 4 }, () => fiber(options.ops / 4))
await Effect.runPromise(Effect.all(fibers, { concurrency: "unbounded" }).pipe(Effect.provide(layer)))
console.log(JSON.stringify({ perUser, blocked, largestCall }))
`

const runWorker = (options: WorkerOptions) =>
  Effect.async<WorkerOutput, Error>((resume) => {
    const child = execFile(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "--eval", WORKER],
      {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
        env: {
          ...process.env,
          JEEVES_SRC_INDEX: srcUrl("index.ts"),
          JEEVES_SRC_PGBUDGET: srcUrl("PgBudget.ts"),
          JEEVES_WORKER: JSON.stringify(options)
        },
        timeout: 90_000
      },
      (error, stdout, stderr) => {
        if (error) return resume(Effect.fail(new Error(`worker ${options.seed} failed: ${error.message}\n${stderr}`)))
        try {
          resume(Effect.succeed(JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as WorkerOutput))
        } catch (cause) {
          resume(Effect.fail(new Error(`worker ${options.seed} printed no result: ${stdout}\n${stderr}`, { cause })))
        }
      }
    )
    return Effect.sync(() => child.kill())
  })
