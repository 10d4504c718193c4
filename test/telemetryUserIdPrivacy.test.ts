/**
 * `userIdAttribute: "omit"` (or `"hashed"`) promises that spans never carry
 * the user id as it is. A failed auto-extraction (a model answering
 * something that is not JSON) logs a warning inside the run; the warning's
 * text (`AutoExtractError.message`) quotes the raw user id, and effect's
 * tracer logger turns it into an event of the exported `jeeves.run` span.
 */
import { assert, describe, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer } from "effect"
import { Agent, Budget, Memory, Model, Telemetry } from "jeevesagent"
import { exported } from "./support/exportedSpan.js"

const USER = "alice.smith@example.com"

const isExtraction = (request: Model.ModelRequest) =>
  request.messages[0]?.role === "system" && request.messages[0].content === Memory.extractionPrompt

/** The agent with auto-extracting memory whose extraction call answers something that is not JSON. */
const agentWith = (telemetry: Layer.Layer<Telemetry.Telemetry>) => {
  const model = Model.layerScripted((request) => (isExtraction(request) ? { text: "sorry, no facts today" } : { text: "hello" }))
  const memory = Memory.autoExtract().pipe(
    Layer.provide(Memory.layerInMemory()),
    Layer.provide(Layer.merge(model, Budget.layerNone))
  )
  return Agent.layer().pipe(Layer.provide(Layer.mergeAll(Agent.layerDefaults, model, memory, telemetry)))
}

describe("userIdAttribute on spans", () => {
  for (const mode of ["omit", "hashed"] as const) {
    it.effect(`"${mode}": no exported span carries the raw user id, even when auto-extraction fails`, () => {
      const spans = new InMemorySpanExporter()
      const telemetry = Telemetry.layerOtel({
        serviceName: "privacy",
        spanProcessor: new SimpleSpanProcessor(spans),
        userIdAttribute: mode
      })
      return Effect.gen(function*() {
        const result = yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("hi", { userId: USER }))
        assert.strictEqual(result.output, "hello")
        const finished = spans.getFinishedSpans()
        assert.isAbove(finished.length, 0)
        for (const span of finished) assert.notInclude(exported(span), USER, `${span.name} carries the raw user id`)
      }).pipe(Effect.provide(agentWith(telemetry)))
    })
  }
})
