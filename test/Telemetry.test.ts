import { assert, describe, it } from "@effect/vitest"
import { type Attributes, SpanStatusCode, trace } from "@opentelemetry/api"
import {
  type CollectionResult,
  DataPointType,
  MetricReader,
  type PushMetricExporter
} from "@opentelemetry/sdk-metrics"
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
  type SpanExporter,
  type SpanProcessor,
  SimpleSpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Schema, Stream, Tracer } from "effect"
import {
  Agent,
  Approval,
  AuditLog,
  Budget,
  Memory,
  Model,
  Permissions,
  RunContext,
  Secrets,
  Telemetry,
  Tool
} from "jeevesagent"
import * as Metrics from "../src/internal/metrics.js"
import { registeredContextManager } from "./support/otelContextManager.js"
import { exported } from "./support/exportedSpan.js"

// ---- OpenTelemetry doubles ----------------------------------------------------

/** A metric reader that exports only when the test calls `collect`. */
class CollectingReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

/** One exported data point: a counter's value, or a histogram's count and sum. */
interface Point {
  readonly name: string
  readonly type: DataPointType
  readonly monotonic: boolean | undefined
  readonly attributes: Attributes
  readonly value: number
  readonly sum: number
}

const keyOf = (name: string, attributes: Attributes) =>
  `${name} ${JSON.stringify(Object.entries(attributes).sort(([a], [b]) => a.localeCompare(b)))}`

/** The data points by name and attributes; one name with two instruments would show as a duplicate. */
const pointsOf = (result: CollectionResult): Map<string, Point> => {
  const out = new Map<string, Point>()
  for (const scope of result.resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      for (const dataPoint of metric.dataPoints) {
        const key = keyOf(metric.descriptor.name, dataPoint.attributes)
        if (out.has(key)) throw new Error(`two data points for ${key}: one name, two metric definitions`)
        const raw = dataPoint.value as number | { readonly count: number; readonly sum?: number | undefined }
        out.set(key, {
          name: metric.descriptor.name,
          type: metric.dataPointType,
          monotonic: "isMonotonic" in metric ? metric.isMonotonic : undefined,
          attributes: dataPoint.attributes,
          value: typeof raw === "number" ? raw : raw.count,
          sum: typeof raw === "number" ? raw : raw.sum ?? 0
        })
      }
    }
  }
  return out
}

const collect = (reader: MetricReader) => Effect.map(Effect.promise(() => reader.collect()), pointsOf)

/**
 * Runs `effect` and returns the `jeeves.*` data points it changed, as
 * differences (effect's metric registry is global to the test file).
 */
const measured = <A, E, R>(reader: MetricReader, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const before = yield* collect(reader)
    const value = yield* effect
    const after = yield* collect(reader)
    const changed: Array<Point> = []
    for (const [key, point] of after) {
      if (!point.name.startsWith("jeeves.")) continue
      const value = point.value - (before.get(key)?.value ?? 0)
      const sum = point.sum - (before.get(key)?.sum ?? 0)
      if (value !== 0 || sum !== 0) changed.push({ ...point, value, sum })
    }
    return [value, changed] as const
  })

/** The changed point named `name` with exactly `attributes` (effect records tag values as strings). */
const pointAt = (points: ReadonlyArray<Point>, name: string, attributes: Record<string, string>) => {
  const found = points.find((point) => keyOf(point.name, point.attributes) === keyOf(name, attributes))
  if (found === undefined) {
    const same = points.filter((point) => point.name === name).map((point) => JSON.stringify(point.attributes))
    throw new Error(`no ${name} ${JSON.stringify(attributes)}; recorded: ${same.join(", ") || "none"}`)
  }
  return found
}

/**
 * An in-memory span exporter, a collecting reader, and `Telemetry.layerOtel`
 * over both. A `userIdAttribute` applies to metric tags too unless the test
 * sets `metricUserIdAttribute` itself.
 */
const otel = (options?: Partial<Telemetry.OtelOptions>) => {
  const spans = new InMemorySpanExporter()
  const reader = new CollectingReader()
  const layer = Telemetry.layerOtel({
    serviceName: "jeeves-test",
    spanProcessor: new SimpleSpanProcessor(spans),
    metricReader: reader,
    ...(options?.userIdAttribute === undefined ? {} : { metricUserIdAttribute: options.userIdAttribute }),
    ...options
  })
  return { spans, reader, layer }
}

const spansNamed = (spans: ReadonlyArray<ReadableSpan>, name: string) =>
  spans.filter((span) => span.name === name).sort((a, b) => Number(a.attributes.turn ?? 0) - Number(b.attributes.turn ?? 0))

const oneSpan = (spans: ReadonlyArray<ReadableSpan>, name: string): ReadableSpan => {
  const found = spansNamed(spans, name)
  assert.strictEqual(found.length, 1, `one ${name} span`)
  return found[0]!
}

/** The one span named `name` about `tool`. */
const toolSpan = (spans: ReadonlyArray<ReadableSpan>, name: string, tool: string): ReadableSpan => {
  const found = spans.filter((span) => span.name === name && span.attributes.tool === tool)
  assert.strictEqual(found.length, 1, `one ${name} span for ${tool}`)
  return found[0]!
}

const isChildOf = (child: ReadableSpan, parent: ReadableSpan) =>
  child.parentSpanContext?.spanId === parent.spanContext().spanId &&
  child.spanContext().traceId === parent.spanContext().traceId

