/**
 * The built-in policies are decided inside the agent's own step (no effect
 * of their own): the same outcomes, audit entries, metrics and spans as any
 * other Permissions service, which goes through its `check` effect.
 */
import { assert, describe, it } from "@effect/vitest"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Redacted, Schema } from "effect"
import { Agent, Approval, AuditLog, Model, Permissions, RunContext, Telemetry, Tool } from "jeevesagent"
import { denial } from "../src/internal/denied.js"
import { syncCheckOf } from "../src/internal/permissions.js"

const call = (name: string, destructive = false): Tool.Call => ({ id: "call_1", name, args: {}, destructive })

describe("syncCheckOf", () => {
  it("is there for the built-in policies only, and decides as their check does", () => {
    const standard = Permissions.makeStandard({ deniedTools: ["forbidden"] })
    const decide = syncCheckOf(standard)
    assert.isDefined(decide)
    assert.strictEqual(decide!("alice", call("read"))._tag, "Allow")
    assert.strictEqual(decide!("alice", call("forbidden"))._tag, "Deny")
    assert.strictEqual(decide!("alice", call("drop", true))._tag, "Ask")

    const perUser = Permissions.makePerUser({
      policies: { alice: { mode: "bypassPermissions" } },
      anonymous: { allowedTools: [] },
      default: { deniedTools: ["drop"] }
    })
    const route = syncCheckOf(perUser)
    assert.isDefined(route)
    assert.strictEqual(route!("alice", call("drop", true))._tag, "Allow")
    assert.strictEqual(route!("bob", call("drop", true))._tag, "Deny")
    assert.strictEqual(route!(null, call("read"))._tag, "Deny")
    // "alice" is not a prefix match for "alice2": the default applies.
    assert.strictEqual(route!("alice2", call("drop", true))._tag, "Deny")

    // A custom policy anywhere, a replaced check, or allow-all: the service's own check is used.
    const custom: Permissions.Service = { check: () => Effect.succeed(Permissions.allow) }
    assert.isUndefined(syncCheckOf(Permissions.makePerUser({ policies: { alice: custom }, default: {} })))
    assert.isUndefined(syncCheckOf(Permissions.makePerUser({ policies: {}, default: custom })))
    assert.isUndefined(syncCheckOf({ ...standard, check: () => Effect.succeed(Permissions.allow) }))
    assert.isUndefined(syncCheckOf(Permissions.allowAllService))
  })
})

describe("denial", () => {
  it("is a ToolDenied with the fields given, its message, and the stack trace limit left as it was", () => {
    const limit = Error.stackTraceLimit
    const plain = denial({ tool: "drop", reason: "approval declined", policyReason: "drop: destructive call requires approval" })
    assert.instanceOf(plain, Approval.ToolDenied)
    assert.strictEqual(plain._tag, "ToolDenied")
    assert.strictEqual(plain.message, "approval declined (drop: destructive call requires approval)")
    assert.deepStrictEqual(
      plain,
      new Approval.ToolDenied({ tool: "drop", reason: "approval declined", policyReason: "drop: destructive call requires approval" })
    )
    assert.strictEqual(denial({ tool: "t", reason: "r" }).message, "r")
    assert.strictEqual(Error.stackTraceLimit, limit)
  })
})

// ---- the agent, both ways ---------------------------------------------------------

const tool = (name: string, destructive: boolean) =>
  Tool.make(name, {
    description: name,
    parameters: Schema.Struct({}),
    destructive,
    handler: () => Effect.succeed(`${name} done`)
  })

const tools = [tool("read", false), tool("drop", true), tool("forbidden", false)]

const script: Model.Script = (request) =>
  request.messages.at(-1)!.role === "tool" ?
    { text: "done" } :
    { toolCalls: [{ name: "read", args: {} }, { name: "drop", args: {} }, { name: "forbidden", args: {} }] }

type Answer = "approve" | "decline" | "die"

const approvalOf = (answer: Answer) =>
  Approval.layer(() =>
    answer === "approve" ? Effect.succeed(true) : answer === "decline" ? Effect.succeed(false) : Effect.die("handler broke")
  )

const policy: Permissions.StandardOptions = { deniedTools: ["forbidden"] }

