/**
 * Governance services the user wrote themselves (Permissions, ApprovalHandler,
 * Hooks) that throw, die, answer nothing, fail with something else or
 * interrupt themselves: each is a typed denial the run goes on with — fail
 * closed, never a crashed run.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Redacted, Schema } from "effect"
import { Agent, Approval, AuditLog, Hooks, Model, Permissions, Tool } from "jeevesagent"

const tools = (bodies: Array<string>) => [
  Tool.make("delete_file", {
    description: "Deletes a file",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: true,
    handler: ({ path }) => Effect.sync(() => bodies.push(path)).pipe(Effect.as(`deleted ${path}`))
  }),
  Tool.make("read_file", {
    description: "Reads a file",
    parameters: Schema.Struct({ path: Schema.String }),
    handler: ({ path }) => Effect.sync(() => bodies.push(`read ${path}`)).pipe(Effect.as(`contents of ${path}`))
  })
]

const callsThenSummary = (calls: ReadonlyArray<{ readonly name: string; readonly args: unknown }>) =>
  Model.layerScripted((request) => {
    const results = request.messages.filter((m) => m.role === "tool")
    return results.length === 0 ? { toolCalls: calls } : { text: results.map((m) => m.content).join(" | ") }
  })

type Governance =
  | Layer.Layer<Approval.ApprovalHandler>
  | Layer.Layer<Hooks.Hooks>
  | Layer.Layer<Permissions.Permissions>
  | Layer.Layer<AuditLog.AuditLog, AuditLog.AuditUnavailable>

const agent = (
  bodies: Array<string>,
  governance: ReadonlyArray<Governance>,
  calls: ReadonlyArray<{ readonly name: string; readonly args: unknown }> = [{ name: "delete_file", args: { path: "/tmp/a" } }]
) =>
  Agent.layer({ tools: tools(bodies) }).pipe(
    Layer.provide(callsThenSummary(calls)),
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, ...governance))
  )

const auditLayer = AuditLog.layerMemory({ secret: Redacted.make("custom-services-secret-0123456789") })

const runExit = (userId: string | null = "alice") =>
  Effect.flatMap(Agent.Agent, (a) => Effect.exit(a.run("please delete /tmp/a", { userId })))

/** Runs the agent: it completes, its call is denied with `reason`, and no tool body ran. */
const deniedAs = (bodies: ReadonlyArray<string>, reason: string | RegExp) =>
  Effect.gen(function*() {
    const exit = yield* runExit()
    assert.deepStrictEqual(bodies, [])
    assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
    const call = Exit.isSuccess(exit) ? exit.value.toolCalls[0] : undefined
    assert.strictEqual(call?.status, "denied")
    if (typeof reason === "string") assert.strictEqual(call?.reason, reason)
    else assert.match(call?.reason ?? "", reason)
    return Exit.isSuccess(exit) ? exit.value : undefined
  })

describe("custom governance services fail closed as a typed denial", () => {
  it.effect("a Permissions service whose check throws is a `permission check failed` denial, not a crashed run", () => {
    const bodies: Array<string> = []
    const throwing = Layer.succeed(Permissions.Permissions, {
      check: () => {
        throw new Error("policy store unreachable")
      }
    })
    return Effect.gen(function*() {
      yield* deniedAs(bodies, "permission check failed")
    }).pipe(Effect.provide(agent(bodies, [throwing])))
  })

  it.effect("a Permissions service that answers no decision (undefined) is a `permission check failed` denial", () => {
    const bodies: Array<string> = []
    const noDecision = Layer.succeed(Permissions.Permissions, {
      check: () => Effect.succeed(undefined as unknown as Permissions.Decision)
    })
    return Effect.gen(function*() {
      yield* deniedAs(bodies, "permission check failed")
    }).pipe(Effect.provide(agent(bodies, [noDecision])))
  })

  it.effect("an ApprovalHandler service whose request throws is an `approval handler failed` denial", () => {
    const bodies: Array<string> = []
    const throwing = Layer.succeed(Approval.ApprovalHandler, {
      request: () => {
        throw new Error("approver down")
      }
    })
    return Effect.gen(function*() {
      yield* deniedAs(bodies, /^approval handler failed/)
    }).pipe(Effect.provide(agent(bodies, [Permissions.standard({ mode: "default" }), throwing])))
  })

  it.effect("a Hooks service whose beforeTool throws is a `hook failed` denial", () => {
    const bodies: Array<string> = []
    const throwing = Layer.succeed(Hooks.Hooks, {
      isEmpty: false,
      beforeTool: () => {
        throw new Error("hook host down")
      },
      afterTool: () => Effect.void
    })
    return Effect.gen(function*() {
      yield* deniedAs(bodies, "hook failed")
    }).pipe(Effect.provide(agent(bodies, [Permissions.standard({ mode: "default" }), throwing])))
  })

  it.effect("an ApprovalHandler service that interrupts itself is one `failed` outcome, not a cancelled run", () => {
    const bodies: Array<string> = []
    const interrupting = Layer.succeed(Approval.ApprovalHandler, { request: () => Effect.interrupt })
    return Effect.gen(function*() {
      yield* deniedAs(bodies, /^approval handler failed/)
      const decisions = (yield* Effect.flatMap(AuditLog.AuditLog, (log) => log.query({ action: "approval_decision" })))
      assert.deepStrictEqual(decisions.map((e) => (e.payload as { outcome: string }).outcome), ["failed"])
    }).pipe(Effect.provide(Layer.provideMerge(agent(bodies, [Permissions.standard({ mode: "default" }), interrupting, auditLayer]), auditLayer)))
  })

  it.effect("an ApprovalHandler service that fails with something other than a denial is `approval handler failed`; its message stays out of the run", () => {
    const bodies: Array<string> = []
    const failing = Layer.succeed(Approval.ApprovalHandler, {
      request: () => Effect.fail(new Error("queue at 10.0.0.7 refused: token tok_live_abc") as unknown as Approval.ToolDenied)
    })
    return Effect.gen(function*() {
      const result = yield* deniedAs(bodies, /^approval handler failed/)
      assert.notInclude(result?.output ?? "", "tok_live_abc")
    }).pipe(Effect.provide(agent(bodies, [Permissions.standard({ mode: "default" }), failing])))
  })
})

describe("afterTool of a custom Hooks service", () => {
  it.effect("an afterTool that throws is logged, never fatal: the run goes on and the executed call is audited", () => {
    const bodies: Array<string> = []
    const throwing = Layer.succeed(Hooks.Hooks, {
      isEmpty: false,
      beforeTool: () => Effect.void,
      afterTool: () => {
        throw new Error("metrics sink down")
      }
    })
    return Effect.gen(function*() {
      const exit = yield* runExit()
      // The destructive tool already ran...
      assert.deepStrictEqual(bodies, ["/tmp/a"])
      // ...so its result must be on record, and the run must not fail because of a logging hook.
      const results = yield* Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query({ action: "tool_result" }))
      assert.strictEqual(results.length, 1)
      assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
      if (Exit.isSuccess(exit)) assert.strictEqual(exit.value.toolCalls[0]?.status, "ok")
    }).pipe(Effect.provide(
      Agent.layer({ tools: tools(bodies) }).pipe(
        Layer.provide(callsThenSummary([{ name: "delete_file", args: { path: "/tmp/a" } }])),
        Layer.provideMerge(Layer.mergeAll(
          Agent.layerDefaults,
          Permissions.standard({ mode: "acceptEdits" }),
          throwing,
          AuditLog.layerMemory({ secret: Redacted.make("review-secret-0123456789abcdef") })
        ))
      )
    ))
  })
})
