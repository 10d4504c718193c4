/**
 * A lean effect `Tracer` over the OpenTelemetry SDK's span processors, used
 * by `Telemetry.layerOtel` in place of `@effect/opentelemetry`'s
 * `OtelTracer.make`. That one makes three layers per span (its `OtelSpan`
 * with a second copy of every attribute, the SDK tracer's `startSpan` with
 * its context objects and metrics, the SDK's `SpanImpl`); here a span is an
 * {@link EffectSpan} and, when recorded, the {@link RecordedSpan} the
 * processors and exporters get, with the same observable behaviour.
 *
 * Two objects, not one: effect's `Span` and the SDK's `ReadableSpan` both
 * have `kind`, `status`, `attributes` and `links`, with different types (a
 * string kind against a number, `{ _tag }` against `{ code }`, a `Map`
 * against a plain record, effect links against OpenTelemetry links), and
 * exporters read all four. One object would be wrong for one side.
 *
 * @internal
 */
import * as OtelResource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import {
  type Attributes,
  type Context as OtelContext,
  context as otelContext,
  createContextKey,
  diag,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  type Link,
  SamplingDecision,
  type Span as OtelSpan,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags
} from "@opentelemetry/api"
import type { IdGenerator, Sampler, SpanLimits, SpanProcessor, TracerConfig } from "@opentelemetry/sdk-trace-base"
import { BatchSpanProcessor, NoopSpanProcessor, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { randomFillSync } from "node:crypto"
import { attributeValue, RecordedSpan, sanitizeAttributes, type Shared } from "./otelSpan.js"
import { markDropsUnsampledChildren } from "./tracerSampling.js"

// ---- ids ----------------------------------------------------------------------

const ID_POOL_SIZE = 4096
const idPool = Buffer.allocUnsafe(ID_POOL_SIZE)
let idPoolOffset = ID_POOL_SIZE

/**
 * `bytes` random bytes as lowercase hex, from a pool refilled by
 * `randomFillSync` every few hundred ids; never all zeros (a W3C id must
 * not be), as the SDK's `RandomIdGenerator` guarantees.
 */
const randomHex = (bytes: number): string => {
  if (idPoolOffset + bytes > ID_POOL_SIZE) {
    randomFillSync(idPool)
    idPoolOffset = 0
  }
  const start = idPoolOffset
  const end = start + bytes
  idPoolOffset = end
  let zero = true
  for (let i = start; i < end; i++) {
    if (idPool[i] !== 0) {
      zero = false
      break
    }
  }
  if (zero) idPool[end - 1] = 1
  return idPool.toString("hex", start, end)
}

const randomIds: IdGenerator = {
  generateTraceId: () => randomHex(16),
  generateSpanId: () => randomHex(8)
}

// ---- effect ↔ OpenTelemetry ----------------------------------------------------

const kinds: Record<Tracer.SpanKind, SpanKind> = {
  internal: SpanKind.INTERNAL,
  server: SpanKind.SERVER,
  client: SpanKind.CLIENT,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER
}

const BILLION = BigInt(1_000_000_000)

const nanosToHrTime = (nanos: bigint): [number, number] => [Number(nanos / BILLION), Number(nanos % BILLION)]

/** `@opentelemetry/core`'s suppression key (`createContextKey` is `Symbol.for`, so it is the same symbol). */
const SUPPRESS_TRACING = createContextKey("OpenTelemetry SDK Context Key SUPPRESS_TRACING")

/** The trace flag or state `tag` from the span's own context, else from its parent's (as `@effect/opentelemetry` reads them). */
const traceTag = <I, S>(tag: Context.Tag<I, S>, span: Tracer.AnySpan, context: Context.Context<never> | undefined) => {
  const own = context === undefined ? Option.none() : Context.getOption(context, tag)
  return Option.isSome(own) ? own.value : Option.getOrUndefined(Context.getOption(span.context, tag))
}

/**
 * The OpenTelemetry span context of an effect span: ours carry theirs; for
 * another (an `ExternalSpan`, say) its ids, with the trace flags and state
 * from `@effect/opentelemetry`'s context tags if set. Without a flags tag
 * the span's own `sampled` decides (`@effect/opentelemetry` assumes sampled).
 */
const spanContextOf = (span: Tracer.AnySpan, context?: Context.Context<never>): SpanContext => {
  if (span instanceof EffectSpan) return span.otelContext
  const traceFlags = traceTag(OtelTracer.OtelTraceFlags, span, context)
  return {
    traceId: span.traceId,
    spanId: span.spanId,
    isRemote: span._tag === "ExternalSpan",
    traceFlags: traceFlags ?? (span.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE),
    traceState: traceTag(OtelTracer.OtelTraceState, span, context)
  } as SpanContext
}

const linkOf = (link: Tracer.SpanLink): Link => {
  const attributes: Attributes = {}
  for (const key of Object.keys(link.attributes)) attributes[key] = attributeValue(link.attributes[key])
  return { context: spanContextOf(link.span), attributes }
}

const OtelSpanTypeId = Symbol.for("@effect/opentelemetry/Tracer/OtelSpan")

/**
 * The OpenTelemetry context the tracer's `context` made last: `cachedSpan`
 * made the active span over `cachedBase`. Effect calls `context` around
 * every instruction, so it is made once per span and base. Module-wide, not
 * per tracer: it depends on the span alone, whichever tracer made it, and
 * so the span's `end` can drop it. An ended span is never cached: else the
 * last span a process ran (its recorded span, parents, effect context and
 * the services in it) would stay reachable until the next span, forever in
 * an idle process.
 */
let cachedSpan: EffectSpan | undefined
let cachedBase: OtelContext | undefined
let cachedContext: OtelContext | undefined

const dropCachedContext = (): void => {
  cachedSpan = undefined
  cachedBase = undefined
  cachedContext = undefined
}

/**
 * Effect's side of a span. Its attributes live once, on the recorded span
 * (`attributes` is a `Map` made when read, holding the values as exported);
 * a span the sampler did not record keeps none.
 */
class EffectSpan implements Tracer.Span {
  declare readonly _tag: "Span"
  status: Tracer.SpanStatus

  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    public links: ReadonlyArray<Tracer.SpanLink>,
    readonly kind: Tracer.SpanKind,
    startTime: bigint,
    /** The span context OpenTelemetry sees: ids, sampled flag, trace state. */
    readonly otelContext: SpanContext,
    /** The span the processors get; `undefined` when the sampler said not to record. */
    readonly record: RecordedSpan | undefined
  ) {
    this.status = { _tag: "Started", startTime }
  }

  get spanId(): string {
    return this.otelContext.spanId
  }

  get traceId(): string {
    return this.otelContext.traceId
  }

  get sampled(): boolean {
    return (this.otelContext.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED
  }

  get attributes(): ReadonlyMap<string, unknown> {
    return new Map(this.record === undefined ? [] : Object.entries(this.record.attributes))
  }

  /** The OpenTelemetry API span: the recorded one, or a non-recording one carrying the ids. */
  get span(): OtelSpan {
    return this.record ?? trace.wrapSpanContext(this.otelContext)
  }

  attribute(key: string, value: unknown): void {
    this.record?.setEffectAttribute(key, value)
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    this.record?.addEffectEvent(name, attributes, nanosToHrTime(startTime))
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    // The array came from effect or the caller: copied, not pushed to.
    this.links = [...this.links, ...links]
    this.record?.addLinks(links.map(linkOf))
  }

  /**
   * Ends the span as `@effect/opentelemetry`'s `OtelSpan.end` does: OK on
   * success; OK with `span.label` and `status.interrupted` when only
   * interrupted; otherwise the first failure recorded as an exception (its
   * stack the whole pretty cause) and ERROR with its message. A second end
   * is refused as the SDK refuses it, with its `diag` error.
   */
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    const record = this.record
    if (this.status._tag === "Ended") {
      record?.end()
      return
    }
    this.status = { _tag: "Ended", endTime, exit, startTime: this.status.startTime }
    if (cachedSpan === this) dropCachedContext()
    if (record === undefined) return
    const time = nanosToHrTime(endTime)
    if (exit._tag === "Success") {
      record.setStatus({ code: SpanStatusCode.OK })
    } else if (Cause.isInterruptedOnly(exit.cause)) {
      // `OtelSpan` passes the pretty cause as the message; the SDK keeps a message only on ERROR.
      record.setStatus({ code: SpanStatusCode.OK })
      record.setAttribute("span.label", "⚠︎ Interrupted")
      record.setAttribute("status.interrupted", true)
    } else {
      const firstError = Cause.prettyErrors(exit.cause)[0]
      if (firstError !== undefined) {
        firstError.stack = Cause.pretty(exit.cause, { renderErrorCause: true })
        record.recordException(firstError, time)
        record.setStatus({ code: SpanStatusCode.ERROR, message: firstError.message })
      } else {
        record.setStatus({ code: SpanStatusCode.OK })
      }
    }
    record.end(time)
  }
}
Object.defineProperty(EffectSpan.prototype, "_tag", { value: "Span" })
// `OtelTracer.currentOtelSpan` returns `span.span` of spans marked so: the SDK span, as with `OtelSpan`.
Object.defineProperty(EffectSpan.prototype, OtelSpanTypeId, { value: OtelSpanTypeId })

