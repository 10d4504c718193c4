/**
 * Governed tool calls decoded before they are checked (transforms that
 * throw, one-way transforms, schemas with effects), concurrent next() calls
 * on the facade's stream iterator, and the background run_completed of a
 * run cancelled by dispose().
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema } from "effect"
import { Agent, Approval, AuditLog, Model, Permissions, Tool } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { expect, it as vitestIt } from "vitest"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"


const within = <A>(promise: Promise<A>, ms: number): Promise<A | "timed out"> =>
  Promise.race([promise, new Promise<"timed out">((resolve) => setTimeout(() => resolve("timed out"), ms))])

describe("governed tool calls decoded before they are checked", () => {
  // A decode that throws (a bug in the user's transform) used to be the call's error result (it ran
  // inside `execute`'s Effect.suspend); decoded in `runTool` before the checks, it now escapes as a defect.
  const parse = Schema.transform(Schema.String, Schema.String, {
    decode: (s) => {
      if (s === "bad") throw new Error("cannot parse bad")
      return s
    },
    encode: (s) => s
  })

  it.effect("a transform that throws on decode: the call's error result, not the whole run dying (with a policy)", () => {
    let ran = 0
    const lookup = Tool.make("lookup", {
      description: "lookup",
      parameters: Schema.Struct({ key: parse }),
      handler: ({ key }) => Effect.sync(() => `found ${key} ${++ran}`)
    })
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(run)
      assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
      const result = (exit as Exit.Success<Agent.RunResult, never>).value
      assert.strictEqual(result.toolCalls[0]!.status, "error")
      assert.match(result.toolCalls[0]!.output, /cannot parse bad/)
      assert.strictEqual(ran, 0)
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "lookup", args: { key: "bad" } }]),
      [lookup],
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })

  it.effect("a one-way transform (an encode that throws) no longer breaks a valid call once a policy is on", () => {
    // Decode-only transforms are common (`encode` is never used by a tool); the canonical re-encoding calls it.
    const trimmed = Schema.transform(Schema.String, Schema.String, {
      decode: (s) => s.trim(),
      encode: () => {
        throw new Error("one-way: not encodable")
      }
    })
    const greet = Tool.make("greet", {
      description: "greet",
      parameters: Schema.Struct({ name: trimmed }),
      handler: ({ name }) => Effect.succeed(`hello ${name}`)
    })
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(run)
      assert.isTrue(Exit.isSuccess(exit), `the run failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
      const result = (exit as Exit.Success<Agent.RunResult, never>).value
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
      assert.strictEqual(result.toolCalls[0]!.output, "hello bob")
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "greet", args: { name: "  bob " } }]),
      [greet],
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })
})

describe("what the approver sees is what runs: schemas that decode with effects", () => {
  it.live("a destructive tool whose schema has an async check and a default: the approver sees the default it approves", () => {
    const seen: Array<unknown> = []
    const wiped: Array<string> = []
    // An async check (say, the reason is looked up in a ticket system): the sync decoder cannot decide.
    const ticketed = Schema.String.pipe(Schema.filterEffect(() => Effect.as(Effect.sleep("1 millis"), true)))
    const wipe = Tool.make("wipe", {
      description: "wipe a directory",
      parameters: Schema.Struct({ path: Schema.optionalWith(Schema.String, { default: () => "/" }), ticket: ticketed }),
      destructive: true,
      handler: ({ path }) => Effect.sync(() => wiped.push(path)).pipe(Effect.as(`wiped ${path}`))
    })
    const gate = Approval.layer((call) => Effect.sync(() => seen.push(call.args)).pipe(Effect.as(true)))
    return Effect.gen(function*() {
      yield* run
      assert.deepStrictEqual(wiped, ["/"])
      // The human approved `{ ticket }` and "/" was wiped: the default was applied after the approval.
      assert.deepStrictEqual(seen, [{ path: "/", ticket: "T-1" }])
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "wipe", args: { ticket: "T-1" } }]),
      [wipe],
      gate as Layer.Layer<never>,
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })
})

describe("the promise facade's stream iterator", () => {
  vitestIt("two next() calls at once past the last event both settle (an async generator queues them; none hangs)", async () => {
    const agent = createAgent({ model: Model.layerScripted([{ text: "hello" }]) })
    const iterator = agent.stream("x")[Symbol.asyncIterator]()
    while (true) {
      const step = await iterator.next()
      if (step.done || step.value._tag === "completed") break
    }
    // The stream has ended; a consumer reading ahead (Promise.all of two next() calls) waits forever.
    const both = within(Promise.all([iterator.next(), iterator.next()]), 1000)
    expect(await both).toEqual([{ done: true, value: undefined }, { done: true, value: undefined }])
    await agent.dispose()
  })
})

describe("a cancelled run with an audit log of the user's own", () => {
  vitestIt("dispose() during a run: its run_completed (cancelled) is in the file once dispose() resolves", async () => {
    const { mkdtempSync, readFileSync } = await import("node:fs")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const NodeFileSystem = await import("@effect/platform-node/NodeFileSystem")
    const path = join(mkdtempSync(join(tmpdir(), "jeeves-lifecycle-")), "audit.jsonl")
    const file = AuditLog.layerFile({ path, secret: "lifecycle-audit-secret-0123456789", durability: "none" }).pipe(
      Layer.provide(NodeFileSystem.layer)
    )
    // A user's decorator around the built-in file log (metrics, logging, ...): an ordinary AuditLog service.
    const wrapped = Layer.effect(
      AuditLog.AuditLog,
      Effect.map(AuditLog.AuditLog, (inner): AuditLog.Service => ({
        ...inner,
        // a log of the user's own that takes a moment per append (a remote store, say)
        append: (input) => Effect.zipRight(Effect.sleep("20 millis"), inner.append(input))
      }))
    ).pipe(Layer.provide(file))
    let toolStarted!: () => void
    const started = new Promise<void>((resolve) => (toolStarted = resolve))
    const hang = Tool.make("hang", {
      description: "hangs",
      parameters: Schema.Struct({}),
      handler: () => Effect.zipRight(Effect.sync(() => toolStarted()), Effect.never)
    })
    const agent = createAgent({
      model: Model.layerScripted([{ toolCalls: [{ name: "hang", args: {} }] }]),
      tools: [hang],
      auditLog: wrapped
    })
    const running = agent.run("x", { userId: "alice", sessionId: "s1" }).catch((e: unknown) => e)
    await started
    await agent.dispose()
    await running
    const actions = readFileSync(path, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { action: string })
    expect(actions.map((e) => e.action)).toContain("run_started")
    expect(actions.at(-1)?.action).toBe("run_completed")
  })
})
