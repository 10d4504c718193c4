/**
 * The Messages API requires every tool's `input_schema` to have a top-level
 * `type: "object"` (otherwise: 400 `tools.N.custom.input_schema.type: Field
 * required`, not retryable, so every run with the tool fails). Effect's
 * JSONSchema.make gives `{ "$defs": { X: {...} }, "$ref": "#/$defs/X" }` for a
 * `Schema.Class` or a Struct with an `identifier` — the idiomatic way to
 * declare tool parameters in effect — and the model layer sends it as is.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Schema } from "effect"
import { Secrets, Tool } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

class AddArgs extends Schema.Class<AddArgs>("AddArgs")({ a: Schema.Number, b: Schema.Number }) {}

const addWithClass = Tool.make("add", {
  description: "Adds two numbers",
  parameters: AddArgs,
  handler: ({ a, b }) => Effect.succeed(a + b)
})

const lookupWithIdentifier = Tool.make("lookup", {
  description: "Looks a key up",
  parameters: Schema.Struct({ key: Schema.String }).annotations({ identifier: "LookupArgs" }),
  handler: ({ key }) => Effect.succeed(key)
})

describe("tool input schemas sent to the Messages API", () => {
  it.scoped("every tool's input_schema has a top-level type \"object\" (Schema.Class / identifier parameters)", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(Fake.json(Fake.message([Fake.text("ok")])))
      const model = yield* AnthropicModel.make({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
        Effect.provide(Secrets.layerDict({}))
      )
      yield* model.complete({
        messages: [{ role: "user", content: "add 1 and 2" }],
        tools: [addWithClass.definition, lookupWithIdentifier.definition],
        maxTokens: 256
      })
      const tools = fake.requests[0]!.body.tools as ReadonlyArray<{ name: string; input_schema: Record<string, unknown> }>
      for (const tool of tools) {
        assert.strictEqual(tool.input_schema.type, "object", `${tool.name}: ${JSON.stringify(tool.input_schema)}`)
        assert.deepStrictEqual(Object.keys(tool.input_schema.properties as object).length > 0, true, tool.name)
      }
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
