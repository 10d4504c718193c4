import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer } from "effect"
import { Agent, Model } from "jeevesagent"

const build = (config: Agent.Config) =>
  Effect.exit(Effect.scoped(Layer.build(
    Agent.layer(config).pipe(Layer.provide(Layer.merge(Agent.layerDefaults, Model.layerScripted([{ text: "ok" }]))))
  )))

const defectMessage = (exit: Exit.Exit<unknown, unknown>): string => {
  assert.isTrue(Exit.isFailure(exit), "the layer should not build")
  return Exit.isFailure(exit) ? String(Cause.squash(exit.cause)) : ""
}

describe("Agent config validation", () => {
  it.effect("maxTurns and maxTokens must be positive integers, named in the message", () =>
    Effect.gen(function*() {
      for (const maxTurns of [0, -1, 1.5, Number.NaN]) {
        assert.include(defectMessage(yield* build({ maxTurns })), `maxTurns must be a positive integer, got ${maxTurns}`)
      }
      // maxTokens bounds what the budget reserves per call: zero or less would reserve too little.
      for (const maxTokens of [0, -5, 2.5, Number.POSITIVE_INFINITY]) {
        assert.include(defectMessage(yield* build({ maxTokens })), `maxTokens must be a positive integer, got ${maxTokens}`)
      }
      assert.isTrue(Exit.isSuccess(yield* build({ maxTurns: 3, maxTokens: 512 })))
    }))
})
