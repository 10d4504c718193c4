/**
 * `toRejection` maps every interruption-only cause to the signal's abort
 * reason, or, with no signal, to a fresh `AbortError`, even when nobody
 * aborted and `dispose()` was not called: the interruption came from inside
 * (a model client whose request queue was shut down, a joined fiber that was
 * interrupted). The caller is told it cancelled the call itself, and code that
 * ignores its own aborts (an HTTP server whose client went away) silently
 * swallows a real failure.
 */
import { Cause, Effect, Layer, Queue, Stream } from "effect"
import { Model } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

/** A model client that takes requests through a queue its owner has shut down. */
const shutDownClient = Layer.effect(
  Model.Model,
  Effect.gen(function*() {
    const requests = yield* Queue.unbounded<Model.ModelRequest>()
    yield* Queue.shutdown(requests)
    const complete = (request: Model.ModelRequest): Effect.Effect<Model.ModelResponse, Model.ModelError> =>
      Effect.zipRight(Queue.offer(requests, request), Effect.never)
    return Model.Model.of({ name: "queued", price: undefined, complete, stream: () => Stream.die("not used") })
  })
)

describe("jeevesagent/promise rejections of interrupted calls", () => {
  it("a run interrupted from inside, with no signal and no dispose(), does not reject as if the caller aborted", async () => {
    const agent = createAgent({ model: shutDownClient })
    try {
      const error = await agent.run("hi", { userId: "alice" }).then(() => undefined, (e: unknown) => e)
      expect(error).toBeDefined()
      expect((error as { name?: unknown }).name).not.toBe("AbortError")
      expect(Cause.isInterruptedException(error)).toBe(true)
    } finally {
      await agent.dispose()
    }
  })
})