// ---- the agent ----------------------------------------------------------------

const whoami = Tool.make("whoami", {
  description: "The current user",
  parameters: Schema.Struct({}),
  handler: () => Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
})

const dropTable = Tool.make("drop_table", {
  description: "Drops a table",
  parameters: Schema.Struct({}),
  destructive: true,
  handler: () => Effect.succeed("dropped")
})

const forbidden = Tool.make("forbidden", {
  description: "Never allowed",
  parameters: Schema.Struct({}),
  handler: () => Effect.succeed("should not run")
})

const tools = [whoami, dropTable, forbidden]

/** Calls `calls` on the first model call, then answers with every tool result joined. */
const callThenSummarize = (
  calls: ReadonlyArray<{ name: string; args: unknown }>,
  usage: { first?: Model.ScriptedTurn["usage"]; second?: Model.ScriptedTurn["usage"] } = {}
): Model.Script =>
(request) => {
  const last = request.messages.at(-1)!
  if (last.role !== "tool") return { toolCalls: calls, usage: usage.first ?? { inputTokens: 10, outputTokens: 5 } }
  const results = request.messages.filter((m) => m.role === "tool").map((m) => m.content)
  return { text: results.join(" | "), usage: usage.second ?? { inputTokens: 20, outputTokens: 3 } }
}

/** The agent over `Agent.layerDefaults`, a scripted model, the telemetry layer and `services` (later ones win). */
const agentWith = (
  script: Model.Script,
  telemetry: Layer.Layer<Telemetry.Telemetry>,
  ...services: ReadonlyArray<Layer.Layer<any, any>>
) =>
  Agent.layer({ tools }).pipe(
    Layer.provide(
      services.reduce<Layer.Layer<any, any>>(
        (all, service) => Layer.merge(all, service),
        Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), telemetry)
      )
    )
  ) as Layer.Layer<Agent.Agent, unknown>

const run = (prompt: string, options?: Agent.RunOptions) => Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt, options))

const governance = (budget: Budget.Config) =>
  [
    Budget.layer(budget),
    Permissions.standard({ deniedTools: ["forbidden"] }),
    Approval.layer(() => Effect.succeed(true))
  ] as const

// ---- spans --------------------------------------------------------------------

describe("metric cardinality", () => {
  it.effect("user ids are on spans (hashed) but not on metric tags by default", () => {
    const { layer, reader, spans } = otel()
    return Effect.gen(function*() {
      yield* run("who am i?", { userId: "alice" })
      const runSpan = oneSpan(spans.getFinishedSpans(), "jeeves.run")
      assert.strictEqual(runSpan.attributes.user_id, Telemetry.userIdValue("hashed", "alice"))
      const points = yield* collect(reader)
      const tokens = [...points.values()].filter((point) => point.name === "jeeves.tokens.input")
      assert.isAbove(tokens.length, 0)
      for (const point of tokens) assert.notProperty(point.attributes, "user_id")
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer)))
  })
})

