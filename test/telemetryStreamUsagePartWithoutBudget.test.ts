/**
 * A streamed call that reported its usage in a `Usage` part (what AnthropicModel emits on
 * `message_start`) and then failed is counted in the token metrics with or without a budget:
 * the metrics of a call do not depend on whether a budget is configured.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { Agent, Budget, Model, Telemetry } from "jeevesagent"
import { CollectingReader, counterTotal } from "./support/metricReader.js"



/** Reports 500 input tokens as its stream begins, then fails (no usage on the error itself). */
const reportsThenFails: Model.Service = {
  name: "reports-then-fails",
  price: undefined,
  complete: () => Effect.fail(new Model.ModelError({ reason: "overloaded", retryable: false, description: "down" })),
  stream: () =>
    Stream.concat(
      Stream.succeed<Model.StreamPart>({ _tag: "Usage", usage: { inputTokens: 500, outputTokens: 0, costUsd: 0 } }),
      Stream.fail(new Model.ModelError({ reason: "overloaded", retryable: false, description: "connection reset" }))
    )
}

const streamedInputTokens = (withBudget: boolean) => {
  const reader = new CollectingReader()
  const telemetry = Telemetry.layerOtel({ serviceName: `usage-part-${withBudget}`, metricReader: reader })
  const agent = Agent.layer().pipe(
    Layer.provide(Layer.mergeAll(
      Agent.layerDefaults,
      Layer.succeed(Model.Model, reportsThenFails),
      telemetry,
      ...(withBudget ? [Budget.layer({ perUserMaxTokens: 1_000_000 })] : [])
    ))
  )
  return Effect.gen(function*() {
    const before = yield* counterTotal(reader, "jeeves.tokens.input")
    const exit = yield* Effect.exit(
      Effect.flatMap(Agent.Agent, (agent) => Stream.runDrain(agent.stream("hi", { userId: "carol" })))
    )
    assert.isTrue(exit._tag === "Failure")
    return (yield* counterTotal(reader, "jeeves.tokens.input")) - before
  }).pipe(Effect.provide(agent))
}

// (With a budget, streamedInputTokens(true) is 500.)
describe("token metrics of a streamed call that reported usage in a Usage part, then failed", () => {
  it.effect("without a budget: counted as well", () =>
    Effect.gen(function*() {
      // Before the fix: 0
      assert.strictEqual(yield* streamedInputTokens(false), 500)
    }))
})
