/**
 * Pluggable secret resolution, with redaction.
 *
 * `resolve` returns a `Redacted` value, so a secret never prints by accident.
 * `redact(text)` masks well-known key shapes (OpenAI, Anthropic, AWS, GitHub,
 * Slack, Google, JWTs, PEM private keys, `Bearer` tokens, passwords in
 * connection strings) and every secret value this service has handed out,
 * whatever its shape, also in its JSON-escaped, URL-encoded, base64 and hex
 * forms. Every rule runs in time linear in the text.
 *
 * Model adapters look keys up with `lookupSync` at construction time; a
 * custom backend ({@link make}) caches what it resolved so those lookups hit
 * after a start-up pre-warm.
 *
 * Sinks: {@link redactDeep} for structured payloads (audit entries, span
 * attributes), {@link redactError} for errors shown or rethrown,
 * {@link layerRedactingLogger} for every log line, {@link layerRedactingTracer}
 * for spans.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { Secrets } from "jeevesagent"
 *
 * const program = Effect.gen(function*() {
 *   const secrets = yield* Secrets.Secrets
 *   const password = yield* secrets.resolve("DB_PASSWORD")
 *   // "connecting with [REDACTED]": the value was handed out, so it is masked
 *   return secrets.redact(`connecting with ${Redacted.value(password)}`)
 * })
 *
 * program.pipe(Effect.provide(Secrets.layerDict({ DB_PASSWORD: "correct horse battery staple" })))
 * ```
 *
 * @since 0.1.0
 */
import type * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import type * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Tracer from "effect/Tracer"
import * as internal from "./internal/redact.js"
import * as sinks from "./internal/secretsSinks.js"
import { withServiceSpan } from "./internal/spans.js"

/**
 * No secret has that name, or the backend could not produce it (then
 * `description` says why and `cause` keeps the backend's error).
 *
 * @since 0.1.0
 * @category errors
 */
export class SecretNotFound extends Schema.TaggedError<SecretNotFound>("jeevesagent/SecretNotFound")(
  "SecretNotFound",
  {
    ref: Schema.String,
    description: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  override get message(): string {
    return this.description === undefined ?
      `Secret not found: ${this.ref}` :
      `Secret not found: ${this.ref} (${this.description})`
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
 * What redaction puts in place of a secret.
 *
 * @since 0.1.0
 * @category redaction
 */
export const REDACTED: "[REDACTED]" = internal.REDACTED

/**
 * Masks the well-known key shapes in `text` (no knowledge of handed-out
 * values; use the service's `redact` for that). Linear in the length of
 * `text`; idempotent.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactPatterns: (text: string) => string = internal.redactPatterns

/**
 * The names of the pattern rules {@link redactPatterns} applies, in order.
 *
 * @since 0.1.0
 * @category redaction
 */
export const patternNames: ReadonlyArray<string> = internal.RULES.map((rule) => rule.name)

/**
 * Handed-out values shorter than this are not masked (they would mask
 * ordinary words).
 *
 * @since 0.1.0
 * @category redaction
 */
export const minKnownValueLength: number = internal.MIN_KNOWN_VALUE_LENGTH

/**
 * Copies a JSON-like value with every string (and object key) redacted: for
 * audit payloads, span attributes, log arguments. Plain objects and arrays
 * keep their shape; errors keep their class (see {@link redactError}); other
 * objects become what `JSON.stringify` would write; `Map`s and `Set`s stay
 * `Map`s and `Set`s; cycles become `"[Circular]"`.
 *
 * @example
 * ```ts
 * import { Secrets } from "jeevesagent"
 *
 * Secrets.redactDeep({ args: ["ghp_" + "a".repeat(36)] }, Secrets.redactPatterns)
 * // { args: ["[REDACTED]"] }
 * ```
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactDeep: <A>(value: A, redact: (text: string) => string) => A = sinks.redactDeep

/**
 * Redacts an error before it is shown or rethrown: an `Error` becomes a copy
 * of the same class (`instanceof` and `_tag` still hold) whose `message`,
 * `stack`, fields and `cause` are redacted; any other value goes through
 * {@link redactDeep}. The original is not changed.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactError: <E>(error: E, redact: (text: string) => string) => E = sinks.redactError

/**
 * Redacts every failure and defect of a `Cause`, keeping its structure.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactCause: <E>(cause: Cause.Cause<E>, redact: (text: string) => string) => Cause.Cause<E> =
  sinks.redactCause

/**
 * Wraps a logger so its message, annotation values and cause are redacted
 * before it formats them. Wrapping a wrapped logger returns it unchanged.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactingLogger: <Message, Output>(
  logger: Logger.Logger<Message, Output>,
  redact: (text: string) => string
) => Logger.Logger<Message, Output> = sinks.redactingLogger

/**
 * Makes every logger installed when this layer is built (effect's default
 * logger and the span-event logger, or whatever replaced them) redact
 * through the `Secrets` service: log messages, annotation values and causes.
 * To combine it with another logger layer, provide that layer to this one,
 * so it is installed first:
 * `Secrets.layerRedactingLogger.pipe(Layer.provide(Logger.json))`.
 *
 * @since 0.1.0
 * @category redaction
 */
export const layerRedactingLogger: Layer.Layer<never, never, Secrets> = Layer.unwrapEffect(
  Effect.map(Secrets, (secrets) =>
    Layer.scopedDiscard(
      Effect.locallyScopedWith(
        FiberRef.currentLoggers,
        HashSet.map((logger) => sinks.redactingLogger(logger, secrets.redact))
      )
    ))
)

/**
 * Wraps a tracer so span names, attribute values, event attributes and the
 * failure a span ends with are redacted before the tracer records them.
 * Wrapping a wrapped tracer returns it unchanged.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactingTracer: (tracer: Tracer.Tracer, redact: (text: string) => string) => Tracer.Tracer =
  sinks.redactingTracer

/**
 * Replaces the tracer in use when this layer is built with a redacting
 * wrapper of it (see {@link redactingTracer}). Provide the exporting tracer's
 * layer to this one: `Secrets.layerRedactingTracer.pipe(Layer.provide(otel))`.
 *
 * @since 0.1.0
 * @category redaction
 */
export const layerRedactingTracer: Layer.Layer<never, never, Secrets> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const secrets = yield* Secrets
    const tracer = yield* Effect.tracer
    return Layer.setTracer(sinks.redactingTracer(tracer, secrets.redact))
  })
)

