/**
 * A handed-out value is masked in its base64 form (README) also when the
 * base64 is cut into lines, as the `base64` command line tool (coreutils,
 * `-w 76`), MIME (RFC 2045, CRLF) and PEM-style encoders write it: a token
 * longer than 57 bytes would otherwise span a line break, neither line being
 * the whole base64 form, and an agent with a shell tool that runs
 * `base64 <<< "$TOKEN"` would hand the token back readable.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { Secrets } from "jeevesagent"

// 73 bytes: its base64 is 100 characters, one full line of 76 and a second of 24.
const TOKEN = "tok_live_Q7x9Zp2LmN4vB8cR1tY6wE3uI0oP5aS7dF9gH2jK4lZ6xC8vB1nM3qW5eR7tY9uI"

const wrapped = (text: string, eol: string) => text.replace(/(.{76})(?=.)/g, `$1${eol}`)

describe("known values: base64 wrapped at 76 characters", () => {
  for (const [name, eol] of [["LF (coreutils base64)", "\n"], ["CRLF (MIME)", "\r\n"]] as const) {
    it.effect(`a handed-out value is masked in line-wrapped base64, ${name}`, () =>
      Effect.gen(function*() {
        const secrets = Secrets.makeDict({ API_TOKEN: TOKEN })
        assert.strictEqual(Redacted.value(yield* secrets.resolve("API_TOKEN")), TOKEN)
        const plain = Buffer.from(TOKEN).toString("base64")
        // The unwrapped form is masked too.
        assert.notInclude(secrets.redact(plain), plain.slice(20, 60))
        const output = wrapped(plain, eol) + eol
        assert.strictEqual(Buffer.from(output, "base64").toString(), TOKEN)
        // Expected: neither line of the wrapped form is left readable.
        const redacted = secrets.redact(output)
        assert.notInclude(redacted, plain.slice(20, 60))
        assert.notInclude(redacted, plain.slice(80))
      }))
  }
})
