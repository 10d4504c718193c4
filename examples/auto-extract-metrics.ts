/**
 * Auto-extract observability: after every run, one small model call pulls
 * (subject, predicate, object) facts out of the episode into the user's
 * bi-temporal fact store — and, since that call is on your bill, it is
 * measured: `jeeves.auto_extract.duration_ms` and
 * `jeeves.auto_extract.invocations`, tagged `user_id` and `status`, exported
 * through OpenTelemetry. Extraction is charged to the same user's budget.
 *
 * Run: npx tsx examples/auto-extract-metrics.ts
 */
import { MetricReader } from "@opentelemetry/sdk-metrics"
import { Effect, Layer } from "effect"
import { Agent, Budget, Memory, Model, RunContext, Telemetry } from "jeevesagent"

/** A reader we collect from on demand (in production: a periodic OTLP exporter). */
class OnDemandReader extends MetricReader {
  protected override onForceFlush() {
    return Promise.resolve()
  }
  protected override onShutdown() {
    return Promise.resolve()
  }
}
const reader = new OnDemandReader()

// The offline model answers runs, and answers extraction calls with facts.
const ModelLive = Model.layerScripted((request, context) => {
  const system = request.messages.find((m) => m.role === "system")?.content ?? ""
  if (/extract/i.test(system)) {
    const liked = /I like ([^\n]+)/.exec(request.messages.at(-1)!.content)?.[1] ?? "nothing"
    if (liked === "oolong") return { text: "not json, oops", usage: { inputTokens: 40, outputTokens: 5 } }
    return {
      text: JSON.stringify([{ subject: context.userId, predicate: "prefers", object: liked }]),
      usage: { inputTokens: 40, outputTokens: 12 }
    }
  }
  return { text: "Noted!", usage: { inputTokens: 20, outputTokens: 3 } }
})

// Per-user metric tags are opt-in: each user id is a series kept for the process's life.
const TelemetryLive = Telemetry.layerOtel({
  serviceName: "auto-extract-example",
  metricReader: reader,
  metricUserIdAttribute: "raw"
})
const BudgetLive = Budget.layer({ perUserMaxTokens: 10_000 })
// Auto-extract wraps the memory in context, charging extraction to the same budget through the same model.
const MemoryLive = Memory.autoExtract({ maxFacts: 5 }).pipe(
  Layer.provide(Layer.mergeAll(Memory.layerInMemory(), ModelLive, BudgetLive, TelemetryLive))
)
const AgentLive = Agent.layer({ instructions: "Remember what users like." }).pipe(
  Layer.provide(ModelLive),
  Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, BudgetLive, MemoryLive, TelemetryLive))
)

const program = Effect.gen(function*() {
  const agent = yield* Agent.Agent
  const memory = yield* Memory.Memory
  const budget = yield* Budget.Budget
  yield* agent.run("I like green tea", { userId: "alice" })
  yield* agent.run("I like espresso", { userId: "bob" })
  yield* agent.run("I like oolong", { userId: "bob" }) // the model's extraction answer is broken: status error

  for (const user of ["alice", "bob"]) {
    const facts = yield* memory.recallFacts("prefers", { limit: 5 }).pipe(RunContext.withUser(user))
    console.log(`${user} facts: ${facts.map((f) => `${f.subject} ${f.predicate} ${f.object}`).join("; ")}`)
  }
  console.log(`alice budget (runs + extraction): ${(yield* budget.usageFor("alice")).tokensTotal} tokens`)

  const { resourceMetrics } = yield* Effect.promise(() => reader.collect())
  const lines: Array<string> = []
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (!metric.descriptor.name.startsWith("jeeves.auto_extract")) continue
      for (const point of metric.dataPoints) {
        const value = point.value as number | { count: number }
        const shown = typeof value === "number" ? value : `count=${value.count}`
        lines.push(`${metric.descriptor.name} user_id=${point.attributes.user_id} status=${point.attributes.status}: ${shown}`)
      }
    }
  }
  for (const line of lines.sort()) console.log(line)
})

await Effect.runPromise(program.pipe(Effect.provide(AgentLive), Effect.scoped))