describe("Telemetry.layerOtel spans", () => {
  it.effect("a run with a tool call: jeeves.run → jeeves.turn → jeeves.model.complete and jeeves.tool", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const result = yield* run("who am i?", { userId: "alice", sessionId: "sess-tree" })
      const finished = spans.getFinishedSpans()

      const runSpan = oneSpan(finished, "jeeves.run")
      assert.isUndefined(runSpan.parentSpanContext)
      assert.deepStrictEqual(runSpan.attributes, {
        session_id: "sess-tree",
        run_id: result.runId,
        max_turns: 50,
        model: "scripted",
        user_id: Telemetry.userIdValue("hashed", "alice"),
        turns: 2,
        interrupted: false
      })
      assert.strictEqual(runSpan.status.code, SpanStatusCode.OK)

      const turns = spansNamed(finished, "jeeves.turn")
      assert.deepStrictEqual(turns.map((span) => span.attributes), [
        { turn: 1, session_id: "sess-tree" },
        { turn: 2, session_id: "sess-tree" }
      ])
      for (const turn of turns) assert.isTrue(isChildOf(turn, runSpan), "turn span is a child of the run span")

      const models = spansNamed(finished, "jeeves.model.complete")
      assert.deepStrictEqual(models.map((span) => span.attributes), [
        { model: "scripted", turn: 1, session_id: "sess-tree", tool_count: 3 },
        { model: "scripted", turn: 2, session_id: "sess-tree", tool_count: 3 }
      ])
      assert.isTrue(isChildOf(models[0]!, turns[0]!))
      assert.isTrue(isChildOf(models[1]!, turns[1]!))

      const tool = oneSpan(finished, "jeeves.tool")
      assert.deepStrictEqual(tool.attributes, { tool: "whoami", call_id: result.toolCalls[0]!.callId, turn: 1 })
      assert.isTrue(isChildOf(tool, turns[0]!), "the tool span is a child of its turn")

      // Layers that are off leave no spans.
      for (const name of ["jeeves.budget.reserve", "jeeves.permission.check", "jeeves.approval"]) {
        assert.strictEqual(spansNamed(finished, name).length, 0, name)
      }
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer)))
  })

  it.effect("a run stopped by its budget: the run span says so and still ends OK", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const result = yield* run("who am i?", { userId: "dave", sessionId: "sess-blocked" })
      assert.strictEqual(result.interruptionReason, "budget:per_user_max_tokens")
      const runSpan = oneSpan(spans.getFinishedSpans(), "jeeves.run")
      assert.deepInclude(runSpan.attributes, {
        turns: result.turns,
        interrupted: true,
        interruption_reason: "budget:per_user_max_tokens"
      })
      assert.strictEqual(runSpan.status.code, SpanStatusCode.OK)
      assert.strictEqual(spansNamed(spans.getFinishedSpans(), "jeeves.turn").length, result.turns + 1, "the blocked turn's span ended too")
    }).pipe(
      Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer, Budget.layer({ perUserMaxTokens: 10 })))
    )
  })

  it.effect("a model call that fails under the in-memory budget: its span ends in error and its reservation is released", () => {
    const { layer, spans } = otel()
    const failing: Model.Script = (request) =>
      request.messages.at(-1)!.content === "fail" ?
        { error: new Model.ModelError({ reason: "overloaded", retryable: false, description: "try later" }) } :
        { text: "fine", usage: { inputTokens: 10, outputTokens: 5 } }
    return Effect.gen(function*() {
      const error = yield* Effect.flip(run("fail", { userId: "frank" }))
      assert.strictEqual(error._tag, "ModelError")
      const model = oneSpan(spans.getFinishedSpans(), "jeeves.model.complete")
      assert.strictEqual(model.status.code, SpanStatusCode.ERROR)
      // A step is blocked once the user's load (committed plus reserved) reaches the cap; the failed call's
      // reservation (over 4 000 tokens) alone would block the next run, unless it was released.
      const result = yield* run("again", { userId: "frank" })
      assert.strictEqual(result.output, "fine")
      assert.isFalse(result.interrupted, "not blocked by a reservation the failed call kept")
      assert.strictEqual(result.tokensIn, 10)
    }).pipe(Effect.provide(agentWith(failing, layer, Budget.layer({ perUserMaxTokens: 1_000 }))))
  })

  it.effect("with the tracer off the run goes through the composed wrappers: same result, no spans, context restored", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const result = yield* run("who am i?", { userId: "erin", sessionId: "sess-untraced" }).pipe(Effect.withTracerEnabled(false))
      assert.strictEqual(result.userId, "erin")
      assert.strictEqual(result.turns, 2)
      assert.strictEqual(result.toolCalls[0]!.output, "erin")
      assert.strictEqual(spans.getFinishedSpans().length, 0)
      assert.isNull((yield* RunContext.current).userId, "the run's context is gone once it returned")
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer)))
  })

  it.effect("Agent.stream traces the model call as jeeves.model.stream", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      yield* Stream.runDrain(agent.stream("who am i?", { userId: "bob", sessionId: "sess-stream" }))
      const finished = spans.getFinishedSpans()
      const runSpan = oneSpan(finished, "jeeves.run")
      const turns = spansNamed(finished, "jeeves.turn")
      const models = spansNamed(finished, "jeeves.model.stream")
      assert.strictEqual(turns.length, 2)
      assert.strictEqual(models.length, 2)
      assert.strictEqual(spansNamed(finished, "jeeves.model.complete").length, 0)
      assert.isTrue(isChildOf(turns[0]!, runSpan))
      assert.isTrue(isChildOf(models[0]!, turns[0]!))
      assert.isTrue(isChildOf(oneSpan(finished, "jeeves.tool"), turns[0]!))
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer)))
  })

  it.effect("budget reserve, permission check and approval spans nest under the turn and the tool", () => {
    const { layer, spans } = otel()
    const script = callThenSummarize([{ name: "drop_table", args: {} }, { name: "forbidden", args: {} }])
    return Effect.gen(function*() {
      const result = yield* run("clean up", { userId: "carol", sessionId: "sess-gov" })
      const finished = spans.getFinishedSpans()
      const turns = spansNamed(finished, "jeeves.turn")
      const reserves = spansNamed(finished, "jeeves.budget.reserve")
      assert.strictEqual(reserves.length, 2)
      assert.isTrue(isChildOf(reserves[0]!, turns[0]!))
      assert.isTrue(isChildOf(reserves[1]!, turns[1]!))
      assert.strictEqual(reserves[0]!.attributes.session_id, "sess-gov")
      assert.strictEqual(reserves[0]!.attributes.estimated_output_tokens, 4096)

      const callId = (name: string) => result.toolCalls.find((call) => call.name === name)!.callId
      const checkOf = (tool: string, destructive: boolean, outcome: Record<string, unknown>) => {
        const check = toolSpan(finished, "jeeves.permission.check", tool)
        assert.deepStrictEqual(check.attributes, { tool, call_id: callId(tool), turn: 1, destructive, ...outcome })
        assert.isTrue(isChildOf(check, toolSpan(finished, "jeeves.tool", tool)))
        return check
      }

      const dropCheck = checkOf("drop_table", true, { allowed: true })
      const approval = oneSpan(finished, "jeeves.approval")
      assert.deepStrictEqual(approval.attributes, { tool: "drop_table", call_id: callId("drop_table"), turn: 1, outcome: "approved" })
      assert.strictEqual(approval.status.code, SpanStatusCode.OK)
      assert.isTrue(isChildOf(approval, dropCheck), "approval is part of the permission check")

      const denied = checkOf("forbidden", false, { allowed: false, reason: "forbidden: denied by policy" })
      // A denial is an outcome, not a tracing error.
      assert.strictEqual(denied.status.code, SpanStatusCode.OK)
      assert.isTrue(isChildOf(toolSpan(finished, "jeeves.tool", "forbidden"), turns[0]!))
    }).pipe(Effect.provide(agentWith(script, layer, ...governance({ maxTokens: 1_000_000 }))))
  })
})

