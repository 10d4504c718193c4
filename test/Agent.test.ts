import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Agent, Model, RunContext, Tool } from "jeevesagent"

const whoami = Tool.make("whoami", {
  description: "The current user",
  parameters: Schema.Struct({}),
  handler: () => Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
})

const agentWith = (script: Model.Script, config?: Agent.Config) =>
  Agent.layer({ tools: [whoami], ...config }).pipe(
    Layer.provide(Model.layerScripted(script)),
    Layer.provide(Agent.layerDefaults)
  )

describe("Agent", () => {
  it.effect("tool round trip", () =>
    Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const result = yield* agent.run("who am i?", { userId: "alice" })
      assert.strictEqual(result.output, "you are alice")
      assert.strictEqual(result.turns, 2)
      assert.strictEqual(result.toolCalls[0]?.output, "alice")
    }).pipe(
      Effect.provide(agentWith((request) => {
        const last = request.messages.at(-1)!
        return last.role === "tool" ?
          { text: `you are ${last.content}` } :
          { toolCalls: [{ name: "whoami", args: {} }] }
      }))
    ))
})
