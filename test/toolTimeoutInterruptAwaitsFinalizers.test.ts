import { assert, describe, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Fiber, Schema } from "effect"
import { Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

// `timeout` wraps the handler in `Effect.disconnect` so that an *uninterruptible* handler does not
// hold the run past its timeout. But disconnect also changes what happens when the RUN is
// interrupted (the caller aborts): the handler's fiber is interrupted in the background and the
// run's interruption returns before the handler's finalizers (a connection release, a temp-file
// removal) have run. A tool without `timeout` is awaited; the same tool with a timeout of an hour
// is not.
const toolWithCleanup = (timeout: Duration.DurationInput | undefined, started: Deferred.Deferred<void>, released: { done: boolean }) =>
  Tool.make("hold", {
    description: "holds a resource",
    parameters: Schema.Struct({}),
    ...(timeout === undefined ? {} : { timeout }),
    handler: () =>
    Effect.scoped(
      Effect.acquireRelease(
        Deferred.succeed(started, undefined),
        () => Effect.sleep("30 millis").pipe(Effect.zipRight(Effect.sync(() => void (released.done = true))))
      ).pipe(Effect.zipRight(Effect.never))
    )
  })

const interruptWhileToolRuns = (timeout: Duration.DurationInput | undefined) =>
  Effect.gen(function*() {
    const started = yield* Deferred.make<void>()
    const released = { done: false }
    const tool = toolWithCleanup(timeout, started, released)
    const fiber = yield* Effect.fork(
      run.pipe(Effect.provide(agentWith(callThenSummarize([{ id: "c1", name: "hold", args: {} }]), [tool])))
    )
    yield* Deferred.await(started)
    yield* Fiber.interrupt(fiber)
    return released.done
  })

// (Without `timeout`, interruptWhileToolRuns(undefined) is true.)
describe("tool timeout: interrupting the run", () => {
  it.live("with a timeout, the run's interruption still waits for the handler's finalizers", () =>
    Effect.gen(function*() {
      // Before the fix: false — Effect.disconnect interrupts the handler in the background.
      assert.isTrue(yield* interruptWhileToolRuns("1 hour"))
    }))
})
