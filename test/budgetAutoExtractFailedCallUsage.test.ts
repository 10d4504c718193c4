import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Budget, Memory, Model, RunContext } from "jeevesagent"

/**
 * Budget.ts: a failed call's reservation is released "unless the provider had
 * reported usage before the call failed (a stream cut off after it began: that
 * usage is charged)". The agent does so (`failedUsage`); Memory.autoExtract's
 * extraction call releases instead, so the tokens the provider billed for a cut-off
 * extraction are never charged to the user.
 */
describe("Budget: Memory.autoExtract", () => {
  it.effect("an extraction call that fails after reporting usage is charged that usage, not released", () => {
    const model = Model.make({
      name: "cut-off",
      complete: () =>
        Effect.fail(
          new Model.ModelError({
            reason: "connection",
            retryable: true,
            description: "the response stream ended before message_stop",
            usage: { inputTokens: 300, outputTokens: 20, costUsd: 0.01 }
          })
        )
    })
    const layer = Memory.autoExtract().pipe(
      Layer.provide(Memory.layerInMemory()),
      Layer.provideMerge(Layer.merge(Layer.succeed(Model.Model, model), Budget.layer({})))
    )
    return Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "I live in Lisbon", output: "Noted" }).pipe(
        RunContext.withUser("alice", { sessionId: "s1" })
      )
      const budget = yield* Budget.Budget
      assert.deepStrictEqual(yield* budget.usageFor("alice"), {
        tokensIn: 300,
        tokensOut: 20,
        tokensTotal: 320,
        costUsd: 0.01
      })
    }).pipe(Effect.provide(layer))
  })
})
