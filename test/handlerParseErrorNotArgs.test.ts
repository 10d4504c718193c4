/**
 * A tool handler that fails with a `ParseError` of its own (it decoded an
 * HTTP response, a row, a file with `Schema`) is a failing handler, not a
 * call whose arguments did not decode.
 *
 * Documented (Tool.ts, README "Tools"): arguments that do not decode become
 * `ERROR: invalid arguments: ...`; a handler that fails becomes
 * `ERROR: <message>`. Telling the model its arguments were invalid when they
 * were not makes it "correct" arguments that were right, again and again.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Permissions, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

// The tool's arguments are fine; the upstream answer it decodes is not.
const Upstream = Schema.Struct({ temperature: Schema.Number })
const weather = Tool.make("weather", {
  description: "Current temperature of a city",
  parameters: Schema.Struct({ city: Schema.String }),
  handler: ({ city }) =>
    Effect.map(Schema.decodeUnknown(Upstream)({ temperature: `n/a for ${city}` }), (w) => `${w.temperature}°C`)
})

const script = callThenSummarize([{ name: "weather", args: { city: "Paris" } }])

describe("a handler failing with its own ParseError", () => {
  it.effect("is an ERROR result of the handler, not 'invalid arguments'", () =>
    Effect.gen(function*() {
      const result = yield* run
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      // The handler's failure is reported (it says what went wrong upstream) ...
      assert.include(call.output, "Expected number")
      // ... but not as the model's arguments being invalid: they decoded and the handler ran.
      assert.notMatch(call.output, /invalid arguments/)
    }).pipe(Effect.provide(agentWith(script, [weather]))))

  it.effect("the same with a permission policy on (arguments decoded before the check)", () =>
    Effect.gen(function*() {
      const result = yield* run
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      assert.notMatch(call.output, /invalid arguments/)
    }).pipe(
      Effect.provide(agentWith(script, [weather], Permissions.standard({ mode: "default", deniedTools: ["other"] })))
    ))
})
