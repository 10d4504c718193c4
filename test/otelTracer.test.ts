import { assert, describe, it } from "@effect/vitest"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import {
  context as otelContext,
  createContextKey,
  createTraceState,
  diag,
  DiagLogLevel,
  type HrTime,
  type Link,
  ROOT_CONTEXT,
  type Span as OtelSpan,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags
} from "@opentelemetry/api"
import { type CollectionResult, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics"
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  type IdGenerator,
  InMemorySpanExporter,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
  SimpleSpanProcessor,
  type Span as SdkSpan,
  type SpanLimits,
  type SpanProcessor,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Exit, Layer, Option, Runtime, TestClock, Tracer } from "effect"
import { Secrets, Telemetry } from "jeevesagent"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { dropsUnsampledChildren } from "../src/internal/tracerSampling.js"
import { registeredContextManager } from "./support/otelContextManager.js"

// ---- helpers --------------------------------------------------------------------

/** `Telemetry.layerOtel` exporting to memory, with `processors` after the exporting one. */
const otel = (options?: Partial<Telemetry.OtelOptions>, ...processors: ReadonlyArray<SpanProcessor>) => {
  const spans = new InMemorySpanExporter()
  const layer = Telemetry.layerOtel({
    serviceName: "otel-tracer-test",
    spanProcessor: [new SimpleSpanProcessor(spans), ...processors],
    ...options
  })
  return { spans, layer }
}

const named = (spans: InMemorySpanExporter, name: string): ReadableSpan => {
  const found = spans.getFinishedSpans().filter((span) => span.name === name)
  assert.strictEqual(found.length, 1, `one ${name} span`)
  return found[0]!
}

const TRACE_ID = /^[0-9a-f]{32}$/
const SPAN_ID = /^[0-9a-f]{16}$/
const assertIds = (context: SpanContext) => {
  assert.match(context.traceId, TRACE_ID)
  assert.match(context.spanId, SPAN_ID)
  assert.notMatch(context.traceId, /^0+$/)
  assert.notMatch(context.spanId, /^0+$/)
}

/** A processor that records what it is called with. */
const watching = () => {
  const calls: Array<string> = []
  const starts: Array<{ readonly span: OtelSpan & ReadableSpan; readonly parent: SpanContext | undefined }> = []
  const ends: Array<ReadableSpan> = []
  const processor: SpanProcessor = {
    onStart: (span, parentContext) => {
      calls.push(`start ${span.name}`)
      starts.push({ span, parent: trace.getSpanContext(parentContext) })
    },
    onEnd: (span) => {
      calls.push(`end ${span.name}`)
      ends.push(span)
    },
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve()
  }
  return { processor, calls, starts, ends }
}

/** An async-hooks context manager, registered for the scope (as an instrumented app has one). */
const contextManager = registeredContextManager

/** OpenTelemetry's `diag` messages (their text) while `effect` runs. */
const diagnosed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const messages: Array<string> = []
      // Not the API's own notes on registering the logger.
      const log = (message: string) => void (message.startsWith("@opentelemetry/api:") || messages.push(message))
      diag.setLogger(
        { error: log, warn: log, info: log, debug: log, verbose: log },
        { logLevel: DiagLogLevel.ALL, suppressOverrideMessage: true }
      )
      return messages
    }),
    (messages) => Effect.map(effect, (value) => [value, messages] as const),
    () => Effect.sync(() => diag.disable())
  )

/** Sets environment variables for the scope. */
const withEnv = (values: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const before = Object.fromEntries(Object.keys(values).map((key) => [key, process.env[key]]))
      Object.assign(process.env, values)
      return before
    }),
    (before) =>
      Effect.sync(() => {
        for (const [key, value] of Object.entries(before)) {
          if (value === undefined) delete process.env[key]
          else process.env[key] = value
        }
      })
  )

const EXTERNAL_TRACE = "0af7651916cd43dd8448eb211c80319c"
const EXTERNAL_SPAN = "b7ad6b7169203331"

// ---- parents and ids ------------------------------------------------------------

