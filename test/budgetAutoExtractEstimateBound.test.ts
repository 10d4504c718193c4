import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, TestClock } from "effect"
import { Budget, Memory, Model, RunContext } from "jeevesagent"

/**
 * Budget.ts: "the estimates of calls still in flight are [part of the check], so K
 * concurrent runs of one user cannot all pass the same last-headroom check ... With
 * estimates that bound the real usage, a cap is overshot by at most one call's usage."
 * The agent estimates input tokens as UTF-8 bytes for exactly this reason (agent.ts:
 * "Characters / 4 is no bound: non-Latin text can exceed it"). Memory.autoExtract
 * reserves `ceil(chars / 4)`: for non-Latin episodes the in-flight estimates are a
 * fraction of what the calls use, so K concurrent extractions of one user all pass
 * and the per-user cap is overshot by several calls.
 */
describe("Budget: Memory.autoExtract estimates", () => {
  it.effect("concurrent extraction calls of one user overshoot the per-user cap by at most one call", () => {
    // 1 000 CJK characters: 3 000 UTF-8 bytes, about 1 000+ tokens.
    const episode = "日本語の文章です。".repeat(111) + "日"
    const perCall = { inputTokens: 1_500, outputTokens: 10 }
    let calls = 0
    const model = Model.layerScripted(() => {
      calls++
      return { text: "[]", usage: perCall, latency: "1 second" }
    })
    const cap = 2_000
    const layer = Memory.autoExtract({ maxTokens: 64 }).pipe(
      Layer.provide(Memory.layerInMemory()),
      Layer.provideMerge(Layer.merge(model, Budget.layer({ perUserMaxTokens: cap })))
    )
    return Effect.gen(function*() {
      const memory = yield* Memory.Memory
      const budget = yield* Budget.Budget
      const fibers = yield* Effect.forEach(
        [1, 2, 3],
        (i) =>
          Effect.fork(
            memory.remember({ input: episode, output: "了解しました" }).pipe(
              RunContext.withUser("alice", { sessionId: `s${i}` })
            )
          )
      )
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.joinAll(fibers)
      const used = yield* budget.usageFor("alice")
      const oneCall = perCall.inputTokens + perCall.outputTokens
      assert.isAtMost(
        used.tokensTotal,
        cap + oneCall,
        `${calls} concurrent extraction calls were admitted: ${used.tokensTotal} tokens against a cap of ${cap}`
      )
    }).pipe(Effect.provide(layer))
  })
})