/** The built-in policy as is (decided in the agent's step), or behind a service of its own (its check effect). */
const permissionsOf = (builtIn: boolean) =>
  builtIn ?
    Permissions.standard(policy) :
    Layer.sync(Permissions.Permissions, () => {
      const inner = Permissions.makeStandard(policy)
      return { check: (c: Tool.Call) => inner.check(c) }
    })

/** What a run leaves behind, with the ids that differ from run to run taken out. */
const observe = (builtIn: boolean, answer: Answer, serviceSpans: boolean) => {
  const spans = new InMemorySpanExporter()
  const telemetry = Telemetry.layerOtel({
    serviceName: "permission-step-test",
    spanProcessor: new SimpleSpanProcessor(spans),
    serviceSpans
  })
  const layer = Agent.layer({ tools }).pipe(
    Layer.provideMerge(Layer.mergeAll(
      Agent.layerDefaults,
      Model.layerScripted(script),
      permissionsOf(builtIn),
      approvalOf(answer),
      AuditLog.layerMemory({ secret: Redacted.make("permission-step-secret") }),
      telemetry
    ))
  )
  return Effect.gen(function*() {
    const agent = yield* Agent.Agent
    const result = yield* agent.run("tidy up", { userId: "alice", sessionId: "sess-step" })
    const audit = yield* AuditLog.AuditLog
    const entries = yield* audit.query({ runId: result.runId })
    const byId = new Map<string, ReadableSpan>()
    for (const span of spans.getFinishedSpans()) byId.set(span.spanContext().spanId, span)
    const spanTree = spans.getFinishedSpans()
      .filter((span) => span.name.startsWith("jeeves."))
      .map((span) => {
        const { call_id: _call, run_id: _run, ...attributes } = span.attributes
        const parent = span.parentSpanContext === undefined ? undefined : byId.get(span.parentSpanContext.spanId)
        return JSON.stringify({ name: span.name, parent: parent?.name, attributes, status: span.status.code })
      })
      .sort()
    return {
      toolCalls: result.toolCalls.map(({ callId: _id, ...record }) => record),
      auditFailures: result.auditFailures,
      entries: entries.map((entry) => {
        const { call_id: _call, duration_ms: _duration, elapsed_ms: _elapsed, ...payload } = entry.payload as Record<
          string,
          unknown
        >
        return { actor: entry.actor, action: entry.action, userId: entry.userId, payload }
      }),
      verified: (yield* audit.verify).valid,
      spanTree
    }
  }).pipe(Effect.provide(layer), RunContext.withUser("operator"))
}

describe("a built-in policy decided in the agent's step", () => {
  for (const answer of ["approve", "decline", "die"] as const) {
    for (const serviceSpans of [false, true]) {
      it.effect(`matches the same policy behind a service: approval ${answer}, service spans ${serviceSpans}`, () =>
        Effect.gen(function*() {
          const inStep = yield* observe(true, answer, serviceSpans)
          const asService = yield* observe(false, answer, serviceSpans)
          assert.deepStrictEqual(inStep, asService)

          // And what both hold is what the policy says.
          const statuses = inStep.toolCalls.map((record) => [record.name, record.status])
          assert.deepStrictEqual(statuses, [
            ["read", "ok"],
            ["drop", answer === "approve" ? "ok" : "denied"],
            ["forbidden", "denied"]
          ])
          const decisions = inStep.entries
            .filter((entry) => entry.action === "permission_decision")
            .map((entry) => [entry.payload.tool, entry.payload.decision])
          assert.deepStrictEqual(decisions, [["read", "allow"], ["drop", "ask"], ["forbidden", "deny"]])
          assert.strictEqual(inStep.entries.filter((entry) => entry.action === "approval_decision").length, 1)
          assert.isTrue(inStep.verified)
          assert.strictEqual(inStep.auditFailures, 0)
          // The approval is a child of the drop call's permission check, which is a child of its tool span.
          const approval = inStep.spanTree.map((text) => JSON.parse(text)).find((span) => span.name === "jeeves.approval")
          assert.strictEqual(approval.parent, "jeeves.permission.check")
          for (const text of inStep.spanTree) {
            const span = JSON.parse(text)
            if (span.name === "jeeves.permission.check") assert.strictEqual(span.parent, "jeeves.tool")
          }
        }))
    }
  }
})