describe("parents", () => {
  it.effect("a child span: the parent's trace and the parent span as its parent; each root a new trace", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const [outer, inner] = yield* Effect.currentSpan.pipe(
        Effect.zip(Effect.currentSpan.pipe(Effect.withSpan("inner"))),
        Effect.withSpan("outer")
      )
      yield* Effect.withSpan(Effect.void, "other")
      const [outerSpan, innerSpan, otherSpan] = ["outer", "inner", "other"].map((name) => named(spans, name))
      for (const span of [outerSpan!, innerSpan!, otherSpan!]) assertIds(span.spanContext())
      assert.isUndefined(outerSpan!.parentSpanContext)
      assert.strictEqual(innerSpan!.parentSpanContext?.spanId, outerSpan!.spanContext().spanId)
      assert.strictEqual(innerSpan!.spanContext().traceId, outerSpan!.spanContext().traceId)
      assert.notStrictEqual(otherSpan!.spanContext().traceId, outerSpan!.spanContext().traceId)
      // Effect's side of the same spans.
      assert.strictEqual(inner.spanId, innerSpan!.spanContext().spanId)
      assert.strictEqual(inner.traceId, innerSpan!.spanContext().traceId)
      assert.isTrue(inner.sampled)
      assert.isTrue(Option.isSome(inner.parent) && inner.parent.value === outer)
      assert.strictEqual(innerSpan!.kind, SpanKind.INTERNAL)
      assert.strictEqual(innerSpan!.instrumentationScope.name, "otel-tracer-test", "the scope @effect/opentelemetry's layerTracer uses")
      assert.strictEqual(innerSpan!.resource.attributes["service.name"], "otel-tracer-test")
    }).pipe(Effect.provide(layer))
  })

  it.effect("an external parent: its ids and sampled flag, and the trace state and flags of @effect/opentelemetry's tags", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      yield* Effect.withSpan(Effect.void, "under-external").pipe(
        Effect.withParentSpan(Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN }))
      )
      const underExternal = named(spans, "under-external")
      assert.strictEqual(underExternal.spanContext().traceId, EXTERNAL_TRACE)
      assert.deepInclude(underExternal.parentSpanContext, {
        traceId: EXTERNAL_TRACE,
        spanId: EXTERNAL_SPAN,
        isRemote: true,
        traceFlags: TraceFlags.SAMPLED
      })

      yield* Effect.withSpan(Effect.void, "with-state").pipe(
        OtelTracer.withSpanContext({
          traceId: EXTERNAL_TRACE,
          spanId: EXTERNAL_SPAN,
          traceFlags: TraceFlags.SAMPLED,
          traceState: createTraceState("vendor=value")
        })
      )
      const withState = named(spans, "with-state")
      assert.strictEqual(withState.spanContext().traceState?.serialize(), "vendor=value")
      assert.strictEqual(withState.parentSpanContext?.traceState?.serialize(), "vendor=value")

      // Unsampled, by the flag or by the flags tag: children are not recorded (parent-based sampling) but keep the trace.
      const unsampled = yield* Effect.currentSpan.pipe(
        Effect.withSpan("under-unsampled"),
        Effect.withParentSpan(Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, sampled: false }))
      )
      const flaggedOff = yield* Effect.currentSpan.pipe(
        Effect.withSpan("under-flags-none"),
        OtelTracer.withSpanContext({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, traceFlags: TraceFlags.NONE })
      )
      for (const span of [unsampled, flaggedOff]) {
        assert.isFalse(span.sampled)
        assert.strictEqual(span.traceId, EXTERNAL_TRACE)
        assert.match(span.spanId, SPAN_ID)
      }
      assert.deepStrictEqual(spans.getFinishedSpans().map((span) => span.name), ["under-external", "with-state"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("without an effect parent OpenTelemetry's active span is the parent; root: true starts a new trace", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      yield* contextManager
      const runtime = yield* Effect.runtime<never>()
      const parent = new BasicTracerProvider().getTracer("app").startSpan("http.request")
      const underParent = <A, E>(effect: Effect.Effect<A, E>) =>
        Effect.promise(() => otelContext.with(trace.setSpan(ROOT_CONTEXT, parent), () => Runtime.runPromise(runtime)(effect)))
      const child = yield* underParent(Effect.currentSpan.pipe(Effect.withSpan("effect.child")))
      const rooted = yield* underParent(Effect.currentSpan.pipe(Effect.withSpan("effect.root", { root: true })))

      const childSpan = named(spans, "effect.child")
      assert.strictEqual(childSpan.parentSpanContext?.spanId, parent.spanContext().spanId)
      assert.strictEqual(childSpan.spanContext().traceId, parent.spanContext().traceId)
      assert.isTrue(Option.isSome(child.parent))
      const external = Option.getOrThrow(child.parent)
      assert.deepInclude(external, { _tag: "ExternalSpan", spanId: parent.spanContext().spanId, sampled: true })

      const rootSpan = named(spans, "effect.root")
      assert.isUndefined(rootSpan.parentSpanContext)
      assert.notStrictEqual(rootSpan.spanContext().traceId, parent.spanContext().traceId)
      assert.isTrue(Option.isNone(rooted.parent))
    }).pipe(Effect.scoped, Effect.provide(layer))
  })

  it.effect("a custom idGenerator makes every id, the span id before a root's trace id", () => {
    const made: Array<string> = []
    let next = 0
    const idGenerator: IdGenerator = {
      generateTraceId: () => {
        made.push("trace")
        return (++next).toString(16).padStart(32, "0")
      },
      generateSpanId: () => {
        made.push("span")
        return (++next).toString(16).padStart(16, "0")
      }
    }
    const { layer, spans } = otel({ tracerConfig: { idGenerator } })
    return Effect.gen(function*() {
      yield* Effect.withSpan(Effect.withSpan(Effect.void, "inner"), "outer")
      assert.deepStrictEqual(made, ["span", "trace", "span"])
      assert.deepInclude(named(spans, "outer").spanContext(), { spanId: "0000000000000001", traceId: "2".padStart(32, "0") })
      assert.deepInclude(named(spans, "inner").spanContext(), { spanId: "0000000000000003", traceId: "2".padStart(32, "0") })
      assert.strictEqual(named(spans, "inner").parentSpanContext?.spanId, "0000000000000001")
    }).pipe(Effect.provide(layer))
  })

  it.effect("under suppressed tracing (an exporter's own calls) a span is not recorded and has invalid ids, as the SDK's", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      yield* contextManager
      const runtime = yield* Effect.runtime<never>()
      const suppressed = ROOT_CONTEXT.setValue(createContextKey("OpenTelemetry SDK Context Key SUPPRESS_TRACING"), true)
      const span = yield* Effect.promise(() =>
        otelContext.with(suppressed, () => Runtime.runPromise(runtime)(Effect.currentSpan.pipe(Effect.withSpan("suppressed"))))
      )
      assert.isFalse(span.sampled)
      assert.strictEqual(span.spanId, "0000000000000000")
      assert.strictEqual(spans.getFinishedSpans().length, 0)
    }).pipe(Effect.scoped, Effect.provide(layer))
  })
})

