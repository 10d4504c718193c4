/**
 * A handed-out value is masked "URL-encoded" (README, Secrets and
 * redaction) in the strict RFC 3986 percent-encoding too — every character
 * but `A-Z a-z 0-9 - . _ ~` escaped, a space as `%20` — which OAuth 1.0, AWS
 * SigV4, curl's URL encoder, Python's `urllib.parse.quote(v, safe="")` and
 * Go's `url.PathEscape` write: neither `encodeURIComponent` (`!'()*` kept)
 * nor `URLSearchParams` (a space as `+`) produce it, so a passphrase with a
 * space and a `!` would otherwise reach a tool's error result readable.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, Schema } from "effect"
import { Secrets, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

const PASSPHRASE = "correct horse battery staple!"

/** RFC 3986 percent-encoding of every character outside the unreserved set. */
const rfc3986 = (value: string) =>
  encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)

const ENCODED = "correct%20horse%20battery%20staple%21"

describe("known values: RFC 3986 percent-encoding", () => {
  it.effect("redact masks a handed-out value in its RFC 3986 form", () =>
    Effect.gen(function*() {
      // The strict form is what RFC 3986 encoders write, and it decodes to the value.
      assert.strictEqual(rfc3986(PASSPHRASE), ENCODED)
      assert.strictEqual(new URL(`https://vault.example.com/login?pw=${ENCODED}`).searchParams.get("pw"), PASSPHRASE)
      const secrets = Secrets.makeDict({ VAULT_PASSPHRASE: PASSPHRASE })
      assert.strictEqual(Redacted.value(yield* secrets.resolve("VAULT_PASSPHRASE")), PASSPHRASE)
      const text = `GET https://vault.example.com/login?user=svc&pw=${ENCODED} -> 401`
      // Expected: no readable trace of the passphrase.
      assert.notInclude(secrets.redact(text), "horse%20battery")
    }))

  // The tool logs in with the passphrase (every value of `Secrets.layerDict` is masked from the start) and
  // fails with a client error that quotes the request URL, as HTTP clients do. The error result is redacted
  // before it goes to the model.
  const login = Tool.make("vault_login", {
    description: "Logs in to the vault",
    parameters: Schema.Struct({}),
    handler: () => Effect.fail(new Error(`request to https://vault.example.com/login?pw=${rfc3986(PASSPHRASE)} failed: 401`))
  })

  it.effect("a failing tool's error result (to the model, the RunResult, the audit log) does not show it", () =>
    Effect.gen(function*() {
      const result = yield* run
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      assert.include(call.output, "vault.example.com")
      // Expected: the encoded passphrase is masked in what the model and the caller get.
      assert.notInclude(call.output, "horse%20battery")
      assert.notInclude(result.output, "horse%20battery")
    }).pipe(
      Effect.provide(
        agentWith(callThenSummarize([{ name: "vault_login", args: {} }]), [login], Secrets.layerDict({ VAULT_PASSPHRASE: PASSPHRASE }) as Layer.Layer<never>)
      )
    ))
})
