/**
 * Malformed tool arguments from the model (tool input JSON that does not
 * parse) must become a typed error result for that call, not a crashed run.
 * The non-streaming path never sees such input (the API parses it); the
 * streamed path assembles it from input_json_delta pieces.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Effect, Exit, Layer, Schema, Stream } from "effect"
import { Agent, AgentEvent, Secrets, Tool } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

let added = 0
const add = Tool.make("add", {
  description: "Adds two numbers",
  parameters: Schema.Struct({ a: Schema.Number, b: Schema.Number }),
  handler: ({ a, b }) => Effect.sync(() => (added++, a + b))
})

const agentFor = (fake: Fake.FakeAnthropic) =>
  Effect.provide(
    Agent.Agent,
    Agent.layer({ instructions: "You add numbers.", tools: [add] }).pipe(
      Layer.provide(AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL })),
      Layer.provide(Layer.merge(Agent.layerDefaults, Secrets.layerDict({})))
    )
  )

const ev = (data: { readonly type: string } & Record<string, unknown>): Fake.SseEvent => ({ event: data.type, data })

/** A streamed turn: a valid `add` call and one whose input JSON is malformed, stop reason `tool_use`. */
const goodAndMalformedCall = (): Fake.Reply =>
  Fake.sseEvents([
    ...Fake.streamEvents(Fake.message([Fake.text("x")], { inputTokens: 20 })).slice(0, 2),
    ev({ type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "toolu_good", name: "add", input: {} } }),
    ev({ type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "{\"a\": 1, \"b\": 2}" } }),
    ev({ type: "content_block_stop", index: 0 }),
    ev({ type: "content_block_start", index: 1, content_block: { type: "tool_use", id: "toolu_bad", name: "add", input: {} } }),
    ev({ type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: "{\"a\": 1, \"b\": 2,}" } }),
    ev({ type: "content_block_stop", index: 1 }),
    ev({ type: "message_delta", delta: { stop_reason: "tool_use", stop_sequence: null }, usage: { output_tokens: 30 } }),
    ev({ type: "message_stop" })
  ])

describe("malformed streamed tool arguments", () => {
  it.scoped("agent.stream: a tool call whose JSON does not parse gets an error result; the run goes on", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(goodAndMalformedCall(), Fake.sse(Fake.message([Fake.text("3")])))
      const agent = yield* agentFor(fake)
      const exit = yield* Effect.exit(Stream.runCollect(agent.stream("add 1 and 2", { userId: "alice" })))
      assert.isTrue(Exit.isSuccess(exit), `the run crashed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`)
      const events = Chunk.toReadonlyArray((exit as Exit.Success<Chunk.Chunk<AgentEvent.AgentEvent>, never>).value)
      const completed = events.find(AgentEvent.AgentEvent.$is("completed"))!
      assert.deepStrictEqual(
        completed.result.toolCalls.map((call) => [call.callId, call.status]),
        [["toolu_good", "ok"], ["toolu_bad", "error"]]
      )
      assert.strictEqual(completed.result.output, "3")
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
