/**
 * Pluggable secret resolution, with redaction.
 *
 * `resolve` returns a `Redacted` value, so a secret never prints by accident.
 * `redact(text)` masks well-known key shapes and every secret value this
 * service has handed out. Model adapters look keys up with `lookupSync` at
 * construction time.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { Secrets } from "jeevesagent"
 *
 * const program = Effect.gen(function*() {
 *   const secrets = yield* Secrets.Secrets
 *   const key = yield* secrets.resolve("ANTHROPIC_API_KEY")
 *   return secrets.redact(`key is ${Redacted.value(key)}`) // "key is [REDACTED]"
 * })
 *
 * program.pipe(Effect.provide(Secrets.layerDict({ ANTHROPIC_API_KEY: "sk-ant-api03-abc" })))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as internal from "./internal/redact.js"

/**
 * No secret has that name.
 *
 * @since 0.1.0
 * @category errors
 */
export class SecretNotFound extends Schema.TaggedError<SecretNotFound>("jeevesagent/SecretNotFound")(
  "SecretNotFound",
  { ref: Schema.String }
) {
  override get message(): string {
    return `Secret not found: ${this.ref}`
  }
}

/**
 * The backend cannot store secrets (the environment is read-only) or failed
 * to.
 *
 * @since 0.1.0
 * @category errors
 */
export class SecretStoreError extends Schema.TaggedError<SecretStoreError>("jeevesagent/SecretStoreError")(
  "SecretStoreError",
  { ref: Schema.String, description: Schema.String, cause: Schema.optional(Schema.Defect) }
) {
  override get message(): string {
    return `Cannot store secret ${this.ref}: ${this.description}`
  }
}

/**
 * The errors of the secrets service.
 *
 * @since 0.1.0
 * @category errors
 */
export type SecretsError = SecretNotFound | SecretStoreError

/**
 * The secrets service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly resolve: (ref: string) => Effect.Effect<Redacted.Redacted<string>, SecretNotFound>
  readonly store: (ref: string, value: string) => Effect.Effect<void, SecretStoreError>
  /** The value if it is available without I/O (a cache or the environment). */
  readonly lookupSync: (ref: string) => string | undefined
  /** Masks known key shapes and every value this service handed out. */
  readonly redact: (text: string) => string
}

/**
 * The secrets service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Secrets extends Context.Tag("jeevesagent/Secrets")<Secrets, Service>() {}

/**
 * Masks the well-known key shapes in `text` (no knowledge of handed-out
 * values; use the service's `redact` for that).
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactPatterns: (text: string) => string = internal.redactPatterns

/**
 * What a custom backend implements. `resolve` may do I/O; `lookupSync` reads
 * only what is already cached. `redact` is added for you.
 *
 * @since 0.1.0
 * @category models
 */
export interface Backend {
  readonly resolve: (ref: string) => Effect.Effect<string, SecretNotFound>
  readonly store?: ((ref: string, value: string) => Effect.Effect<void, SecretStoreError>) | undefined
  readonly lookupSync: (ref: string) => string | undefined
}

/**
 * Builds a secrets service from a backend. Every value it hands out (through
 * `resolve` or `lookupSync`) is remembered so `redact` masks it wherever it
 * appears, whatever its shape.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (backend: Backend): Service => {
  const known = new internal.KnownValues()
  const remember = (value: string) => {
    known.add(value)
    return value
  }
  return {
    resolve: (ref) => Effect.map(backend.resolve(ref), (value) => Redacted.make(remember(value))),
    store: (ref, value) => {
      if (backend.store === undefined) {
        return Effect.fail(new SecretStoreError({ ref, description: "this secrets backend is read-only" }))
      }
      return Effect.tap(backend.store(ref, value), () => Effect.sync(() => remember(value)))
    },
    lookupSync: (ref) => {
      const value = backend.lookupSync(ref)
      return value === undefined ? undefined : remember(value)
    },
    redact: (text) => known.redact(internal.redactPatterns(text))
  }
}

/**
 * Secrets read from the process environment (read-only).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeEnv = (env: Readonly<Record<string, string | undefined>> = process.env): Service => {
  const lookupSync = (ref: string) => {
    const value = env[ref]
    return value === undefined || value === "" ? undefined : value
  }
  return make({
    lookupSync,
    resolve: (ref) => {
      const value = lookupSync(ref)
      return value === undefined ? Effect.fail(new SecretNotFound({ ref })) : Effect.succeed(value)
    }
  })
}

/**
 * The layer of {@link makeEnv} over `process.env`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEnv: Layer.Layer<Secrets> = Layer.sync(Secrets, () => makeEnv())

/**
 * Secrets held in memory, e.g. fetched from a vault once at start-up.
 * `store` overwrites.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeDict = (record: Readonly<Record<string, string>>): Service => {
  const values = new Map(Object.entries(record))
  return make({
    lookupSync: (ref) => values.get(ref),
    resolve: (ref) => {
      const value = values.get(ref)
      return value === undefined ? Effect.fail(new SecretNotFound({ ref })) : Effect.succeed(value)
    },
    store: (ref, value) => Effect.sync(() => void values.set(ref, value))
  })
}

/**
 * The layer of {@link makeDict}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDict = (record: Readonly<Record<string, string>>): Layer.Layer<Secrets> =>
  Layer.sync(Secrets, () => makeDict(record))
