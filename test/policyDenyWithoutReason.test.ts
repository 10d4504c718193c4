/**
 * A Permissions service the user wrote (a JavaScript policy, or one that looks
 * its reason up in a table) answers `Deny` without a string reason:
 * `{ _tag: "Deny" }`, `Decision.Deny({ reason: undefined })`, or a number. A
 * custom governance service fails closed "as a typed denial, never a crashed
 * run" (customServices.test.ts): the call is denied, the run completes, and
 * the recorded reason is the string "denied by policy".
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Agent, Model, Permissions } from "jeevesagent"
import { callThenSummarize, sendEmail } from "./support/toolAgent.js"

const makeTools = (bodies: Array<string>) => [sendEmail(bodies)]

const script = Model.layerScripted(callThenSummarize([{ name: "send_email", args: { to: "everyone@example.com" } }]))

const policyAnswering = (answer: unknown) =>
  Layer.succeed(Permissions.Permissions, { check: () => Effect.succeed(answer as Permissions.Decision) })

const deniedAsTypedValue = (answer: unknown) => {
  const bodies: Array<string> = []
  return Effect.gen(function*() {
    const exit = yield* Effect.flatMap(Agent.Agent, (agent) => Effect.exit(agent.run("mail everyone", { userId: "alice" })))
    assert.deepStrictEqual(bodies, [], "the denied tool must not run")
    // A denial is a value the run continues with, not a crashed run.
    assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
    if (Exit.isSuccess(exit)) {
      const call = exit.value.toolCalls[0]!
      assert.strictEqual(call.status, "denied")
      assert.strictEqual(call.reason, "denied by policy")
      assert.strictEqual(call.output, "DENIED: denied by policy")
    }
  }).pipe(Effect.provide(
    Agent.layer({ tools: makeTools(bodies) }).pipe(
      Layer.provide(script),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, policyAnswering(answer)))
    )
  ))
}

describe("a custom policy's Deny without a string reason", () => {
  it.effect("`{ _tag: \"Deny\" }` (no reason) is a denial the run goes on with", () => deniedAsTypedValue({ _tag: "Deny" }))

  it.effect("`Decision.Deny({ reason: undefined })` is a denial the run goes on with", () =>
    deniedAsTypedValue(Permissions.Decision.Deny({ reason: undefined as unknown as string })))

  it.effect("a number reason is recorded as a string, not passed through as a number", () =>
    deniedAsTypedValue({ _tag: "Deny", reason: 42 }))
})
