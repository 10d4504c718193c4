/**
 * "Services are built lazily on the first call (or by `ready()`), once, and
 * shared by every user" (`createAgent` doc). When the `secrets` layer itself
 * fails to build (the vault is down), later calls reject with that failure
 * without running the user's secrets layer again just to mask the rejection:
 * N failed requests must not be N more vault logins, each waited for and
 * neither tracked by `dispose()` nor bounded by the call's signal.
 */
import { Effect, Layer } from "effect"
import { Secrets } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

describe("jeevesagent/promise: a secrets layer that fails to build", () => {
  it("is built once, not once more for every rejected call", async () => {
    let builds = 0
    const vault = Layer.effect(
      Secrets.Secrets,
      Effect.suspend(() => {
        builds++
        return Effect.fail(new Error("vault unreachable"))
      })
    ) as Layer.Layer<Secrets.Secrets, unknown>
    const agent = createAgent({ model: "echo", secrets: vault })
    try {
      const errors: Array<unknown> = []
      for (const call of [() => agent.ready(), () => agent.run("a"), () => agent.run("b"), () => agent.usageFor("alice")]) {
        errors.push(await call().then(() => undefined, (e: unknown) => e))
      }
      // Every call rejects with the build's failure ...
      for (const error of errors) expect((error as Error).message).toContain("vault unreachable")
      // ... but the user's layer ran once (the one build of the runtime), not 1 + 4 times.
      expect(builds).toBe(1)
    } finally {
      await agent.dispose()
    }
  })
})
