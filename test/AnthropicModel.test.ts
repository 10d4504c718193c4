import { assert, describe, it } from "@effect/vitest"
import {
  Chunk,
  ConfigProvider,
  Effect,
  FastCheck as fc,
  Fiber,
  Layer,
  Redacted,
  Schedule,
  Schema,
  Stream
} from "effect"
import { Agent, AgentEvent, Budget, Model, Secrets, Tool } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const MODEL = "claude-sonnet-4-6"
const SONNET = { inputPerMillion: 3, outputPerMillion: 15 }

/** No environment at all, so a developer's own ANTHROPIC_API_KEY never leaks into a test. */
const noEnvironment = ConfigProvider.fromMap(new Map())
const environment = (key: string) => ConfigProvider.fromMap(new Map([["ANTHROPIC_API_KEY", key]]))

const options = (fake: Fake.FakeAnthropic, extra?: Partial<AnthropicModel.Options>): AnthropicModel.Options => ({
  model: MODEL,
  apiKey: "sk-test",
  baseURL: fake.baseURL,
  ...extra
})

const modelFor = (fake: Fake.FakeAnthropic, extra?: Partial<AnthropicModel.Options>) =>
  AnthropicModel.make(options(fake, extra)).pipe(
    Effect.provide(Secrets.layerDict({})),
    Effect.withConfigProvider(noEnvironment)
  )

const ask = (content: string, tools: ReadonlyArray<Model.ToolDefinition> = []): Model.ModelRequest => ({
  messages: [{ role: "user", content }],
  tools,
  maxTokens: 512
})

const add = Tool.make("add", {
  description: "Adds two numbers",
  parameters: Schema.Struct({ a: Schema.Number, b: Schema.Number }),
  handler: ({ a, b }) => Effect.succeed(a + b)
})

const agentFor = (fake: Fake.FakeAnthropic, config?: Agent.Config) =>
  Effect.provide(
    Agent.Agent,
    Agent.layer({ instructions: "You add numbers.", tools: [add], ...config }).pipe(
      Layer.provide(AnthropicModel.layer(options(fake))),
      Layer.provide(Agent.layerDefaults)
    )
  )

/** Fails the test instead of hanging when the awaited thing never happens (live clock). */
const within = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: "3 seconds", onTimeout: () => new Error("timed out waiting") })

