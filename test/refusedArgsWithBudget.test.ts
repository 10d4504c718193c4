/**
 * Tool arguments a (custom) model hands over that refer to themselves get
 * the error result `invalid arguments: they refer to themselves (a cycle)`
 * and the run goes on (see toolCalls.test.ts). Turning a budget on does not
 * change that: the next turn's reservation estimate, which measures the
 * assistant message's arguments as given, never throws on them.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema } from "effect"
import { Budget, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

const budget = Layer.orDie(Budget.layer({ maxTokens: 10_000_000 }))

describe("unserializable tool arguments with a budget on", () => {
  it.effect("arguments that refer to themselves: an error result, the run completes", () => {
    const store = Tool.make("store", {
      description: "stores",
      parameters: Schema.Struct({ a: Schema.Unknown }),
      handler: () => Effect.succeed("stored")
    })
    const cyclic: Record<string, unknown> = { name: "loop" }
    cyclic.self = cyclic
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(run)
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? String(exit.cause) : "")
      if (Exit.isFailure(exit)) return
      assert.strictEqual(exit.value.turns, 2)
      assert.strictEqual(exit.value.toolCalls[0]!.output, "ERROR: invalid arguments: they refer to themselves (a cycle)")
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "store", args: { a: cyclic } }]), [store], budget)))
  })

  it.effect("a bigint argument, as the arguments, at the top or nested: an error result, the tool not run, the run and its episode complete", () => {
    let ran = 0
    const store = Tool.make("store", {
      description: "stores",
      parameters: Schema.Struct({ a: Schema.Unknown }),
      handler: () => Effect.sync(() => `stored ${++ran}`)
    })
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(run)
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? String(exit.cause) : "")
      // The run succeeded, so its episode (in-memory Memory of the defaults) was remembered: a bigint in it fails.
      if (Exit.isFailure(exit)) return
      assert.strictEqual(ran, 0)
      assert.deepStrictEqual(exit.value.toolCalls.map((call) => call.output), [
        "ERROR: invalid arguments: a bigint is not a JSON value",
        "ERROR: invalid arguments: a bigint is not a JSON value",
        "ERROR: invalid arguments: a bigint is not a JSON value"
      ])
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "store", args: { a: 12n } }, { name: "store", args: { a: { deep: [1n] } } }, { name: "store", args: 5n }]),
      [store],
      budget
    )))
  })
})
