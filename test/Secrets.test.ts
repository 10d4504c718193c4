import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Redacted } from "effect"
import { Secrets } from "jeevesagent"
import { inspect } from "node:util"
import { DEMO_SECRETS, DEMO_VAULT_TOKEN, startFakeVault } from "./support/fakeVault.js"

const { REDACTED } = Secrets

describe("EnvSecrets (makeEnv / layerEnv)", () => {
  const env = { JEEVES_TEST_KEY: "env-value-123456", EMPTY: "", PATH: "/usr/local/bin:/usr/bin" }

  it.effect("reads the environment, lookupSync is undefined when missing", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeEnv(env)
      assert.strictEqual(secrets.lookupSync("JEEVES_TEST_KEY"), "env-value-123456")
      assert.isUndefined(secrets.lookupSync("NOT_SET"))
      assert.isUndefined(secrets.lookupSync("EMPTY"))
    }))

  it.effect("resolves to a Redacted value; a missing variable is SecretNotFound", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeEnv(env)
      const value = yield* secrets.resolve("JEEVES_TEST_KEY")
      assert.isTrue(Redacted.isRedacted(value))
      assert.strictEqual(Redacted.value(value), "env-value-123456")
      const error = yield* Effect.flip(secrets.resolve("NOT_SET"))
      assert.instanceOf(error, Secrets.SecretNotFound)
      assert.strictEqual(error.ref, "NOT_SET")
      assert.include(error.message, "NOT_SET")
    }))

  it.effect("is read-only: store fails with SecretStoreError", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeEnv(env)
      const error = yield* Effect.flip(secrets.store("JEEVES_TEST_KEY", "other-value"))
      assert.strictEqual(error._tag, "SecretStoreError")
      assert.strictEqual(error.ref, "JEEVES_TEST_KEY")
      assert.strictEqual(secrets.lookupSync("JEEVES_TEST_KEY"), "env-value-123456")
    }))

  it.effect("masks only the variables it handed out", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeEnv(env)
      const text = "key env-value-123456 in /usr/local/bin:/usr/bin"
      assert.strictEqual(secrets.redact(text), text)
      yield* secrets.resolve("JEEVES_TEST_KEY")
      assert.strictEqual(secrets.redact(text), `key ${REDACTED} in /usr/local/bin:/usr/bin`)
    }))

  it.effect("layerEnv reads process.env", () =>
    Effect.acquireUseRelease(
      Effect.sync(() => void (process.env.JEEVES_SECRETS_TEST_VAR = "from-process-env")),
      () => Effect.map(Secrets.Secrets, (secrets) => secrets.lookupSync("JEEVES_SECRETS_TEST_VAR")),
      () => Effect.sync(() => void delete process.env.JEEVES_SECRETS_TEST_VAR)
    ).pipe(
      Effect.provide(Secrets.layerEnv),
      Effect.map((value) => assert.strictEqual(value, "from-process-env"))
    ))
})

describe("DictSecrets (makeDict / layerDict)", () => {
  it.effect("lookupSync, resolve, store overwrites", () =>
    Effect.gen(function*() {
      const secrets = yield* Secrets.Secrets
      assert.strictEqual(secrets.lookupSync("A"), "first-value")
      yield* secrets.store("A", "second-value")
      assert.strictEqual(Redacted.value(yield* secrets.resolve("A")), "second-value")
      assert.strictEqual(secrets.lookupSync("A"), "second-value")
      yield* secrets.store("NEW", "brand-new-value")
      assert.strictEqual(Redacted.value(yield* secrets.resolve("NEW")), "brand-new-value")
    }).pipe(Effect.provide(Secrets.layerDict({ A: "first-value" }))))

  it.effect("a missing key is SecretNotFound", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Secrets.makeDict({}).resolve("MISSING"))
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(Secrets.makeDict({}).resolve("MISSING"))
      assert.strictEqual(error._tag, "SecretNotFound")
      assert.strictEqual(error.message, "Secret not found: MISSING")
    }))

  it.effect("masks every value in the record from the start, old values stay masked after an overwrite", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ DB: "pa ss word!", TOKEN: "opaque:token/1" })
      assert.strictEqual(secrets.redact("pa ss word! opaque:token/1"), `${REDACTED} ${REDACTED}`)
      yield* secrets.store("DB", "rotated pass")
      assert.strictEqual(secrets.redact("pa ss word! rotated pass"), `${REDACTED} ${REDACTED}`)
    }))
})