describe("AnthropicModel", () => {
  describe("complete", () => {
    it.scoped("maps a text response, its usage and its cost, and sends system + messages", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(
          Fake.json(Fake.message([Fake.text("Hello"), Fake.text(", world")], { inputTokens: 1200, outputTokens: 300 }))
        )
        const model = yield* modelFor(fake)
        const response = yield* model.complete({
          messages: [
            { role: "system", content: "Be brief." },
            { role: "system", content: "Be kind." },
            { role: "user", content: "Hi" }
          ],
          tools: [],
          maxTokens: 256
        })

        assert.strictEqual(response.text, "Hello, world")
        assert.deepStrictEqual(response.toolCalls, [])
        assert.strictEqual(response.stopReason, "end_turn")
        assert.strictEqual(response.usage.inputTokens, 1200)
        assert.strictEqual(response.usage.outputTokens, 300)
        assert.closeTo(response.usage.costUsd, (1200 * 3 + 300 * 15) / 1e6, 1e-12)
        assert.strictEqual(model.name, MODEL)
        assert.deepStrictEqual(model.price, SONNET)

        assert.strictEqual(fake.requests.length, 1)
        const request = fake.requests[0]!
        assert.strictEqual(request.path, "/v1/messages")
        assert.strictEqual(request.apiKey, "sk-test")
        assert.deepStrictEqual(request.body, {
          model: MODEL,
          max_tokens: 256,
          system: "Be brief.\n\nBe kind.",
          messages: [{ role: "user", content: "Hi" }]
        })
      }))

    it.scoped("counts prompt-cache tokens as input and prices them at cache rates", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([Fake.text("ok")], {
          inputTokens: 50,
          cacheWriteTokens: 100,
          cacheReadTokens: 1000,
          outputTokens: 10
        })))
        const model = yield* modelFor(fake)
        const { usage } = yield* model.complete(ask("hi"))
        assert.strictEqual(usage.inputTokens, 1150)
        assert.closeTo(usage.costUsd, (50 * 3 + 100 * 3 * 1.25 + 1000 * 3 * 0.1 + 10 * 15) / 1e6, 1e-12)
      }))

    it.scoped("returns tool_use blocks as tool calls", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([
          Fake.text("Adding."),
          Fake.toolUse("toolu_1", "add", { a: 1, b: 2 }),
          Fake.toolUse("toolu_2", "add", { a: 3, b: 4 })
        ])))
        const model = yield* modelFor(fake)
        const response = yield* model.complete(ask("add", [add.definition]))
        assert.strictEqual(response.text, "Adding.")
        assert.strictEqual(response.stopReason, "tool_use")
        assert.deepStrictEqual(response.toolCalls, [
          { id: "toolu_1", name: "add", args: { a: 1, b: 2 } },
          { id: "toolu_2", name: "add", args: { a: 3, b: 4 } }
        ])
      }))

    it.scoped("message mapping: tool results and following user text share one user turn; empty turns vanish", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([Fake.text("ok")])))
        const model = yield* modelFor(fake)
        yield* model.complete({
          messages: [
            { role: "system", content: "A" },
            { role: "user", content: "first" },
            {
              role: "assistant",
              content: "",
              toolCalls: [{ id: "t1", name: "add", args: { a: 1, b: 2 } }, { id: "t2", name: "add", args: undefined }]
            },
            { role: "tool", toolCallId: "t1", toolName: "add", content: "3", isError: false },
            { role: "tool", toolCallId: "t2", toolName: "add", content: "", isError: true },
            { role: "user", content: "and now?" },
            { role: "assistant", content: "", toolCalls: [] },
            { role: "system", content: "B" },
            { role: "user", content: "hello?" }
          ],
          tools: []
        })
        const body = fake.requests[0]!.body
        assert.strictEqual(body.system, "A\n\nB")
        assert.deepStrictEqual(body.messages, [
          { role: "user", content: "first" },
          {
            role: "assistant",
            content: [
              { type: "tool_use", id: "t1", name: "add", input: { a: 1, b: 2 } },
              { type: "tool_use", id: "t2", name: "add", input: {} }
            ]
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "t1", content: "3" },
              { type: "tool_result", tool_use_id: "t2", is_error: true },
              { type: "text", text: "and now?" },
              { type: "text", text: "hello?" }
            ]
          }
        ])
        assert.notProperty(body, "tools")
      }))

    it.scoped("caps the request's max_tokens with the maxTokens option", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([Fake.text("a")])), Fake.json(Fake.message([Fake.text("b")])))
        const model = yield* modelFor(fake, { maxTokens: 100 })
        yield* model.complete({ ...ask("hi"), maxTokens: 4096 })
        yield* model.complete({ messages: [{ role: "user", content: "hi" }], tools: [] })
        assert.deepStrictEqual(fake.requests.map((request) => request.body.max_tokens), [100, 100])
      }))

    it.scoped("streams under the hood when max_tokens is too large for a non-streaming request", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.sse(Fake.message([Fake.text("a long answer")], { inputTokens: 7, outputTokens: 3 })))
        const model = yield* modelFor(fake)
        const response = yield* model.complete({ ...ask("write a book"), maxTokens: 64_000 })
        assert.strictEqual(response.text, "a long answer")
        assert.deepStrictEqual([response.usage.inputTokens, response.usage.outputTokens], [7, 3])
        assert.strictEqual(fake.requests[0]!.body.stream, true)
        assert.strictEqual(fake.requests[0]!.body.max_tokens, 64_000)
      }))
  })

  describe("through the Agent", () => {
    it.scoped("tool_use / tool_result round trip: grouping, system prompt, tools with input_schema", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(
          Fake.json(Fake.message([
            Fake.text("Let me add."),
            Fake.toolUse("toolu_1", "add", { a: 2, b: 3 }),
            Fake.toolUse("toolu_2", "add", { a: "two" })
          ], { inputTokens: 100, outputTokens: 20 })),
          Fake.json(Fake.message([Fake.text("2 + 3 = 5")], { inputTokens: 150, outputTokens: 8 }))
        )
        const agent = yield* agentFor(fake)
        const result = yield* agent.run("What is 2 + 3?", { userId: "alice" })

        assert.strictEqual(result.output, "2 + 3 = 5")
        assert.strictEqual(result.turns, 2)
        assert.strictEqual(result.tokensIn, 250)
        assert.strictEqual(result.tokensOut, 28)
        assert.closeTo(result.costUsd, (250 * 3 + 28 * 15) / 1e6, 1e-12)
        assert.deepStrictEqual(result.toolCalls.map((call) => [call.callId, call.status]), [
          ["toolu_1", "ok"],
          ["toolu_2", "error"]
        ])
        const badArgs = result.toolCalls[1]!.output
        assert.match(badArgs, /^ERROR: invalid arguments/)

        assert.strictEqual(fake.requests.length, 2)
        const second = fake.requests[1]!.body
        assert.strictEqual(second.system, "You add numbers.")
        assert.deepStrictEqual(second.tools, [
          { name: "add", description: "Adds two numbers", input_schema: add.definition.inputSchema }
        ])
        assert.strictEqual(second.tools[0].input_schema.type, "object")
        assert.deepStrictEqual(Object.keys(second.tools[0].input_schema.properties), ["a", "b"])
        assert.deepStrictEqual(second.messages, [
          { role: "user", content: "What is 2 + 3?" },
          {
            role: "assistant",
            content: [
              { type: "text", text: "Let me add." },
              { type: "tool_use", id: "toolu_1", name: "add", input: { a: 2, b: 3 } },
              { type: "tool_use", id: "toolu_2", name: "add", input: { a: "two" } }
            ]
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "toolu_1", content: "5" },
              { type: "tool_result", tool_use_id: "toolu_2", content: badArgs, is_error: true }
            ]
          }
        ])
      }))

    it.scoped("agent.stream: text deltas, a streamed tool call, the tool result and the final answer", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(
          Fake.sse(Fake.message([Fake.text("Checking the sum."), Fake.toolUse("toolu_9", "add", { a: 20, b: 22 })], {
            inputTokens: 40,
            outputTokens: 12
          })),
          Fake.sse(Fake.message([Fake.text("The answer is 42.")], { inputTokens: 60, outputTokens: 6 }))
        )
        const agent = yield* agentFor(fake)
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.stream("add 20 and 22", { userId: "bob" })))

        const kinds = events.map((event) => event._tag)
        assert.strictEqual(kinds[0], "started")
        assert.strictEqual(kinds.at(-1), "completed")
        const chunks = events.filter(AgentEvent.AgentEvent.$is("model_chunk"))
        const textOf = (turn: number) =>
          chunks.filter((chunk) => chunk.turn === turn && chunk.part._tag === "TextDelta")
            .map((chunk) => (chunk.part._tag === "TextDelta" ? chunk.part.text : ""))
        assert.isAbove(textOf(1).length, 1, "the text arrives in several deltas")
        assert.strictEqual(textOf(1).join(""), "Checking the sum.")
        assert.strictEqual(textOf(2).join(""), "The answer is 42.")
        const toolParts = chunks.filter((chunk) => chunk.part._tag === "ToolCallPart")
        assert.strictEqual(toolParts.length, 1)
        assert.deepStrictEqual(toolParts[0]!.part, {
          _tag: "ToolCallPart",
          call: { id: "toolu_9", name: "add", args: { a: 20, b: 22 } }
        })
        // the tool call part follows every text delta of its turn
        assert.isAbove(events.indexOf(toolParts[0]!), events.indexOf(chunks.filter((c) => c.turn === 1).at(-2)!))
        const toolResult = events.find(AgentEvent.AgentEvent.$is("tool_result"))!
        assert.strictEqual(toolResult.result.output, "42")
        const completed = events.find(AgentEvent.AgentEvent.$is("completed"))!
        assert.strictEqual(completed.result.output, "The answer is 42.")
        assert.strictEqual(completed.result.tokensIn, 100)
        assert.strictEqual(completed.result.tokensOut, 18)
        assert.closeTo(completed.result.costUsd, (100 * 3 + 18 * 15) / 1e6, 1e-12)

        assert.deepStrictEqual(fake.requests.map((request) => request.body.stream), [true, true])
        assert.deepStrictEqual(fake.requests[1]!.body.messages.at(-1), {
          role: "user",
          content: [{ type: "tool_result", tool_use_id: "toolu_9", content: "42" }]
        })
      }))

    it.scoped("529 overloaded, then success: retried by the agent's schedule", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.error(529, "overloaded_error", "Overloaded"), Fake.json(Fake.message([Fake.text("fine")])))
        const agent = yield* agentFor(fake, { retrySchedule: Schedule.recurs(2) })
        const result = yield* agent.run("hello")
        assert.strictEqual(result.output, "fine")
        assert.strictEqual(fake.requests.length, 2)
      }))

    it.scoped("529 overloaded, then success, while streaming", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.error(529, "overloaded_error", "Overloaded"), Fake.sse(Fake.message([Fake.text("fine")])))
        const agent = yield* agentFor(fake, { retrySchedule: Schedule.recurs(2) })
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.stream("hello")))
        const completed = events.find(AgentEvent.AgentEvent.$is("completed"))!
        assert.strictEqual(completed.result.output, "fine")
        assert.strictEqual(fake.requests.length, 2)
      }))

    it.scoped("a 400 fails at once, not retried even with a retry schedule", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(
          Fake.error(400, "invalid_request_error", "max_tokens: must be at least 1"),
          Fake.json(Fake.message([Fake.text("a retry would have got this")]))
        )
        const agent = yield* agentFor(fake, { retrySchedule: Schedule.recurs(2) })
        const error = yield* Effect.flip(agent.run("hello"))
        if (error._tag !== "ModelError") return assert.fail(`expected a ModelError, got ${error._tag}`)
        assert.strictEqual(error.reason, "bad_request")
        assert.strictEqual(error.retryable, false)
        assert.strictEqual(error.status, 400)
        assert.strictEqual(error.description, "max_tokens: must be at least 1")
        assert.strictEqual(fake.requests.length, 1)
      }))
  })

  describe("stream", () => {
    it.scoped("emits text deltas, tool calls when their JSON is complete, and the finish", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const body = Fake.message([
          Fake.text("On it."),
          Fake.toolUse("toolu_a", "add", { a: 1.5, b: -2, note: "ünïcode \"quoted\"" }),
          Fake.toolUse("toolu_b", "now", {})
        ], { inputTokens: 33, outputTokens: 21 })
        fake.enqueue(Fake.sse(body, { textChunk: 2, jsonChunk: 3 }))
        const model = yield* modelFor(fake)
        const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(ask("go", [add.definition]))))

        const toolA = { id: "toolu_a", name: "add", args: { a: 1.5, b: -2, note: "ünïcode \"quoted\"" } }
        const toolB = { id: "toolu_b", name: "now", args: {} }
        assert.deepStrictEqual(parts, [
          // message_start's report: what a call cancelled from here on is charged.
          { _tag: "Usage", usage: { inputTokens: 33, outputTokens: 1, costUsd: Model.costOf(SONNET, 33, 1) } },
          { _tag: "TextDelta", text: "On" },
          { _tag: "TextDelta", text: " i" },
          { _tag: "TextDelta", text: "t." },
          { _tag: "ToolCallPart", call: toolA },
          { _tag: "ToolCallPart", call: toolB },
          {
            _tag: "Finish",
            response: {
              text: "On it.",
              toolCalls: [toolA, toolB],
              usage: { inputTokens: 33, outputTokens: 21, costUsd: Model.costOf(SONNET, 33, 21) },
              stopReason: "tool_use"
            }
          }
        ])
        assert.strictEqual(fake.requests[0]!.body.stream, true)
      }))

    it.scoped("a stream whose events leave usage out (a proxy in front of the API) completes with zero usage, no defect", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const events = Fake.streamEvents(Fake.message([Fake.text("hello")])).map((event) => {
          const data = { ...(event.data as Record<string, unknown>) }
          if (data.type === "message_start") data.message = { ...(data.message as Record<string, unknown>), usage: undefined }
          if (data.type === "message_delta") delete data.usage
          return { ...event, data }
        })
        fake.enqueue(Fake.sseEvents(events))
        const model = yield* modelFor(fake)
        const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(ask("go"))))
        const finish = parts.at(-1)
        assert.strictEqual(finish?._tag, "Finish")
        if (finish?._tag === "Finish") assert.deepStrictEqual([finish.response.text, finish.response.usage.inputTokens], ["hello", 0])
      }))

    const partial = Fake.streamEvents(Fake.message([Fake.text("partial answer")]))
    const brokenStreams: ReadonlyArray<readonly [string, Fake.Reply, Model.ModelError["reason"], boolean]> = [
      [
        "an error event mid-stream maps by its error type",
        Fake.sseEvents([
          ...partial.slice(0, 4),
          { event: "error", data: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } } }
        ]),
        "overloaded",
        true
      ],
      ["a stream that ends before message_stop", Fake.sseEvents(partial.slice(0, 5)), "connection", true],
      ["a connection dropped mid-body", Fake.sseEvents(partial.slice(0, 4), { then: "drop" }), "connection", true],
    ]
    for (const [name, reply, reason, retryable] of brokenStreams) {
      it.scoped(`${name}: ${reason}, retryable ${retryable}`, () =>
        Effect.gen(function*() {
          const fake = yield* Fake.make
          fake.enqueue(reply)
          const model = yield* modelFor(fake)
          const error = yield* Effect.flip(Stream.runDrain(model.stream(ask("go"))))
          assert.deepStrictEqual([error.reason, error.retryable], [reason, retryable])
          if (reason === "overloaded") assert.strictEqual(error.description, "Overloaded")
        }))
    }
  })

  describe("errors", () => {
    const cases: ReadonlyArray<readonly [number, string, Model.ModelError["reason"], boolean]> = [
      [429, "rate_limit_error", "rate_limited", true],
      [529, "overloaded_error", "overloaded", true],
      [500, "api_error", "server_error", true],
      [503, "api_error", "server_error", true],
      [400, "invalid_request_error", "bad_request", false],
      [404, "not_found_error", "bad_request", false],
      [422, "invalid_request_error", "bad_request", false],
      [401, "authentication_error", "authentication", false],
      [403, "permission_error", "authentication", false],
      [418, "teapot_error", "unknown", false]
    ]

    it.scoped("HTTP statuses map to reasons and retryability, with the API's message", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const model = yield* modelFor(fake)
        for (const [status, type, reason, retryable] of cases) {
          fake.enqueue(Fake.error(status, type, `message for ${status}`))
          const error = yield* Effect.flip(model.complete(ask("hi")))
          assert.deepStrictEqual(
            [error.reason, error.retryable, error.status, error.description],
            [reason, retryable, status, `message for ${status}`],
            `HTTP ${status}`
          )
        }
        assert.strictEqual(fake.requests.length, cases.length, "the SDK itself never retries")
      }))

    it.scoped("a refused connection is a retryable connection error", () =>
      Effect.gen(function*() {
        const closedURL = yield* Effect.scoped(Effect.map(Fake.make, (fake) => fake.baseURL))
        const model = yield* AnthropicModel.make({ model: MODEL, apiKey: "sk-test", baseURL: closedURL }).pipe(
          Effect.provide(Secrets.layerDict({}))
        )
        const error = yield* Effect.flip(model.complete(ask("hi")))
        assert.strictEqual(error.reason, "connection")
        assert.strictEqual(error.retryable, true)
      }))

    it.scopedLive("the timeout option: a hanging request fails as a retryable connection error", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.hang)
        const model = yield* modelFor(fake, { timeout: "150 millis" })
        const error = yield* within(Effect.flip(model.complete(ask("hi"))))
        assert.strictEqual(error.reason, "connection")
        assert.strictEqual(error.retryable, true)
        yield* within(fake.awaitClientAbort)
      }))
  })

  describe("interruption aborts the HTTP request", () => {
    it.scopedLive("complete: interrupting the fiber closes the connection", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.hang)
        const model = yield* modelFor(fake)
        const fiber = yield* Effect.fork(model.complete(ask("hi")))
        yield* within(fake.awaitRequests(1))
        assert.strictEqual(fake.clientAborts(), 0)
        yield* Fiber.interrupt(fiber)
        yield* within(fake.awaitClientAbort)
        assert.strictEqual(fake.clientAborts(), 1)
      }))

    it.scopedLive("Agent.run under Effect.timeout closes the connection", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.hang)
        const agent = yield* agentFor(fake)
        const outcome = yield* Effect.either(agent.run("hi").pipe(Effect.timeout("200 millis")))
        assert.strictEqual(outcome._tag, "Left")
        yield* within(fake.awaitClientAbort)
        assert.strictEqual(fake.requests.length, 1)
      }))

    /** A server that streams the first text delta, then holds the response open. */
    const fakeStreamingThenHanging = Effect.tap(Fake.make, (fake) =>
      fake.enqueue(
        Fake.sseEvents(Fake.streamEvents(Fake.message([Fake.text("never finished")])).slice(0, 4), { then: "hang" })
      ))

    it.scopedLive("stream: a consumer that stops mid-body closes the connection", () =>
      Effect.gen(function*() {
        const fake = yield* fakeStreamingThenHanging
        const model = yield* modelFor(fake)
        const first = yield* within(Stream.runCollect(Stream.take(model.stream(ask("go")), 2)))
        assert.deepStrictEqual(Chunk.toReadonlyArray(first).map((part) => part._tag), ["Usage", "TextDelta"])
        assert.deepStrictEqual(Chunk.toReadonlyArray(first)[1], { _tag: "TextDelta", text: "neve" })
        yield* within(fake.awaitClientAbort)
      }))

    it.scopedLive("agent.stream: interrupting the consumer mid-body closes the connection", () =>
      Effect.gen(function*() {
        const fake = yield* fakeStreamingThenHanging
        const agent = yield* agentFor(fake)
        const fiber = yield* Effect.fork(Stream.runDrain(agent.stream("go")))
        yield* within(fake.awaitRequests(1))
        yield* Fiber.interrupt(fiber)
        yield* within(fake.awaitClientAbort)
        assert.strictEqual(fake.clientAborts(), 1)
      }))
  })

  describe("API key resolution", () => {
    const keySent = (
      secrets: Record<string, string>,
      provider: ConfigProvider.ConfigProvider | undefined,
      apiKey?: string | Redacted.Redacted<string>
    ) =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([Fake.text("ok")])))
        const make = AnthropicModel.make({ model: MODEL, baseURL: fake.baseURL, apiKey }).pipe(
          Effect.provide(Secrets.layerDict(secrets))
        )
        const model = yield* provider === undefined ? make : Effect.withConfigProvider(make, provider)
        yield* model.complete(ask("hi"))
        return fake.requests[0]!.apiKey
      })

    it.scoped("the explicit apiKey beats Secrets and the environment", () =>
      Effect.gen(function*() {
        const secrets = { ANTHROPIC_API_KEY: "sk-from-secrets" }
        assert.strictEqual(yield* keySent(secrets, environment("sk-from-env"), "sk-explicit"), "sk-explicit")
        assert.strictEqual(
          yield* keySent(secrets, environment("sk-from-env"), Redacted.make("sk-redacted")),
          "sk-redacted"
        )
      }))

    it.scoped("Secrets beats the environment", () =>
      Effect.gen(function*() {
        const key = yield* keySent({ ANTHROPIC_API_KEY: "sk-from-secrets" }, environment("sk-from-env"))
        assert.strictEqual(key, "sk-from-secrets")
      }))

    it.scoped("the environment is the last resort", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* keySent({}, environment("sk-from-env")), "sk-from-env")
      }))

    it.scoped("the default environment is process.env", () =>
      Effect.gen(function*() {
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const previous = process.env.ANTHROPIC_API_KEY
            process.env.ANTHROPIC_API_KEY = "sk-from-process-env"
            return previous
          }),
          (previous) =>
            Effect.sync(() => {
              if (previous === undefined) delete process.env.ANTHROPIC_API_KEY
              else process.env.ANTHROPIC_API_KEY = previous
            })
        )
        assert.strictEqual(yield* keySent({}, undefined), "sk-from-process-env")
      }))

    it.scoped("the Secrets service masks the key it handed out", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const secrets = Secrets.makeDict({ ANTHROPIC_API_KEY: "plain-looking-key-123" })
        yield* AnthropicModel.make({ model: MODEL, baseURL: fake.baseURL }).pipe(
          Effect.provideService(Secrets.Secrets, secrets)
        )
        assert.notInclude(secrets.redact("sent plain-looking-key-123"), "plain-looking-key-123")
      }))

    it.effect("no key anywhere is a ModelConfigError naming apiKey and ANTHROPIC_API_KEY", () =>
      Effect.gen(function*() {
        const error = yield* AnthropicModel.make({ model: MODEL }).pipe(
          Effect.provide(Secrets.layerDict({})),
          Effect.withConfigProvider(noEnvironment),
          Effect.flip
        )
        assert.strictEqual(error._tag, "ModelConfigError")
        assert.strictEqual(error.option, "apiKey")
        assert.include(error.message, "apiKey")
        assert.include(error.message, "ANTHROPIC_API_KEY")
      }))

    it.effect("an empty explicit apiKey is a ModelConfigError", () =>
      Effect.gen(function*() {
        const error = yield* AnthropicModel.make({ model: MODEL, apiKey: "" }).pipe(
          Effect.provide(Secrets.layerDict({ ANTHROPIC_API_KEY: "sk-from-secrets" })),
          Effect.flip
        )
        assert.strictEqual(error.option, "apiKey")
      }))
  })

  describe("prices", () => {
    it("the longest matching prefix wins", () => {
      const { priceFor } = AnthropicModel
      assert.deepStrictEqual(priceFor("claude-opus-4-20250514"), { inputPerMillion: 15, outputPerMillion: 75 })
      assert.deepStrictEqual(priceFor("claude-opus-4-1-20250805"), { inputPerMillion: 15, outputPerMillion: 75 })
      assert.deepStrictEqual(priceFor("claude-opus-4-5-20251101"), { inputPerMillion: 5, outputPerMillion: 25 })
      assert.deepStrictEqual(priceFor("claude-sonnet-4-5-20250929"), SONNET)
      assert.deepStrictEqual(priceFor("claude-haiku-4-5"), { inputPerMillion: 1, outputPerMillion: 5 })
      assert.deepStrictEqual(priceFor("claude-3-5-haiku-latest"), { inputPerMillion: 0.8, outputPerMillion: 4 })
      assert.deepStrictEqual(priceFor("claude-3-haiku-20240307"), { inputPerMillion: 0.25, outputPerMillion: 1.25 })
      assert.strictEqual(priceFor("gpt-4o"), undefined)
      assert.strictEqual(priceFor("claude-future-9"), undefined)
    })

    it.prop(
      "priceFor picks the longest prefix of the model among the table's keys",
      {
        keys: fc.array(fc.array(fc.constantFrom("a", "b", "-")).map((cs) => cs.join("")), { maxLength: 8 }),
        model: fc.array(fc.constantFrom("a", "b", "-"), { maxLength: 6 }).map((cs) => cs.join(""))
      },
      ({ keys, model }) => {
        const table = Object.fromEntries(keys.map((key, i) => [key, { inputPerMillion: i, outputPerMillion: key.length }]))
        const matching = Object.keys(table).filter((key) => model.startsWith(key))
        const price = AnthropicModel.priceFor(model, table)
        if (matching.length === 0) return price === undefined
        const longest = Math.max(...matching.map((key) => key.length))
        return price !== undefined && price.outputPerMillion === longest && model.startsWith(
          Object.keys(table).find((key) => table[key] === price)!
        )
      }
    )

    it.scoped("the prices option overrides a family or adds a more specific entry", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const family = yield* modelFor(fake, { prices: { "claude-sonnet-4": { inputPerMillion: 1, outputPerMillion: 2 } } })
        assert.deepStrictEqual(family.price, { inputPerMillion: 1, outputPerMillion: 2 })
        const specific = yield* modelFor(fake, {
          model: "claude-sonnet-4-20250514",
          prices: { "claude-sonnet-4-5": { inputPerMillion: 9, outputPerMillion: 9 } }
        })
        assert.deepStrictEqual(specific.price, SONNET)
        // An entry of the caller's for a family wins over a longer built-in prefix of that family.
        const opusFamily = yield* modelFor(fake, {
          model: "claude-opus-4-5-20251101",
          prices: { "claude-opus-4": { inputPerMillion: 1, outputPerMillion: 2 } }
        })
        assert.deepStrictEqual(opusFamily.price, { inputPerMillion: 1, outputPerMillion: 2 })
      }))

    it.scoped("an unknown model costs 0 unless requireCost is set", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        fake.enqueue(Fake.json(Fake.message([Fake.text("ok")], { inputTokens: 1000, outputTokens: 1000 })))
        const model = yield* modelFor(fake, { model: "claude-future-9" })
        assert.strictEqual(model.price, undefined)
        const { usage } = yield* model.complete(ask("hi"))
        assert.deepStrictEqual(usage, { inputTokens: 1000, outputTokens: 1000, costUsd: 0 })
      }))

    it.scoped("requireCost with an unknown model is a ModelConfigError naming the model and `prices`", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const error = yield* Effect.flip(modelFor(fake, { model: "claude-future-9", requireCost: true }))
        assert.strictEqual(error._tag, "ModelConfigError")
        assert.strictEqual(error.option, "prices")
        assert.include(error.message, "claude-future-9")
        assert.include(error.message, "prices")

        const priced = yield* modelFor(fake, {
          model: "claude-future-9",
          requireCost: true,
          prices: { "claude-future": { inputPerMillion: 2, outputPerMillion: 4 } }
        })
        assert.deepStrictEqual(priced.price, { inputPerMillion: 2, outputPerMillion: 4 })
      }))

    it.scoped("invalid options are ModelConfigErrors", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        const optionOf = (extra: Partial<AnthropicModel.Options>) =>
          Effect.map(Effect.flip(modelFor(fake, extra)), (error) => error.option)
        assert.strictEqual(
          yield* optionOf({ prices: { "claude-x": { inputPerMillion: -1, outputPerMillion: 1 } } }),
          "prices"
        )
        assert.strictEqual(yield* optionOf({ maxTokens: 0 }), "maxTokens")
        assert.strictEqual(yield* optionOf({ model: " " }), "model")
        assert.strictEqual(yield* optionOf({ timeout: "-1 seconds" }), "timeout")
      }))
  })
  describe("an answer cut off at max_tokens", () => {
    const cutToolJson = (fake: Fake.FakeAnthropic, stopReason: string) => {
      const start = Fake.streamEvents(Fake.message([Fake.text("x")])).slice(0, 2)
      fake.enqueue(Fake.sseEvents([
        ...start,
        { event: "content_block_start", data: { type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "t", name: "add", input: {} } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "{\"a\": 1, \"b\"" } } },
        { event: "content_block_stop", data: { type: "content_block_stop", index: 0 } },
        { event: "message_delta", data: { type: "message_delta", delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: 512 } } },
        { event: "message_stop", data: { type: "message_stop" } }
      ]))
    }

    it.scoped("streamed: the tool JSON cut short ends the stream with the max_tokens finish, the call given as it came", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        cutToolJson(fake, "max_tokens")
        const model = yield* modelFor(fake)
        const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(ask("go"))))
        const finish = parts.at(-1)!
        assert.strictEqual(finish._tag, "Finish")
        if (finish._tag === "Finish") {
          assert.strictEqual(finish.response.stopReason, "max_tokens")
          assert.deepStrictEqual(finish.response.toolCalls.map((call) => [call.name, call.args]), [
            ["add", { incomplete_input: "{\"a\": 1, \"b\"" }]
          ])
        }
      }))

    it.scoped("streamed: invalid tool JSON with any other stop reason is a call marked invalidArgs (its error result, not a failed run)", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make
        cutToolJson(fake, "tool_use")
        const model = yield* modelFor(fake)
        const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(ask("go"))))
        const finish = parts.at(-1)
        assert.strictEqual(finish?._tag, "Finish")
        if (finish?._tag !== "Finish") return
        const [call] = finish.response.toolCalls
        assert.deepStrictEqual(call!.args, {})
        assert.include(call!.invalidArgs, "the model's JSON does not parse")
      }))
  })
  it.scoped("whitespace-only text is not sent as a text block (the API refuses one)", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(Fake.json(Fake.message([Fake.text("ok")])))
      const model = yield* modelFor(fake)
      yield* model.complete({
        messages: [
          { role: "user", content: "add" },
          { role: "assistant", content: "\n\n", toolCalls: [{ id: "t1", name: "add", args: { a: 1, b: 2 } }] },
          { role: "tool", toolCallId: "t1", toolName: "add", content: "3", isError: false }
        ],
        tools: []
      })
      const assistant = fake.requests[0]!.body.messages[1]
      assert.deepStrictEqual(assistant.content.map((block: { type: string }) => block.type), ["tool_use"])
    }))
  it.scoped("a 429's retry-after (seconds, or retry-after-ms) is on the ModelError", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(
        Fake.error(429, "rate_limit_error", "slow down", { "retry-after": "2" }),
        Fake.error(529, "overloaded_error", "busy", { "retry-after-ms": "1500", "retry-after": "9" }),
        Fake.error(400, "invalid_request_error", "bad", { "retry-after": "2" })
      )
      const model = yield* modelFor(fake)
      const waits: Array<number | undefined> = []
      for (let i = 0; i < 3; i++) waits.push((yield* Effect.flip(model.complete(ask("hi")))).retryAfterMillis)
      assert.deepStrictEqual(waits, [2000, 1500, undefined])
    }))
  it.scoped("a stream dropped after the response began charges the usage it had reported, not nothing", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      const start = Fake.streamEvents(Fake.message([Fake.text("x")], { inputTokens: 5000 })).slice(0, 2)
      fake.enqueue(Fake.sseEvents([
        ...start,
        { event: "content_block_start", data: { type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "t", name: "add", input: {} } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "{\"a\": 1" } } }
      ], { then: "drop" }))
      const layer = Agent.layer({ instructions: "x", tools: [add], retrySchedule: Schedule.stop }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(AnthropicModel.layer(options(fake)).pipe(Layer.provide(Secrets.layerDict({}))))
      )
      const { agent, budget } = yield* Effect.provide(Effect.all({ agent: Agent.Agent, budget: Budget.Budget }), layer)
      const outcome = yield* Effect.either(Stream.runDrain(agent.stream("add", { userId: "alice" })))
      assert.strictEqual(outcome._tag, "Left")
      if (outcome._tag === "Left") assert.strictEqual((outcome.left as Model.ModelError).usage?.inputTokens, 5000)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensIn, 5000)
    }))
})
