/**
 * The plain-Node facade is called from JavaScript, where a user id read from
 * a database is often a number. `checkUserId` assumes a string and calls
 * `userId.isWellFormed()`, so a non-string id throws a `TypeError` from inside
 * the validation: `run` rejects with that TypeError instead of `InvalidUserId`,
 * and `memory(id).*` / `usageFor(id)` throw it synchronously instead of
 * returning a rejected promise (a `.catch()` on the call never sees it).
 */
import { RunContext } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

type Settled = { readonly threwSynchronously: boolean; readonly error: unknown }

/** Calls `f`, telling a synchronous throw apart from a rejection. */
const settle = async (f: () => Promise<unknown>): Promise<Settled> => {
  let promise: Promise<unknown>
  try {
    promise = f()
  } catch (error) {
    return { threwSynchronously: true, error }
  }
  try {
    await promise
    return { threwSynchronously: false, error: undefined }
  } catch (error) {
    return { threwSynchronously: false, error }
  }
}

/** A JavaScript caller's numeric id, past the TypeScript types. */
const numericId = 42 as unknown as string

describe("jeevesagent/promise with a non-string user id", () => {
  it("run rejects with InvalidUserId (not_a_string), never a TypeError from inside validation", async () => {
    const agent = createAgent({ model: "echo" })
    try {
      const outcome = await settle(() => agent.run("hi", { userId: numericId }))
      expect(outcome.threwSynchronously).toBe(false)
      expect(outcome.error).toBeInstanceOf(RunContext.InvalidUserId)
      expect((outcome.error as RunContext.InvalidUserId).rule).toBe("not_a_string")
      expect((outcome.error as Error).message).toBe("Invalid user id 42 (a number): user ids are strings (pass String(id) for a numeric id)")
    } finally {
      await agent.dispose()
    }
  })

  it("memory(id).working() returns a promise (rejecting with InvalidUserId) instead of throwing synchronously", async () => {
    const agent = createAgent({ model: "echo" })
    try {
      const outcome = await settle(() => agent.memory(numericId).working())
      expect(outcome.threwSynchronously).toBe(false)
      expect(outcome.error).toBeInstanceOf(RunContext.InvalidUserId)
      expect((outcome.error as RunContext.InvalidUserId).rule).toBe("not_a_string")
    } finally {
      await agent.dispose()
    }
  })

  it("usageFor(id) returns a promise (rejecting with InvalidUserId) instead of throwing synchronously", async () => {
    const agent = createAgent({ model: "echo" })
    try {
      const outcome = await settle(() => agent.usageFor(numericId))
      expect(outcome.threwSynchronously).toBe(false)
      expect(outcome.error).toBeInstanceOf(RunContext.InvalidUserId)
      expect((outcome.error as RunContext.InvalidUserId).rule).toBe("not_a_string")
    } finally {
      await agent.dispose()
    }
  })
})
