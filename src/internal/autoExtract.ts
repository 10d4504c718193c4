import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { globalValue } from "effect/GlobalValue"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Budget from "../Budget.js"
import type * as Memory from "../Memory.js"
import { AutoExtractError, autoExtractNotice, extractionPrompt } from "../Memory.js"
import * as Model from "../Model.js"
import * as RunContext from "../RunContext.js"
import * as Secrets from "../Secrets.js"
import * as Telemetry from "../Telemetry.js"
import * as Metrics from "./metrics.js"
import { withRunHoldOf } from "./memory.js"
import { MAX_KEY_CHARS } from "./memoryStore.js"
import { withServiceSpan } from "./spans.js"

const LOGGER = "jeevesagent.memory.auto_extract"
const DEFAULT_MAX_FACTS = 20
const DEFAULT_MAX_TOKENS = 1024

const announced = globalValue(Symbol.for("jeevesagent/Memory/autoExtractAnnounced"), () => ({ done: false }))

// ---- parsing -----------------------------------------------------------------

/** A scalar the model wrote where a string belongs, as that string. */
const Text = Schema.transform(Schema.Union(Schema.String, Schema.Number, Schema.Boolean), Schema.String, {
  strict: true,
  decode: (value) => String(value).trim(),
  encode: (value) => value
}).pipe(Schema.filter((value) => value !== ""))

const Triple = Schema.Struct({
  subject: Text,
  predicate: Text,
  object: Text,
  confidence: Schema.optional(Schema.Unknown)
})

const decodeJson = Schema.decodeUnknownEither(Schema.parseJson())

/** The answer's list of facts: the array itself, or the `facts` array of a wrapping object; none otherwise. */
const itemsOf = (answer: unknown): ReadonlyArray<unknown> => {
  if (Array.isArray(answer)) return answer
  if (typeof answer === "object" && answer !== null && Array.isArray((answer as { facts?: unknown }).facts)) {
    return (answer as { facts: ReadonlyArray<unknown> }).facts
  }
  return []
}
const decodeTriple = Schema.decodeUnknownOption(Triple)

/** A confidence as a number in [0, 1]; 1 when it is not a number. */
const confidenceOf = (value: unknown): number => {
  const n = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN
  return Number.isFinite(n) ? Math.min(1, Math.max(0, n)) : 1
}

/**
 * The JSON of the model's answer: the whole answer (a leading code fence
 * stripped), else — for an answer with a sentence before it — its first
 * fenced block, else the text from its first `[` to its last `]`.
 */
const decodeAnswer = (text: string): Either.Either<unknown, unknown> => {
  const whole = decodeJson(stripFences(text))
  if (Either.isRight(whole)) return whole
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(text)
  if (fenced !== null) {
    const block = decodeJson(fenced[1]!)
    if (Either.isRight(block)) return block
  }
  const open = text.indexOf("[")
  const close = text.lastIndexOf("]")
  if (open >= 0 && close > open) {
    const list = decodeJson(text.slice(open, close + 1))
    if (Either.isRight(list)) return list
  }
  return whole
}

/** Strips a leading code fence (with an optional `json` tag) and its closing fence. */
const stripFences = (text: string): string => {
  let body = text.trim()
  if (!body.startsWith("```")) return body
  body = body.slice(3)
  if (/^json\b/i.test(body)) body = body.slice(4)
  const closing = body.lastIndexOf("```")
  return (closing >= 0 ? body.slice(0, closing) : body).trim()
}

/**
 * The facts in the model's answer: a JSON array (code fences, and a
 * sentence before it, allowed) of
 * objects with `subject`, `predicate`, `object` and an optional
 * `confidence`, or an object whose `facts` is that array (as models asked
 * for JSON often wrap a list). Anything else gives no facts; of the first
 * `maxFacts` items, those without the three fields (or with a subject or
 * predicate over 256 characters, which no store keeps) are skipped.
 *
 * @internal
 */
