/**
 * `Telemetry.layerOtel`: the OpenTelemetry SDK behind effect's `Tracer` and
 * `Metric`, through `@effect/opentelemetry` (spans through our lean tracer,
 * `otelTracer.ts`, over the SDK's processors). Loaded on demand by
 * `Telemetry.layerOtel`, so the root module never needs the OpenTelemetry
 * packages.
 *
 * @internal
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as OtelResource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { context as otelContext, type Context as OtelContext, createContextKey, diag, ROOT_CONTEXT } from "@opentelemetry/api"
import { type MetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import {
  BatchSpanProcessor,
  type ReadableSpan,
  type Span as SdkSpan,
  type SpanExporter,
  type SpanProcessor
} from "@opentelemetry/sdk-trace-base"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import * as Secrets from "../Secrets.js"
import * as Telemetry from "../Telemetry.js"
import * as LeanTracer from "./otelTracer.js"
import { layerServiceSpans } from "./spans.js"
import { withSamplingOf } from "./tracerSampling.js"

const DEFAULT_METRIC_EXPORT_INTERVAL = Duration.seconds(60)

const toArray = <A>(value: A | ReadonlyArray<A> | undefined): ReadonlyArray<A> =>
  value === undefined ? [] : Array.isArray(value) ? value : [value as A]

const reportFailure = (what: string, error: unknown) => {
  diag.error(`jeevesagent telemetry: ${what} failed`, error)
}

const settled = (what: string, run: () => Promise<void>): Promise<void> => {
  try {
    return run().catch((error) => reportFailure(what, error))
  } catch (error) {
    reportFailure(what, error)
    return Promise.resolve()
  }
}

/**
 * A span processor that never throws into the code ending a span: a
 * processor or exporter failure is reported to OpenTelemetry's `diag`
 * logger and the run goes on.
 */
class GuardedSpanProcessor implements SpanProcessor {
  /**
   * The wrapped processor's `onEnding`, guarded; absent when it has none,
   * so that a span's end makes no call for it (the SDK, too, calls
   * `onEnding` only on processors that define it).
   */
  declare readonly onEnding?: (span: SdkSpan) => void

  constructor(readonly inner: SpanProcessor) {
    if (typeof inner.onEnding === "function") {
      ;(this as { onEnding?: (span: SdkSpan) => void }).onEnding = (span) => {
        try {
          inner.onEnding!(span)
        } catch (error) {
          reportFailure("span processor onEnding", error)
        }
      }
    }
  }
  onStart(span: SdkSpan, parentContext: OtelContext): void {
    try {
      this.inner.onStart(span, parentContext)
    } catch (error) {
      reportFailure("span processor onStart", error)
    }
  }
  onEnd(span: ReadableSpan): void {
    try {
      this.inner.onEnd(span)
    } catch (error) {
      reportFailure("span processor onEnd", error)
    }
  }
  forceFlush(): Promise<void> {
    return settled("span flush", () => this.inner.forceFlush())
  }
  shutdown(): Promise<void> {
    return settled("span processor shutdown", () => this.inner.shutdown())
  }
}

const probeKey = createContextKey("jeevesagent/telemetry/probe")

/**
 * Whether an OpenTelemetry context manager is registered. With the default
 * no-op manager, `context.with` carries nothing, so propagating effect's
 * current span into it on every fiber step would be pure cost.
 */
const contextManagerRegistered = (): boolean =>
  otelContext.with(ROOT_CONTEXT.setValue(probeKey, true), () => otelContext.active().getValue(probeKey) === true)

/**
 * Wraps `tracer` so every span passes through `Secrets.redactingTracer`. A
 * span whose options carry a `Secrets` service in their `context` (the
 * agent's spans do), or whose parent span was redacted with one, is redacted
 * with that service — so the values it handed out are masked in the agent's
 * spans and everything under them (tool handlers, stores) even when this
 * layer cannot see the service. Every other span is redacted with
 * `fallback`. It samples as `tracer` does, and carries its mark
 * (`tracerSampling.ts`).
 */
