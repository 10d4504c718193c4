/**
 * Entries nothing waits on are submitted without the run waiting for each;
 * entries a destructive call depends on are awaited; a run returns (or
 * fails) only once every entry it wrote is durable.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Option, Ref, Schema } from "effect"
import { Agent, Approval, AuditLog, Model, Permissions, Tool } from "jeevesagent"
import { makeBatchWriter, makeService, type Store } from "../src/internal/audit.js"
import type { Draft } from "../src/internal/auditChain.js"

const entryOf = (draft: Draft, seq: number): AuditLog.AuditEntry => ({
  ...draft,
  seq,
  timestamp: new Date(0).toISOString(),
  logId: "log_test",
  keyId: "k",
  prevHash: "",
  signature: ""
})

/**
 * A store that keeps every entry in `log` at once but reports submitted
 * ones only when `release` is called (awaited appends complete at once),
 * and fails the submitted entries whose action is in `failing`.
 */
const heldStore = (failing: ReadonlySet<string> = new Set()) => {
  const log: Array<string> = []
  const held: Array<() => void> = []
  const store: Store = {
    append: (draft) => Effect.sync(() => entryOf(draft, log.push(draft.action))),
    submit: (draft, _now, done) => {
      log.push(draft.action)
      held.push(() =>
        done(
          failing.has(draft.action) ?
            Exit.fail(new AuditLog.AuditUnavailable({ description: `${draft.action} lost` })) :
            Exit.void
        )
      )
    },
    query: () => Effect.succeed([]),
    verify: Effect.succeed({ valid: true, validCount: 0 })
  }
  const release = () => {
    for (const report of held.splice(0)) report()
  }
  return { log, store, release, held: () => held.length }
}

const echo = (ran: Deferred.Deferred<void>) =>
  Tool.make("echo", {
    description: "Echoes its text",
    parameters: Schema.Struct({ text: Schema.String }),
    handler: ({ text }) => Effect.as(Deferred.succeed(ran, undefined), text)
  })

const remove = (ran: Ref.Ref<boolean>) =>
  Tool.make("remove", {
    description: "Removes a thing",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: true,
    handler: ({ path }) => Effect.as(Ref.set(ran, true), `removed ${path}`)
  })

const script = (calls: ReadonlyArray<{ name: string; args: unknown }>): Model.Script => (request) =>
  request.messages.at(-1)!.role === "tool" ? { text: "done" } : { toolCalls: calls }

const agentOver = (service: AuditLog.Service, tools: ReadonlyArray<Tool.Any>, calls: ReadonlyArray<{ name: string; args: unknown }>) =>
  Agent.layer({ tools }).pipe(
    Layer.provide(Model.layerScripted(script(calls))),
    Layer.provide(Layer.mergeAll(
      Agent.layerDefaults,
      Layer.succeed(AuditLog.AuditLog, service),
      Permissions.standard({ mode: "default" }),
      Approval.layer(() => Effect.succeed(true))
    ))
  )

const run = (prompt: string) => Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt, { userId: "alice" }))

