/**
 * A model call that fails after the provider reported usage (a stream cut
 * off midway: `ModelError.usage`, "what the provider reported using before
 * the call failed") is charged to the budget, but never reaches the token
 * and cost metrics: `jeeves.tokens.*` and `jeeves.cost.usd` ("input tokens
 * reported by the model", "cost of model calls") under-report what was
 * spent, and disagree with the budget ledger they sit next to.
 */
import { assert, describe, it } from "@effect/vitest"
import { MetricReader } from "@opentelemetry/sdk-metrics"
import { Effect, Layer } from "effect"
import { Agent, Budget, Model, Telemetry } from "jeevesagent"

class CollectingReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

/** The summed value of the counter `name` over every series. */
const total = (reader: MetricReader, name: string) =>
  Effect.map(Effect.promise(() => reader.collect()), (result) => {
    let sum = 0
    for (const scope of result.resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name !== name) continue
        for (const point of metric.dataPoints) sum += point.value as number
      }
    }
    return sum
  })

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
      const inputBefore = yield* total(reader, "jeeves.tokens.input")
      const outputBefore = yield* total(reader, "jeeves.tokens.output")
      const costBefore = yield* total(reader, "jeeves.cost.usd")
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      // The budget charged what the provider reported.
      const charged = yield* Effect.flatMap(Budget.Budget, (budget) => budget.usageFor("carol"))
      assert.strictEqual(charged.tokensIn, 700)
      assert.strictEqual(charged.tokensOut, 300)
      // The metrics count it too.
      assert.strictEqual((yield* total(reader, "jeeves.tokens.input")) - inputBefore, 700)
      assert.strictEqual((yield* total(reader, "jeeves.tokens.output")) - outputBefore, 300)
      assert.closeTo((yield* total(reader, "jeeves.cost.usd")) - costBefore, 0.25, 1e-9)
    }).pipe(Effect.provide(agent))
  })

  it.effect("without a budget too", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "failed-usage-no-budget", metricReader: reader })
    const agent = Agent.layer().pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(() => ({ error: cutOff })), telemetry))
    )
    return Effect.gen(function*() {
      const inputBefore = yield* total(reader, "jeeves.tokens.input")
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual((yield* total(reader, "jeeves.tokens.input")) - inputBefore, 700)
    }).pipe(Effect.provide(agent))
  })

  it.effect("a failed run is timed too: jeeves.session.duration_ms with interrupted true", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "failed-run-duration", metricReader: reader })
    const agent = Agent.layer().pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(() => ({ error: cutOff })), telemetry))
    )
    const failedRuns = Effect.map(Effect.promise(() => reader.collect()), (result) => {
      let count = 0
      for (const scope of result.resourceMetrics.scopeMetrics) {
        for (const metric of scope.metrics) {
          if (metric.descriptor.name !== "jeeves.session.duration_ms") continue
          for (const point of metric.dataPoints) {
            if (String(point.attributes.interrupted) === "true") count += (point.value as { count: number }).count
          }
        }
      }
      return count
    })
    return Effect.gen(function*() {
      const before = yield* failedRuns
      const exit = yield* Effect.exit(Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: "carol" })))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual((yield* failedRuns) - before, 1)
    }).pipe(Effect.provide(agent))
  })
})
