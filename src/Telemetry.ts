/**
 * Tracing and metrics settings of the agent.
 *
 * Spans and metrics go through effect's `Tracer` and `Metric`; this service
 * says whether the agent records them and how user ids appear in attributes.
 * With {@link layerNone} the agent records nothing and pays nothing;
 * {@link layerOtel} exports both through OpenTelemetry.
 *
 * Spans: `jeeves.run` → `jeeves.turn` → `jeeves.budget.reserve`,
 * `jeeves.model.complete` / `jeeves.model.stream`, `jeeves.tool` →
 * `jeeves.permission.check` → `jeeves.approval`. Metrics:
 * `jeeves.session.duration_ms`, `jeeves.tokens.input`,
 * `jeeves.tokens.output`, `jeeves.cost.usd`, `jeeves.budget.exceeded`,
 * `jeeves.budget.warnings`, `jeeves.tool.duration_ms`,
 * `jeeves.permission.decisions`, `jeeves.approval.requests`,
 * `jeeves.approval.duration_ms`, `jeeves.audit.append_ms`,
 * `jeeves.state.evictions`, `jeeves.auto_extract.duration_ms`,
 * `jeeves.auto_extract.invocations`.
 *
 * @example
 * ```ts
 * import { Agent, Model, Telemetry } from "jeevesagent"
 * import { Layer } from "effect"
 * // npm install @opentelemetry/exporter-trace-otlp-http (any SpanExporter will do)
 * import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
 *
 * const TelemetryLive = Telemetry.layerOtel({
 *   serviceName: "support-bot",
 *   traceExporter: new OTLPTraceExporter(),
 *   userIdAttribute: "hashed"
 * })
 *
 * const AgentLive = Agent.layer().pipe(
 *   Layer.provide(Model.layerEcho()),
 *   Layer.provide(Layer.mergeAll(Agent.layerDefaults, TelemetryLive))
 * )
 * ```
 *
 * @since 0.1.0
 */
import type { MetricReader, PushMetricExporter } from "@opentelemetry/sdk-metrics"
import type { SpanExporter, SpanProcessor, TracerConfig } from "@opentelemetry/sdk-trace-base"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { sha256Hex } from "./internal/auditChain.js"
import { layerServiceSpans } from "./internal/spans.js"

/**
 * How a user id appears in span and metric attributes: as is, as a short
 * SHA-256 prefix, or not at all (to keep metric cardinality bounded).
 *
 * @since 0.1.0
 * @category models
 */
export type UserIdAttribute = "raw" | "hashed" | "omit"

/**
 * The telemetry service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly enabled: boolean
  /** How user ids appear in span attributes. */
  readonly userIdAttribute: UserIdAttribute
  /**
   * How user ids appear in metric tags. Every distinct tag value is a metric
   * series that effect's metric registry keeps for the life of the process,
   * so anything but `"omit"` grows with the number of users: opt in only
   * for a bounded set of tenants.
   */
  readonly metricUserIdAttribute: UserIdAttribute
}

/**
 * The telemetry service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Telemetry extends Context.Tag("jeevesagent/Telemetry")<Telemetry, Service>() {}

/**
 * Telemetry off.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({ enabled: false, userIdAttribute: "omit", metricUserIdAttribute: "omit" })

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<Telemetry> = Layer.succeed(Telemetry, none)

/**
 * Records spans and metrics through whatever `Tracer` and metric exporters
 * the program provides (for OpenTelemetry, `Telemetry.layerOtel`).
 *
 * The agent redacts the attributes it sets itself, but a span's failure (its
 * status message and exception event, made from the run's error) goes
 * through the tracer as it is: over a tracer of your own (such as
 * `@effect/opentelemetry`'s `NodeSdk.layer`), add
 * `Secrets.layerRedactingTracer` so that secret values in errors are masked
 * too. `Telemetry.layerOtel` does this itself.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: {
  readonly userIdAttribute?: UserIdAttribute | undefined
  readonly metricUserIdAttribute?: UserIdAttribute | undefined
  /** Spans for each service operation too; see {@link OtelOptions.serviceSpans}. Default `false`. */
  readonly serviceSpans?: boolean | undefined
}): Layer.Layer<Telemetry> => {
  const service = Layer.succeed(Telemetry, {
    enabled: true,
    userIdAttribute: options?.userIdAttribute ?? "hashed",
    metricUserIdAttribute: options?.metricUserIdAttribute ?? "omit"
  })
  return options?.serviceSpans === true ? Layer.merge(service, layerServiceSpans) : service
}

/**
 * Options of {@link layerOtel}. Exporter, processor and reader instances
 * belong to one build of the layer (OpenTelemetry binds each to one
 * provider); the layer shuts them down, after a final flush, when its scope
 * closes.
 *
 * @since 0.1.0
 * @category models
 */
