/**
 * A tool that fails the Effect way — with a `Data.TaggedError`, which has no
 * `message` — or rejects with nothing still gives the model something to
 * act on (README "Tools", Tool.ts: `ERROR: <message>`): the error's tag and
 * fields, or "unknown error", as the original's `"ERROR: <error or
 * 'unknown'>"` never leaves it blank.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Schema } from "effect"
import { Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

class OrderNotFound extends Data.TaggedError("OrderNotFound")<{ readonly orderId: string }> {}

const getOrder = Tool.make("get_order", {
  description: "Looks an order up",
  parameters: Schema.Struct({ orderId: Schema.String }),
  handler: ({ orderId }) => Effect.fail(new OrderNotFound({ orderId }))
})

const rejectsBare = Tool.fromPromise("legacy_call", {
  description: "A legacy client that rejects with nothing",
  parameters: Schema.Struct({}),
  handler: () => Promise.reject(undefined)
})

describe("a failing tool whose error has no message", () => {
  it.effect("a Data.TaggedError: the result names the error, not a bare 'ERROR: '", () =>
    Effect.gen(function*() {
      const result = yield* run
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      assert.notStrictEqual(call.output.trim(), "ERROR:")
      assert.strictEqual(call.output, `ERROR: OrderNotFound: {"orderId":"o-42"}`)
      assert.isTrue((call.reason ?? "").length > 0)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "get_order", args: { orderId: "o-42" } }]), [getOrder]))))

  it.effect("a promise rejected with undefined: a non-empty reason, not a bare 'ERROR: '", () =>
    Effect.gen(function*() {
      const result = yield* run
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      assert.notStrictEqual(call.output.trim(), "ERROR:")
      assert.strictEqual(call.reason, "unknown error")
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "legacy_call", args: {} }]), [rejectsBare]))))
})
