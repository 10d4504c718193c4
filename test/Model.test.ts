import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Option, Schedule, Stream, TestClock } from "effect"
import { Model, RunContext } from "jeevesagent"

const request = (content: string): Model.ModelRequest => ({
  messages: [{ role: "system", content: "be brief" }, { role: "user", content }],
  tools: []
})

describe("Model.layerScripted", () => {
  it.effect("plays turns in order, reports usage exactly, then answers empty", () =>
    Effect.gen(function*() {
      const model = Model.makeScripted([
        { toolCalls: [{ name: "lookup", args: { q: 1 } }], usage: { inputTokens: 7, outputTokens: 3, costUsd: 0.5 } },
        { text: "done" }
      ])
      const first = yield* model.complete(request("a"))
      assert.strictEqual(first.stopReason, "tool_use")
      assert.deepStrictEqual(first.toolCalls, [{ id: "call_1", name: "lookup", args: { q: 1 } }])
      assert.deepStrictEqual(first.usage, { inputTokens: 7, outputTokens: 3, costUsd: 0.5 })
      const second = yield* model.complete(request("b"))
      assert.strictEqual(second.text, "done")
      assert.deepStrictEqual(second.usage, Model.zeroUsage)
      const exhausted = yield* model.complete(request("c"))
      assert.strictEqual(exhausted.text, "")
      assert.strictEqual(exhausted.stopReason, "end_turn")
    }))

  it.effect("a function script sees the request and the run context (per-user scripts)", () =>
    Effect.gen(function*() {
      const model = Model.makeScripted((req, ctx) => ({ text: `${ctx.userId}: ${req.messages.at(-1)!.content}` }))
      const answer = yield* model.complete(request("hello")).pipe(RunContext.withUser("alice"))
      assert.strictEqual(answer.text, "alice: hello")
    }))

  it.effect("latency is read through the Clock", () =>
    Effect.gen(function*() {
      const model = Model.makeScripted([{ text: "late", latency: "1 second" }])
      const fiber = yield* Effect.fork(model.complete(request("x")))
      yield* TestClock.adjust("999 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(fiber)).text, "late")
    }))

  it.effect("an error turn fails with that ModelError", () =>
    Effect.gen(function*() {
      const error = new Model.ModelError({ reason: "rate_limited", retryable: true, status: 429, description: "slow down" })
      const model = Model.makeScripted([{ error }])
      assert.strictEqual(yield* Effect.flip(model.complete(request("x"))), error)
      assert.strictEqual(error.message, "Model call failed (rate_limited, HTTP 429): slow down")
    }))

  it.effect("stream ends with a Finish carrying the whole response", () =>
    Effect.gen(function*() {
      const model = Model.makeScripted([{ text: "hi", toolCalls: [{ name: "t", args: {}, id: "c1" }] }])
      const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(request("x"))))
      assert.deepStrictEqual(parts.map((p) => p._tag), ["TextDelta", "ToolCallPart", "Finish"])
    }))
})

describe("Model.layerEcho", () => {
  it.effect("echoes the last user message and counts words as tokens", () =>
    Effect.gen(function*() {
      const model = Model.makeEcho({ costPerToken: 0.001 })
      const answer = yield* model.complete(request("hello there"))
      assert.strictEqual(answer.text, "Echo: hello there")
      assert.strictEqual(answer.usage.inputTokens, 4)
      assert.strictEqual(answer.usage.outputTokens, 3)
      assert.closeTo(answer.usage.costUsd, 0.007, 1e-12)
    }))

  it.effect("streams one chunk per word; output tokens are the chunk count", () =>
    Effect.gen(function*() {
      const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(Model.makeEcho().stream(request("a b"))))
      const text = parts.flatMap((p) => (p._tag === "TextDelta" ? [p.text] : [])).join("")
      assert.strictEqual(text, "Echo: a b")
      const finish = parts.at(-1)!
      assert.strictEqual(finish._tag, "Finish")
      if (finish._tag === "Finish") assert.strictEqual(finish.response.usage.outputTokens, 3)
    }))
})

describe("Model helpers", () => {
  it("costOf prices per million tokens", () => {
    assert.closeTo(Model.costOf({ inputPerMillion: 3, outputPerMillion: 15 }, 1_000_000, 100_000), 4.5, 1e-12)
  })
})

describe("Model.retryRetryable and retry-after", () => {
  const failingThen = (errors: ReadonlyArray<Model.ModelError>) => {
    let calls = 0
    const call = Effect.suspend(() => {
      calls++
      return calls <= errors.length ? Effect.fail(errors[calls - 1]!) : Effect.succeed("answered")
    })
    return { call, calls: () => calls }
  }
  const limited = (retryAfterMillis: number) =>
    new Model.ModelError({ reason: "rate_limited", retryable: true, status: 429, retryAfterMillis, description: "slow down" })

  it.effect("waits at least the provider's retry-after, longer than the schedule's own delay", () =>
    Effect.gen(function*() {
      const { call, calls } = failingThen([limited(5_000)])
      const fiber = yield* Effect.fork(Model.retryRetryable(call, Schedule.spaced("1 second")))
      yield* TestClock.adjust("1 second")
      assert.strictEqual(calls(), 1, "not retried after the schedule's 1 s")
      yield* TestClock.adjust("4 seconds")
      assert.strictEqual(yield* Fiber.join(fiber), "answered")
      assert.strictEqual(calls(), 2)
    }))

  it.effect("a retry-after over a minute fails at once", () =>
    Effect.gen(function*() {
      const { call, calls } = failingThen([limited(120_000)])
      const error = yield* Effect.flip(Model.retryRetryable(call, Schedule.spaced("1 second")))
      assert.strictEqual(error.retryAfterMillis, 120_000)
      assert.strictEqual(calls(), 1)
    }))
})
