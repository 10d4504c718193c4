/**
 * A custom `Secrets` backend over HashiCorp Vault's KV v2 HTTP API.
 *
 * - `VaultSecrets.layer` resolves keys over HTTP and pre-warms its cache at
 *   start-up, so construction-time `lookupSync("ANTHROPIC_API_KEY")` hits
 *   without a vault round trip (a model client is built synchronously).
 * - Every value the vault hands out is masked by `secrets.redact`, whatever
 *   its shape: a password with spaces and quotes has no key pattern.
 * - `Secrets.layerRedactingLogger` makes every log line go through it.
 *
 * Runs offline: it starts a fake vault on 127.0.0.1 (a random port). Point
 * `address` and `token` at a real Vault to use it for real.
 *
 *     npx tsx examples/vault-secrets.ts
 */
import Anthropic from "@anthropic-ai/sdk"
import { FetchHttpClient, HttpBody, HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Context, Effect, Layer, Redacted, Schema } from "effect"
import { Secrets } from "jeevesagent"
import { DEMO_VAULT_TOKEN, startFakeVault } from "../test/support/fakeVault.js"

// ---------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------

interface VaultOptions {
  /** e.g. `https://vault.internal:8200` */
  readonly address: string
  readonly token: Redacted.Redacted<string>
  /** Secrets to resolve at start-up, so `lookupSync` finds them. */
  readonly prewarm: ReadonlyArray<string>
}

const ReadResponse = Schema.Struct({
  data: Schema.Struct({ data: Schema.Struct({ value: Schema.String }) })
})

const makeVaultSecrets = (options: VaultOptions) =>
  Effect.gen(function*() {
    const vault = (yield* HttpClient.HttpClient).pipe(
      HttpClient.mapRequest(HttpClientRequest.prependUrl(`${options.address}/v1/secret/data/`)),
      HttpClient.mapRequest(HttpClientRequest.setHeader("X-Vault-Token", Redacted.value(options.token)))
    )

    const failed = (ref: string, description: string) => (cause: unknown) =>
      Effect.fail(new Secrets.SecretNotFound({ ref, description, cause }))

    const resolve = (ref: string): Effect.Effect<string, Secrets.SecretNotFound> =>
      Effect.gen(function*() {
        const response = yield* vault.get(encodeURIComponent(ref))
        if (response.status === 404) return yield* new Secrets.SecretNotFound({ ref })
        const body = yield* HttpClientResponse.filterStatusOk(response).pipe(
          Effect.flatMap(HttpClientResponse.schemaBodyJson(ReadResponse))
        )
        return body.data.data.value
      }).pipe(
        // Transport and decoding failures keep their cause; the service's error type stays one.
        Effect.catchTags({
          RequestError: failed(ref, "vault unreachable"),
          ResponseError: failed(ref, "bad vault response"),
          ParseError: failed(ref, "bad vault response")
        })
      )

    const store = (ref: string, value: string) =>
      vault.post(encodeURIComponent(ref), { body: HttpBody.unsafeJson({ data: { value } }) }).pipe(
        Effect.flatMap(HttpClientResponse.filterStatusOk),
        Effect.asVoid,
        Effect.mapError((cause) => new Secrets.SecretStoreError({ ref, description: "vault write failed", cause }))
      )

    // `Secrets.make` adds the cache behind `lookupSync` and redaction of every value handed out.
    const secrets = Secrets.make({ resolve, store })
    yield* Effect.forEach(options.prewarm, secrets.resolve, { concurrency: "unbounded", discard: true })
    return secrets
  })

const VaultSecrets = {
  layer: (options: VaultOptions) => Layer.effect(Secrets.Secrets, makeVaultSecrets(options))
}

// ---------------------------------------------------------------------------
// A consumer that needs its key at construction time, with no I/O
// ---------------------------------------------------------------------------

class ModelClient extends Context.Tag("example/ModelClient")<ModelClient, Anthropic>() {}

const ModelClientLive = Layer.effect(
  ModelClient,
  Effect.gen(function*() {
    const secrets = yield* Secrets.Secrets
    const apiKey = secrets.lookupSync("ANTHROPIC_API_KEY")
    if (apiKey === undefined) return yield* Effect.dieMessage("ANTHROPIC_API_KEY was not pre-warmed")
    yield* Console.log("construction-time lookupSync(ANTHROPIC_API_KEY): hit")
    return new Anthropic({ apiKey })
  })
)

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

const program = (requestCount: () => number) =>
  Effect.gen(function*() {
    const secrets = yield* Secrets.Secrets
    yield* ModelClient
    yield* Console.log(`vault requests so far: ${requestCount()} (the pre-warm; lookupSync made none)`)

    yield* Console.log(`lookupSync(DB_PASSWORD) after pre-warm: ${secrets.lookupSync("DB_PASSWORD") ? "hit" : "miss"}`)
    yield* Console.log(`lookupSync(PASSPHRASE) before resolve: ${secrets.lookupSync("PASSPHRASE") ? "hit" : "miss"}`)
    const passphrase = yield* secrets.resolve("PASSPHRASE")
    yield* Console.log(`resolve(PASSPHRASE) prints as ${passphrase}`)
    yield* Console.log(`lookupSync(PASSPHRASE) after resolve: ${secrets.lookupSync("PASSPHRASE") ? "hit" : "miss"}`)

    const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
    yield* Console.log("redacted: " + secrets.redact(`connecting as app with password ${password}`))
    yield* Console.log("redacted JSON: " + secrets.redact(JSON.stringify({ password })))
    yield* Console.log("redacted passphrase: " + secrets.redact(`unlock with ${Redacted.value(passphrase)}`))
    const payload = Secrets.redactDeep(
      { tool: "db.connect", args: { dsn: `postgres://app:${password}@db/prod` } },
      secrets.redact
    )
    yield* Console.log("redacted payload: " + JSON.stringify(payload))

    yield* secrets.store("WEBHOOK_SIGNING_KEY", "whsec/7::rotated at start-up::")
    yield* Console.log("redacted stored: " + secrets.redact("signing with whsec/7::rotated at start-up::"))

    const missing = yield* Effect.flip(secrets.resolve("NOT_IN_VAULT"))
    yield* Console.log(`resolve(NOT_IN_VAULT) fails with ${missing._tag}`)

    // Through the redacting logger: the message and the annotation are masked.
    yield* Effect.logInfo(`db password is ${password}`).pipe(Effect.annotateLogs("dsn", `app:${password}@db`))
  })

const main = Effect.gen(function*() {
  const vault = yield* Effect.acquireRelease(
    Effect.promise(() => startFakeVault()),
    (vault) => Effect.promise(() => vault.close())
  )
  yield* Console.log(`fake vault listening on ${vault.url}`)

  const SecretsLive = VaultSecrets.layer({
    address: vault.url,
    token: Redacted.make(DEMO_VAULT_TOKEN),
    prewarm: ["ANTHROPIC_API_KEY", "DB_PASSWORD"]
  }).pipe(Layer.provide(FetchHttpClient.layer))

  yield* program(vault.requestCount).pipe(
    Effect.provide(Layer.mergeAll(ModelClientLive, Secrets.layerRedactingLogger).pipe(Layer.provideMerge(SecretsLive)))
  )
  yield* Console.log("done")
}).pipe(Effect.scoped)

NodeRuntime.runMain(main)
