/**
 * Reading the metrics an agent exported, for tests: a reader that keeps them
 * until collected, and their data points by metric name.
 */
import { type DataPoint, MetricReader } from "@opentelemetry/sdk-metrics"
import { Effect } from "effect"

/** A metric reader that exports nothing on its own: the test collects. */
export class CollectingReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

/** Every data point of the metric `name`, over all its series. */
export const dataPoints = (reader: MetricReader, name: string) =>
  Effect.map(Effect.promise(() => reader.collect()), (result) => {
    const points: Array<DataPoint<unknown>> = []
    for (const scope of result.resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name === name) points.push(...(metric.dataPoints as Array<DataPoint<unknown>>))
      }
    }
    return points
  })

/** The summed value of the counter `name` over every series. */
export const counterTotal = (reader: MetricReader, name: string) =>
  Effect.map(dataPoints(reader, name), (points) => points.reduce((sum, point) => sum + (point.value as number), 0))
