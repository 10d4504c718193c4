/**
 * `jeeves.tool.duration_ms` is tagged with the tool's name. The README
 * insists metric tags stay bounded ("every distinct tag value is a metric
 * series that effect's metric registry keeps for the life of the process"),
 * yet a tool name the model made up (a hallucination, or a prompt injection
 * naming a fresh "tool" every turn) becomes a tag value of its own: one new
 * series, kept forever, per invented name.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Agent, Model, Telemetry, Tool } from "jeevesagent"
import { CollectingReader, dataPoints } from "./support/metricReader.js"


const lookup = Tool.make("lookup", {
  description: "Looks something up",
  parameters: Schema.Struct({}),
  handler: () => Effect.succeed("found")
})

/** The `tool` tag values of `jeeves.tool.duration_ms` the reader sees. */
const toolTags = (reader: CollectingReader) =>
  Effect.map(dataPoints(reader, "jeeves.tool.duration_ms"), (points) => new Set(points.map((point) => String(point.attributes.tool))))

describe("jeeves.tool.duration_ms cardinality", () => {
  it.effect("tool names the model invents do not each become a metric series", () => {
    const reader = new CollectingReader()
    const telemetry = Telemetry.layerOtel({ serviceName: "cardinality", metricReader: reader })
    // Every run, the model calls a tool that does not exist, under a new name each time.
    let n = 0
    const script: Model.Script = (request) =>
      request.messages.at(-1)!.role !== "tool" ?
        { toolCalls: [{ name: `fetch_invoice_${++n}_for_customer`, args: {} }, { name: "lookup", args: {} }] } :
        { text: "done" }
    const agent = Agent.layer({ tools: [lookup] }).pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), telemetry))
    )
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      for (let i = 0; i < 20; i++) {
        const result = yield* agent.run("what do I owe?")
        assert.strictEqual(result.toolCalls[0]!.status, "error", "an unknown tool gives an error result")
      }
      const tags = yield* toolTags(reader)
      const invented = [...tags].filter((tag) => tag.startsWith("fetch_invoice_"))
      // The registered tool is one series; unknown tools may share one more, but not one each.
      assert.isAtMost(invented.length, 1, `one series per invented tool name: ${invented.join(", ")}`)
      assert.isAtMost(tags.size, 2, [...tags].join(", "))
    }).pipe(Effect.provide(agent))
  })
})
