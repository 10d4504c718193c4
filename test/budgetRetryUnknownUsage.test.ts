import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { Agent, Budget, Model } from "jeevesagent"

/**
 * Budget.ts: a figure the model reported that is not a finite non-negative
 * number is charged at the estimate (fail closed: never zero for an unknown
 * figure). AnthropicModel's `complete` (which streams internally for large
 * `maxTokens`) fails a call cut off after part of its answer was generated
 * with a retryable ModelError whose usage is `{ inputTokens, outputTokens:
 * NaN, costUsd: NaN }`: the provider generated (and billed) output, how much
 * is unknown. Retried or not, that output is charged at the estimate, and a
 * negative figure from a custom model never lowers the charge below the
 * answer's own usage.
 */
const MAX_TOKENS = 4096

const answer: Model.ModelResponse = {
  text: "ok",
  toolCalls: [],
  usage: { inputTokens: 10, outputTokens: 5, costUsd: 0 },
  stopReason: "end_turn"
}

const cutOffWith = (usage: Model.Usage) =>
  new Model.ModelError({
    reason: "connection",
    retryable: true,
    description: "the response stream ended before message_stop",
    usage
  })

const failsOnceThenAnswers = (firstUsage: Model.Usage) => {
  let calls = 0
  return Model.make({
    name: "cut-off-once",
    complete: () => Effect.suspend(() => ++calls === 1 ? Effect.fail(cutOffWith(firstUsage)) : Effect.succeed(answer))
  })
}

const usageOfOneRun = (model: Model.Service, retrySchedule: Schedule.Schedule<unknown, unknown>) =>
  Effect.gen(function*() {
    const agent = yield* Agent.Agent
    const budget = yield* Budget.Budget
    yield* Effect.exit(agent.run("hi", { userId: "alice" }))
    return yield* budget.usageFor("alice")
  }).pipe(
    Effect.provide(
      Agent.layer({ retrySchedule, maxTokens: MAX_TOKENS }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(Layer.succeed(Model.Model, model)),
        Layer.orDie
      )
    )
  )

describe("Budget: a retried call whose failed attempt reported an unknown figure", () => {
  it.effect("NaN output of the failed attempt is charged at the estimate, as it is without the retry", () =>
    Effect.gen(function*() {
      const firstUsage = { inputTokens: 100, outputTokens: Number.NaN, costUsd: Number.NaN }
      // No retry: the run fails, the reservation is settled with the error's usage, NaN output at the estimate.
      const alone = yield* usageOfOneRun(failsOnceThenAnswers(firstUsage), Schedule.stop)
      assert.strictEqual(alone.tokensIn, 100)
      assert.strictEqual(alone.tokensOut, MAX_TOKENS, "without a retry the unknown output is charged at the estimate")

      // One retry that answers: the failed attempt's unknown output must not become 0.
      const retried = yield* usageOfOneRun(failsOnceThenAnswers(firstUsage), Schedule.recurs(1))
      assert.strictEqual(retried.tokensIn, 110)
      //
      assert.isAtLeast(retried.tokensOut, alone.tokensOut + answer.usage.outputTokens)
    }))

  it.effect("a negative figure of a failed attempt never lowers the charge below the answer's own usage", () =>
    Effect.gen(function*() {
      const retried = yield* usageOfOneRun(
        failsOnceThenAnswers({ inputTokens: 100, outputTokens: -4, costUsd: 0 }),
        Schedule.recurs(1)
      )
      // The successful attempt alone reported 5 output tokens; a negative figure counts as nothing, never
      // subtracted.
      assert.isAtLeast(retried.tokensOut, answer.usage.outputTokens)
      assert.isAtLeast(retried.tokensIn, 100 + answer.usage.inputTokens)
    }))
})
