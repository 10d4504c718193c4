/**
 * A streamed call that fails after `message_start` (its usage known, nothing
 * emitted to the consumer) is retried by the agent. The provider billed the
 * failed attempt's input tokens; the budget must be charged for them too,
 * not only for the successful retry.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Schedule, Stream } from "effect"
import { Agent, Budget, Secrets } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

const agentWithBudget = (fake: Fake.FakeAnthropic) =>
  Agent.layer({ instructions: "x", retrySchedule: Schedule.recurs(2) }).pipe(
    Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
    Layer.provide(
      AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
        Layer.provide(Secrets.layerDict({}))
      )
    )
  )

/** message_start reporting `inputTokens`, then an overloaded error event (retryable) before any content. */
const overloadedAfterStart = (inputTokens: number): Fake.Reply =>
  Fake.sseEvents([
    ...Fake.streamEvents(Fake.message([Fake.text("x")], { inputTokens })).slice(0, 2),
    { event: "error", data: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } } }
  ])

describe("retried model calls and their reported usage", () => {
  it.scoped("agent.stream: a retried attempt that had reported usage is charged along with the retry", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(
        overloadedAfterStart(5000),
        Fake.sse(Fake.message([Fake.text("fine")], { inputTokens: 10, outputTokens: 2 }))
      )
      const { agent, budget } = yield* Effect.provide(
        Effect.all({ agent: Agent.Agent, budget: Budget.Budget }),
        agentWithBudget(fake)
      )
      yield* Stream.runDrain(agent.stream("hello", { userId: "alice" }))
      assert.strictEqual(fake.requests.length, 2, "the first attempt was retried")
      // The first attempt's 5000 input tokens were reported (and billed) before it failed.
      assert.strictEqual((yield* budget.usageFor("alice")).tokensIn, 5010)
    }).pipe(Effect.withConfigProvider(noEnvironment)))

  it.scoped("agent.run with a large maxTokens (complete over a stream): a retried attempt's usage is charged", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(
        overloadedAfterStart(5000),
        Fake.sse(Fake.message([Fake.text("fine")], { inputTokens: 10, outputTokens: 2 }))
      )
      const layer = Agent.layer({ instructions: "x", retrySchedule: Schedule.recurs(2), maxTokens: 32_000 }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(
          AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
            Layer.provide(Secrets.layerDict({}))
          )
        )
      )
      const { agent, budget } = yield* Effect.provide(Effect.all({ agent: Agent.Agent, budget: Budget.Budget }), layer)
      const result = yield* agent.run("hello", { userId: "alice" })
      assert.strictEqual(result.output, "fine")
      assert.strictEqual(fake.requests.length, 2, "the first attempt was retried")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensIn, 5010)
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