/**
 * What a custom backend implements. `resolve` may do I/O (an Effect is
 * asynchronous as needed); a backend failure should fail with
 * `SecretNotFound` carrying a `description` and the `cause`. `lookupSync`,
 * if given, reads only what the backend has without I/O; {@link make} adds
 * a cache of everything resolved or stored, which `lookupSync` falls back
 * to. `redact` is added for you.
 *
 * @since 0.1.0
 * @category models
 */
export interface Backend {
  readonly resolve: (ref: string) => Effect.Effect<string, SecretNotFound>
  readonly store?: ((ref: string, value: string) => Effect.Effect<void, SecretStoreError>) | undefined
  readonly lookupSync?: ((ref: string) => string | undefined) | undefined
}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  /** Extra masking applied after the built-in rules (your own key formats). */
  readonly redact?: ((text: string) => string) | undefined
  /** Values to mask from the start, though never handed out. */
  readonly knownValues?: Iterable<string> | undefined
}

/**
 * Builds a secrets service from a backend.
 *
 * - Every value it hands out (through `resolve`, `lookupSync` or `store`) is
 *   remembered, so `redact` masks it wherever it appears, whatever its
 *   shape, also JSON-escaped, URL-encoded, base64(url) or hex; a rotated
 *   value stays masked after it is replaced. Overlapping values are masked
 *   as their union, so no fragment is left; values shorter than
 *   {@link minKnownValueLength} are not masked.
 * - Every value resolved or stored is cached, so `lookupSync` finds it
 *   without I/O: resolve the keys a model adapter needs once at start-up
 *   and construction-time lookups hit.
 * - `store` fails with `SecretStoreError` when the backend has none.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (backend: Backend, options?: MakeOptions): Service => {
  const known = new internal.KnownValues()
  const cache = new Map<string, string>()
  // A resolve's answer is cached only if no other resolve that started later, and no store that ended
  // after it started, was cached already: a slow resolve must not put back a value a store replaced
  // meanwhile (the revoked key). A store's value is cached when it ends.
  let operations = 0
  const cachedBy = new Map<string, number>()
  const cacheIfLatest = (ref: string, value: string, operation: number) => {
    if ((cachedBy.get(ref) ?? 0) > operation) return
    cachedBy.set(ref, operation)
    cache.set(ref, value)
  }
  for (const value of options?.knownValues ?? []) known.add(value)
  const remember = (value: string) => {
    known.add(value)
    return value
  }
  const extra = options?.redact
  return {
    resolve: (ref) =>
      Effect.suspend(() => {
        const operation = ++operations
        return Effect.flatMap(backend.resolve(ref), (value) => {
          // A backend of the user's may answer anything (a JSON vault, a number): never the value in the error.
          if (typeof value !== "string") {
            return Effect.fail(new SecretNotFound({ ref, description: `the secrets backend answered a ${typeof value}, not a string` }))
          }
          cacheIfLatest(ref, remember(value), operation)
          return Effect.succeed(Redacted.make(value))
        })
      }).pipe(withServiceSpan("Secrets.resolve", { attributes: { ref } })),
    store: (ref, value) => {
      if (backend.store === undefined) {
        return Effect.fail(new SecretStoreError({ ref, description: "this secrets backend is read-only" }))
      }
      return Effect.tap(backend.store(ref, value), () => Effect.sync(() => cacheIfLatest(ref, remember(value), ++operations))).pipe(
        withServiceSpan("Secrets.store", { attributes: { ref } })
      )
    },
    lookupSync: (ref) => {
      const value: unknown = backend.lookupSync?.(ref) ?? cache.get(ref)
      return typeof value === "string" ? remember(value) : undefined
    },
    // Known values first: a pattern rule masking part of a known value would leave the rest unmasked.
    redact: extra === undefined ?
      (text) => internal.redactPatterns(known.redact(text)) :
      (text) => extra(internal.redactPatterns(known.redact(text)))
  }
}

/**
 * The layer of {@link make}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (backend: Backend, options?: MakeOptions): Layer.Layer<Secrets> =>
  Layer.sync(Secrets, () => make(backend, options))

/**
 * A backend written with promises, for code outside Effect (the
 * `jeevesagent/promise` facade).
 *
 * @since 0.1.0
 * @category models
 */
