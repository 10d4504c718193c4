/**
 * A session id that is not a string, as a plain-JS caller can pass it (the
 * promise facade's `memory(userId).forget({ sessionId })`, or `remember`
 * with `sessionId` from parsed JSON), fails each call with a MemoryError of
 * its method on every backend (Memory.Service: "bad arguments fail with a
 * MemoryError naming the method"), never a defect or a number stored as a
 * session id.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const as = (userId: string) => RunContext.withUser(userId, { sessionId: "s1" })
const notAString = 7 as unknown as string

describe("a session id that is not a string", () => {
  for (const backend of backends) {
    it.effect(`${backend.name}: fails with a MemoryError naming the method`, () =>
      Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* m.remember({ input: "hello", output: "hi" })
        const operations: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>]> = [
          ["sessionMessages", m.sessionMessages(notAString)],
          ["forget", m.forget({ sessionId: notAString })],
          ["recall", m.recall("hello", { excludeSessionId: notAString })],
          ["remember", m.remember({ sessionId: notAString, input: "a", output: "b" })]
        ]
        for (const [method, operation] of operations) {
          const exit = yield* Effect.exit(operation)
          assert.isTrue(Exit.isFailure(exit), `${method} succeeded`)
          if (!Exit.isFailure(exit)) continue
          const failure = Cause.failureOption(exit.cause)
          assert.isTrue(failure._tag === "Some", `${method}: not a typed failure but ${Cause.pretty(exit.cause).split("\n")[0]}`)
          if (failure._tag !== "Some") continue
          const error = failure.value as Memory.MemoryError
          assert.strictEqual(error._tag, "MemoryError", method)
          assert.strictEqual(error.method, method)
        }
      }).pipe(as("alice"), Effect.provide(backend.fresh())))
  }
})
