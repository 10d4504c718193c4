import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Stream } from "effect"
import { Agent, Budget, Model } from "jeevesagent"

/**
 * A streamed call whose `Finish` part (the whole response, with the usage the
 * provider reported) has reached the agent, but whose stream has not ended yet
 * (AnthropicModel: `message_stop` came, the HTTP body is still open), is cut off
 * by the run's interruption (the consumer stops). The usage is known exactly, yet
 * the agent decides only on `answerDelivered`: with a chunk delivered it charges the
 * whole estimate (4096 output tokens), with none it releases and charges nothing.
 * The ledger should hold what the model reported.
 */
const finishedThenOpen = (answer: Model.ModelResponse, finishSeen: Deferred.Deferred<void>) =>
  Model.make({
    name: "finish-then-open",
    complete: () => Effect.succeed(answer),
    stream: () =>
      Model.responseParts(answer).pipe(
        // Pulled only once every part before it, the Finish included, was handed to the agent.
        Stream.concat(Stream.drain(Stream.fromEffect(Deferred.succeed(finishSeen, undefined)))),
        Stream.concat(Stream.never)
      )
  })

const run = (answer: Model.ModelResponse) =>
  Effect.gen(function*() {
    const finishSeen = yield* Deferred.make<void>()
    const layer = Agent.layer().pipe(
      Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 1_000_000 }))),
      Layer.provide(Layer.succeed(Model.Model, finishedThenOpen(answer, finishSeen))),
      Layer.orDie
    )
    return yield* Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const consumer = yield* Effect.fork(Stream.runDrain(agent.stream("hi", { userId: "alice" })))
      yield* Deferred.await(finishSeen)
      yield* Fiber.interrupt(consumer)
      return yield* budget.usageFor("alice")
    }).pipe(Effect.provide(layer))
  })

describe("Budget: a stream interrupted after its Finish part", () => {
  it.effect("with part of the answer delivered: charged the reported usage, not the whole estimate", () =>
    Effect.gen(function*() {
      const used = yield* run({
        text: "the whole answer",
        toolCalls: [],
        usage: { inputTokens: 30, outputTokens: 7, costUsd: 0 },
        stopReason: "end_turn"
      })
      assert.deepStrictEqual(used, { tokensIn: 30, tokensOut: 7, tokensTotal: 37, costUsd: 0 })
    }))

  it.effect("with nothing delivered (an empty answer): charged the reported usage, not nothing", () =>
    Effect.gen(function*() {
      const used = yield* run({
        text: "",
        toolCalls: [],
        usage: { inputTokens: 30, outputTokens: 1, costUsd: 0 },
        stopReason: "end_turn"
      })
      assert.deepStrictEqual(used, { tokensIn: 30, tokensOut: 1, tokensTotal: 31, costUsd: 0 })
    }))
})
