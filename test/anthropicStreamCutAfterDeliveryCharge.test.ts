/**
 * A streamed answer that reached the consumer and was then cut off (the
 * connection dropped before message_delta). The only usage reported is
 * message_start's, whose `output_tokens` is a placeholder (1): the output
 * already delivered was generated and billed, so the budget must not charge
 * it as one token. (The agent's own rule: an answer that reached the caller
 * with unknown usage is charged at the estimate, fail closed.)
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Schedule, Stream } from "effect"
import { Agent, Budget, Secrets } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

describe("a streamed answer cut off after it reached the consumer", () => {
  it.scoped("charges more output than message_start's placeholder of 1 token", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      const words = Array.from({ length: 40 }, (_, i) => `word${i} `).join("")
      const events = Fake.streamEvents(Fake.message([Fake.text(words)], { inputTokens: 100 }), { textChunk: 6 })
      // message_start, ping, content_block_start and the text deltas; then the connection drops.
      const cut = events.filter((event) => event.event !== "content_block_stop" && event.event !== "message_delta" && event.event !== "message_stop")
      const deltas = cut.filter((event) => event.event === "content_block_delta").length
      assert.isAtLeast(deltas, 40)
      fake.enqueue(Fake.sseEvents(cut, { then: "drop" }))

      const layer = Agent.layer({ instructions: "x", retrySchedule: Schedule.stop, maxTokens: 2000 }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(
          AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
            Layer.provide(Secrets.layerDict({}))
          )
        )
      )
      const { agent, budget } = yield* Effect.provide(Effect.all({ agent: Agent.Agent, budget: Budget.Budget }), layer)
      const outcome = yield* Effect.either(Stream.runDrain(agent.stream("write", { userId: "alice" })))
      assert.strictEqual(outcome._tag, "Left", "the cut-off stream fails the run")
      const usage = yield* budget.usageFor("alice")
      assert.strictEqual(usage.tokensIn, 100)
      // At least `deltas` output tokens reached the consumer; charging 1 lets streamed output go unmetered.
      assert.isAtLeast(usage.tokensOut, deltas)
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
