import { assert, describe, it } from "@effect/vitest"
import * as util from "node:util"
import { Effect } from "effect"
import { Secrets } from "jeevesagent"

// The new "bytes as Node prints a Buffer" form (`70 26 73 ...`) is the value's whole hex, spaced.
// But Node prints at most `buffer.INSPECT_MAX_BYTES` (50) bytes of a Buffer and then
// `... N more bytes>`: for any value longer than 50 bytes — every Anthropic key (~108 bytes),
// GitHub fine-grained tokens, JWTs — the form never occurs in the text, and the first 50 bytes of
// the secret are printed in clear.
const ANTHROPIC_KEY = "sk-ant-api03-" + "Zq8xV3mN7pL2wK9rT4yH6jB1cF5gD0sA".repeat(3) // 109 bytes

describe("known values: a Buffer as Node prints it", () => {
  it.effect("masks the bytes of a value longer than 50 bytes as util.inspect shows them", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ ANTHROPIC_API_KEY: ANTHROPIC_KEY })
      yield* secrets.resolve("ANTHROPIC_API_KEY")
      const shown = util.inspect(Buffer.from(ANTHROPIC_KEY))
      assert.match(shown, /^<Buffer 73 6b 2d 61 6e 74 .* 59 more bytes>$/)
      const printedHex = shown.slice("<Buffer ".length, shown.indexOf(" ... "))
      // 50 bytes of the key, in clear (as hex), stay in the redacted text before the fix.
      assert.notInclude(secrets.redact(`request body: ${shown}`), printedHex)
    }))
})
