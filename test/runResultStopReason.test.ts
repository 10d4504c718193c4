import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import { Agent, Budget, Model } from "jeevesagent"

const usage = { inputTokens: 5, outputTokens: 3, costUsd: 0 }

/** A model whose every answer ends with `stopReason`. */
const answering = (stopReason: string) =>
  Layer.succeed(Model.Model, Model.make({
    name: "stopping",
    complete: () => Effect.succeed({ text: "I can't help with th", toolCalls: [], usage, stopReason })
  }))

const agentWith = (model: Layer.Layer<Model.Model>, budget: Layer.Layer<Budget.Budget, Budget.BudgetConfigError> = Budget.layerNone) =>
  Agent.layer({ instructions: "Be brief." }).pipe(
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, model, budget))
  )

describe("RunResult.stopReason", () => {
  it.effect("a run whose last answer the provider refused (or cut off) says so, run and stream alike", () =>
    Effect.gen(function*() {
      for (const stopReason of ["refusal", "max_tokens", "end_turn"]) {
        const result = yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("hello")).pipe(
          Effect.provide(agentWith(answering(stopReason)))
        )
        assert.strictEqual(result.stopReason, stopReason)
        assert.strictEqual(result.interrupted, false)
        const events = yield* Effect.flatMap(Agent.Agent, (agent) => Stream.runCollect(agent.stream("hello"))).pipe(
          Effect.provide(agentWith(answering(stopReason)))
        )
        const completed = Chunk.toReadonlyArray(events).find((event) => event._tag === "completed")
        assert.strictEqual(completed?._tag === "completed" ? completed.result.stopReason : "none", stopReason)
      }
    }))

  it.effect("no answer came (the budget blocked the first call): undefined", () =>
    Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const first = yield* agent.run("hello", { userId: "u1" })
      assert.strictEqual(first.stopReason, "end_turn")
      // The first run spent the user's cap: the second one's first call is blocked.
      const blocked = yield* agent.run("hello", { userId: "u1" })
      assert.strictEqual(blocked.interrupted, true)
      assert.strictEqual(blocked.stopReason, undefined)
    }).pipe(Effect.provide(agentWith(answering("end_turn"), Budget.layer({ perUserMaxTokens: 1 })))))
})