const redactingTracer = (
  tracer: Tracer.Tracer,
  fallback: (text: string) => string,
  propagateContext: boolean
): Tracer.Tracer => {
  const byFallback = Secrets.redactingTracer(tracer, fallback)
  const bySecrets = new WeakMap<Secrets.Service, Tracer.Tracer>()
  // The span's Secrets ride on the span itself (not in a WeakMap: an ephemeron per span costs the collector).
  const secretsOfSpan = Symbol("jeevesagent/Telemetry/spanSecrets")
  type WithSecrets = Tracer.AnySpan & { [secretsOfSpan]?: Secrets.Service }
  const secretsFor = (context: Context.Context<never>, parent: Option.Option<Tracer.AnySpan>) => {
    const own = Context.getOption(context, Secrets.Secrets)
    if (Option.isSome(own)) return own.value
    return Option.isSome(parent) ? (parent.value as WithSecrets)[secretsOfSpan] : undefined
  }
  return withSamplingOf(tracer, Tracer.make({
    context: propagateContext ? (execution, fiber) => tracer.context(execution, fiber) : (execution) => execution(),
    span: (name, parent, context, links, startTime, kind, options) => {
      const secrets = secretsFor(context, parent)
      if (secrets === undefined) return byFallback.span(name, parent, context, links, startTime, kind, options)
      let wrapped = bySecrets.get(secrets)
      if (wrapped === undefined) {
        wrapped = Secrets.redactingTracer(tracer, secrets.redact)
        bySecrets.set(secrets, wrapped)
      }
      const span = wrapped.span(name, parent, context, links, startTime, kind, options)
      ;(span as WithSecrets)[secretsOfSpan] = secrets
      return span
    }
  }))
}

/** @internal */
export const layer = (options: Telemetry.OtelOptions): Layer.Layer<Telemetry.Telemetry> =>
  Layer.unwrapEffect(Effect.sync(() => {
    // Built per layer build: an OpenTelemetry processor or reader serves one provider only.
    const processors: Array<GuardedSpanProcessor> = [
      ...toArray(options.traceExporter).map((exporter: SpanExporter) => new BatchSpanProcessor(exporter)),
      ...toArray(options.spanProcessor)
    ].map((processor) => new GuardedSpanProcessor(processor))
    const readers: Array<MetricReader> = [...toArray(options.metricReader)]
    if (options.metricExporter !== undefined) {
      readers.push(
        new PeriodicExportingMetricReader({
          exporter: options.metricExporter,
          exportIntervalMillis: exportInterval(options.metricExportInterval)
        })
      )
    }
    const shutdownTimeout = options.shutdownTimeout

    const resource = OtelResource.layerFromEnv(
      OtelResource.configToAttributes({
        serviceName: options.serviceName,
        ...(options.serviceVersion === undefined ? {} : { serviceVersion: options.serviceVersion }),
        ...(options.resourceAttributes === undefined ? {} : { attributes: options.resourceAttributes })
      })
    )

    const tracing = processors.length === 0 ? Layer.empty : Layer.unwrapEffect(
      Effect.gen(function*() {
        const tracer = yield* LeanTracer.make({
          processors,
          startProcessors: processors.filter((processor) => !LeanTracer.ignoresStart(processor.inner)),
          tracerConfig: options.tracerConfig
        })
        const secrets = yield* Effect.serviceOption(Secrets.Secrets)
        const fallback = Option.match(secrets, { onNone: () => Secrets.redactPatterns, onSome: (s) => s.redact })
        const propagate = options.propagateContext ?? contextManagerRegistered()
        return Layer.setTracer(redactingTracer(tracer, fallback, propagate))
      })
    ).pipe(
      Layer.provide(OtelTracer.layerTracer),
      Layer.provide(
        NodeSdk.layerTracerProvider(processors as Array<SpanProcessor> as [SpanProcessor, ...Array<SpanProcessor>], {
          ...options.tracerConfig,
          shutdownTimeout
        })
      )
    )

    const metrics = readers.length === 0 ?
      Layer.empty :
      OtelMetrics.layer(() => readers as [MetricReader, ...Array<MetricReader>], { shutdownTimeout })

    const service = Layer.succeed(Telemetry.Telemetry, {
      enabled: true,
      userIdAttribute: options.userIdAttribute ?? "hashed",
      metricUserIdAttribute: options.metricUserIdAttribute ?? "omit"
    })

    return Layer.mergeAll(service, tracing, metrics, options.serviceSpans === true ? layerServiceSpans : Layer.empty)
      .pipe(Layer.provide(resource))
  }))

/** Node's longest timer: a longer one (an infinite interval, "30 days") would fire every millisecond. */
const MAX_TIMER_MILLIS = 2 ** 31 - 1

/** The metric export interval, in what a Node timer can hold: at most ~24.8 days; not positive means the default. */
const exportInterval = (input: Duration.DurationInput | undefined): number => {
  const millis = Duration.toMillis(Duration.decode(input ?? DEFAULT_METRIC_EXPORT_INTERVAL))
  if (!(millis >= 1)) return Duration.toMillis(Duration.decode(DEFAULT_METRIC_EXPORT_INTERVAL))
  return Math.min(millis, MAX_TIMER_MILLIS)
}
