/**
 * An Anthropic streamed answer whose `message_stop` (and everything before it:
 * every text delta, `message_delta` with the final usage) reached the client,
 * after which the connection is lost before the HTTP body's end, or the body
 * is simply not closed. `message_stop` is the protocol's end of the message:
 * `agent.stream` finishes with `completed` and the whole answer, exactly as
 * `agent.run` does for the same answer — never a failed run that throws away
 * a complete, billed answer the consumer already has, nor one that never ends.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Effect, Layer, Schedule, Stream } from "effect"
import { Agent, AgentEvent, Secrets } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())

describe("AnthropicModel stream: the body does not end cleanly after message_stop", () => {
  for (const then of ["drop", "hang"] as const) it.scopedLive(`${then}: agent.stream completes with the whole answer (as agent.run would)`, () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      const body = Fake.message([Fake.text("The whole answer.")], { inputTokens: 20, outputTokens: 4 })
      // Every event of the message, message_stop included; then the socket is destroyed ("drop") or the
      // body is left open ("hang": only to detect a run that never ends; the timeout below is generous).
      fake.enqueue(Fake.sseEvents(Fake.streamEvents(body), { then }))
      const layer = Agent.layer({ retrySchedule: Schedule.stop }).pipe(
        Layer.provideMerge(Agent.layerDefaults),
        Layer.provide(
          AnthropicModel.layer({ model: "claude-sonnet-4-6", apiKey: "sk-test", baseURL: fake.baseURL }).pipe(
            Layer.provide(Secrets.layerDict({}))
          )
        )
      )
      const agent = yield* Effect.provide(Agent.Agent, layer)
      const outcome = yield* Effect.either(Stream.runCollect(agent.stream("hi", { userId: "alice" })).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("timed out") })
      ))
      assert.strictEqual(
        outcome._tag,
        "Right",
        `a message whose message_stop arrived should complete, got ${outcome._tag === "Left" ? String(outcome.left) : ""}`
      )
      if (outcome._tag !== "Right") return
      const completed = Chunk.toReadonlyArray(outcome.right).find(AgentEvent.AgentEvent.$is("completed"))
      assert.strictEqual(completed?.result.output, "The whole answer.")
      assert.strictEqual(completed?.result.tokensIn, 20)
      assert.strictEqual(completed?.result.tokensOut, 4)
    }).pipe(Effect.withConfigProvider(noEnvironment)))
})
