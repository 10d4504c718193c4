/**
 * `Model.layerScripted`: "toolCalls without an `id` get `call_<n>` ids", and
 * a generated id never repeats one the script gave another call of the same
 * answer: otherwise their results would go back to the model under one id,
 * `RunResult.toolCalls` and the stream's `tool_result` events could not be
 * told apart, and a real provider would refuse the conversation.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Model, Tool } from "jeevesagent"
import { agentWith, run } from "./support/toolAgent.js"

const echo = Tool.make("echo", {
  description: "echoes",
  parameters: Schema.Struct({ v: Schema.String }),
  handler: ({ v }) => Effect.succeed(v)
})

describe("Model.layerScripted call ids", () => {
  it.effect("a generated id never collides with an explicit one in the same response", () =>
    Effect.gen(function*() {
      const model = yield* Model.Model
      const response = yield* model.complete({
        messages: [{ role: "user", content: "x" }],
        tools: []
      })
      const ids = response.toolCalls.map((call) => call.id)
      assert.strictEqual(ids[0], "call_1")
      assert.strictEqual(new Set(ids).size, ids.length, `duplicate ids: ${ids.join(", ")}`)
    }).pipe(Effect.provide(Model.layerScripted([
      { toolCalls: [{ name: "echo", args: { v: "A" }, id: "call_1" }, { name: "echo", args: { v: "B" } }] }
    ]))))

  it.effect("so each tool result goes back to the model under its own call's id", () =>
    Effect.gen(function*() {
      const result = yield* run
      const ids = result.toolCalls.map((call) => call.callId)
      assert.deepStrictEqual(result.toolCalls.map((call) => call.output), ["A", "B"])
      assert.strictEqual(new Set(ids).size, 2, `duplicate ids: ${ids.join(", ")}`)
    }).pipe(Effect.provide(agentWith([
      { toolCalls: [{ name: "echo", args: { v: "A" }, id: "call_1" }, { name: "echo", args: { v: "B" } }] },
      { text: "done" }
    ], [echo]))))
})