describe("redact (the original's rows)", () => {
  it.effect("masks sk-... and sk-ant-... and leaves clean text untouched", () =>
    Effect.gen(function*() {
      const secrets = yield* Secrets.Secrets
      assert.strictEqual(secrets.redact("key sk-abcdefghijklmnopqrstuvwxyz0123 here"), `key ${REDACTED} here`)
      assert.strictEqual(secrets.redact("key sk-ant-api03-abcdefghijklmnop here"), `key ${REDACTED} here`)
      assert.strictEqual(secrets.redact("nothing secret in this sentence"), "nothing secret in this sentence")
    }).pipe(Effect.provide(Secrets.layerDict({}))))
})

describe("Redacted values", () => {
  it.effect("do not print", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ K: "do-not-print-me" })
      const value = yield* secrets.resolve("K")
      for (const shown of [String(value), `${value}`, JSON.stringify({ value }), inspect(value), inspect({ value })]) {
        assert.notInclude(shown, "do-not-print-me")
        assert.include(shown, "<redacted>")
      }
    }))
})

describe("make (custom backends)", () => {
  it.effect("async resolve; lookupSync misses until resolved, then hits from the cache", () =>
    Effect.gen(function*() {
      let calls = 0
      const secrets = Secrets.make({
        resolve: (ref) =>
          Effect.promise(() => new Promise<string>((resolve) => setTimeout(() => resolve(`value-of-${ref}`), 5))).pipe(
            Effect.tap(() => void calls++)
          )
      })
      assert.isUndefined(secrets.lookupSync("ANTHROPIC_API_KEY"))
      yield* secrets.resolve("ANTHROPIC_API_KEY")
      assert.strictEqual(secrets.lookupSync("ANTHROPIC_API_KEY"), "value-of-ANTHROPIC_API_KEY")
      assert.strictEqual(calls, 1)
      assert.strictEqual(secrets.redact("x value-of-ANTHROPIC_API_KEY"), `x ${REDACTED}`)
    }))

  it.effect("the backend's own lookupSync wins over the cache; its values are masked once handed out", () =>
    Effect.gen(function*() {
      const live = new Map([["K", "live-value-1"]])
      const secrets = Secrets.make({
        resolve: (ref) => Effect.succeed(live.get(ref)!),
        lookupSync: (ref) => live.get(ref)
      })
      yield* secrets.resolve("K")
      live.set("K", "live-value-2")
      assert.strictEqual(secrets.lookupSync("K"), "live-value-2")
      assert.strictEqual(secrets.redact("live-value-1 live-value-2"), `${REDACTED} ${REDACTED}`)
    }))

  it.effect("store without a backend store is a typed SecretStoreError; with one it caches and masks", () =>
    Effect.gen(function*() {
      const readOnly = Secrets.make({ resolve: (ref) => Effect.fail(new Secrets.SecretNotFound({ ref })) })
      const error = yield* Effect.flip(readOnly.store("K", "v"))
      assert.instanceOf(error, Secrets.SecretStoreError)
      const written: Array<string> = []
      const writable = Secrets.make({
        resolve: (ref) => Effect.fail(new Secrets.SecretNotFound({ ref })),
        store: (_ref, value) => Effect.sync(() => void written.push(value))
      })
      yield* writable.store("K", "stored-value")
      assert.deepStrictEqual(written, ["stored-value"])
      assert.strictEqual(writable.lookupSync("K"), "stored-value")
      assert.strictEqual(writable.redact("stored-value"), REDACTED)
    }))

  it.effect("options: extra redaction after the built-in rules, values known from the start", () =>
    Effect.gen(function*() {
      const secrets = Secrets.make(
        { resolve: (ref) => Effect.fail(new Secrets.SecretNotFound({ ref })) },
        { redact: (text) => text.replace(/\bACME-[0-9]{6}\b/g, "[ACME]"), knownValues: ["preloaded-secret"] }
      )
      assert.strictEqual(
        secrets.redact("ACME-123456 preloaded-secret ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        `[ACME] ${REDACTED} ${REDACTED}`
      )
    }))

  it.effect("layer provides the service", () =>
    Effect.gen(function*() {
      const secrets = yield* Secrets.Secrets
      assert.strictEqual(Redacted.value(yield* secrets.resolve("X")), "x-value")
    }).pipe(Effect.provide(Secrets.layer({ resolve: () => Effect.succeed("x-value") }))))
})

describe("fromPromise", () => {
  it.effect("missing → SecretNotFound, rejection → SecretNotFound with the cause, store rejection → SecretStoreError", () =>
    Effect.gen(function*() {
      const boom = new Error("backend down")
      const secrets = Secrets.fromPromise({
        resolve: async (ref) => {
          if (ref === "DOWN") throw boom
          return ref === "K" ? "promise-value" : undefined
        },
        store: async () => {
          throw boom
        },
        lookupSync: (ref) => (ref === "SYNC" ? "sync-value" : null)
      })
      assert.strictEqual(Redacted.value(yield* secrets.resolve("K")), "promise-value")
      assert.strictEqual(secrets.lookupSync("K"), "promise-value")
      assert.strictEqual(secrets.lookupSync("SYNC"), "sync-value")
      assert.isUndefined(secrets.lookupSync("NONE"))
      const missing = yield* Effect.flip(secrets.resolve("NONE"))
      assert.strictEqual(missing._tag, "SecretNotFound")
      assert.isUndefined(missing.cause)
      const down = yield* Effect.flip(secrets.resolve("DOWN"))
      assert.strictEqual(down._tag, "SecretNotFound")
      assert.strictEqual(down.cause, boom)
      assert.include(down.message, "backend failed")
      const failed = yield* Effect.flip(secrets.store("K", "new"))
      assert.strictEqual(failed._tag, "SecretStoreError")
      assert.strictEqual(failed.cause, boom)
    }))

  it.effect("a vault over HTTP: pre-warm at start-up, lookupSync hits, an outage is a typed failure", () =>
    Effect.acquireUseRelease(
      Effect.promise(() => startFakeVault()),
      (vault) =>
        Effect.gen(function*() {
          const read = async (ref: string) => {
            const response = await fetch(`${vault.url}/v1/secret/data/${encodeURIComponent(ref)}`, {
              headers: { "X-Vault-Token": DEMO_VAULT_TOKEN }
            })
            if (response.status === 404) return undefined
            if (!response.ok) throw new Error(`vault answered ${response.status}`)
            return ((await response.json()) as { data: { data: { value: string } } }).data.data.value
          }
          const secrets = Secrets.fromPromise({ resolve: read })
          yield* Effect.forEach(["ANTHROPIC_API_KEY", "DB_PASSWORD"], secrets.resolve)
          const requests = vault.requestCount()
          assert.strictEqual(secrets.lookupSync("ANTHROPIC_API_KEY"), DEMO_SECRETS.ANTHROPIC_API_KEY)
          assert.strictEqual(vault.requestCount(), requests)
          assert.strictEqual(secrets.redact(`pw=${DEMO_SECRETS.DB_PASSWORD}`), `pw=${REDACTED}`)
          assert.strictEqual((yield* Effect.flip(secrets.resolve("NOPE")))._tag, "SecretNotFound")
          yield* Effect.promise(() => vault.close())
          const outage = yield* Effect.flip(secrets.resolve("PASSPHRASE"))
          assert.strictEqual(outage._tag, "SecretNotFound")
          assert.isDefined(outage.cause)
          // what was cached before the outage is still there
          assert.strictEqual(secrets.lookupSync("DB_PASSWORD"), DEMO_SECRETS.DB_PASSWORD)
        }),
      (vault) => Effect.promise(() => vault.close().catch(() => undefined))
    ))
})
