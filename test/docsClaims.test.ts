/**
 * Claims of the README and the doc comments, checked against the code: no
 * metric tagged with a user id by default, the services' own spans off
 * unless `serviceSpans: true`, afterTool only after a tool executed, the echo
 * model counting the same tokens streamed or not.
 */
import { Effect, Layer, Metric, Option, Schema, Stream, Tracer } from "effect"
import { Agent, Budget, Hooks, Memory, Model, Secrets, Telemetry, Tool } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import { describe, expect, it } from "vitest"
import * as Fake from "./support/fakeAnthropic.js"

/** A tracer that records the names of the spans made through it. */
const recordingTracer = (names: Array<string>) =>
  Effect.map(Effect.tracer, (inner) =>
    Tracer.make({
      span: (name, ...rest) => (names.push(name), inner.span(name, ...rest)),
      context: inner.context
    }))

const extractingModel = Model.layerScripted((request) =>
  request.tools.length === 0 && request.messages[0]?.role === "system" && request.messages[0].content === Memory.extractionPrompt ?
    { text: JSON.stringify([{ subject: "user", predicate: "likes", object: "tea" }]), usage: { inputTokens: 5, outputTokens: 5 } } :
    { text: "Noted.", usage: { inputTokens: 5, outputTokens: 5 } }
)

const autoExtractTags = (userId: string) =>
  Metric.snapshot.pipe(
    Effect.map((pairs) =>
      pairs
        .filter((pair) => pair.metricKey.name === "jeeves.auto_extract.invocations")
        .map((pair) => pair.metricKey.tags.map((tag) => `${tag.key}=${tag.value}`))
        .filter((tags) => tags.some((tag) => tag.includes(userId)))
    )
  )

describe("the docs tell the truth", () => {
  it("README: no metric is tagged with a user id by default — also Memory.autoExtract's, wired as its doc shows", async () => {
    // Memory.ts doc: `Memory.autoExtract().pipe(Layer.provide(Memory.layerInMemory()))`, then the agent's defaults.
    const userId = "review_autoextract_user_a"
    const MemoryLive = Memory.autoExtract().pipe(
      Layer.provide(Layer.mergeAll(Memory.layerInMemory(), extractingModel, Budget.layerNone))
    )
    const AgentLive = Agent.layer().pipe(
      Layer.provide(extractingModel),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, MemoryLive))
    )
    const tags = await Effect.runPromise(
      Effect.gen(function*() {
        const agent = yield* Agent.Agent
        yield* agent.run("I like tea", { userId })
        return yield* autoExtractTags(userId)
      }).pipe(Effect.provide(AgentLive))
    )
    expect(tags).toEqual([])
  })

  it("README: the services' own spans (Memory.*) are off unless serviceSpans: true — Memory.autoExtract's too", async () => {
    const names: Array<string> = []
    const program = Effect.gen(function*() {
      const recording = yield* recordingTracer(names)
      const MemoryLive = Memory.autoExtract().pipe(
        Layer.provide(Layer.mergeAll(Memory.layerInMemory(), extractingModel, Budget.layerNone, Telemetry.layer()))
      )
      const AgentLive = Agent.layer().pipe(
        Layer.provide(extractingModel),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, MemoryLive, Telemetry.layer()))
      )
      yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("I like tea", { userId: "alice" })).pipe(
        Effect.provide(Layer.merge(AgentLive, Layer.setTracer(recording)))
      )
    })
    await Effect.runPromise(program)
    expect(names).toContain("jeeves.run")
    expect(names.filter((name) => name.startsWith("Memory."))).toEqual([])
  })

  it("Model.makeEcho: output tokens are the words of the reply — streamed or not", async () => {
    const echo = Model.makeEcho()
    const request: Model.ModelRequest = { messages: [{ role: "user", content: "a  b" }], tools: [] }
    const completed = await Effect.runPromise(echo.complete(request))
    const streamed = await Effect.runPromise(
      Stream.runCollect(echo.stream(request)).pipe(
        Effect.map((parts) => Option.getOrThrow(
          Option.flatMap(
            Option.fromNullable([...parts].find((part) => part._tag === "Finish")),
            (part) => part._tag === "Finish" ? Option.some(part.response) : Option.none()
          )
        ))
      )
    )
    expect(completed.usage.outputTokens).toBe(3) // "Echo:", "a", "b"
    expect(streamed.usage.outputTokens).toBe(completed.usage.outputTokens)
  })

  it("README/Telemetry: AnthropicModel's own spans are service spans too — off unless serviceSpans: true", async () => {
    const names: Array<string> = []
    const program = Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(Fake.json(Fake.message([Fake.text("hi")], { inputTokens: 10, outputTokens: 2 })))
      const recording = yield* recordingTracer(names)
      const ModelLive = AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
        Layer.provide(Secrets.layerDict({}))
      )
      const AgentLive = Agent.layer().pipe(
        Layer.provide(ModelLive),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, Telemetry.layer()))
      )
      yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("hello", { userId: "alice" })).pipe(
        Effect.provide(Layer.merge(AgentLive, Layer.setTracer(recording)))
      )
    })
    await Effect.runPromise(Effect.scoped(program))
    expect(names).toContain("jeeves.model.complete")
    expect(names.filter((name) => name.startsWith("AnthropicModel."))).toEqual([])
  })

  it("README/Hooks: afterTool hooks run only after a tool actually executed — not when its arguments did not decode", async () => {
    const executed: Array<number> = []
    const seen: Array<string> = []
    const add = Tool.make("add", {
      description: "adds one",
      parameters: Schema.Struct({ n: Schema.Number }),
      handler: ({ n }) => Effect.sync(() => (executed.push(n), n + 1))
    })
    let turn = 0
    const ModelLive = Model.layerScripted(() =>
      ++turn === 1 ? { toolCalls: [{ name: "add", args: { n: "not a number" } }] } : { text: "done" }
    )
    const HooksLive = Hooks.layer({
      afterTool: [(call, result) => Effect.sync(() => seen.push(`${call.name}:${result.status}`))]
    })
    const AgentLive = Agent.layer({ tools: [add] }).pipe(
      Layer.provide(ModelLive),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, HooksLive))
    )
    const result = await Effect.runPromise(
      Effect.flatMap(Agent.Agent, (agent) => agent.run("go", { userId: "alice" })).pipe(Effect.provide(AgentLive))
    )
    expect(result.toolCalls[0]?.output.startsWith("ERROR: invalid arguments")).toBe(true)
    expect(executed).toEqual([]) // the tool's body never ran
    expect(seen).toEqual([]) // ... so no afterTool hook may run
  })
})
