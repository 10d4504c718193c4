/**
 * A tool error longer than the 2 000 characters the model is shown is cut
 * there, never inside a surrogate pair: a cut emoji is not well-formed text,
 * and a provider's JSON parser may refuse the whole request for it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

const isWellFormed = (text: string) => (text as unknown as { isWellFormed(): boolean }).isWellFormed()

const failing = (message: string) =>
  Tool.make("fails", {
    description: "fails with a long message",
    parameters: Schema.Struct({}),
    handler: () => Effect.fail(new Error(message))
  })

describe("a long tool error", () => {
  it.effect("is cut at 2 000 characters, before an emoji rather than inside it", () =>
    Effect.gen(function*() {
      // The emoji's first half is the 2 000th character.
      const result = yield* run.pipe(
        Effect.provide(agentWith(callThenSummarize([{ name: "fails", args: {} }]), [failing("x".repeat(1_999) + "🎉" + "y".repeat(50))]))
      )
      const call = result.toolCalls[0]!
      assert.isTrue(isWellFormed(call.output))
      assert.strictEqual(call.output, `ERROR: ${"x".repeat(1_999)}…`)
    }))

  it.effect("an error cut elsewhere keeps its first 2 000 characters", () =>
    Effect.gen(function*() {
      const result = yield* run.pipe(
        Effect.provide(agentWith(callThenSummarize([{ name: "fails", args: {} }]), [failing("🎉" + "z".repeat(3_000))]))
      )
      assert.strictEqual(result.toolCalls[0]!.output, `ERROR: 🎉${"z".repeat(1_998)}…`)
    }))
})
