/**
 * A handed-out value is masked JSON-escaped as Python's `json.dumps` writes
 * it by default (`ensure_ascii=True`, as Ruby's `ascii_only` and Jackson's
 * ESCAPE_NON_ASCII): every character outside ASCII as a `\uXXXX` escape, in
 * either case of hex digits. A secret with one non-ASCII character (a
 * password with `€`, `£`, `ä`) is otherwise readable in a Python tool's JSON
 * output, a sidecar's log line, an audit payload built from it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { Secrets } from "jeevesagent"

const PASSWORD = "Grüße-aus-München-2024€"

/** JSON as Python's `json.dumps` writes it by default (`ensure_ascii=True`). */
const pythonJson = (value: unknown) =>
  JSON.stringify(value).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

describe("known values: JSON with non-ASCII characters escaped", () => {
  it.effect("a handed-out value is masked in Python's default json.dumps output", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ DB_PASSWORD: PASSWORD })
      assert.strictEqual(Redacted.value(yield* secrets.resolve("DB_PASSWORD")), PASSWORD)
      const line = pythonJson({ host: "db.internal", password: PASSWORD })
      assert.strictEqual(line, String.raw`{"host":"db.internal","password":"Gr\u00fc\u00dfe-aus-M\u00fcnchen-2024\u20ac"}`)
      assert.deepStrictEqual(JSON.parse(line), { host: "db.internal", password: PASSWORD })
      const redacted = secrets.redact(line)
      assert.notInclude(redacted, "aus-M")
      assert.include(redacted, Secrets.REDACTED)
    }))

  it.effect("redactDeep (audit payloads, span attributes, log annotations) masks it in a tool's JSON output too", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ DB_PASSWORD: PASSWORD })
      const payload = { tool: "run_python", output: pythonJson({ connected: true, dsn: { password: PASSWORD } }) }
      const redacted = Secrets.redactDeep(payload, secrets.redact)
      assert.notInclude(redacted.output, "aus-M")
    }))
})
