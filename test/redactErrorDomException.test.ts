import { assert, describe, it } from "@effect/vitest"
import * as util from "node:util"
import { Cause, Effect, Exit, Layer, Logger } from "effect"
import { Secrets } from "jeevesagent"

// `fetch(url, { signal: AbortSignal.timeout(ms) })` rejects with a DOMException: the most
// common failure of an HTTP tool or a model adapter. Its `name` and `code` are getters on
// DOMException.prototype that read an internal slot of the real instance.
const SECRET = "vault-password-4f8a2c9d"
const redact = Secrets.makeDict({ DB_PASSWORD: SECRET }).redact

const timeout = () => new DOMException(`request with ${SECRET} timed out`, "TimeoutError")

describe("redactError on a DOMException (an aborted/timed-out fetch)", () => {
  it("the redacted copy keeps a readable name and can be printed", () => {
    const copy = Secrets.redactError(timeout(), redact)
    assert.notInclude(copy.message, SECRET)
    // Each of these throws `TypeError [ERR_INVALID_THIS]: Value of "this" must be of DOMException`.
    assert.doesNotThrow(() => copy.name)
    assert.doesNotThrow(() => String(copy))
    assert.doesNotThrow(() => util.inspect(copy))
    assert.strictEqual(copy.name, "TimeoutError")
  })

  it("an Error whose cause is a DOMException can still be printed after redaction (promise facade rejections)", () => {
    const wrapped = new Error("fetch failed", { cause: timeout() })
    const copy = Secrets.redactError(wrapped, redact)
    assert.doesNotThrow(() => util.inspect(copy))
  })
})

describe("layerRedactingLogger with a DOMException in the logged cause", () => {
  it.effect("logging the failure does not kill the fiber", () => {
    const lines: Array<string> = []
    const capture = Logger.make((options) => void lines.push(Logger.logfmtLogger.log(options)))
    const layer = Secrets.layerRedactingLogger.pipe(
      Layer.provide(Logger.replace(Logger.defaultLogger, capture)),
      Layer.provide(Secrets.layerDict({ DB_PASSWORD: SECRET }))
    )
    return Effect.gen(function*() {
      // Without the redacting logger this succeeds; with it, Cause.pretty reads the copy's `name`
      // and the log call dies with ERR_INVALID_THIS.
      const exit = yield* Effect.exit(Effect.logError("tool failed", Cause.die(timeout())).pipe(Effect.provide(layer)))
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
      assert.strictEqual(lines.length, 1)
      assert.include(lines[0]!, "TimeoutError")
      assert.notInclude(lines[0]!, SECRET)
    })
  })
})
