/**
 * A streamed call interrupted (the caller cancels the run) after the
 * provider's `message_start` reported the input tokens it processed, but
 * before any chunk reached the consumer. The provider bills those tokens; the
 * reservation is released and the user is charged nothing, so cancelling
 * just before the first token makes arbitrarily many large prompts free of
 * any per-user cap (a stream that failed at the same point is charged).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber, Layer, Schedule, Stream } from "effect"
import { Agent, Budget, Secrets } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

const within = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: "3 seconds", onTimeout: () => new Error("timed out waiting") })

describe("a streamed call cancelled after the response began", () => {
  it.scopedLive("charges the input usage message_start reported, as a failed stream would be", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      // message_start (5000 input tokens) and a ping, then the response stays open.
      fake.enqueue(Fake.sseEvents(Fake.streamEvents(Fake.message([Fake.text("x")], { inputTokens: 5000 })).slice(0, 2), { then: "hang" }))
      const layer = Agent.layer({ instructions: "x", retrySchedule: Schedule.stop }).pipe(
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 10_000_000 }))),
        Layer.provide(
          AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
            Layer.provide(Secrets.layerDict({}))
          )
        )
      )
      const { agent, budget } = yield* Effect.provide(Effect.all({ agent: Agent.Agent, budget: Budget.Budget }), layer)
      const fiber = yield* Effect.fork(Stream.runDrain(agent.stream("a very long prompt", { userId: "alice" })))
      yield* within(fake.awaitRequests(1))
      // Let the client read message_start.
      yield* Effect.sleep("1 second")
      yield* Fiber.interrupt(fiber)
      yield* within(fake.awaitClientAbort)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensIn, 5000)
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
