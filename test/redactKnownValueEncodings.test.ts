import { assert, describe, it } from "@effect/vitest"
import * as util from "node:util"
import { Effect, Redacted } from "effect"
import { Secrets } from "jeevesagent"

// A handed-out value must be masked in every form the README lists: "JSON-escaped,
// URL-encoded, base64 and hex". Each case below is one of those forms as a common
// producer writes it, and the service leaves the value readable in it.
const AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" // AWS secret keys hold `/` and `+`
const DB_PASSWORD = "p&ss<w>rd!2024"

const handedOut = Effect.gen(function*() {
  const secrets = Secrets.makeDict({ AWS_SECRET_ACCESS_KEY: AWS_SECRET, DB_PASSWORD })
  assert.strictEqual(Redacted.value(yield* secrets.resolve("AWS_SECRET_ACCESS_KEY")), AWS_SECRET)
  assert.strictEqual(Redacted.value(yield* secrets.resolve("DB_PASSWORD")), DB_PASSWORD)
  return secrets
})

describe("known values: JSON-escaped forms other producers write", () => {
  it.effect("'/' escaped as '\\/' (PHP's json_encode default, also legal JSON everywhere)", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut
      const php = `{"aws_secret":"${AWS_SECRET.replace(/\//g, "\\/")}"}`
      assert.deepStrictEqual(JSON.parse(php), { aws_secret: AWS_SECRET })
      assert.notInclude(secrets.redact(php), "bPxRfiCYEXAMPLEKEY")
    }))

  it.effect("'<' '>' '&' escaped as \\u003c \\u003e \\u0026 (Go's encoding/json default)", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut
      const go = `{"password":"p\\u0026ss\\u003cw\\u003erd!2024"}`
      assert.deepStrictEqual(JSON.parse(go), { password: DB_PASSWORD })
      assert.notInclude(secrets.redact(go), "rd!2024")
    }))
})

describe("known values: URL-encoded and hex forms", () => {
  it.effect("percent-encoding with lowercase hex digits (RFC 3986: equivalent to uppercase)", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut
      const exact = `https://sts.example.com/?secret=${encodeURIComponent(AWS_SECRET).replace(/%2F/g, "%2f")}`
      assert.strictEqual(new URL(exact).searchParams.get("secret"), AWS_SECRET)
      assert.notInclude(secrets.redact(exact), "bPxRfiCYEXAMPLEKEY")
    }))

  it.effect("hex with separators, as Node prints a Buffer (console.log(buffer), util.inspect)", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut
      const shown = util.inspect(Buffer.from(DB_PASSWORD))
      assert.strictEqual(shown, "<Buffer 70 26 73 73 3c 77 3e 72 64 21 32 30 32 34>")
      assert.notInclude(secrets.redact(`request body: ${shown}`), "70 26 73 73 3c 77 3e 72 64 21 32 30 32 34")
    }))
})
