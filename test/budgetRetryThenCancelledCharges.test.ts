import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Schedule, Stream } from "effect"
import { Agent, Budget, Model } from "jeevesagent"

/**
 * A call retried after an attempt that reported usage, then cancelled while
 * the next attempt runs: the provider billed the failed attempt (and, for a
 * stream, what the cancelled one reported at its start), so the user's ledger
 * is charged that, as it is when the retry answers or fails.
 */
const cutOff = new Model.ModelError({
  reason: "connection",
  retryable: true,
  description: "the response stream ended before message_stop",
  usage: { inputTokens: 100, outputTokens: 40, costUsd: 0.5 }
})

const retriedThenStuck = (secondStarted: Deferred.Deferred<void>) => {
  let calls = 0
  return Model.make({
    name: "retried-then-stuck",
    complete: () =>
      Effect.suspend(() => ++calls === 1 ? Effect.fail(cutOff) : Effect.zipRight(Deferred.succeed(secondStarted, undefined), Effect.never)),
    stream: () =>
      Stream.suspend(() =>
        ++calls === 1 ?
          Stream.concat(Stream.make<Array<Model.StreamPart>>({ _tag: "Usage", usage: { inputTokens: 100, outputTokens: 0, costUsd: 0.3 } }), Stream.fail(cutOff)) :
          Stream.concat(
            Stream.make<Array<Model.StreamPart>>({ _tag: "Usage", usage: { inputTokens: 20, outputTokens: 0, costUsd: 0.1 } }),
            Stream.fromEffect(Effect.zipRight(Deferred.succeed(secondStarted, undefined), Effect.never))
          )
      )
  })
}

const layerWith = (model: Model.Service) =>
  Agent.layer({ retrySchedule: Schedule.recurs(3) }).pipe(
    Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 100_000 }))),
    Layer.provide(Layer.succeed(Model.Model, model)),
    Layer.orDie
  )

describe("Budget: a retried call cancelled during a later attempt", () => {
  it.effect("agent.run: the failed attempt's usage is charged", () =>
    Effect.gen(function*() {
      const secondStarted = yield* Deferred.make<void>()
      return yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const budget = yield* Budget.Budget
        const run = yield* Effect.fork(agent.run("hi", { userId: "alice" }))
        yield* Deferred.await(secondStarted)
        yield* Fiber.interrupt(run)
        assert.deepStrictEqual(yield* budget.usageFor("alice"), { tokensIn: 100, tokensOut: 40, tokensTotal: 140, costUsd: 0.5 })
      }).pipe(Effect.provide(layerWith(retriedThenStuck(secondStarted))))
    }))

  it.effect("agent.stream: the failed attempt's usage and what the cancelled one reported are charged", () =>
    Effect.gen(function*() {
      const secondStarted = yield* Deferred.make<void>()
      return yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const budget = yield* Budget.Budget
        const run = yield* Effect.fork(Stream.runDrain(agent.stream("hi", { userId: "alice" })))
        yield* Deferred.await(secondStarted)
        yield* Fiber.interrupt(run)
        const used = yield* budget.usageFor("alice")
        // The failed attempt reported 100 in / 40 out / $0.5 in its error; the cancelled one 20 in / $0.1.
        assert.deepStrictEqual({ ...used, costUsd: Math.round(used.costUsd * 1e9) / 1e9 }, {
          tokensIn: 120,
          tokensOut: 40,
          tokensTotal: 160,
          costUsd: 0.6
        })
      }).pipe(Effect.provide(layerWith(retriedThenStuck(secondStarted))))
    }))
})