// ---- sampling -------------------------------------------------------------------

describe("sampling", () => {
  it.effect("a sampler's decisions: not recorded (ids still propagate), recorded only, recorded and sampled with its attributes and trace state", () => {
    const asked: Array<{ name: string; traceId: string; parent: SpanContext | undefined; kind: SpanKind; links: Array<Link> }> = []
    const sampler: Sampler = {
      shouldSample: (context, traceId, name, kind, _attributes, links) => {
        asked.push({ name, traceId, parent: trace.getSpanContext(context), kind, links })
        if (name.startsWith("dropped")) return { decision: SamplingDecision.NOT_RECORD }
        if (name.startsWith("recorded")) return { decision: SamplingDecision.RECORD }
        return {
          decision: SamplingDecision.RECORD_AND_SAMPLED,
          attributes: { "sampler.rule": "keep" },
          traceState: createTraceState("vendor=kept")
        }
      },
      toString: () => "by-name"
    }
    const watcher = watching()
    const { layer, spans } = otel({ tracerConfig: { sampler } }, watcher.processor)
    const external = Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN })
    return Effect.gen(function*() {
      const [dropped, keptChild] = yield* Effect.currentSpan.pipe(
        Effect.zip(Effect.currentSpan.pipe(Effect.withSpan("kept.child"))),
        Effect.withSpan("dropped")
      )
      const recorded = yield* Effect.currentSpan.pipe(Effect.withSpan("recorded"))
      yield* Effect.withSpan(Effect.annotateCurrentSpan("own", 1), "kept.client", {
        kind: "client",
        links: [{ _tag: "SpanLink", span: external, attributes: { why: "retry" } }]
      })

      // Not recorded: no processor call, valid ids, unsampled; its child is in its trace, under it.
      assert.isFalse(dropped.sampled)
      assertIds({ traceId: dropped.traceId, spanId: dropped.spanId, traceFlags: 0 })
      assert.notInclude(watcher.calls, "start dropped")
      const child = named(spans, "kept.child")
      assert.strictEqual(child.parentSpanContext?.spanId, dropped.spanId)
      assert.strictEqual(child.spanContext().traceId, dropped.traceId)
      assert.strictEqual(keptChild.traceId, dropped.traceId)
      const askedChild = asked.find((call) => call.name === "kept.child")!
      assert.strictEqual(askedChild.traceId, dropped.traceId)
      assert.deepInclude(askedChild.parent, { spanId: dropped.spanId, traceFlags: TraceFlags.NONE })

      // Recorded only: the processors see it, unsampled, so the exporting processor drops it.
      assert.isFalse(recorded.sampled)
      const recordedSpan = watcher.ends.find((span) => span.name === "recorded")!
      assert.strictEqual(recordedSpan.spanContext().traceFlags, TraceFlags.NONE)
      assert.notInclude(spans.getFinishedSpans().map((span) => span.name), "recorded")

      // Recorded and sampled: the sampler's attributes and trace state; what it was asked.
      const client = named(spans, "kept.client")
      assert.deepStrictEqual(client.attributes, { "sampler.rule": "keep", own: 1 })
      assert.strictEqual(client.spanContext().traceState?.serialize(), "vendor=kept")
      assert.strictEqual(client.kind, SpanKind.CLIENT)
      const askedClient = asked.find((call) => call.name === "kept.client")!
      assert.strictEqual(askedClient.kind, SpanKind.CLIENT)
      assert.isUndefined(askedClient.parent)
      assert.deepStrictEqual(askedClient.links.map((link) => [link.context.spanId, link.attributes]), [[EXTERNAL_SPAN, { why: "retry" }]])
      assert.deepStrictEqual(client.links.map((link) => [link.context.spanId, link.attributes]), [[EXTERNAL_SPAN, { why: "retry" }]])
      assert.deepStrictEqual(asked.map((call) => call.name), ["dropped", "kept.child", "recorded", "kept.client"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("without a sampler, parent-based: roots and children of sampled parents recorded, none under an unsampled one", () => {
    const { layer, spans } = otel()
    const parent = (sampled: boolean) => Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, sampled })
    return Effect.gen(function*() {
      yield* Effect.withSpan(Effect.withSpan(Effect.void, "unsampled.grandchild"), "unsampled.child").pipe(
        Effect.withParentSpan(parent(false))
      )
      yield* Effect.withSpan(Effect.withSpan(Effect.void, "sampled.grandchild"), "sampled.child").pipe(
        Effect.withParentSpan(parent(true))
      )
      yield* Effect.withSpan(Effect.void, "root")
      assert.deepStrictEqual(spans.getFinishedSpans().map((span) => span.name).sort(), [
        "root",
        "sampled.child",
        "sampled.grandchild"
      ])
    }).pipe(Effect.provide(layer))
  })

  it.effect("the OTEL_* variables count as for the SDK: span limits, and parent-based sampling when named", () =>
    Effect.gen(function*() {
      yield* withEnv({
        OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: "3",
        OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: "1",
        OTEL_TRACES_SAMPLER: "parentbased_always_on"
      })
      const { layer, spans } = otel()
      const span = yield* Effect.withSpan(Effect.void, "limited", { attributes: { first: "abcdef", second: "dropped" } }).pipe(
        Effect.map(() => named(spans, "limited")),
        Effect.provide(layer)
      )
      assert.deepStrictEqual(span.attributes, { first: "abc" })
      assert.strictEqual(span.droppedAttributesCount, 1)
    }).pipe(Effect.scoped))

  it.effect("the tracer is marked as dropping the children of unsampled parents only when its sampler does", () => {
    const recordOnly: Sampler = { shouldSample: () => ({ decision: SamplingDecision.RECORD }), toString: () => "record-only" }
    /** Whether the tracer `Telemetry.layerOtel` installs (with `options`, under `env`) is marked. */
    const marked = (options: Partial<Telemetry.OtelOptions>, env: Record<string, string> = {}) =>
      Effect.gen(function*() {
        yield* withEnv(env)
        return yield* Effect.map(Effect.tracer, dropsUnsampledChildren).pipe(Effect.provide(otel(options).layer))
      }).pipe(Effect.scoped)
    const cases: ReadonlyArray<readonly [string, Effect.Effect<boolean>, boolean]> = [
      ["the default", marked({}), true],
      ["OTEL_TRACES_SAMPLER=parentbased_traceidratio", marked({}, { OTEL_TRACES_SAMPLER: "parentbased_traceidratio" }), true],
      ["ParentBasedSampler over a ratio", marked({ tracerConfig: { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(0.5) }) } }), true],
      ["AlwaysOffSampler", marked({ tracerConfig: { sampler: new AlwaysOffSampler() } }), true],
      ["the fallback tracer, parent-based", marked({ tracerConfig: { meterProvider: new MeterProvider() } }), true],
      ["OTEL_TRACES_SAMPLER=always_on", marked({}, { OTEL_TRACES_SAMPLER: "always_on" }), false],
      ["AlwaysOnSampler", marked({ tracerConfig: { sampler: new AlwaysOnSampler() } }), false],
      ["TraceIdRatioBasedSampler as root sampler", marked({ tracerConfig: { sampler: new TraceIdRatioBasedSampler(0.5) } }), false],
      ["a record-only sampler", marked({ tracerConfig: { sampler: recordOnly } }), false],
      [
        "ParentBasedSampler recording under unsampled local parents",
        marked({ tracerConfig: { sampler: new ParentBasedSampler({ root: new AlwaysOnSampler(), localParentNotSampled: recordOnly }) } }),
        false
      ],
      [
        "the fallback tracer, always on",
        marked({ tracerConfig: { sampler: new AlwaysOnSampler(), meterProvider: new MeterProvider() } }),
        false
      ]
    ]
    return Effect.gen(function*() {
      const native = yield* Effect.tracer
      for (const [label, isMarked, expected] of cases) assert.strictEqual(yield* isMarked, expected, label)
      // Secrets.redactingTracer hands every span to the tracer it wraps: it keeps the mark, or its absence.
      const tracer = yield* Effect.tracer.pipe(Effect.provide(otel().layer))
      assert.isTrue(dropsUnsampledChildren(Secrets.redactingTracer(tracer, (text) => text)))
      assert.isFalse(dropsUnsampledChildren(native))
      assert.isFalse(dropsUnsampledChildren(Secrets.redactingTracer(native, (text) => text)))
    })
  })

  it.effect("the SDK's diag debug messages for a span not recorded and for one under suppressed tracing", () => {
    const off: Sampler = { shouldSample: () => ({ decision: SamplingDecision.NOT_RECORD }), toString: () => "off" }
    const suppressed = ROOT_CONTEXT.setValue(createContextKey("OpenTelemetry SDK Context Key SUPPRESS_TRACING"), true)
    /** The diag messages of a span the sampler drops, a child of an unsampled parent, and a suppressed span. */
    const messagesOf = (layer: Layer.Layer<never>) =>
      Effect.gen(function*() {
        const runtime = yield* Effect.runtime<never>()
        const [, messages] = yield* diagnosed(Effect.gen(function*() {
          yield* Effect.withSpan(Effect.void, "dropped")
          yield* Effect.promise(() =>
            otelContext.with(suppressed, () => Runtime.runPromise(runtime)(Effect.withSpan(Effect.void, "suppressed")))
          )
        }))
        return messages
      }).pipe(Effect.provide(layer))
    const sdkLayer = NodeSdk.layer(() => ({
      resource: { serviceName: "otel-tracer-test" },
      spanProcessor: new SimpleSpanProcessor(new InMemorySpanExporter()),
      tracerConfig: { sampler: off }
    })) as Layer.Layer<never>
    return Effect.gen(function*() {
      yield* contextManager
      const sdk = yield* messagesOf(sdkLayer)
      const lean = yield* messagesOf(otel({ tracerConfig: { sampler: off } }).layer as Layer.Layer<never>)
      assert.deepStrictEqual(sdk, [
        "Recording is off, propagating context in a non-recording span",
        "Instrumentation suppressed, returning Noop Span"
      ])
      assert.deepStrictEqual(lean, sdk)
      // Without a sampler: a child of an unsampled parent is not recorded either.
      const [, messages] = yield* diagnosed(Effect.withSpan(Effect.void, "child").pipe(
        Effect.withParentSpan(Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, sampled: false })),
        Effect.provide(otel().layer)
      ))
      assert.deepStrictEqual(messages, ["Recording is off, propagating context in a non-recording span"])
    }).pipe(Effect.scoped)
  })

  it.effect("the OTEL_* variables count as for the SDK: OTEL_TRACES_SAMPLER=always_off", () =>
    Effect.gen(function*() {
      yield* withEnv({ OTEL_TRACES_SAMPLER: "always_off" })
      const { layer, spans } = otel()
      const [span, exported] = yield* Effect.currentSpan.pipe(
        Effect.withSpan("off"),
        Effect.map((span) => [span, spans.getFinishedSpans().length] as const),
        Effect.provide(layer)
      )
      assert.isFalse(span.sampled)
      assert.strictEqual(exported, 0)
    }).pipe(Effect.scoped))
})