describe("pipelined audit entries", () => {
  it.effect("a run returns only once every entry it submitted is durable", () =>
    Effect.gen(function*() {
      const { log, store, release, held } = heldStore()
      const ran = yield* Deferred.make<void>()
      const layer = agentOver(makeService(store, (s) => s), [echo(ran)], [{ name: "echo", args: { text: "hi" } }])
      const fiber = yield* Effect.fork(Effect.provide(run("go"), layer))
      yield* Deferred.await(ran)
      // Every entry is in the log, in order, run_completed included, all five submitted and held; the run still waits.
      while (!log.includes("run_completed")) yield* Effect.yieldNow()
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.deepStrictEqual(log, ["run_started", "tool_call", "permission_decision", "tool_result", "run_completed"])
      assert.strictEqual(held(), 5)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the run has not returned before its entries are durable")
      release()
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.auditFailures, 0)
    }))

  it.effect("a submitted entry that fails is counted in the run's auditFailures", () =>
    Effect.gen(function*() {
      const { store, release } = heldStore(new Set(["tool_result"]))
      const ran = yield* Deferred.make<void>()
      const layer = agentOver(makeService(store, (s) => s), [echo(ran)], [{ name: "echo", args: { text: "hi" } }])
      const fiber = yield* Effect.fork(Effect.provide(run("go"), layer))
      yield* Deferred.await(ran)
      for (let i = 0; i < 50; i++) yield* Effect.yieldNow()
      release()
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.auditFailures, 1)
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
    }))

  it.scoped("a destructive call runs only once its tool_call, decision and approval entries are durable", () =>
    Effect.gen(function*() {
      const gate = yield* Effect.makeLatch(false)
      const log: Array<string> = []
      // The batch writer of the file and Postgres logs, its commits held until the gate opens.
      const writer = yield* makeBatchWriter({
        maxBatch: 64,
        poisonOnFailure: true,
        name: "gated",
        commit: (drafts) =>
          Effect.zipRight(
            gate.await,
            Effect.sync(() => {
              const entries = drafts.map((d) => entryOf(d, log.push(d.action)))
              return (index: number) => entries[index]!
            })
          )
      })
      const store: Store = {
        ...writer,
        query: () => Effect.succeed([]),
        verify: Effect.succeed({ valid: true, validCount: 0 })
      }
      const removed = yield* Ref.make(false)
      const ran = yield* Deferred.make<void>()
      const layer = agentOver(makeService(store, (s) => s), [echo(ran), remove(removed)], [
        { name: "echo", args: { text: "hi" } },
        { name: "remove", args: { path: "/srv" } }
      ])
      const fiber = yield* Effect.fork(Effect.provide(run("go"), layer))
      // The safe call runs without waiting for its entries; the destructive one waits.
      yield* Deferred.await(ran)
      for (let i = 0; i < 50; i++) yield* Effect.yieldNow()
      assert.isFalse(yield* Ref.get(removed), "the destructive handler waits for its entry")
      assert.deepStrictEqual(log, [], "nothing is durable yet")
      yield* gate.open
      const result = yield* Fiber.join(fiber)
      assert.isTrue(yield* Ref.get(removed))
      assert.deepStrictEqual(result.toolCalls.map((call) => call.status), ["ok", "ok"])
      const removeAt = log.indexOf("tool_result")
      assert.isAbove(log.length, 0)
      assert.isAtLeast(removeAt, 0)
      assert.strictEqual(log.at(-1), "run_completed")
    }))

  it.scoped("a run interrupted while its destructive call waits for its entries: the call never runs, and the entries settling later wake nothing", () =>
    Effect.gen(function*() {
      const { log, store, release, held } = heldStore()
      const removed = yield* Ref.make(false)
      const ran = yield* Deferred.make<void>()
      const layer = agentOver(makeService(store, (s) => s), [echo(ran), remove(removed)], [
        { name: "remove", args: { path: "/srv" } }
      ])
      const agentContext = yield* Layer.build(layer)
      const fiber = yield* Effect.fork(Effect.provide(run("go"), agentContext))
      while (!log.includes("approval_decision")) yield* Effect.yieldNow()
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.isNull(yield* Fiber.poll(fiber).pipe(Effect.map(Option.getOrNull)), "the run waits for its entries")
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      assert.isAbove(held(), 0)
      release()
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.isFalse(yield* Ref.get(removed), "the destructive call never ran")
      // The same agent serves the next run.
      const next = yield* Effect.fork(Effect.provide(run("again"), agentContext))
      while (Option.isNone(yield* Fiber.poll(next))) {
        release()
        yield* Effect.yieldNow()
      }
      const result = yield* Fiber.join(next)
      assert.isTrue(yield* Ref.get(removed))
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
    }))

  it.effect("a destructive call whose approval entry fails once submitted is denied and does not run", () =>
    Effect.gen(function*() {
      const { store, release } = heldStore(new Set(["approval_decision"]))
      const removed = yield* Ref.make(false)
      const ran = yield* Deferred.make<void>()
      const layer = agentOver(makeService(store, (s) => s), [echo(ran), remove(removed)], [
        { name: "remove", args: { path: "/srv" } }
      ])
      const fiber = yield* Effect.fork(Effect.provide(run("go"), layer))
      // The log reports what it holds, as a writer does batch after batch, until the run ends.
      while (Option.isNone(yield* Fiber.poll(fiber))) {
        yield* Effect.yieldNow()
        release()
      }
      const result = yield* Fiber.join(fiber)
      assert.isFalse(yield* Ref.get(removed), "the destructive handler never ran")
      assert.deepStrictEqual([result.toolCalls[0]!.status, result.toolCalls[0]!.reason], ["denied", "audit unavailable"])
      assert.strictEqual(result.auditFailures, 1)
    }))
})