export const parseFacts = (
  text: string,
  maxFacts: number,
  redact: (text: string) => string = (text) => text
): Either.Either<Array<{ subject: string; predicate: string; object: string; confidence: number }>, string> => {
  const json = decodeAnswer(text)
  // Redacted before it is cut: a secret cut in two would no longer be recognized.
  if (Either.isLeft(json)) return Either.left(`the model's answer is not JSON: ${JSON.stringify(redact(text).slice(0, 200))}`)
  const items = itemsOf(json.right)
  const facts = []
  for (const item of items.slice(0, maxFacts)) {
    const triple = decodeTriple(item)
    // A subject or predicate longer than a store keeps (a sentence, not a name) is skipped like an incomplete item.
    if (Option.isSome(triple) && triple.value.subject.length <= MAX_KEY_CHARS && triple.value.predicate.length <= MAX_KEY_CHARS) {
      facts.push({ ...triple.value, confidence: confidenceOf(triple.value.confidence) })
    }
  }
  return Either.right(facts)
}

// ---- the wrapper -------------------------------------------------------------

/**
 * An upper bound of the tokens of `messages`: their UTF-8 bytes (a token is
 * at least one byte; characters over 4 tokens do not bound text outside
 * Latin scripts, which K concurrent extractions of one user could then
 * squeeze past the same last headroom with).
 */
const estimateTokens = (messages: ReadonlyArray<Model.Message>) =>
  messages.reduce((bytes, message) => bytes + Buffer.byteLength(message.content, "utf8"), 0)

/** The usage a failed model call reported before it failed (`ModelError.usage`). */
const reportedUsage = (cause: Cause.Cause<unknown>): Option.Option<Model.Usage> =>
  Option.flatMap(Cause.failureOption(cause), (error) =>
    error instanceof Model.ModelError && error.usage !== undefined ? Option.some(error.usage) : Option.none())

const positiveInt = (name: string, value: number | undefined, fallback: number) =>
  value === undefined || (Number.isSafeInteger(value) && value > 0) ?
    Effect.succeed(value ?? fallback) :
    Effect.dieMessage(`Memory.autoExtract: ${name} must be a positive integer, got ${value}`)

