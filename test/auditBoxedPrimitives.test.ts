/**
 * `AppendInput.payload` is converted "as `JSON.stringify` would": boxed
 * primitives are their values (`new Number(5)` is 5, `new String("ab")` is
 * "ab"), not `{}` or `{"0":"a","1":"b"}` — the recorded data is what the
 * caller passed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { AuditLog } from "jeevesagent"

describe("AuditLog payloads with boxed primitives", () => {
  it.effect("are recorded as their values, as JSON.stringify has them", () =>
    Effect.gen(function*() {
      const audit = yield* AuditLog.makeMemory({ secret: "boxed-primitives-secret-0123456789" })
      // eslint-disable-next-line no-new-wrappers
      const payload = { count: new Number(5), name: new String("ab"), flag: new Boolean(false), list: [new Number(7)] }
      yield* audit.append({ actor: "system", action: "boxed", payload })
      const [entry] = yield* audit.query({ action: "boxed" })
      assert.deepStrictEqual(entry!.payload, JSON.parse(JSON.stringify(payload)))
      assert.deepStrictEqual(entry!.payload, { count: 5, name: "ab", flag: false, list: [7] })
      assert.isTrue((yield* audit.verify).valid)
    }))
})
