import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted } from "effect"
import { Secrets } from "jeevesagent"

describe("Secrets.make cache: a resolve that started before a store", () => {
  it.effect("does not put the replaced value back in the cache once the store has succeeded", () =>
    Effect.gen(function*() {
      // A vault: reads are slow (a network round trip); the first read sees the value before rotation.
      let current = "old-api-key-0000-1111"
      const firstReadSeen = yield* Deferred.make<void>()
      const releaseFirstRead = yield* Deferred.make<void>()
      let reads = 0
      const secrets = Secrets.make({
        resolve: () =>
          Effect.gen(function*() {
            const value = current
            if (reads++ === 0) {
              yield* Deferred.succeed(firstReadSeen, undefined)
              yield* Deferred.await(releaseFirstRead)
            }
            return value
          }),
        store: (_ref, value) => Effect.sync(() => void (current = value))
      })
      // A run resolves the key (one of many concurrent ones) ...
      const inFlight = yield* Effect.fork(secrets.resolve("API_KEY"))
      yield* Deferred.await(firstReadSeen)
      // ... while an operator rotates it.
      yield* secrets.store("API_KEY", "new-api-key-2222-3333")
      assert.strictEqual(secrets.lookupSync("API_KEY"), "new-api-key-2222-3333")
      yield* Deferred.succeed(releaseFirstRead, undefined)
      assert.strictEqual(Redacted.value(yield* Fiber.join(inFlight)), "old-api-key-0000-1111")
      // Model adapters built from now on look the key up with lookupSync: they must get the
      // rotated key, not the revoked one the late read put back.
      assert.strictEqual(secrets.lookupSync("API_KEY"), "new-api-key-2222-3333")
    }))
})