// ---- what a span records ------------------------------------------------------------

/** What an exporter reads of a span, without its ids and with its parent as a flag. */
const exportedView = (span: ReadableSpan) => ({
  name: span.name,
  kind: span.kind,
  hasParent: span.parentSpanContext !== undefined,
  traceFlags: span.spanContext().traceFlags,
  startTime: span.startTime,
  endTime: span.endTime,
  duration: span.duration,
  ended: span.ended,
  status: span.status,
  attributes: span.attributes,
  droppedAttributesCount: span.droppedAttributesCount,
  events: span.events,
  droppedEventsCount: span.droppedEventsCount,
  links: span.links,
  droppedLinksCount: span.droppedLinksCount,
  resource: span.resource.attributes,
  instrumentationScope: span.instrumentationScope
})

const limits: SpanLimits = {
  attributeCountLimit: 6,
  attributeValueLengthLimit: 12,
  eventCountLimit: 2,
  attributePerEventCountLimit: 2,
  linkCountLimit: 1,
  attributePerLinkCountLimit: 1
}

const failure = new Error("a failure message that is long")
const defect = new TypeError("a defect")

/** Attributes of every kind, events and links over the limits, then `outcome`. */
const recording = (name: string, outcome: Effect.Effect<void, Error>) =>
  Effect.gen(function*() {
    yield* Effect.annotateCurrentSpan({
      text: "a long string value",
      count: 3,
      flag: false,
      big: BigInt(12),
      nested: { a: [1, 2] },
      nothing: null,
      extra: "over the limit",
      "": "no key"
    })
    const span = yield* Effect.currentSpan
    span.event("first", BigInt(1_000), { a: 1, b: "b".repeat(20), c: true })
    span.event("second", BigInt(2_000_000_001))
    span.event("third", BigInt(3_000), { k: "v", "": "no key" })
    const link = (spanId: string, attributes: Record<string, unknown>): Tracer.SpanLink => ({
      _tag: "SpanLink",
      span: Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId }),
      attributes
    })
    span.addLinks([link("00f067aa0ba902b7", { one: 1, two: 2 }), link("00f067aa0ba902b8", {})])
    yield* outcome
  }).pipe(Effect.withSpan(name, { kind: "server", captureStackTrace: false }), Effect.exit)

