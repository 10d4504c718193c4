/**
 * README: "Every method takes an AbortSignal (`{ signal }`); aborting — even
 * while the call is still starting and the services are being built —
 * interrupts [it] and rejects with the signal's reason". `ready()` too: it
 * is the call whose whole job is building the services, the step most
 * likely to hang (a database pool that cannot connect, a vault that does not
 * answer), so `ready({ signal: AbortSignal.timeout(...) })` bounds start-up.
 */
import { Effect, Layer } from "effect"
import { Model } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

const settleWithin = <A>(promise: Promise<A>, ms: number): Promise<{ readonly value: A } | { readonly error: unknown } | "still pending"> =>
  Promise.race([
    promise.then((value) => ({ value }), (error: unknown) => ({ error })),
    new Promise<"still pending">((resolve) => setTimeout(() => resolve("still pending"), ms))
  ])

describe("jeevesagent/promise ready() and AbortSignal", () => {
  it("ready() with an already aborted signal rejects at once with the signal's reason", async () => {
    const agent = createAgent({ model: "echo" })
    try {
      const controller = new AbortController()
      const reason = new Error("start-up cancelled")
      controller.abort(reason)
      const outcome = await settleWithin(agent.ready({ signal: controller.signal }), 5_000)
      expect(outcome).not.toBe("still pending")
      expect(outcome).not.toHaveProperty("value")
      expect((outcome as { readonly error: unknown }).error).toBe(reason)
    } finally {
      await agent.dispose()
    }
  })

  it("aborting the signal while the services are still being built rejects ready() with the signal's reason", async () => {
    // A model whose construction never finishes (a gateway that never answers the handshake).
    const neverBuilds = Layer.effect(Model.Model, Effect.never)
    const agent = createAgent({ model: neverBuilds })
    try {
      const controller = new AbortController()
      const ready = agent.ready({ signal: controller.signal })
      await new Promise((resolve) => setTimeout(resolve, 20))
      const reason = new Error("start-up took too long")
      controller.abort(reason)
      // Generous: only detects that the abort is ignored (the promise never settles).
      const outcome = await settleWithin(ready, 5_000)
      expect(outcome).not.toBe("still pending")
      expect((outcome as { readonly error: unknown }).error).toBe(reason)
    } finally {
      await agent.dispose()
    }
  })
})