/** @internal */
export const make = (
  inner: Memory.Service,
  model: Model.Service,
  budget: Budget.Service,
  options: Memory.AutoExtractOptions | undefined
): Effect.Effect<Memory.Service> =>
  Effect.gen(function*() {
    const maxFacts = yield* positiveInt("maxFacts", options?.maxFacts, DEFAULT_MAX_FACTS)
    const maxTokens = yield* positiveInt("maxTokens", options?.maxTokens, DEFAULT_MAX_TOKENS)
    const systemPrompt = options?.systemPrompt ?? extractionPrompt
    const onError = options?.onError
    const telemetry = yield* Effect.serviceOption(Telemetry.Telemetry)
    const redact = Option.match(yield* Effect.serviceOption(Secrets.Secrets), {
      onNone: () => Secrets.redactPatterns,
      onSome: (secrets) => secrets.redact
    })
    // Without a Telemetry service, no user id tag: each distinct id would be a metric series kept for good.
    const userIdMode = Option.match(telemetry, { onNone: () => "omit" as const, onSome: (t) => t.metricUserIdAttribute })
    // The warning becomes an event of the run's span: it shows the user id as spans do (none without Telemetry).
    const spanUserIdMode = Option.match(telemetry, { onNone: () => "omit" as const, onSome: (t) => t.userIdAttribute })

    if (options?.announce === true && !announced.done) {
      announced.done = true
      yield* Effect.logInfo(autoExtractNotice).pipe(Effect.annotateLogs("logger", LOGGER))
    }

    type Outcome = "ok" | "skipped_budget"

    const extract = (
      episodeId: string,
      userId: string | null,
      episode: { readonly input: string; readonly output: string; readonly occurredAt: Date }
    ): Effect.Effect<Outcome, AutoExtractError> => {
      const fail = (reason: AutoExtractError["reason"], cause: { readonly message: string }) =>
        new AutoExtractError({ episodeId, userId, reason, description: cause.message, cause })
      const messages: Array<Model.Message> = [
        { role: "system", content: systemPrompt },
        {
          role: "user",
          content: `Episode (occurred at ${episode.occurredAt.toISOString()}):\n\nUSER: ${episode.input}\nASSISTANT: ${episode.output}\n`
        }
      ]
      const inputTokens = estimateTokens(messages)
      const estimate: Model.Usage = {
        inputTokens,
        outputTokens: maxTokens,
        costUsd: model.price === undefined ? 0 : Model.costOf(model.price, inputTokens, maxTokens)
      }
      const call = Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(budget.reserve(estimate)), (reservation) => {
          if (reservation._tag === "Blocked") return Effect.succeed(Option.none<Model.ModelResponse>())
          return Effect.flatMap(
            // Called when run, so a `complete` that throws is a failure the reservation's release sees.
            Effect.exit(restore(Effect.suspend(() => model.complete({ messages, tools: [], maxTokens })))),
            (exit): Effect.Effect<Option.Option<Model.ModelResponse>, Model.ModelError | Budget.BudgetUnavailable> =>
              exit._tag === "Failure" ?
                // A call that failed after the provider reported usage is charged that, as the agent does.
                Effect.zipRight(
                  Option.match(reportedUsage(exit.cause), {
                    onNone: () => reservation.release,
                    onSome: (usage) => reservation.settle(usage)
                  }),
                  Effect.failCause(exit.cause)
                ) :
                Effect.as(reservation.settle(exit.value.usage), Option.some(exit.value))
          )
        })
      ).pipe(
        Effect.mapError((error) => fail(error._tag === "ModelError" ? "model" : "budget", error))
      )
      return Effect.flatMap(call, (response) => {
        if (Option.isNone(response)) return Effect.succeed<Outcome>("skipped_budget")
        const parsed = parseFacts(response.value.text, maxFacts, redact)
        if (Either.isLeft(parsed)) return Effect.fail(fail("invalid_output", { message: parsed.left }))
        return Effect.forEach(
          parsed.right,
          (fact) => inner.appendFact({ ...fact, validFrom: episode.occurredAt, sources: [episodeId] }),
          { discard: true }
        ).pipe(
          Effect.mapError((error) => fail("store", error)),
          Effect.as<Outcome>("ok")
        )
      })
    }

    const report = (error: AutoExtractError) =>
      Effect.zipRight(
        // Redacted as every warning of the library: a model's error may carry a key. The user id as spans show
        // it (the log also becomes an event of the run's span), not as `error.message` has it.
        Effect.logWarning(redact(`auto-extract failed for episode ${error.episodeId}: ${error.description}`)).pipe(
          Effect.annotateLogs(warningAnnotations(Telemetry.userIdValue(spanUserIdMode, error.userId)))
        ),
        Effect.sync(() => {
          try {
            // Redacted as the warning is: the callback typically logs or reports the error elsewhere.
            onError?.(Secrets.redactError(error, redact))
          } catch {
            // The callback's own failures must not fail `remember`.
          }
        })
      )

    const warningAnnotations = (userId: string | undefined): Record<string, string> =>
      userId === undefined ? { logger: LOGGER } : { logger: LOGGER, user_id: redact(userId) }

    const record = (userId: string | null, status: Memory.AutoExtractStatus, millis: number) => {
      const attributes = { status, user_id: Telemetry.userIdValue(userIdMode, userId) }
      return Effect.zipRight(
        Metrics.record(Metrics.autoExtractDuration, millis, attributes),
        Metrics.record(Metrics.autoExtractInvocations, 1, attributes)
      )
    }

    const remember: Memory.Service["remember"] = (episode) =>
      Effect.gen(function*() {
        const occurredAt = episode.occurredAt ?? new Date(yield* Clock.currentTimeMillis)
        const episodeId = yield* inner.remember({ ...episode, occurredAt })
        const { userId } = yield* RunContext.current
        const started = yield* Clock.currentTimeMillis
        const status = yield* extract(episodeId, userId, { ...episode, occurredAt }).pipe(
          Effect.catchAllCause((cause): Effect.Effect<Memory.AutoExtractStatus> => {
            if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
            const failure = Cause.squash(cause)
            const error = failure instanceof AutoExtractError ? failure : new AutoExtractError({
              episodeId,
              userId,
              reason: "model",
              description: failure instanceof Error ? failure.message : String(failure),
              cause: failure
            })
            return Effect.as(report(error), "error")
          }),
          withServiceSpan("Memory.autoExtract", { attributes: { episode_id: episodeId }, captureStackTrace: false })
        )
        yield* record(userId, status, (yield* Clock.currentTimeMillis) - started)
        return episodeId
      })

    // Every episode is still stored through the inner service: a run's hold on its state carries over.
    return withRunHoldOf(inner, { ...inner, remember })
  })