/** The span to make OpenTelemetry's active one for `span`, skipping spans marked `DisablePropagation` (as effect does). */
const propagated = (span: Tracer.AnySpan | undefined): Tracer.AnySpan | undefined => {
  let current = span
  while (current !== undefined && Context.get(current.context, Tracer.DisablePropagation)) {
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return current
}

// ---- the tracer ---------------------------------------------------------------

/**
 * The SDK's `onStart` of these processors does nothing: the batch, simple
 * and no-op processors. Such processors are not called at start, and when
 * no processor is left there is no parent context to build.
 *
 * @internal
 */
export const ignoresStart = (processor: SpanProcessor): boolean =>
  processor.onStart === BatchSpanProcessor.prototype.onStart ||
  processor.onStart === SimpleSpanProcessor.prototype.onStart ||
  processor.onStart === NoopSpanProcessor.prototype.onStart

/** The SDK tracer's settings as its provider resolved them (from the options and the `OTEL_*` variables). */
interface SdkTracerSettings {
  readonly _sampler?: Sampler
  readonly _spanLimits?: SpanLimits
  readonly instrumentationScope?: Shared["scope"]
}

/** `ParentBased(AlwaysOn)`, the SDK's default sampler, as it describes itself. */
const DEFAULT_SAMPLER = "ParentBased{root=AlwaysOnSampler, remoteParentSampled=AlwaysOnSampler, " +
  "remoteParentNotSampled=AlwaysOffSampler, localParentSampled=AlwaysOnSampler, localParentNotSampled=AlwaysOffSampler}"

/**
 * A parent-based sampler that drops every child of an unsampled parent,
 * remote or local, as it describes itself (`ParentBasedSampler.toString`):
 * the SDK's default and `OTEL_TRACES_SAMPLER=parentbased_*`.
 */
const PARENT_BASED_DROPPING = new RegExp(
  "^ParentBased\\{root=.*, remoteParentSampled=.*, remoteParentNotSampled=AlwaysOffSampler, " +
    "localParentSampled=.*, localParentNotSampled=AlwaysOffSampler\\}$",
  "s"
)

/**
 * Whether `sampler` (the one the provider resolved, from the options or
 * `OTEL_TRACES_SAMPLER`) drops every child of an unsampled parent: a
 * parent-based one whose not-sampled branches are `AlwaysOffSampler`, or
 * `AlwaysOffSampler` itself. A sampler that records such children (one
 * deciding `RECORD`, `AlwaysOnSampler`, a ratio sampler without
 * `ParentBased`) or one that does not say what it does is not.
 *
 * @internal
 */
export const samplerDropsUnsampledChildren = (sampler: Sampler): boolean => {
  const description = String(sampler)
  return description === "AlwaysOffSampler" || PARENT_BASED_DROPPING.test(description)
}

/** The `TracerConfig` options the lean tracer honours, or that are the provider's business (`forceFlushTimeoutMillis`). */
const HONOURED = new Set(["sampler", "idGenerator", "spanLimits", "generalLimits", "forceFlushTimeoutMillis"])

/** @internal */
export interface Options {
  /** Every processor the provider was given, in order. */
  readonly processors: ReadonlyArray<SpanProcessor>
  /** Those of {@link processors} to call at span start (the others {@link ignoresStart}). */
  readonly startProcessors: ReadonlyArray<SpanProcessor>
  readonly tracerConfig: Omit<TracerConfig, "resource" | "spanProcessors"> | undefined
}

/**
 * The lean tracer. Its sampler and span limits are those the provider
 * resolved for the SDK tracer `@effect/opentelemetry`'s `layerTracer` made
 * (so the `OTEL_*` variables count as they do for the SDK), its
 * instrumentation scope that tracer's, its resource the provider's.
 *
 * Falls back to `OtelTracer.make` when `tracerConfig` has an option the
 * lean path cannot honour exactly (`meterProvider`: the SDK tracer's own
 * span metrics; any option added after sdk-trace 2.12), or when the SDK
 * tracer does not keep its settings where 2.x keeps them.
 *
 * Either tracer is marked (`tracerSampling.ts`) when its sampler drops
 * every child of an unsampled parent ({@link samplerDropsUnsampledChildren}),
 * so that the agent makes no spans of its own there.
 *
 * @internal
 */
export const make = (
  options: Options
): Effect.Effect<Tracer.Tracer, never, OtelTracer.OtelTracer | OtelResource.Resource> =>
  Effect.flatMap(OtelTracer.OtelTracer, (sdkTracer): Effect.Effect<Tracer.Tracer, never, OtelTracer.OtelTracer | OtelResource.Resource> => {
    const settings = sdkTracer as unknown as SdkTracerSettings
    const config: Record<string, unknown> = options.tracerConfig ?? {}
    const unhonoured = Object.keys(config).some((key) => config[key] !== undefined && !HONOURED.has(key))
    const sampler = settings._sampler
    const limits = settings._spanLimits
    const scope = settings.instrumentationScope
    const marked = (tracer: Tracer.Tracer): Tracer.Tracer =>
      sampler !== undefined && samplerDropsUnsampledChildren(sampler) ?
        markDropsUnsampledChildren(tracer) :
        tracer
    if (unhonoured || typeof sampler?.shouldSample !== "function" || limits === undefined || scope === undefined) {
      return Effect.map(OtelTracer.make, marked)
    }
    return Effect.map(OtelResource.Resource, (resource) =>
      marked(makeLean(
        { resource, scope, limits, processors: options.processors },
        options.startProcessors,
        // Without a sampler of the user's nor from OTEL_TRACES_SAMPLER, parent-based sampling needs no sampler call.
        options.tracerConfig?.sampler === undefined && String(sampler) === DEFAULT_SAMPLER ? undefined : sampler,
        options.tracerConfig?.idGenerator
      )))
  })

const makeLean = (
  shared: Shared,
  startProcessors: ReadonlyArray<SpanProcessor>,
  sampler: Sampler | undefined,
  idGenerator: IdGenerator | undefined
): Tracer.Tracer => {
  const ids = idGenerator ?? randomIds
  /** Whether `parent` (the span context of `span`) is a valid parent: the SDK starts a new trace under an invalid one. */
  const isValidParent = (span: Tracer.AnySpan | undefined, parent: SpanContext): boolean =>
    idGenerator === undefined && span instanceof EffectSpan ?
      parent !== INVALID_SPAN_CONTEXT :
      isSpanContextValid(parent)

  /**
   * The context the SDK would give the sampler and `onStart`: the active
   * one, holding the parent span (none for a root).
   */
  const startContext = (
    active: OtelContext,
    parent: Option.Option<Tracer.AnySpan>,
    parentContext: SpanContext | undefined,
    parentIsActive: boolean
  ): OtelContext => {
    if (parentIsActive) return active
    if (parent._tag === "Some") {
      return parent.value instanceof EffectSpan ?
        trace.setSpan(active, parent.value.span) :
        trace.setSpanContext(active, parentContext!)
    }
    return trace.getSpan(active) === undefined ? active : trace.deleteSpan(active)
  }

  return Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const active = otelContext.active()
      let effectParent = parent
      let parentContext: SpanContext | undefined
      let parentIsActive = false
      if (parent._tag === "Some") {
        parentContext = spanContextOf(parent.value, context)
      } else if (options?.root !== true) {
        // No effect parent: OpenTelemetry's active span is one, as with `@effect/opentelemetry`.
        const activeSpan = trace.getSpan(active)
        if (activeSpan !== undefined) {
          parentContext = activeSpan.spanContext()
          parentIsActive = true
          effectParent = Option.some(Tracer.externalSpan({
            spanId: parentContext.spanId,
            traceId: parentContext.traceId,
            sampled: (parentContext.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED,
            context
          }))
        }
      }
      if (active.getValue(SUPPRESS_TRACING) === true) {
        diag.debug("Instrumentation suppressed, returning Noop Span")
        return new EffectSpan(name, effectParent, context, links, kind, startTime, INVALID_SPAN_CONTEXT, undefined)
      }
      const parentSpan = parent._tag === "Some" ? parent.value : undefined
      const validParent = parentContext !== undefined && isValidParent(parentSpan, parentContext) ?
        parentContext :
        undefined
      // In the SDK's order: the span id, then a trace id for a root.
      const spanId = ids.generateSpanId()
      const traceId = validParent !== undefined ? validParent.traceId : ids.generateTraceId()
      let traceState = validParent?.traceState
      const otelKind = kinds[kind] ?? SpanKind.INTERNAL
      let decision: SamplingDecision
      let otelContextAtStart: OtelContext | undefined
      let otelLinks: Array<Link> | undefined
      let initialAttributes: Attributes | undefined
      if (sampler === undefined) {
        decision = validParent === undefined || (validParent.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED ?
          SamplingDecision.RECORD_AND_SAMPLED :
          SamplingDecision.NOT_RECORD
      } else {
        otelContextAtStart = startContext(active, parent, parentContext, parentIsActive)
        otelLinks = links.map((link) => {
          const otelLink = linkOf(link)
          return { context: otelLink.context, attributes: sanitizeAttributes(otelLink.attributes) }
        })
        const attributes: Attributes = {}
        const result = sampler.shouldSample(otelContextAtStart, traceId, name, otelKind, attributes, otelLinks)
        decision = result.decision
        traceState = result.traceState ?? traceState
        // The sampler may have changed `attributes`: sanitised again after merging, as the SDK does.
        initialAttributes = sanitizeAttributes(Object.assign(attributes, result.attributes))
      }
      const spanContext: SpanContext = {
        traceId,
        spanId,
        traceFlags: decision === SamplingDecision.RECORD_AND_SAMPLED ? TraceFlags.SAMPLED : TraceFlags.NONE,
        traceState
      } as SpanContext
      if (decision === SamplingDecision.NOT_RECORD) {
        diag.debug("Recording is off, propagating context in a non-recording span")
        return new EffectSpan(name, effectParent, context, links, kind, startTime, spanContext, undefined)
      }
      const record = new RecordedSpan(shared, name, otelKind, spanContext, validParent, nanosToHrTime(startTime))
      if (links.length > 0) record.addLinks(otelLinks ?? links.map(linkOf))
      if (initialAttributes !== undefined) record.setAttributes(initialAttributes)
      if (startProcessors.length > 0) {
        const at = otelContextAtStart ?? startContext(active, parent, parentContext, parentIsActive)
        for (let i = 0; i < startProcessors.length; i++) startProcessors[i]!.onStart(record, at)
      }
      return new EffectSpan(name, effectParent, context, links, kind, startTime, spanContext, record)
    },
    context: (execution, fiber) => {
      const span = propagated(fiber.currentSpan)
      if (span === undefined) return execution()
      const active = otelContext.active()
      if (!(span instanceof EffectSpan)) {
        return otelContext.with(trace.setSpanContext(active, spanContextOf(span)), execution)
      }
      // Effect calls this around every instruction: the context for the same span over the same base is made once.
      if (span === cachedSpan && active === cachedBase) return otelContext.with(cachedContext!, execution)
      // Already the active span (the fiber resumed in a callback that kept it): no new context.
      if (trace.getSpanContext(active) === span.otelContext) return execution()
      const made = trace.setSpan(active, span.span)
      // A fiber may outlive its span (forked under it): an ended span is not cached, as `end` would not drop it.
      if (span.status._tag !== "Ended") {
        cachedSpan = span
        cachedBase = active
        cachedContext = made
      }
      return otelContext.with(made, execution)
    }
  })
}
