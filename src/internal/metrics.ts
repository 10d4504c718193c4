/**
 * The agent's metrics: one definition per name, so a name never maps to two
 * instruments (the OpenTelemetry bridge merges entries by name).
 *
 * Counters that only grow are `incremental`, so the bridge exports them as
 * monotonic counters; names ending `_ms` are histograms in milliseconds, as
 * in the original.
 *
 * @internal
 */
import * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"

/** Millisecond histogram buckets: 1 ms to ~9 minutes, doubling. */
const millis = MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 })

/** Finer buckets for operations that usually take well under a millisecond: 0.05 ms to ~26 s. */
const fineMillis = MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 20 })

/** @internal */
export const sessionDuration = Metric.histogram("jeeves.session.duration_ms", millis, "Duration of agent runs")
/** @internal */
export const tokensInput = Metric.counter("jeeves.tokens.input", {
  description: "Input tokens reported by the model",
  incremental: true
})
/** @internal */
export const tokensOutput = Metric.counter("jeeves.tokens.output", {
  description: "Output tokens reported by the model",
  incremental: true
})
/** @internal */
export const costUsd = Metric.counter("jeeves.cost.usd", {
  description: "Cost of model calls in USD",
  incremental: true
})
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
/** @internal */
export const auditAppend = Metric.histogram(
  "jeeves.audit.append_ms",
  fineMillis,
  "Time from handing one audit entry to the log until it is durable"
)
/** @internal */
export const stateEvictions = Metric.counter("jeeves.state.evictions", {
  description: "Per-user state entries dropped by a capacity or idle-time bound",
  incremental: true
})

/**
 * Auto-extract metrics, recorded by `Memory.autoExtract`. It must record
 * these very objects: effect compares histogram boundaries by reference, so
 * a second definition of the same name — even an identical one — is a
 * second instrument, and the OpenTelemetry bridge would export one name
 * with two sets of data points.
 *
 * @internal
 */
export const autoExtractDuration = Metric.histogram(
  "jeeves.auto_extract.duration_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 16 }),
  "Time spent extracting facts from one remembered episode, in milliseconds"
)
/** @internal */
export const autoExtractInvocations = Metric.counter("jeeves.auto_extract.invocations", {
  description: "Auto-extraction attempts after remembered episodes",
  incremental: true
})

/** Attribute values; `undefined` ones are dropped, as the original drops `None`. */
type Attributes = Readonly<Record<string, string | number | boolean | undefined>>

/**
 * Label arrays by attributes. Effect caches each metric's hook per label
 * *array*, so handing it the same array for the same labels skips building
 * and hashing a metric key on every update (one array serves every metric).
 * Looked up through a tree of maps, one level per defined attribute (name,
 * then value), so a hit builds no string. Bounded: past
 * {@link MAX_LABEL_SETS} label sets the cache starts over.
 */
interface LabelNode {
  labels?: Array<MetricLabel.MetricLabel>
  /** By attribute name, then by value. */
  readonly next: Map<string, Map<unknown, LabelNode>>
}

let labelTree: LabelNode = { next: new Map() }
let labelSetCount = 0
const MAX_LABEL_SETS = 10_000

const labelsOf = (attributes: Attributes): Array<MetricLabel.MetricLabel> => {
  let node = labelTree
  for (const k in attributes) {
    const value = attributes[k]
    if (value === undefined) continue
    let byValue = node.next.get(k)
    if (byValue === undefined) node.next.set(k, byValue = new Map())
    let child = byValue.get(value)
    if (child === undefined) byValue.set(value, child = { next: new Map() })
    node = child
  }
  if (node.labels === undefined) {
    if (labelSetCount >= MAX_LABEL_SETS) {
      labelTree = { next: new Map() }
      labelSetCount = 0
      return labelsOf(attributes)
    }
    const labels: Array<MetricLabel.MetricLabel> = []
    for (const k in attributes) {
      const value = attributes[k]
      if (value !== undefined) labels.push(MetricLabel.make(k, String(value)))
    }
    node.labels = labels
    labelSetCount++
  }
  return node.labels
}

/**
 * Records `value` on `metric` with `attributes` (undefined ones dropped) and
 * `tags` (the fiber's `Effect.tagMetrics` labels), synchronously.
 *
 * @internal
 */
export const unsafeRecord = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  value: In,
  attributes: Attributes,
  tags: ReadonlyArray<MetricLabel.MetricLabel>
): void => {
  const labels = labelsOf(attributes)
  metric.unsafeUpdate(value, tags.length === 0 ? labels : Arr.union(labels, tags))
}

/**
 * Records `value` on `metric` with `attributes` (undefined ones dropped),
 * plus any labels set with `Effect.tagMetrics`. One step.
 *
 * @internal
 */
export const record = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  value: In,
  attributes: Attributes
): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    unsafeRecord(metric, value, attributes, fiber.getFiberRef(FiberRef.currentMetricLabels))
    return Effect.void
  })

/**
 * A budget warning without its percentage (`"per-user tokens at 85%"` →
 * `"per-user tokens"`), so the `reason` tag of `jeeves.budget.warnings` has
 * a handful of values, not one per percent.
 *
 * @internal
 */
export const warningKind = (warning: string): string => warning.replace(/ at [\d.]+%$/, "")

/**
 * Counts `count` per-user state entries dropped by a store (`store`:
 * `"budget"`, `"memory"`, ...). Synchronous, for eviction callbacks outside
 * an Effect; a no-op for `count <= 0`.
 *
 * @internal
 */
export const unsafeRecordEvictions = (store: string, count = 1): void => {
  if (count > 0) stateEvictions.unsafeUpdate(count, labelsOf({ store }))
}

/**
 * {@link unsafeRecordEvictions} as an Effect.
 *
 * @internal
 */
export const recordEvictions = (store: string, count = 1): Effect.Effect<void> =>
  Effect.sync(() => unsafeRecordEvictions(store, count))