describe("spans of the services the agent calls", () => {
  it.effect("a declined approval ends its span OK, the outcome on it (a denial is not a tracing error)", () => {
    const { layer, spans } = otel()
    const script = callThenSummarize([{ name: "drop_table", args: {} }])
    return Effect.gen(function*() {
      const result = yield* run("clean up", { userId: "carol", sessionId: "sess-declined" })
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      const finished = spans.getFinishedSpans()
      const approval = oneSpan(finished, "jeeves.approval")
      assert.strictEqual(approval.attributes.outcome, "declined")
      assert.strictEqual(approval.status.code, SpanStatusCode.OK)
      assert.strictEqual(approval.events.length, 0, "no exception recorded")
      const check = toolSpan(finished, "jeeves.permission.check", "drop_table")
      assert.strictEqual(check.attributes.allowed, false)
      assert.isTrue(isChildOf(approval, check))
    }).pipe(
      Effect.provide(
        agentWith(
          script,
          layer,
          Budget.layer({ maxTokens: 1_000_000 }),
          Permissions.standard({ deniedTools: ["forbidden"] }),
          Approval.layer(() => Effect.succeed(false))
        )
      )
    )
  })

  it.effect("nest under the agent's span that called them: model, tool, approval, a budget backend's reserve and settle", () => {
    const { layer, spans } = otel()
    const traced = (name: string) => Effect.withSpan(Effect.void, name)
    const model: Model.Service = {
      name: "spanning",
      price: undefined,
      complete: (request) =>
        Effect.as(
          traced("model.http"),
          request.messages.at(-1)!.role === "tool" ?
            { text: "done", toolCalls: [], usage: { inputTokens: 1, outputTokens: 1, costUsd: 0 }, stopReason: "end_turn" } :
            {
              text: "",
              toolCalls: [{ id: "c1", name: "drop_table", args: {} }],
              usage: { inputTokens: 1, outputTokens: 1, costUsd: 0 },
              stopReason: "tool_use"
            }
        ) as Effect.Effect<Model.ModelResponse>,
      stream: () => Stream.die("not streamed")
    }
    const spanningTool = Tool.make("drop_table", {
      description: "Drops a table",
      parameters: Schema.Struct({}),
      destructive: true,
      handler: () => Effect.as(traced("tool.body"), "dropped")
    })
    // A backend that is not the in-memory one: its reserve, settle and release are its own effects.
    const budget: Budget.Service = {
      allowsStep: Effect.succeed({ state: "ok" }),
      reserve: () =>
        Effect.as(traced("budget.sql.reserve"), {
          _tag: "Granted",
          warning: undefined,
          settle: () => traced("budget.sql.settle"),
          release: traced("budget.sql.release")
        } as const),
      usageFor: () => Effect.succeed(Budget.zeroTotals),
      globalUsage: Effect.succeed(Budget.zeroTotals)
    }
    const agent = Agent.layer({ tools: [spanningTool] }).pipe(
      Layer.provide(Layer.mergeAll(
        Agent.layerDefaults,
        Layer.succeed(Model.Model, model),
        layer,
        Layer.succeed(Budget.Budget, budget),
        Permissions.standard({}),
        Approval.layer(() => Effect.as(traced("approval.ui"), true))
      ))
    )
    return Effect.gen(function*() {
      const result = yield* run("drop it", { userId: "dana" })
      assert.deepStrictEqual(result.toolCalls.map((call) => call.status), ["ok"])
      const finished = spans.getFinishedSpans()
      const turns = spansNamed(finished, "jeeves.turn")
      const models = spansNamed(finished, "jeeves.model.complete")
      const https = spansNamed(finished, "model.http")
      assert.strictEqual(https.length, 2)
      https.forEach((span, i) => assert.isTrue(isChildOf(span, models[i]!), "the model's span is under its call"))
      assert.isTrue(isChildOf(oneSpan(finished, "tool.body"), oneSpan(finished, "jeeves.tool")))
      assert.isTrue(isChildOf(oneSpan(finished, "approval.ui"), oneSpan(finished, "jeeves.approval")))
      const reserves = spansNamed(finished, "budget.sql.reserve")
      const reserveSpans = spansNamed(finished, "jeeves.budget.reserve")
      reserves.forEach((span, i) => assert.isTrue(isChildOf(span, reserveSpans[i]!), "reserve SQL under jeeves.budget.reserve"))
      const settles = spansNamed(finished, "budget.sql.settle")
      assert.strictEqual(settles.length, 2)
      settles.forEach((span, i) => assert.isTrue(isChildOf(span, turns[i]!), "a backend's settle is under its turn"))
    }).pipe(Effect.provide(agent))
  })
})

