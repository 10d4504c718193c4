import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"

/** Millisecond histogram buckets: 1 ms to ~9 minutes, doubling. */
const millis = MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 })

/** @internal */
export const sessionDuration = Metric.histogram("jeeves.session.duration_ms", millis, "Duration of agent runs")
/** @internal */
export const tokensInput = Metric.counter("jeeves.tokens.input", { description: "Input tokens reported by the model" })
/** @internal */
export const tokensOutput = Metric.counter("jeeves.tokens.output", { description: "Output tokens reported by the model" })
/** @internal */
export const costUsd = Metric.counter("jeeves.cost.usd", { description: "Cost of model calls in USD" })
/** @internal */
export const budgetExceeded = Metric.counter("jeeves.budget.exceeded", {
  description: "Runs stopped by a budget cap",
  incremental: true
})
/** @internal */
export const budgetWarnings = Metric.counter("jeeves.budget.warnings", {
  description: "Model calls made past the soft warning threshold",
  incremental: true
})
/** @internal */
export const toolDuration = Metric.histogram("jeeves.tool.duration_ms", millis, "Duration of tool calls")
/** @internal */
export const permissionDecisions = Metric.counter("jeeves.permission.decisions", {
  description: "Permission decisions by outcome",
  incremental: true
})
/** @internal */
export const approvalRequests = Metric.counter("jeeves.approval.requests", {
  description: "Approval requests by outcome",
  incremental: true
})
/** @internal */
export const approvalDuration = Metric.histogram("jeeves.approval.duration_ms", millis, "Time a human took to answer")

const labels = (attributes: Readonly<Record<string, string | number | boolean | undefined>>) => {
  const out: Array<MetricLabel.MetricLabel> = []
  for (const key in attributes) {
    const value = attributes[key]
    if (value !== undefined) out.push(MetricLabel.make(key, String(value)))
  }
  return out
}

/**
 * Records `value` on `metric` with `attributes` (undefined ones dropped).
 *
 * @internal
 */
export const record = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  value: In,
  attributes: Readonly<Record<string, string | number | boolean | undefined>>
): Effect.Effect<void> => Metric.update(Metric.taggedWithLabels(metric, labels(attributes)), value)
