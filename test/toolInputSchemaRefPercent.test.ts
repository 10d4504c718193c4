import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Tool } from "jeevesagent"

// Tool.make inlines a top-level `$ref` into `$defs`. Effect's JSONSchema does not percent-encode
// identifiers in `$ref` (it only escapes `~` and `/` as JSON pointer does): `identifier: "Discount 10%"`
// gives `"$ref": "#/$defs/Discount 10%"`, which must neither make Tool.make throw (a URIError from
// decoding it) nor be left un-inlined.
const parameters = (identifier: string) =>
  Schema.Struct({ code: Schema.String }).annotations({ identifier })

describe("Tool.make: inlining a top-level $ref", () => {
  it("makes a tool whose parameters' identifier holds a '%'", () => {
    let tool: Tool.Any | undefined
    // Before the fix: URIError: URI malformed
    assert.doesNotThrow(() => {
      tool = Tool.make("discount", {
        description: "applies a discount",
        parameters: parameters("Discount 10%"),
        handler: ({ code }) => Effect.succeed(code)
      })
    })
    assert.strictEqual(tool?.definition.inputSchema.type, "object")
  })

  it("inlines the definition whose identifier holds a literal '%2F'", () => {
    // decodeURIComponent turns "%2F" into "/": the lookup misses, and the top level stays a bare $ref.
    const tool = Tool.make("lookup", {
      description: "looks up",
      parameters: parameters("Rate%2FLimit"),
      handler: ({ code }) => Effect.succeed(code)
    })
    assert.strictEqual(tool.definition.inputSchema.type, "object")
  })
})