describe("sampling", () => {
  it.effect("a run the sampler drops makes none of the agent's other spans; a sampled run keeps its whole tree", () => {
    const started: Array<string> = []
    let sampleRoots = false
    // Samples root spans while `sampleRoots` is on; children follow their parent (the usual parent-based setup).
    const parentBased = new ParentBasedSampler({
      root: {
        shouldSample: () => ({ decision: sampleRoots ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD }),
        toString: () => "switchable"
      }
    })
    // Sees every span the SDK is asked to start; describes itself as the sampler it delegates to, so the
    // tracer knows it drops every child of an unsampled parent.
    const counting: Sampler = {
      shouldSample: (...args) => {
        started.push(args[2])
        return parentBased.shouldSample(...args)
      },
      toString: () => parentBased.toString()
    }
    const { layer, spans } = otel({ tracerConfig: { sampler: counting } })
    const script = callThenSummarize([{ name: "whoami", args: {} }, { name: "drop_table", args: {} }])
    return Effect.gen(function*() {
      const dropped = yield* run("not traced", { userId: "dan", sessionId: "sess-dropped" })
      assert.deepStrictEqual(dropped.toolCalls.map((call) => call.status), ["ok", "ok"])
      assert.deepStrictEqual(started, ["jeeves.run"], "only the run span was started")
      assert.strictEqual(spans.getFinishedSpans().length, 0)

      sampleRoots = true
      yield* run("traced", { userId: "dan", sessionId: "sess-sampled" })
      const names = new Set(spans.getFinishedSpans().map((span) => span.name))
      for (const name of ["jeeves.run", "jeeves.turn", "jeeves.model.complete", "jeeves.tool", "jeeves.budget.reserve", "jeeves.permission.check", "jeeves.approval"]) {
        assert.isTrue(names.has(name), name)
      }
    }).pipe(Effect.provide(agentWith(script, layer, ...governance({ maxTokens: 1_000_000 }))))
  })
})

describe("sampling under an unsampled incoming parent", () => {
  const unsampled = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: false })
  const agentSpans = ["jeeves.run", "jeeves.turn", "jeeves.model.complete", "jeeves.tool"]
  const script = callThenSummarize([{ name: "whoami", args: {} }])
  /** A plain `Effect.withSpan` and a run, both under the unsampled parent. */
  const underUnsampled = Effect.gen(function*() {
    yield* Effect.withSpan(Effect.void, "plain")
    yield* run("hi", { userId: "dan" })
  }).pipe(Effect.withParentSpan(unsampled))

  it.effect("a sampler that samples every span (AlwaysOnSampler): the run is traced, as a plain span is", () => {
    const { layer, spans } = otel({ tracerConfig: { sampler: new AlwaysOnSampler() } })
    return Effect.gen(function*() {
      yield* underUnsampled
      const names = spans.getFinishedSpans().map((span) => span.name)
      for (const name of ["plain", ...agentSpans]) assert.include(names, name)
      const runSpan = oneSpan(spans.getFinishedSpans(), "jeeves.run")
      assert.strictEqual(runSpan.parentSpanContext?.spanId, unsampled.spanId)
      for (const turn of spansNamed(spans.getFinishedSpans(), "jeeves.turn")) assert.isTrue(isChildOf(turn, runSpan))
    }).pipe(Effect.provide(agentWith(script, layer)))
  })

  it.effect("a record-only sampler (RECORD): the processors get every span of the run, as the SDK gives them", () => {
    const recordOnly: Sampler = { shouldSample: () => ({ decision: SamplingDecision.RECORD }), toString: () => "record-only" }
    const ended: Array<string> = []
    const processor: SpanProcessor = {
      onStart: () => {},
      onEnd: (span) => void ended.push(span.name),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
    const layer = Telemetry.layerOtel({ serviceName: "jeeves-test", spanProcessor: processor, tracerConfig: { sampler: recordOnly } })
    return Effect.gen(function*() {
      yield* underUnsampled
      for (const name of ["plain", ...agentSpans]) assert.include(ended, name)
    }).pipe(Effect.provide(agentWith(script, layer)))
  })

  it.effect("the default (parent-based) sampler: neither the run nor a plain span is traced", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      yield* underUnsampled
      assert.deepStrictEqual(spans.getFinishedSpans(), [])
    }).pipe(Effect.provide(agentWith(script, layer)))
  })

  it.effect("effect's own tracer (Telemetry.layer): the run's spans are made, as a plain Effect.withSpan's is", () => {
    const ended: Array<string> = []
    // Effect's tracer, noting each span that ends.
    const recording = Layer.unwrapEffect(Effect.map(Effect.tracer, (inner) =>
      Layer.setTracer(Tracer.make({
        span: (...args) => {
          const span = inner.span(...args)
          const end = span.end.bind(span)
          span.end = (endTime, exit) => {
            ended.push(span.name)
            end(endTime, exit)
          }
          return span
        },
        context: inner.context
      }))
    ))
    return Effect.gen(function*() {
      yield* underUnsampled
      for (const name of ["plain", ...agentSpans]) assert.include(ended, name)
    }).pipe(Effect.provide(agentWith(script, Telemetry.layer())), Effect.provide(recording))
  })
})

// ---- metrics ------------------------------------------------------------------

