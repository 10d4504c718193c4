/**
 * A model call that fails after the provider reported usage (a stream cut
 * off midway: `ModelError.usage`, "what the provider reported using before
 * the call failed") is charged to the budget, but never reaches the token
 * and cost metrics: `jeeves.tokens.*` and `jeeves.cost.usd` ("input tokens
 * reported by the model", "cost of model calls") under-report what was
 * spent, and disagree with the budget ledger they sit next to.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Agent, Budget, Model, Telemetry } from "jeevesagent"
import { CollectingReader, counterTotal, dataPoints } from "./support/metricReader.js"



const cutOff = new Model.ModelError({
  reason: "overloaded",
  retryable: false,
  description: "the stream was cut off",
  usage: { inputTokens: 700, outputTokens: 300, costUsd: 0.25 }
})

describe("token and cost metrics of a failed model call", () => {
  it.effect("usage the provider reported before the call failed is counted, as the budget charges it", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "failed-usage", metricReader: reader })
    // provideMerge: the test reads the very budget the agent charges.
    const agent = Agent.layer().pipe(
      Layer.provideMerge(Layer.mergeAll(
        Agent.layerDefaults,
        Model.layerScripted(() => ({ error: cutOff })),
        Budget.layer({ perUserMaxTokens: 1_000_000 }),
        telemetry
      ))
    )
    return Effect.gen(function*() {
      const inputBefore = yield* counterTotal(reader, "jeeves.tokens.input")
      const outputBefore = yield* counterTotal(reader, "jeeves.tokens.output")
      const costBefore = yield* counterTotal(reader, "jeeves.cost.usd")
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      // The budget charged what the provider reported.
      const charged = yield* Effect.flatMap(Budget.Budget, (budget) => budget.usageFor("carol"))
      assert.strictEqual(charged.tokensIn, 700)
      assert.strictEqual(charged.tokensOut, 300)
      // The metrics count it too.
      assert.strictEqual((yield* counterTotal(reader, "jeeves.tokens.input")) - inputBefore, 700)
      assert.strictEqual((yield* counterTotal(reader, "jeeves.tokens.output")) - outputBefore, 300)
      assert.closeTo((yield* counterTotal(reader, "jeeves.cost.usd")) - costBefore, 0.25, 1e-9)
    }).pipe(Effect.provide(agent))
  })

  it.effect("without a budget too", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "failed-usage-no-budget", metricReader: reader })
    const agent = Agent.layer().pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(() => ({ error: cutOff })), telemetry))
    )
    return Effect.gen(function*() {
      const inputBefore = yield* counterTotal(reader, "jeeves.tokens.input")
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual((yield* counterTotal(reader, "jeeves.tokens.input")) - inputBefore, 700)
    }).pipe(Effect.provide(agent))
  })

  it.effect("a failed run is timed too: jeeves.session.duration_ms with interrupted true", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "failed-run-duration", metricReader: reader })
    const agent = Agent.layer().pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(() => ({ error: cutOff })), telemetry))
    )
    const failedRuns = Effect.map(dataPoints(reader, "jeeves.session.duration_ms"), (points) =>
      points
        .filter((point) => String(point.attributes.interrupted) === "true")
        .reduce((count, point) => count + (point.value as { count: number }).count, 0))
    return Effect.gen(function*() {
      const before = yield* failedRuns
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual((yield* failedRuns) - before, 1)
    }).pipe(Effect.provide(agent))
  })
})
