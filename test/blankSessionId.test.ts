/**
 * A blank session id (a form field holding a space) is no session, as an
 * empty one is: the run gets a new session and succeeds. It never fails
 * after its model calls, when its episode is stored (README, Memory: an
 * invalid session id fails a run at its start).
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer } from "effect"
import { Agent, Memory, Model } from "jeevesagent"

describe("a blank session id", () => {
  for (const sessionId of [" ", "\t"]) {
    it.effect(`${JSON.stringify(sessionId)}: the run does not fail after its model calls`, () =>
      Effect.gen(function*() {
        let modelCalls = 0
        const script: Model.Script = () => {
          modelCalls++
          return { text: "hello" }
        }
        const exit = yield* Effect.flatMap(Agent.Agent, (agent) => Effect.exit(agent.run("hi", { userId: "alice", sessionId }))).pipe(
          Effect.provide(
            Agent.layer({}).pipe(
              Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), Memory.layerInMemory()))
            )
          )
        )
        if (Exit.isFailure(exit)) {
          assert.strictEqual(
            modelCalls,
            0,
            `the run failed after ${modelCalls} model call(s): ${Cause.pretty(exit.cause).split("\n")[0]}`
          )
        }
      }))
  }
})
