/**
 * A Hooks or ApprovalHandler service the user wrote themselves denies by
 * failing with a plain `{ _tag: "ToolDenied", tool, reason }` object (the
 * shape a JavaScript caller, or a second copy of the library, produces). The
 * agent accepts that shape: the call is denied with the service's reason,
 * its body never runs, and the run goes on with `DENIED: <reason>`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Agent, Approval, Hooks, Model, Permissions } from "jeevesagent"
import { callThenSummarize, deleteFile } from "./support/toolAgent.js"

const makeTools = (bodies: Array<string>) => [deleteFile(bodies)]

const script = Model.layerScripted(callThenSummarize([{ name: "delete_file", args: { path: "/etc/passwd" } }]))

const plainDenial = (reason: string) =>
  ({ _tag: "ToolDenied", tool: "delete_file", reason }) as unknown as Approval.ToolDenied

const deniedWith = (
  reason: string,
  governance: ReadonlyArray<Layer.Layer<Hooks.Hooks> | Layer.Layer<Approval.ApprovalHandler> | Layer.Layer<Permissions.Permissions>>
) => {
  const bodies: Array<string> = []
  return Effect.gen(function*() {
    const exit = yield* Effect.flatMap(Agent.Agent, (agent) => Effect.exit(agent.run("clean up", { userId: "alice" })))
    assert.deepStrictEqual(bodies, [], "the denied tool must not run")
    assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
    if (Exit.isSuccess(exit)) {
      const call = exit.value.toolCalls[0]!
      assert.strictEqual(call.status, "denied")
      assert.strictEqual(call.reason, reason)
      assert.strictEqual(call.output, `DENIED: ${reason}`)
    }
  }).pipe(Effect.provide(
    Agent.layer({ tools: makeTools(bodies) }).pipe(
      Layer.provide(script),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, ...governance))
    )
  ))
}

describe("a custom service denying with a plain ToolDenied-shaped object", () => {
  it.effect("a Hooks service's plain denial is a denial the run goes on with", () =>
    deniedWith("blocked by the hook service", [
      Permissions.standard({ mode: "default" }),
      Layer.succeed(Hooks.Hooks, {
        isEmpty: false,
        beforeTool: () => Effect.fail(plainDenial("blocked by the hook service")),
        afterTool: () => Effect.void
      })
    ]))

  it.effect("an ApprovalHandler service's plain denial is a denial the run goes on with", () =>
    deniedWith("rejected by the approval queue", [
      Permissions.standard({ mode: "default" }),
      Layer.succeed(Approval.ApprovalHandler, { request: () => Effect.fail(plainDenial("rejected by the approval queue")) })
    ]))
})