export interface OtelOptions {
  /** The `service.name` resource attribute. */
  readonly serviceName: string
  readonly serviceVersion?: string | undefined
  /**
   * More resource attributes. `OTEL_RESOURCE_ATTRIBUTES` is read too; the
   * options win over the environment.
   */
  readonly resourceAttributes?: Readonly<Record<string, string | number | boolean>> | undefined
  /** How user ids appear in span attributes. Default `"hashed"`. */
  readonly userIdAttribute?: UserIdAttribute | undefined
  /**
   * How user ids appear in metric tags. Default `"omit"`: each distinct value
   * is a metric series kept for the life of the process, so per-user tags
   * grow with the number of users.
   */
  readonly metricUserIdAttribute?: UserIdAttribute | undefined
  /**
   * Span exporters (an OTLP exporter, `InMemorySpanExporter`, ...), each
   * behind a `BatchSpanProcessor`.
   */
  readonly traceExporter?: SpanExporter | ReadonlyArray<SpanExporter> | undefined
  /** Span processors used as they are (e.g. a `SimpleSpanProcessor`). */
  readonly spanProcessor?: SpanProcessor | ReadonlyArray<SpanProcessor> | undefined
  /**
   * Whether the current effect span becomes OpenTelemetry's active context
   * while effect code runs, so OpenTelemetry-instrumented libraries called
   * from tools (HTTP, database clients) parent their spans under the
   * agent's. It costs a context switch on every fiber step. Default: on
   * when an OpenTelemetry context manager is registered when the layer is
   * built (e.g. by `@opentelemetry/sdk-node`), off otherwise (the no-op
   * manager could carry nothing).
   */
  readonly propagateContext?: boolean | undefined
  /**
   * Whether every service operation records a span of its own
   * (`Memory.recall`, `AuditLog.append`, `Budget.reserve`, ...) under the
   * agent's spans. Default `false`: the agent's spans (`jeeves.run`,
   * `jeeves.turn`, `jeeves.model.*`, `jeeves.tool`, `jeeves.budget.reserve`,
   * `jeeves.permission.check`, `jeeves.approval`) already time every step
   * of a run, and a span costs microseconds (and memory held until it is
   * exported), which would more than double the spans, and the cost, of
   * every turn.
   */
  readonly serviceSpans?: boolean | undefined
  /**
   * Sampler, id generator and limits of the tracer provider. Any other
   * option (`meterProvider`) sends spans through `@effect/opentelemetry`'s
   * own tracer, which honours it at several times the cost per span.
   */
  readonly tracerConfig?: Omit<TracerConfig, "resource" | "spanProcessors"> | undefined
  /** Metric readers (a `PeriodicExportingMetricReader`, or one you collect yourself). */
  readonly metricReader?: MetricReader | ReadonlyArray<MetricReader> | undefined
  /** A push exporter (e.g. OTLP), read by a `PeriodicExportingMetricReader` every {@link metricExportInterval}. */
  readonly metricExporter?: PushMetricExporter | undefined
  /** Default 60 seconds. */
  readonly metricExportInterval?: Duration.DurationInput | undefined
  /** How long the final flush may take at shutdown. Default 3 seconds. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/**
 * Telemetry on, exported through OpenTelemetry (`@effect/opentelemetry`):
 * provides the {@link Telemetry} service (`enabled`, `userIdAttribute`,
 * default `"hashed"`), installs a `Tracer` over an OpenTelemetry tracer
 * provider with the given exporters and processors, and bridges effect's
 * metrics to the given readers. Without any span exporter or processor no
 * tracer is installed; without any reader or metric exporter no metrics are
 * exported.
 *
 * Every span goes through `Secrets.redactingTracer`: the agent's spans, and
 * every span under them (tool handlers, stores), with the agent's `Secrets`
 * service; spans outside any run with the `Secrets` service this layer is
 * given (`Layer.provide(secretsLayer)`), or `Secrets.redactPatterns` when it
 * has none. (The agent's own span attributes are redacted by the agent
 * with that same service, once per run or tool call, and not scanned a
 * second time.) An exporter or processor that fails or throws never
 * fails a run: the failure goes to OpenTelemetry's `diag` logger.
 *
 * Needs `@effect/opentelemetry`, `@opentelemetry/api`,
 * `@opentelemetry/resources`, `@opentelemetry/sdk-trace-base`,
 * `@opentelemetry/sdk-trace-node` and `@opentelemetry/sdk-metrics`,
 * loaded only when this layer is built. OTLP exporters come from the
 * `@opentelemetry/exporter-*-otlp-*` packages; pass their instances.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerOtel = (options: OtelOptions): Layer.Layer<Telemetry> =>
  Layer.unwrapEffect(
    Effect.tryPromise(() => import("./internal/telemetryOtel.js")).pipe(
      Effect.map((otel) => otel.layer(options)),
      Effect.catchAll((error) =>
        Effect.die(
          new Error(
            "Telemetry.layerOtel needs @effect/opentelemetry and the @opentelemetry SDK packages installed",
            { cause: error.cause }
          )
        )
      )
    )
  )

/**
 * The attribute value for `userId` under `mode` (`undefined` = omit).
 * `"hashed"` is the first 16 hex digits of the id's unsalted SHA-256: ids
 * that can be guessed (e-mail addresses) can be found by hashing candidates.
 *
 * @since 0.1.0
 * @category utils
 */
export const userIdValue = (mode: UserIdAttribute, userId: string | null): string | undefined => {
  switch (mode) {
    case "omit":
      return undefined
    case "raw":
      return userId ?? "anonymous"
    case "hashed":
      return userId === null ? "anonymous" : sha256Hex(userId).slice(0, 16)
  }
}
