/**
 * A custom Hooks service built the way the codebase builds custom services
 * (spreading the library's no-op service and replacing a method, as tests do
 * with `{ ...Budget.none, reserve }`) must not be skipped: the agent decides
 * whether hooks are on from the `isEmpty` flag the spread copied from
 * `Hooks.none`, so the user's `beforeTool` never runs and the call it denies
 * goes through (fail open).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Approval, Hooks, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

describe("a Hooks service made by spreading Hooks.none", () => {
  it.effect("its beforeTool still runs and its deny holds: the denied tool never executes", () => {
    const sent: Array<string> = []
    const sendEmail = Tool.make("send_email", {
      description: "Sends an email",
      parameters: Schema.Struct({ to: Schema.String }),
      handler: ({ to }) => Effect.sync(() => sent.push(to)).pipe(Effect.as(`sent to ${to}`))
    })
    let asked = 0
    const hooks: Hooks.Service = {
      ...Hooks.none,
      beforeTool: (call) =>
        Effect.suspend(() => {
          asked++
          return Effect.fail(new Approval.ToolDenied({ tool: call.name, reason: "email is off today" }))
        })
    }
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(asked, 1, "the user's beforeTool hook was never asked")
      assert.deepStrictEqual(sent, [], "the tool the hook denies ran")
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.strictEqual(result.toolCalls[0]!.output, "DENIED: email is off today")
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "send_email", args: { to: "ceo@example.com" } }]),
      [sendEmail],
      Layer.succeed(Hooks.Hooks, hooks) as Layer.Layer<never>
    )))
  })
})