const outcomes: Record<string, Effect.Effect<void, Error>> = {
  succeeded: Effect.void,
  failed: Effect.fail(failure),
  died: Effect.die(defect),
  interrupted: Effect.interrupt
}

const recordAll = Effect.forEach(Object.entries(outcomes), ([name, outcome]) => recording(name, outcome), { discard: true })

describe("what a span records", () => {
  it.effect("the same exported spans as @effect/opentelemetry's tracer: attributes, limits, truncation, events, links, statuses, exceptions", () =>
    Effect.gen(function*() {
      const reference = new InMemorySpanExporter()
      const expected = yield* recordAll.pipe(
        Effect.map(() => reference.getFinishedSpans().map(exportedView)),
        Effect.provide(NodeSdk.layer(() => ({
          resource: { serviceName: "parity" },
          spanProcessor: new SimpleSpanProcessor(reference),
          tracerConfig: { spanLimits: limits }
        })))
      )
      const ours = new InMemorySpanExporter()
      const actual = yield* recordAll.pipe(
        Effect.map(() => ours.getFinishedSpans().map(exportedView)),
        Effect.provide(Telemetry.layerOtel({
          serviceName: "parity",
          spanProcessor: new SimpleSpanProcessor(ours),
          tracerConfig: { spanLimits: limits }
        }))
      )
      assert.strictEqual(actual.length, 4)
      assert.deepStrictEqual(actual, expected)

      // What that is, spelled out.
      const [succeeded, failed, died, interrupted] = actual
      assert.deepStrictEqual(succeeded!.attributes, {
        text: "a long strin",
        count: 3,
        flag: false,
        big: "12",
        nested: "{\n  \"a\": [\n ",
        nothing: "null"
      })
      assert.strictEqual(succeeded!.droppedAttributesCount, 1)
      assert.deepStrictEqual(succeeded!.events.map((event) => [event.name, event.attributes, event.time]), [
        ["second", {}, [2, 1]],
        ["third", { k: "v" }, [0, 3_000]]
      ])
      assert.strictEqual(succeeded!.droppedEventsCount, 1)
      assert.deepStrictEqual(succeeded!.links.map((link) => [link.context.spanId, link.attributes, link.droppedAttributesCount]), [
        ["00f067aa0ba902b8", undefined, undefined]
      ])
      assert.strictEqual(succeeded!.droppedLinksCount, 1)
      assert.deepStrictEqual(succeeded!.status, { code: SpanStatusCode.OK })
      assert.strictEqual(succeeded!.kind, SpanKind.SERVER)

      assert.deepStrictEqual(failed!.status, { code: SpanStatusCode.ERROR, message: "a failure message that is long" })
      const exception = failed!.events.at(-1)!
      assert.strictEqual(exception.name, "exception")
      assert.deepStrictEqual(Object.keys(exception.attributes!), ["exception.type", "exception.message"])
      assert.deepStrictEqual(exception.attributes, { "exception.type": "Error", "exception.message": "a failure m" + "e" })
      assert.strictEqual(exception.droppedAttributesCount, 1, "the stack trace, over the per-event limit")
      assert.strictEqual(died!.status.code, SpanStatusCode.ERROR)
      assert.strictEqual(died!.events.at(-1)!.attributes!["exception.type"], "TypeError")

      assert.deepStrictEqual(interrupted!.status, { code: SpanStatusCode.OK })
      assert.notProperty(interrupted!.attributes, "status.interrupted", "over the attribute count limit")
    }))

  it.effect("an interruption and a failure, under the default limits: label, flag, exception with the pretty cause as stack", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      yield* Effect.exit(Effect.withSpan(Effect.interrupt, "interrupted", { captureStackTrace: false }))
      yield* Effect.exit(Effect.withSpan(Effect.fail(failure), "failed", { captureStackTrace: false }))
      const interrupted = named(spans, "interrupted")
      assert.deepStrictEqual(interrupted.status, { code: SpanStatusCode.OK })
      assert.deepStrictEqual(interrupted.attributes, { "span.label": "⚠︎ Interrupted", "status.interrupted": true })
      assert.strictEqual(interrupted.events.length, 0)
      const failed = named(spans, "failed")
      assert.deepStrictEqual(failed.status, { code: SpanStatusCode.ERROR, message: failure.message })
      const [exception] = failed.events
      assert.strictEqual(exception!.name, "exception")
      assert.strictEqual(exception!.attributes!["exception.type"], "Error")
      assert.strictEqual(exception!.attributes!["exception.message"], failure.message)
      assert.include(String(exception!.attributes!["exception.stacktrace"]), `Error: ${failure.message}`)
    }).pipe(Effect.provide(layer))
  })

  it.effect("through the OpenTelemetry API, a span behaves as the SDK's own: validation, limits, truncation, status, names, diag messages", () => {
    const apiLimits: SpanLimits = {
      attributeCountLimit: 5,
      attributeValueLengthLimit: 10,
      eventCountLimit: 4,
      attributePerEventCountLimit: 2,
      linkCountLimit: 1,
      attributePerLinkCountLimit: 1
    }
    const linked: SpanContext = { traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, traceFlags: TraceFlags.SAMPLED }
    const use = (span: OtelSpan) => {
      span.setAttribute("s", "abcdefghijklmnop")
      span.setAttribute("n", 1)
      span.setAttribute("array", ["abcdefghijklmnopq", "b", null as unknown as string])
      span.setAttribute("object", {} as never)
      span.setAttribute("mixed", [1, "a"] as never)
      span.setAttribute("", "empty key")
      span.setAttribute("nul", null as never)
      span.setAttribute("undefined", undefined as never)
      span.setAttributes({ x: 1, y: 2, z: 3 })
      span.setAttribute("s", "replaced-and-long")
      span.addEvent("e1", { a: "abcdefghijklmnopq", b: 2, c: 3 }, [1, 2])
      span.addEvent("e2", [5, 6])
      span.addEvent("e3", { k: [1, "a"] as never, ok: true }, [7, 8])
      span.addEvent("e4", new Date(9_000))
      span.addLink({ context: linked, attributes: { a: 1, b: 2 } })
      span.addLinks([{ context: { ...linked, spanId: "00f067aa0ba902b7" } }])
      span.setStatus({ code: SpanStatusCode.ERROR, message: 42 as never })
      span.setStatus({ code: SpanStatusCode.UNSET })
      span.updateName("renamed")
      span.recordException(new RangeError("out of range"), [10, 11])
      span.recordException("just text", [12, 0])
      span.recordException({} as never)
      const recording = span.isRecording()
      span.setStatus({ code: SpanStatusCode.OK })
      span.setStatus({ code: SpanStatusCode.ERROR, message: "too late" })
      span.end([20, 0])
      span.setAttribute("after", "end")
      span.end()
      return recording
    }
    const view = (span: ReadableSpan) => {
      const { endTime: _endTime, hasParent: _hasParent, instrumentationScope: _scope, resource: _resource, startTime: _startTime, duration: _duration, traceFlags: _flags, kind: _kind, ...rest } = exportedView(span)
      return rest
    }
    /** The messages with the span's own ids taken out. */
    const generic = (messages: ReadonlyArray<string>, span: ReadableSpan) =>
      messages.map((message) =>
        message.replaceAll(span.spanContext().traceId, "<trace>").replaceAll(span.spanContext().spanId, "<span>")
      )
    const { layer, spans } = otel({ tracerConfig: { spanLimits: apiLimits } })
    return Effect.gen(function*() {
      const reference = new InMemorySpanExporter()
      const sdkSpan = new BasicTracerProvider({ spanLimits: apiLimits, spanProcessors: [new SimpleSpanProcessor(reference)] })
        .getTracer("reference")
        .startSpan("s", { startTime: [0, 0] })
      const [sdkRecording, sdkMessages] = yield* diagnosed(Effect.sync(() => use(sdkSpan)))
      const [ourRecording, ourMessages] = yield* diagnosed(Effect.flatMap(OtelTracer.currentOtelSpan, (span) => Effect.sync(() => use(span)))).pipe(
        Effect.withSpan("s")
      )
      const expected = reference.getFinishedSpans()[0]!
      const actual = named(spans, "renamed")
      assert.isTrue(sdkRecording)
      assert.isTrue(ourRecording)
      assert.deepStrictEqual(view(actual), view(expected))
      assert.deepStrictEqual(actual.endTime, [20, 0])
      assert.deepStrictEqual(generic(ourMessages, actual), generic(sdkMessages, expected))
      assert.isAbove(sdkMessages.length, 5)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a second end is refused with the SDK's diag error; the processors see one end", () => {
    const watcher = watching()
    const { layer, spans } = otel({}, watcher.processor)
    return Effect.gen(function*() {
      const span = yield* Effect.makeSpan("manual")
      const [, messages] = yield* diagnosed(Effect.sync(() => {
        span.end(BigInt(5), Exit.void)
        span.end(BigInt(6), Exit.fail("late"))
      }))
      assert.deepStrictEqual(watcher.calls, ["start manual", "end manual"])
      assert.strictEqual(spans.getFinishedSpans().length, 1)
      const exported = named(spans, "manual")
      assert.deepStrictEqual(exported.status, { code: SpanStatusCode.OK })
      assert.deepStrictEqual(exported.endTime, [0, 5])
      assert.deepStrictEqual(span.status, { _tag: "Ended", startTime: BigInt(0), endTime: BigInt(5), exit: Exit.void })
      assert.deepStrictEqual(messages, [
        `Cannot execute the operation on ended Span {traceId: ${span.traceId}, spanId: ${span.spanId}}`,
        `manual ${span.traceId}-${span.spanId} - You can only call end() on a span once.`
      ])
    }).pipe(Effect.provide(layer))
  })

  it.effect("effect's view: attributes as exported, links as given, kind and status", () => {
    const { layer } = otel()
    return Effect.gen(function*() {
      const link: Tracer.SpanLink = { _tag: "SpanLink", span: Tracer.externalSpan({ traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN }), attributes: {} }
      const span = yield* Effect.currentSpan.pipe(
        Effect.tap(() => Effect.annotateCurrentSpan({ n: 1, o: { deep: true } })),
        Effect.withSpan("viewed", { kind: "producer", links: [link] })
      )
      assert.deepStrictEqual([...span.attributes], [["n", 1], ["o", "{\n  \"deep\": true\n}"]])
      assert.deepStrictEqual(span.links, [link])
      assert.strictEqual(span.kind, "producer")
      assert.strictEqual(span.status._tag, "Ended")
      assert.strictEqual(span._tag, "Span")
    }).pipe(Effect.provide(layer))
  })
})

