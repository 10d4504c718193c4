import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { RunContext, Tool } from "jeevesagent"

describe("Tool", () => {
  it("make derives the model-facing definition from the Schema", () => {
    const tool = Tool.make("search", {
      description: "Searches",
      parameters: Schema.Struct({ query: Schema.String, limit: Schema.optional(Schema.Number) }),
      destructive: true,
      timeout: "3 seconds",
      handler: () => Effect.succeed("ok")
    })
    assert.isTrue(Tool.isTool(tool))
    assert.isTrue(tool.destructive)
    assert.strictEqual(tool.definition.name, "search")
    assert.strictEqual(tool.definition.inputSchema.type, "object")
    assert.deepStrictEqual(tool.definition.inputSchema.required, ["query"])
    assert.notProperty(tool.definition.inputSchema, "$schema")
  })

  it("rejects names model APIs would refuse", () => {
    assert.throws(
      () =>
        Tool.make("bad name!", { description: "", parameters: Schema.Struct({}), handler: () => Effect.void }),
      /must match/
    )
  })

  it.effect("fromPromise handlers receive the run context and an abort signal", () =>
    Effect.gen(function*() {
      const tool = Tool.fromPromise("ctx", {
        description: "",
        parameters: Schema.Struct({}),
        handler: async (_args, { context, signal }) => `${context.userId}:${signal.aborted}`
      })
      const output = yield* tool.handler({}).pipe(RunContext.withUser("alice"))
      assert.strictEqual(output, "alice:false")
    }))
})
