import { assert, describe, it } from "@effect/vitest"
import { Secrets } from "jeevesagent"

const { REDACTED, redactPatterns } = Secrets

describe("pattern rules inside JSON-escaped text", () => {
  it("masks a Basic credential in a raw HTTP request serialized as a JSON string (after an escaped CRLF)", () => {
    const credential = Buffer.from("admin:Sup3r-Secret-Pw").toString("base64")
    const request = `GET /v1/items HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ${credential}\r\n\r\n`
    // Raw, it is masked; JSON-escaped (a logged request, an audit payload), `\b` finds no word
    // boundary between the escape's `n` and `Authorization`.
    assert.notInclude(redactPatterns(request), credential)
    const out = redactPatterns(JSON.stringify({ request }))
    assert.notInclude(out, credential)
    assert.include(out, REDACTED)
  })

  it("masks a token after a \\u escape (Go's encoding/json writes < > & as \\u003c \\u003e \\u0026)", () => {
    // A Maven settings.xml holding a GitHub token, as a Go service's JSON log carries it.
    const token = "ghp_" + "R4nd0mT0k3nX".repeat(3)
    const xml = `<server><id>github</id><password>${token}</password></server>`
    assert.notInclude(redactPatterns(xml), token)
    const goJson = JSON.stringify({ file: xml }).replace(/</g, "\\u003c").replace(/>/g, "\\u003e")
    assert.include(goJson, `\\u003e${token}\\u003c`)
    assert.notInclude(redactPatterns(goJson), token)
  })
})
