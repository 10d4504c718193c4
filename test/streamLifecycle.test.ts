/**
 * Streams that end badly: services that cannot be built, a consumer that
 * gives up while waiting, a consumer that cancels with a log of its own.
 * Each settles, stops the run and leaves its trail complete.
 */
import { assert, it as effectIt } from "@effect/vitest"
import { Deferred, Effect, Layer, Schema, Stream } from "effect"
import { Agent, AuditLog, Model, Tool } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

const SECRET = "stream-lifecycle-audit-secret-0123456789"

const within = <A>(promise: Promise<A>, ms: number): Promise<A | "timed out"> =>
  Promise.race([promise, new Promise<"timed out">((resolve) => setTimeout(() => resolve("timed out"), ms))])

describe("the promise facade's stream()", () => {
  it("stream() on an agent whose services fail to build rejects (as run() does) instead of hanging", async () => {
    const agent = createAgent({ model: "gpt-4o" })
    const runError = await agent.run("x").catch((e: unknown) => e)
    expect(runError).toBeInstanceOf(Model.ModelConfigError)
    const first = agent.stream("x")[Symbol.asyncIterator]().next().then(() => "resolved", (e: unknown) => e)
    const outcome = await within(first, 1000)
    expect(outcome).toBeInstanceOf(Model.ModelConfigError)
    await agent.dispose()
  })

  it("return() on the iterator while a next() is pending (a consumer's idle timeout) stops the run", async () => {
    let interrupted = false
    const hang = Tool.make("hang", {
      description: "hangs",
      parameters: Schema.Struct({}),
      handler: () => Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
    })
    const agent = createAgent({ model: Model.layerScripted([{ toolCalls: [{ name: "hang", args: {} }] }]), tools: [hang] })
    const iterator = agent.stream("x")[Symbol.asyncIterator]()
    while (true) {
      const step = await iterator.next()
      if (step.done || step.value._tag === "tool_call") break
    }
    // The consumer waits for the next event with a timeout, gives up, and closes the iterator.
    const pending = iterator.next()
    void pending.catch(() => {})
    expect(await within(pending, 100)).toBe("timed out")
    const returned = await within(iterator.return!(undefined), 1000)
    expect(returned).not.toBe("timed out")
    expect(interrupted).toBe(true)
    await agent.dispose()
  })
})

describe("Agent.stream cancelled by its consumer", () => {
  effectIt.live("a stream cancelled by its consumer leaves run_completed (cancelled) with a wrapped audit log", () =>
    Effect.gen(function*() {
      const inner = yield* AuditLog.makeMemory({ secret: SECRET })
      // A user's decorator around a built-in log (metrics, logging, ...): an ordinary AuditLog service.
      const wrapped: AuditLog.Service = { ...inner, append: (input) => inner.append(input) }
      const started = yield* Deferred.make<void>()
      const hang = Tool.make("hang", {
        description: "hangs",
        parameters: Schema.Struct({}),
        handler: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)
      })
      const layer = Agent.layer({ tools: [hang] }).pipe(
        Layer.provide(Model.layerScripted([{ toolCalls: [{ name: "hang", args: {} }] }])),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, Layer.succeed(AuditLog.AuditLog, wrapped)))
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        yield* agent.stream("x", { sessionId: "cancelled-session" }).pipe(
          Stream.takeUntil((event) => event._tag === "tool_call"),
          Stream.runDrain
        )
      }).pipe(Effect.provide(layer))
      yield* Effect.sleep("20 millis")
      const entries = yield* inner.query({ sessionId: "cancelled-session" })
      const last = entries.at(-1)
      assert.strictEqual(last?.action, "run_completed")
      assert.strictEqual((last?.payload as { interruption_reason?: unknown } | undefined)?.interruption_reason, "cancelled")
    }))
})
