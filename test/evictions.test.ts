import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { Budget, Memory, RunContext } from "jeevesagent"

/** The `jeeves.state.evictions` counter for `store` (a global metric: read before and after). */
const evictions = (store: string) =>
  Effect.map(Metric.snapshot, (pairs) => {
    let total = 0
    for (const pair of pairs) {
      if (pair.metricKey.name !== "jeeves.state.evictions") continue
      if (!pair.metricKey.tags.some((tag) => tag.key === "store" && tag.value === store)) continue
      const state = pair.metricState as unknown as { count: number | bigint }
      total += Number(state.count)
    }
    return total
  })

describe("jeeves.state.evictions", () => {
  it.effect("counts budget users evicted past maxUsers", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ perUserMaxTokens: 1000 }, { maxUsers: 2, userIdleTtl: null })
      const before = yield* evictions("budget")
      for (const user of ["a", "b", "c", "d"]) {
        const reservation = yield* budget.reserve({ inputTokens: 1, outputTokens: 1, costUsd: 0 }).pipe(
          RunContext.withUser(user)
        )
        if (reservation._tag === "Granted") yield* reservation.settle({ inputTokens: 1, outputTokens: 1, costUsd: 0 })
      }
      assert.strictEqual((yield* evictions("budget")) - before, 2)
    }))

  it.effect("counts memory users evicted past maxUsers", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.makeInMemory({ maxUsers: 2, userIdleTtl: null })
      const before = yield* evictions("memory")
      for (const user of ["a", "b", "c"]) {
        yield* memory.updateBlock("notes", user).pipe(RunContext.withUser(user))
      }
      assert.strictEqual((yield* evictions("memory")) - before, 1)
    }))
})
