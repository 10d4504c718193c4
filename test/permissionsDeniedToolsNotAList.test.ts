/**
 * `Permissions.standard` validates `mode` at run time (a bad mode throws a
 * TypeError: configuration from JavaScript or a JSON/YAML file is not type
 * checked), but takes `deniedTools` as whatever iterable it is given. A
 * single tool name given as a string (`deniedTools: "send_email"`, a common
 * shape in config files) becomes a Set of its characters, so the one tool
 * the operator meant to deny is allowed: the deny-list fails open. (The same
 * mistake on `allowedTools` happens to fail closed.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Permissions, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

describe("Permissions.standard with a deny-list that is not a list", () => {
  it.effect("`deniedTools: \"send_email\"` is rejected when built, or denies send_email — never lets it run", () => {
    const sent: Array<string> = []
    const sendEmail = Tool.make("send_email", {
      description: "Sends an email",
      parameters: Schema.Struct({ to: Schema.String }),
      handler: ({ to }) => Effect.sync(() => sent.push(to)).pipe(Effect.as(`sent to ${to}`))
    })
    // What a config file yields when the operator lists a single tool.
    const config = JSON.parse(`{ "mode": "default", "deniedTools": "send_email" }`) as Permissions.StandardOptions
    let policy: Layer.Layer<Permissions.Permissions>
    try {
      policy = Permissions.standard(config)
    } catch (error) {
      // Rejecting the configuration, like an unknown mode, is a fix.
      assert.instanceOf(error, TypeError)
      return Effect.void
    }
    return Effect.gen(function*() {
      const result = yield* run
      assert.deepStrictEqual(sent, [], "the only tool on the deny-list ran")
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "send_email", args: { to: "everyone@example.com" } }]),
      [sendEmail],
      policy as Layer.Layer<never>
    )))
  })
})
