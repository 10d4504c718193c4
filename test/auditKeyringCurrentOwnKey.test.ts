/**
 * A keyring whose `current` names no key fails the layer with
 * AuditUnavailable ("the keyring's current key ... is not one of its keys"),
 * also when it names a member of Object.prototype ("constructor",
 * "toString", ...): never a layer that builds with no signing key and dies
 * on every append.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { AuditLog } from "jeevesagent"

describe("AuditLog keyring validation", () => {
  for (const current of ["constructor", "toString", "hasOwnProperty"]) {
    it.effect(`current ${JSON.stringify(current)}, not a key of the keyring, fails the layer with AuditUnavailable`, () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          Effect.flatMap(
            AuditLog.makeMemory({ keyring: { current, keys: { k1: "a-long-enough-secret-1" } } }),
            (audit) => audit.append({ actor: "system", action: "a", payload: {} })
          )
        )
        // Expected: a typed failure at construction, naming the bad configuration; never a defect.
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          assert.isFalse(Cause.isDie(exit.cause), `died: ${Cause.pretty(exit.cause)}`)
          const error = Cause.failureOption(exit.cause)
          assert.strictEqual(error._tag === "Some" ? error.value._tag : undefined, "AuditUnavailable")
          assert.include(error._tag === "Some" ? error.value.message : "", "is not one of its keys")
        }
      }))
  }
})
