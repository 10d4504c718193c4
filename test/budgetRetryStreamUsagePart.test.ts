import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Stream } from "effect"
import { Agent, Budget, Model } from "jeevesagent"

/**
 * A streamed attempt that reports a `Usage` part and then fails with a
 * retryable ModelError that carries no `usage` of its own is charged that
 * `Usage` part whether or not the call is retried (Budget.ts: usage the
 * provider reported before the call failed is charged): a retried call,
 * which did more work, is never charged less.
 */
const answer: Model.ModelResponse = {
  text: "ok",
  toolCalls: [],
  usage: { inputTokens: 10, outputTokens: 5, costUsd: 0.25 },
  stopReason: "end_turn"
}

const dropped = new Model.ModelError({ reason: "connection", retryable: true, description: "connection reset" })

const reportsUsageThenFailsOnce = () => {
  let calls = 0
  return Model.make({
    name: "usage-then-reset",
    complete: () => Effect.succeed(answer),
    stream: () =>
      Stream.suspend(() =>
        ++calls === 1 ?
          Stream.concat(
            Stream.make<Array<Model.StreamPart>>({ _tag: "Usage", usage: { inputTokens: 100, outputTokens: 0, costUsd: 0.5 } }),
            Stream.fail(dropped)
          ) :
          Model.responseParts(answer)
      )
  })
}

const usageOfOneStream = (retrySchedule: Schedule.Schedule<unknown, unknown>) =>
  Effect.gen(function*() {
    const agent = yield* Agent.Agent
    const budget = yield* Budget.Budget
    yield* Effect.exit(Stream.runDrain(agent.stream("hi", { userId: "alice" })))
    return yield* budget.usageFor("alice")
  }).pipe(
    Effect.provide(
      Agent.layer({ retrySchedule }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(Layer.succeed(Model.Model, reportsUsageThenFailsOnce())),
        Layer.orDie
      )
    )
  )

describe("Budget: a retried stream whose failed attempt reported a Usage part", () => {
  it.effect("the Usage part of the failed attempt is charged, as it is when the call is not retried", () =>
    Effect.gen(function*() {
      const alone = yield* usageOfOneStream(Schedule.stop)
      // Not retried: the stream failed after reporting 100 input tokens / $0.5; that is charged.
      assert.strictEqual(alone.tokensIn, 100)
      assert.strictEqual(alone.costUsd, 0.5)

      const retried = yield* usageOfOneStream(Schedule.recurs(1))
      // Retried and answered: 100 + 10 in, 0 + 5 out, $0.75.
      assert.deepStrictEqual(retried, { tokensIn: 110, tokensOut: 5, tokensTotal: 115, costUsd: 0.75 })
    }))
})
