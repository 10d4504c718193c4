import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Stream } from "effect"
import { Agent, AgentEvent, Budget, Model } from "jeevesagent"

/**
 * A provider call cut off after it began reports what it used (`ModelError.usage`,
 * e.g. AnthropicModel's retryable "the response stream ended before message_stop").
 * Budget.ts: such usage "is charged". When the error is retryable the agent retries
 * within the same reservation, and only the last attempt's usage is settled: the
 * provider billed the first attempt, the ledger never sees it.
 */
const cutOff = new Model.ModelError({
  reason: "connection",
  retryable: true,
  description: "the response stream ended before message_stop",
  usage: { inputTokens: 100, outputTokens: 40, costUsd: 0.5 }
})

const answer: Model.ModelResponse = {
  text: "ok",
  toolCalls: [],
  usage: { inputTokens: 10, outputTokens: 5, costUsd: 0.25 },
  stopReason: "end_turn"
}

const failsOnceThenAnswers = () => {
  let calls = 0
  const model = Model.make({
    name: "cut-off-once",
    complete: () => Effect.suspend(() => ++calls === 1 ? Effect.fail(cutOff) : Effect.succeed(answer)),
    stream: () =>
      Stream.suspend(() =>
        ++calls === 1 ? Stream.fail(cutOff) : Model.responseParts(answer)
      )
  })
  return { model, calls: () => calls }
}

const layerWith = (model: Model.Service) =>
  Agent.layer({ retrySchedule: Schedule.recurs(1) }).pipe(
    Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 100_000 }))),
    Layer.provide(Layer.succeed(Model.Model, model)),
    Layer.orDie
  )

describe("Budget: a retried model call", () => {
  it.effect("agent.run: the usage a failed attempt reported is charged too, not only the final attempt's", () => {
    const { calls, model } = failsOnceThenAnswers()
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const result = yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(calls(), 2, "the first attempt failed and was retried")
      assert.isFalse(result.interrupted)
      const used = yield* budget.usageFor("alice")
      // The provider billed both attempts: 100 + 10 in, 40 + 5 out, $0.75.
      assert.deepStrictEqual(used, { tokensIn: 110, tokensOut: 45, tokensTotal: 155, costUsd: 0.75 })
    }).pipe(Effect.provide(layerWith(model)))
  })

  it.effect("agent.stream: a stream cut off before any chunk reached the caller is retried; its usage is charged", () => {
    const { calls, model } = failsOnceThenAnswers()
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const events = yield* Stream.runCollect(agent.stream("hi", { userId: "alice" }))
      assert.isTrue([...events].some(AgentEvent.AgentEvent.$is("completed")))
      assert.strictEqual(calls(), 2, "the first attempt failed and was retried")
      const used = yield* budget.usageFor("alice")
      assert.deepStrictEqual(used, { tokensIn: 110, tokensOut: 45, tokensTotal: 155, costUsd: 0.75 })
    }).pipe(Effect.provide(layerWith(model)))
  })
})
