/**
 * PgBudget's `timeout` is "the longest wait for one database round trip before
 * BudgetUnavailable"; the agent keeps the answer when a settle fails ("budget settle
 * failed" warning). But the agent settles and releases inside its mask
 * (`uninterruptibleMask` in meteredCall / `reserved`), and `guardedFor` waits for
 * the statement with `restore(Fiber.join(fiber)).pipe(Effect.timeoutFail(...))`:
 * `restore` brings back the caller's interruptibility, i.e. none, so the timeout
 * cannot stop the wait. A settle stuck on a lock (or on a dead connection) holds the
 * run — uninterruptibly — for as long as the database takes, whatever `timeout` says.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option } from "effect"
import pg from "pg"
import { Agent, Model } from "jeevesagent"
import * as PgBudget from "jeevesagent/PgBudget"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const database = postgresAvailable ? await createTestDatabase("pg_budget_settle_timeout") : undefined
afterAll(async () => {
  await database?.drop()
})

describe.skipIf(!postgresAvailable)("PgBudget timeout under the agent", () => {
  if (database === undefined) return
  const Pg = pgLayer(database.url).pipe(Layer.orDie)

  it.live("a settle blocked past `timeout` does not hold the run: it ends with the answer while the lock is held", () =>
    Effect.gen(function*() {
      const blocker = new pg.Client({ connectionString: database.url })
      yield* Effect.acquireRelease(
        Effect.promise(() => blocker.connect()),
        () => Effect.promise(() => blocker.query("ROLLBACK").catch(() => undefined).then(() => blocker.end()))
      )
      // The model answers, and meanwhile another process locks the global ledger row
      // (a long transaction, a stuck connection): the settle that follows must wait for it.
      const model = Model.make({
        name: "locks-the-ledger",
        complete: () =>
          Effect.as(
            Effect.promise(() =>
              blocker.query("BEGIN; SELECT * FROM jeeves_budget_ledger WHERE scope = 'global' FOR UPDATE")
            ),
            { text: "the answer", toolCalls: [], usage: { inputTokens: 3, outputTokens: 2, costUsd: 0 }, stopReason: "end_turn" }
          )
      })
      const layer = Agent.layer().pipe(
        Layer.provideMerge(
          Layer.mergeAll(
            Agent.layerDefaults,
            PgBudget.layer({ perUserMaxTokens: 1_000 }, { timeout: "300 millis", reclaimInterval: null })
          )
        ),
        Layer.provide(Layer.succeed(Model.Model, model)),
        Layer.provide(Pg),
        Layer.orDie
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const run = yield* Effect.fork(agent.run("hi", { userId: "alice" }))
        // Far longer than the 300 ms `timeout`; the lock is held throughout.
        const ended = yield* Fiber.await(run).pipe(Effect.timeout("10 seconds"), Effect.option)
        assert.isTrue(Option.isSome(ended), "the run was still waiting on its settle 10 s after a 300 ms timeout")
        if (Option.isSome(ended) && ended.value._tag === "Success") {
          assert.strictEqual(ended.value.value.output, "the answer")
        } else {
          assert.fail("the run did not end with its answer")
        }
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), { timeout: 30_000 })
})