export interface PromiseBackend {
  /** The value, or `undefined`/`null` when there is none. A rejection is a backend failure. */
  readonly resolve: (ref: string) => Promise<string | undefined | null>
  readonly store?: ((ref: string, value: string) => Promise<void>) | undefined
  readonly lookupSync?: ((ref: string) => string | undefined | null) | undefined
}

/**
 * Builds a secrets service from a promise-based backend: a missing value is
 * `SecretNotFound`, a rejected `resolve` is `SecretNotFound` with the
 * rejection as `cause`, a rejected `store` is `SecretStoreError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromPromise = (backend: PromiseBackend, options?: MakeOptions): Service => {
  const { lookupSync, store } = backend
  return make({
    resolve: (ref) =>
      Effect.tryPromise({
        try: () => backend.resolve(ref),
        catch: (cause) => new SecretNotFound({ ref, description: "the secrets backend failed", cause })
      }).pipe(
        Effect.flatMap((value) =>
          value === undefined || value === null ? Effect.fail(new SecretNotFound({ ref })) : Effect.succeed(value)
        )
      ),
    store: store === undefined ? undefined : (ref, value) =>
      Effect.tryPromise({
        try: () => store(ref, value),
        catch: (cause) => new SecretStoreError({ ref, description: "the secrets backend failed", cause })
      }),
    lookupSync: lookupSync === undefined ? undefined : (ref) => lookupSync(ref) ?? undefined
  }, options)
}

/**
 * Secrets read from the process environment (read-only: `store` fails with
 * `SecretStoreError`). Only variables that were handed out are masked by
 * `redact`: the environment also holds `PATH` and `HOME`.
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
      return value === undefined ?
        Effect.fail(new SecretNotFound({ ref, description: "environment variable is not set" })) :
        Effect.succeed(value)
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
 * `store` overwrites; `resolve` of a missing name fails with
 * `SecretNotFound`. Every value in the record is a secret, so `redact` masks
 * all of them from the start.
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
  }, { knownValues: values.values() })
}

/**
 * The layer of {@link makeDict}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDict = (record: Readonly<Record<string, string>>): Layer.Layer<Secrets> =>
  Layer.sync(Secrets, () => makeDict(record))