describe("Telemetry.layerOtel metrics", () => {
  it.effect("every agent metric, with its tags", () => {
    const { layer, reader } = otel({ userIdAttribute: "raw" })
    const user = "metrics-user"
    const script = callThenSummarize(
      [{ name: "whoami", args: {} }, { name: "drop_table", args: {} }, { name: "forbidden", args: {} }],
      {
        first: { inputTokens: 30, outputTokens: 10, costUsd: 0.002 },
        second: { inputTokens: 50, outputTokens: 20, costUsd: 0.003 }
      }
    )
    return Effect.gen(function*() {
      const [[first, second], points] = yield* measured(
        reader,
        Effect.all([run("go", { userId: user }), run("again", { userId: user })])
      )
      assert.isFalse(first.interrupted)
      assert.strictEqual(second.interruptionReason, "budget:per_user_max_tokens")

      const tokensIn = pointAt(points, "jeeves.tokens.input", { model: "scripted", user_id: user })
      assert.strictEqual(tokensIn.value, 80)
      assert.strictEqual(tokensIn.type, DataPointType.SUM)
      assert.isTrue(tokensIn.monotonic)
      assert.strictEqual(pointAt(points, "jeeves.tokens.output", { model: "scripted", user_id: user }).value, 30)
      assert.closeTo(pointAt(points, "jeeves.cost.usd", { model: "scripted", user_id: user }).value, 0.005, 1e-12)

      const session = pointAt(points, "jeeves.session.duration_ms", { interrupted: "false", turns: "2", user_id: user })
      assert.strictEqual(session.type, DataPointType.HISTOGRAM)
      assert.strictEqual(session.value, 1)
      assert.strictEqual(
        pointAt(points, "jeeves.session.duration_ms", { interrupted: "true", turns: "0", user_id: user }).value,
        1
      )

      const warning = pointAt(points, "jeeves.budget.warnings", { reason: "per-user tokens", user_id: user })
      assert.strictEqual(warning.value, 1)
      const exceeded = pointAt(points, "jeeves.budget.exceeded", { reason: "per_user_max_tokens", user_id: user })
      assert.strictEqual(exceeded.value, 1)
      assert.isTrue(exceeded.monotonic)

      for (const [tool, ok, denied] of [["whoami", "true", "false"], ["drop_table", "true", "false"], [
        "forbidden",
        "false",
        "true"
      ]] as const) {
        const duration = pointAt(points, "jeeves.tool.duration_ms", { tool, ok, denied })
        assert.strictEqual(duration.type, DataPointType.HISTOGRAM)
        assert.strictEqual(duration.value, 1, tool)
      }

      for (const [tool, decision] of [["whoami", "allow"], ["drop_table", "ask"], ["forbidden", "deny"]] as const) {
        const point = pointAt(points, "jeeves.permission.decisions", { tool, decision, source: "policy", user_id: user })
        assert.strictEqual(point.value, 1, tool)
      }
      assert.strictEqual(
        pointAt(points, "jeeves.approval.requests", { tool: "drop_table", outcome: "approved", user_id: user }).value,
        1
      )
      assert.strictEqual(pointAt(points, "jeeves.approval.duration_ms", { tool: "drop_table", outcome: "approved" }).value, 1)

      const appends: Record<string, number> = {
        run_started: 2,
        run_completed: 2,
        tool_call: 3,
        tool_result: 3,
        permission_decision: 3,
        approval_decision: 1,
        budget_blocked: 1
      }
      for (const [action, count] of Object.entries(appends)) {
        const point = pointAt(points, "jeeves.audit.append_ms", { action, ok: "true" })
        assert.strictEqual(point.type, DataPointType.HISTOGRAM)
        assert.strictEqual(point.value, count, action)
      }

      // Nothing else, and never a per-session tag (unbounded cardinality).
      assert.deepStrictEqual([...new Set(points.map((point) => point.name))].sort(), [
        "jeeves.approval.duration_ms",
        "jeeves.approval.requests",
        "jeeves.audit.append_ms",
        "jeeves.budget.exceeded",
        "jeeves.budget.warnings",
        "jeeves.cost.usd",
        "jeeves.permission.decisions",
        "jeeves.session.duration_ms",
        "jeeves.tokens.input",
        "jeeves.tokens.output",
        "jeeves.tool.duration_ms"
      ])
      for (const point of points) assert.notProperty(point.attributes, "session_id", point.name)
    }).pipe(
      Effect.provide(
        agentWith(
          script,
          layer,
          ...governance({ perUserMaxTokens: 100, softWarningAt: 0.1 }),
          AuditLog.layerMemory({ secret: "telemetry-test-audit-key-0123456789" })
        )
      )
    )
  })

  it.effect("user_id is raw, hashed or omitted as configured; anonymous runs are tagged \"anonymous\"", () =>
    Effect.gen(function*() {
      const script = callThenSummarize([{ name: "whoami", args: {} }])
      const cases = [
        { mode: "raw", userId: "dana", expected: "dana" },
        { mode: "raw", userId: undefined, expected: "anonymous" },
        { mode: "hashed", userId: "dana", expected: Telemetry.userIdValue("hashed", "dana") },
        { mode: "omit", userId: "dana", expected: undefined }
      ] as const
      for (const { expected, mode, userId } of cases) {
        const { layer, reader, spans } = otel({ userIdAttribute: mode })
        const [runSpan, points] = yield* measured(
          reader,
          run("hi", userId === undefined ? {} : { userId })
        ).pipe(
          Effect.map(([, points]) => [oneSpan(spans.getFinishedSpans(), "jeeves.run"), points] as const),
          Effect.provide(agentWith(script, layer))
        )
        const tokens = points.filter((point) => point.name === "jeeves.tokens.input")
        assert.strictEqual(tokens.length, 1, mode)
        assert.strictEqual(tokens[0]!.attributes.user_id, expected, mode)
        assert.strictEqual(tokens[0]!.value, 30, mode)
        const session = points.filter((point) => point.name === "jeeves.session.duration_ms")
        assert.strictEqual(session[0]!.attributes.user_id, expected, mode)
        assert.strictEqual(runSpan.attributes.user_id, expected, mode)
        if (expected === undefined) {
          for (const point of points) assert.notProperty(point.attributes, "user_id", point.name)
        }
      }
    }))

  it.effect("labels set with Effect.tagMetrics are added to the agent's metrics", () => {
    const { layer, reader } = otel({ userIdAttribute: "omit" })
    return Effect.gen(function*() {
      const [, points] = yield* measured(reader, run("hi").pipe(Effect.tagMetrics("tenant", "acme")))
      assert.strictEqual(pointAt(points, "jeeves.tokens.input", { model: "scripted", tenant: "acme" }).value, 30)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer)))
  })

  it.effect("state evictions and auto-extract metrics, with their tags", () => {
    const { layer, reader } = otel({ userIdAttribute: "raw" })
    const memory = Memory.autoExtract().pipe(
      Layer.provide(Memory.layerInMemory()),
      Layer.provide(Layer.mergeAll(Model.layerScripted(() => ({ text: "[]" })), Budget.layerNone, layer))
    )
    return Effect.gen(function*() {
      const [, points] = yield* measured(
        reader,
        Effect.gen(function*() {
          yield* Metrics.recordEvictions("budget", 2)
          Metrics.unsafeRecordEvictions("memory")
          Metrics.unsafeRecordEvictions("memory", 0)
          const m = yield* Memory.Memory
          yield* m.remember({ input: "hello", output: "hi" }).pipe(RunContext.withUser("erin"))
        })
      )
      const evictions = pointAt(points, "jeeves.state.evictions", { store: "budget" })
      assert.strictEqual(evictions.value, 2)
      assert.isTrue(evictions.monotonic)
      assert.strictEqual(pointAt(points, "jeeves.state.evictions", { store: "memory" }).value, 1)
      assert.strictEqual(pointAt(points, "jeeves.auto_extract.invocations", { status: "ok", user_id: "erin" }).value, 1)
      const extraction = pointAt(points, "jeeves.auto_extract.duration_ms", { status: "ok", user_id: "erin" })
      assert.strictEqual(extraction.type, DataPointType.HISTOGRAM)
      assert.strictEqual(extraction.value, 1)
    }).pipe(Effect.provide(Layer.merge(memory, layer)))
  })
})