// ---- processors -------------------------------------------------------------------

describe("span processors", () => {
  it.effect("onStart with the parent context before the span is used, onEnd once when it ends, in order", () => {
    const watcher = watching()
    const { layer } = otel({}, watcher.processor)
    return Effect.gen(function*() {
      const [outer, inner] = yield* Effect.currentSpan.pipe(
        Effect.zip(Effect.currentSpan.pipe(Effect.withSpan("inner", { attributes: { set: "after start" } }))),
        Effect.withSpan("outer")
      )
      assert.deepStrictEqual(watcher.calls, ["start outer", "start inner", "end inner", "end outer"])
      const [outerStart, innerStart] = watcher.starts
      assert.isUndefined(outerStart!.parent)
      assert.strictEqual(innerStart!.parent?.spanId, outer.spanId)
      assert.strictEqual(innerStart!.span.spanContext().spanId, inner.spanId)
      assert.strictEqual(watcher.ends[0], innerStart!.span, "the processors get one span object from start to end")
      assert.isTrue(watcher.ends.every((span) => span.ended))
    }).pipe(Effect.provide(layer))
  })

  it.effect("onEnding: called once end time and duration are set, before the span counts as ended, as by the SDK; guarded", () => {
    const seen = (by: string) => {
      const calls: Array<{ readonly by: string; readonly ended: boolean; readonly duration: HrTime }> = []
      const processor: SpanProcessor = {
        onStart: () => {},
        onEnding: (span: SdkSpan) => {
          calls.push({ by, ended: span.ended, duration: span.duration })
        },
        onEnd: () => {},
        forceFlush: () => Promise.resolve(),
        shutdown: () => Promise.resolve()
      }
      return { calls, processor }
    }
    const throwing: SpanProcessor = {
      onStart: () => {},
      onEnding: () => {
        throw new Error("onEnding")
      },
      onEnd: () => {},
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
    const work = Effect.withSpan(TestClock.adjust("2 millis"), "work")
    const sdk = seen("sdk")
    const lean = seen("lean")
    const { layer, spans } = otel({}, throwing, lean.processor)
    return Effect.gen(function*() {
      yield* work.pipe(
        Effect.provide(NodeSdk.layer(() => ({ resource: { serviceName: "otel-tracer-test" }, spanProcessor: sdk.processor })))
      )
      const [exported, messages] = yield* diagnosed(work.pipe(Effect.map(() => named(spans, "work")), Effect.provide(layer)))
      assert.deepStrictEqual(sdk.calls, [{ by: "sdk", ended: false, duration: [0, 2_000_000] }])
      assert.deepStrictEqual(lean.calls, [{ by: "lean", ended: false, duration: [0, 2_000_000] }])
      assert.strictEqual(exported.ended, true, "a throwing onEnding fails nothing")
      assert.deepStrictEqual(messages.filter((message) => message.includes("span processor")), [
        "jeevesagent telemetry: span processor onEnding failed"
      ])
    })
  })

  it.effect("a processor may edit a span's events and links in place, as on the SDK's span; each span has its own", () => {
    const link: Link = { context: { traceId: EXTERNAL_TRACE, spanId: EXTERNAL_SPAN, traceFlags: TraceFlags.SAMPLED } }
    const editing: SpanProcessor = {
      onStart: () => {},
      onEnd: (span) => {
        if (span.name !== "edited") return
        span.events.push({ name: "tagged", time: span.endTime })
        span.events.sort((a, b) => a.name.localeCompare(b.name))
        span.links.push(link)
      },
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
    const spans = new InMemorySpanExporter()
    const layer = Telemetry.layerOtel({ serviceName: "otel-tracer-test", spanProcessor: [editing, new SimpleSpanProcessor(spans)] })
    return Effect.gen(function*() {
      yield* Effect.withSpan(Effect.void, "edited")
      yield* Effect.withSpan(Effect.void, "untouched")
      const edited = named(spans, "edited")
      assert.deepStrictEqual(edited.events.map((event) => event.name), ["tagged"])
      assert.deepStrictEqual(edited.links, [link])
      const untouched = named(spans, "untouched")
      assert.deepStrictEqual([untouched.events, untouched.links], [[], []])
      assert.notStrictEqual(untouched.events, edited.events)
      assert.strictEqual(untouched.events, untouched.events, "made once, then kept")
    }).pipe(Effect.provide(layer))
  })

  it.effect("a processor that throws fails no run; the others still get every span", () => {
    const throwing: SpanProcessor = {
      onStart: () => {
        throw new Error("onStart")
      },
      onEnd: () => {
        throw new Error("onEnd")
      },
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
    const { layer, spans } = otel({}, throwing)
    return Effect.gen(function*() {
      const [value, messages] = yield* diagnosed(Effect.withSpan(Effect.withSpan(Effect.succeed(42), "inner"), "outer"))
      assert.strictEqual(value, 42)
      assert.deepStrictEqual(spans.getFinishedSpans().map((span) => span.name), ["inner", "outer"])
      assert.strictEqual(messages.filter((message) => message.includes("span processor")).length, 4)
    }).pipe(Effect.provide(layer))
  })
})

// ---- context propagation ------------------------------------------------------------

describe("propagateContext", () => {
  it.effect("inside an effect, its span is OpenTelemetry's active span: instrumented code nests under it", () =>
    Effect.gen(function*() {
      yield* contextManager
      const { layer } = otel()
      const seen = yield* Effect.gen(function*() {
        const outer = yield* Effect.currentSpan
        const active = trace.getActiveSpan()
        const library = trace.getTracer("library").startSpan("library.call") as unknown as OtelSpan & ReadableSpan
        library.end()
        const current = yield* OtelTracer.currentOtelSpan
        const hidden = yield* Effect.sync(() => trace.getActiveSpan()?.spanContext().spanId).pipe(
          Effect.withSpan("hidden", { context: Context.make(Tracer.DisablePropagation, true) })
        )
        return { outer, active, library, current, hidden }
      }).pipe(Effect.withSpan("outer"), Effect.provide(layer))
      assert.strictEqual(seen.active?.spanContext().spanId, seen.outer.spanId)
      assert.strictEqual(seen.active, seen.current, "OtelTracer.currentOtelSpan: the recorded span")
      assert.strictEqual(seen.library.parentSpanContext?.spanId, seen.outer.spanId)
      assert.strictEqual(seen.hidden, seen.outer.spanId, "a span marked DisablePropagation is skipped")
      assert.isUndefined(trace.getActiveSpan(), "outside the effect, none")
    }).pipe(Effect.scoped))
})

/** The collector, from V8 (`--expose-gc` set at run time). */
const collectGarbage = (): (() => void) => {
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc") as () => void
}

describe("propagateContext: what the tracer keeps", () => {
  it.live("an ended, exported span is not kept alive by the tracer (its context cache)", () =>
    Effect.gen(function*() {
      const gc = collectGarbage()
      const { layer, spans } = otel({ propagateContext: true })
      const alive = yield* Effect.gen(function*() {
        const refs = yield* Effect.gen(function*() {
          const span = yield* Effect.currentSpan
          const recorded = yield* OtelTracer.currentOtelSpan
          span.attribute("payload", "x".repeat(100_000))
          return { span: new WeakRef(span), recorded: new WeakRef(recorded) }
        }).pipe(Effect.withSpan("big"))
        assert.strictEqual(spans.getFinishedSpans().length, 1)
        spans.reset()
        for (let i = 0; i < 5; i++) {
          yield* Effect.sleep("10 millis")
          gc()
        }
        return { span: refs.span.deref() !== undefined, recorded: refs.recorded.deref() !== undefined }
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(alive, { span: false, recorded: false })
    }))
})

// ---- fallback -----------------------------------------------------------------------

class CollectingReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

const metricNames = (result: CollectionResult) =>
  result.resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics.map((metric) => metric.descriptor.name))

describe("fallback", () => {
  it.effect("a tracerConfig option the lean tracer cannot honour (meterProvider) goes through @effect/opentelemetry's tracer", () => {
    const reader = new CollectingReader()
    const { layer, spans } = otel({ tracerConfig: { meterProvider: new MeterProvider({ readers: [reader] }) } })
    return Effect.gen(function*() {
      const span = yield* Effect.currentSpan.pipe(
        Effect.tap(() => Effect.annotateCurrentSpan("object", { raw: true })),
        Effect.withSpan("counted")
      )
      assert.deepStrictEqual(span.attributes.get("object"), { raw: true }, "OtelSpan keeps effect's own values")
      assert.strictEqual(named(spans, "counted").attributes.object, "{\n  \"raw\": true\n}")
      const collected = yield* Effect.promise(() => reader.collect())
      assert.include(metricNames(collected), "otel.sdk.span.started")
    }).pipe(Effect.provide(layer))
  })
})
