/**
 * A custom `ApprovalHandler` or `Hooks` service whose effect succeeds with
 * an answer that says no. In TypeScript an `Effect<boolean>` is assignable to
 * the service's `Effect<void, ToolDenied>`, so this compiles without a cast:
 *
 *   Layer.succeed(Approval.ApprovalHandler, { request: (call) => askSlack(call.name) })
 *
 * where `askSlack` answers `Effect<boolean>` — the shape of the
 * `Approval.Handler` the docs show; likewise a `Hooks` service whose
 * `beforeTool` answers `Effect.succeed({ deny })`. Only an explicit approval
 * lets a call run: `false` is the human declining, `{ deny }` the hook's
 * denial, and the destructive call never runs.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Agent, Approval, Hooks, Model, Permissions } from "jeevesagent"
import { callThenSummarize, deleteFile } from "./support/toolAgent.js"

const makeTools = (bodies: Array<string>) => [deleteFile(bodies)]

const script = Model.layerScripted(callThenSummarize([{ name: "delete_file", args: { path: "/var/lib/db" } }]))

const runWith = (
  bodies: Array<string>,
  governance: ReadonlyArray<Layer.Layer<Hooks.Hooks> | Layer.Layer<Approval.ApprovalHandler> | Layer.Layer<Permissions.Permissions>>
) =>
  Effect.flatMap(Agent.Agent, (agent) => agent.run("clean up", { userId: "alice" })).pipe(
    Effect.provide(
      Agent.layer({ tools: makeTools(bodies) }).pipe(
        Layer.provide(script),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, ...governance))
      )
    )
  )

describe("a custom governance service that succeeds with a refusal", () => {
  it.effect("an ApprovalHandler whose request succeeds with `false` (the human said no) does not approve", () => {
    const bodies: Array<string> = []
    const asked: Array<string> = []
    // The human declines.
    const askSlack = (name: string): Effect.Effect<boolean> => Effect.sync(() => asked.push(name)).pipe(Effect.as(false))
    const gate = Layer.succeed(Approval.ApprovalHandler, { request: (call) => askSlack(call.name) })
    return Effect.gen(function*() {
      const result = yield* runWith(bodies, [Permissions.standard({ mode: "default" }), gate])
      assert.deepStrictEqual(asked, ["delete_file"])
      assert.deepStrictEqual(bodies, [], "the destructive call ran although the approver answered false")
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.match(result.toolCalls[0]!.reason ?? "", /^approval declined/)
    })
  })

  it.effect("a Hooks service whose beforeTool succeeds with `{ deny }` does not let the call run", () => {
    const bodies: Array<string> = []
    const hooks = Layer.succeed(Hooks.Hooks, {
      isEmpty: false,
      beforeTool: () => Effect.succeed({ deny: "no deletions during the freeze" }),
      afterTool: () => Effect.void
    })
    return Effect.gen(function*() {
      const result = yield* runWith(bodies, [Permissions.standard({ mode: "acceptEdits" }), hooks])
      assert.deepStrictEqual(bodies, [], "the call ran although the hook service answered { deny }")
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.strictEqual(result.toolCalls[0]!.reason, "no deletions during the freeze")
    })
  })
})