// ---- redaction, failures, off ---------------------------------------------------

const SECRET = "vault-token-3f9a1c77e2b84d05"
const SecretsLive = Secrets.layerDict({ VAULT_TOKEN: SECRET })

const leaky = Tool.make("leaky", {
  description: "Puts the secret on a span of its own",
  parameters: Schema.Struct({}),
  handler: () => Effect.withSpan(Effect.succeed("ok"), "leaky.inner", { attributes: { token: SECRET } })
})

const leakyPermissions = Layer.succeed(Permissions.Permissions, {
  check: (call) =>
    Effect.succeed(
      call.name === "forbidden" ? Permissions.Decision.Deny({ reason: `blocked for ${SECRET}` }) : Permissions.allow
    )
})

/** Turn 1 calls `leaky` and `forbidden`; turn 2 fails with an error quoting the secret. */
const leakyScript: Model.Script = (request) =>
  request.messages.at(-1)!.role !== "tool" ?
    { toolCalls: [{ name: "leaky", args: {} }, { name: "forbidden", args: {} }] } :
    {
      error: new Model.ModelError({ reason: "bad_request", retryable: false, description: `upstream rejected ${SECRET}` })
    }

const leakyAgent = (telemetry: Layer.Layer<Telemetry.Telemetry>) =>
  Agent.layer({ tools: [leaky, forbidden] }).pipe(
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(leakyScript), telemetry, SecretsLive, leakyPermissions))
  )

