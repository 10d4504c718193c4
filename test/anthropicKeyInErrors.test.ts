/**
 * The API key never appears in errors. A key that fetch refuses as a header
 * value (an embedded line break, e.g. a secret file holding two lines) makes
 * fetch throw `TypeError: Headers.append: "Bearer <key>" is an invalid header
 * value.` — which the model layer turns into the ModelError's description.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { Secrets } from "jeevesagent"
import * as AnthropicModel from "jeevesagent/AnthropicModel"
import * as Fake from "./support/fakeAnthropic.js"

const noEnvironment = ConfigProvider.fromMap(new Map())
const KEY_HEAD = "sk-ant-api03-TOPSECRETkeymaterial0123456789"

describe("the API key in model errors", () => {
  it.scoped("a key fetch refuses as a header value is not echoed in the ModelError", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(Fake.json(Fake.message([Fake.text("unreachable")])))
      const model = yield* AnthropicModel.make({
        model: "claude-sonnet-4-6",
        apiKey: `${KEY_HEAD}\nsecond-line`,
        baseURL: fake.baseURL
      }).pipe(Effect.provide(Secrets.layerDict({})), Effect.withConfigProvider(noEnvironment))
      const error = yield* Effect.flip(model.complete({ messages: [{ role: "user", content: "hi" }], tools: [] }))
      assert.strictEqual(fake.requests.length, 0, "the request was never sent")
      assert.notInclude(error.description, "TOPSECRET")
      assert.notInclude(error.message, "TOPSECRET")
    }).pipe(Effect.catchTag("ModelConfigError", (error) =>
      // Refused when the layer is made: the key is never shown.
      Effect.sync(() => {
        assert.strictEqual(error.option, "apiKey")
        assert.notInclude(error.message, "TOPSECRET")
      })
    )))

  it.scoped("a key read with a trailing newline (a secret file) is trimmed and works", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make
      fake.enqueue(Fake.json(Fake.message([Fake.text("hello")])))
      const model = yield* AnthropicModel.make({ model: "claude-sonnet-4-6", apiKey: `${KEY_HEAD}\n`, baseURL: fake.baseURL }).pipe(
        Effect.provide(Secrets.layerDict({})),
        Effect.withConfigProvider(noEnvironment)
      )
      const response = yield* model.complete({ messages: [{ role: "user", content: "hi" }], tools: [] })
      assert.strictEqual(response.text, "hello")
      assert.strictEqual(fake.requests[0]!.apiKey, KEY_HEAD)
    }))
})