describe("Telemetry.layerOtel safety", () => {
  it.effect("the agent's spans are redacted with the agent's Secrets, failures included", () => {
    const { layer, spans } = otel()
    return Effect.gen(function*() {
      const error = yield* Effect.flip(run("leak it", { userId: "mallory", sessionId: `sess-${SECRET}` }))
      assert.strictEqual(error._tag, "ModelError")
      const finished = spans.getFinishedSpans()
      assert.includeMembers(finished.map((span) => span.name), [
        "jeeves.run",
        "jeeves.turn",
        "jeeves.model.complete",
        "jeeves.tool",
        "jeeves.permission.check",
        "leaky.inner"
      ])
      for (const span of finished) assert.notInclude(exported(span), SECRET, span.name)
      // A tool's own span, under the agent's: redacted with the agent's Secrets too.
      assert.strictEqual(oneSpan(finished, "leaky.inner").attributes.token, "[REDACTED]")
      const runSpan = oneSpan(finished, "jeeves.run")
      assert.strictEqual(runSpan.attributes.session_id, "sess-[REDACTED]")
      assert.strictEqual(runSpan.status.code, SpanStatusCode.ERROR)
      assert.include(runSpan.status.message ?? "", "upstream rejected [REDACTED]")
      // The failing turn's span is ended with the failure too.
      const turns = spansNamed(finished, "jeeves.turn")
      assert.strictEqual(turns.length, 2)
      assert.strictEqual(turns[1]!.status.code, SpanStatusCode.ERROR)
      const denied = toolSpan(finished, "jeeves.permission.check", "forbidden")
      assert.strictEqual(denied.attributes.reason, "blocked for [REDACTED]")
    }).pipe(Effect.provide(leakyAgent(layer)))
  })

  it.effect("spans outside any run: redacted with the Secrets given to the layer, else by pattern", () =>
    Effect.gen(function*() {
      const github = "ghp_" + "a".repeat(36)
      const attributesOf = (telemetry: ReturnType<typeof otel>, layer: Layer.Layer<Telemetry.Telemetry>) =>
        Effect.withSpan(Effect.void, "outside", { attributes: { token: SECRET, github } }).pipe(
          Effect.map(() => oneSpan(telemetry.spans.getFinishedSpans(), "outside").attributes),
          Effect.provide(layer)
        )
      const withSecrets = otel()
      assert.deepStrictEqual(yield* attributesOf(withSecrets, withSecrets.layer.pipe(Layer.provide(SecretsLive))), {
        token: "[REDACTED]",
        github: "[REDACTED]"
      })
      const patternsOnly = otel()
      assert.deepStrictEqual(yield* attributesOf(patternsOnly, patternsOnly.layer), {
        token: SECRET,
        github: "[REDACTED]"
      })
    }))

  it.live("failing exporters, processors and metric exporters never fail a run", () => {
    // Keeps what it got after shutdown (an InMemorySpanExporter forgets), for a check after teardown.
    const healthy: Array<string> = []
    const recording: SpanExporter = {
      export: (spans, done) => {
        for (const span of spans) healthy.push(span.name)
        done({ code: 0 }) // ExportResultCode.SUCCESS
      },
      shutdown: () => Promise.resolve()
    }
    const attempts = { spans: 0, metrics: 0 }
    const throwing: SpanExporter = {
      export: () => {
        attempts.spans++
        throw new Error("collector down")
      },
      shutdown: () => Promise.reject(new Error("collector down"))
    }
    const refusing: SpanExporter = {
      export: (_spans, done) => {
        attempts.spans++
        done({ code: 1, error: new Error("HTTP 503") }) // ExportResultCode.FAILED
      },
      shutdown: () => Promise.resolve(),
      forceFlush: () => Promise.reject(new Error("flush failed"))
    }
    const broken: SpanProcessor = {
      onStart: () => {
        throw new Error("onStart")
      },
      onEnd: () => {
        throw new Error("onEnd")
      },
      forceFlush: () => Promise.reject(new Error("forceFlush")),
      shutdown: () => {
        throw new Error("shutdown")
      }
    }
    const metricExporter: PushMetricExporter = {
      export: () => {
        attempts.metrics++
        throw new Error("metrics down")
      },
      forceFlush: () => Promise.reject(new Error("metrics down")),
      shutdown: () => Promise.reject(new Error("metrics down"))
    }
    const layer = Telemetry.layerOtel({
      serviceName: "jeeves-test",
      traceExporter: refusing,
      spanProcessor: [new SimpleSpanProcessor(throwing), broken, new SimpleSpanProcessor(recording)],
      metricExporter,
      metricExportInterval: "20 millis",
      shutdownTimeout: "1 second"
    })
    const script = callThenSummarize([{ name: "whoami", args: {} }])
    return Effect.gen(function*() {
      const result = yield* run("who am i?", { userId: "frank" }).pipe(Effect.provide(agentWith(script, layer)))
      assert.strictEqual(result.output, "frank")
      // The layer has shut down without failing; the healthy exporter next to the broken ones got the spans.
      assert.includeMembers(healthy, ["jeeves.run", "jeeves.turn", "jeeves.model.complete", "jeeves.tool"])
      assert.isAbove(attempts.spans, 0)
      assert.isAbove(attempts.metrics, 0)
    })
  })

  it.effect("with a context manager registered, tools see the agent's span as OpenTelemetry's active span", () => {
    const activeSpanId = Tool.make("active_span", {
      description: "OpenTelemetry's active span id, as an instrumented library would see it",
      parameters: Schema.Struct({}),
      handler: () => Effect.sync(() => trace.getActiveSpan()?.spanContext().spanId ?? "none")
    })
    const script = callThenSummarize([{ name: "active_span", args: {} }])
    const activeIn = (options?: Partial<Telemetry.OtelOptions>) => {
      const { layer, spans } = otel(options)
      return run("which span?").pipe(
        Effect.map((result) => ({ seen: result.toolCalls[0]!.output, tool: oneSpan(spans.getFinishedSpans(), "jeeves.tool") })),
        Effect.provide(
          Agent.layer({ tools: [activeSpanId] }).pipe(
            Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), layer))
          )
        )
      )
    }
    return Effect.gen(function*() {
      // No context manager: nothing to propagate into, so nothing is (the default).
      assert.strictEqual((yield* activeIn()).seen, "none")
      // `register()` installs the async-hooks context manager, as an instrumented app would.
      yield* registeredContextManager
      const propagated = yield* activeIn()
      assert.strictEqual(propagated.seen, propagated.tool.spanContext().spanId)
      assert.strictEqual((yield* activeIn({ propagateContext: false })).seen, "none")
    }).pipe(Effect.scoped)
  })

  it.effect("Telemetry.layerNone records nothing, even with an exporting tracer installed", () => {
    const { layer, reader, spans } = otel()
    return Effect.gen(function*() {
      const [result, points] = yield* measured(
        reader,
        Effect.zipLeft(run("who am i?", { userId: "gina" }), Effect.withSpan(Effect.void, "probe"))
      )
      assert.strictEqual(result.output, "gina")
      assert.deepStrictEqual(points, [])
      const names = spans.getFinishedSpans().map((span) => span.name)
      assert.include(names, "probe", "the tracer is live")
      assert.deepStrictEqual(names.filter((name) => name.startsWith("jeeves.")), [])
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "whoami", args: {} }]), layer, Telemetry.layerNone)))
  })
})
