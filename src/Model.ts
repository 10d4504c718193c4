/**
 * The language model behind an agent, as a service.
 *
 * The agent loop talks only to the {@link Model} tag. Offline layers
 * ({@link layerScripted}, {@link layerEcho}) serve demos, tests and benchmarks;
 * `jeevesagent/AnthropicModel` talks to Claude.
 *
 * @example
 * ```ts
 * import { Model } from "jeevesagent"
 *
 * // First call asks for a tool, second call answers.
 * const ModelLive = Model.layerScripted([
 *   { toolCalls: [{ name: "lookup", args: { q: "x" } }], usage: { inputTokens: 20, outputTokens: 5 } },
 *   { text: "done", usage: { inputTokens: 30, outputTokens: 2 } }
 * ])
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as internal from "./internal/model.js"
import type { RunContext } from "./RunContext.js"

/**
 * A tool call requested by the model. `args` is whatever the model produced;
 * the tool decodes it with its Schema.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToolCall {
  readonly id: string
  readonly name: string
  readonly args: unknown
  /**
   * Set by a model adapter when the model's arguments could not be read (its
   * JSON did not parse): why. The agent gives the call an error result
   * saying so, and runs, checks and asks nobody about it.
   */
  readonly invalidArgs?: string | undefined
}

/**
 * One message of a conversation.
 *
 * @since 0.1.0
 * @category models
 */
export type Message =
  | { readonly role: "system"; readonly content: string }
  | { readonly role: "user"; readonly content: string }
  | { readonly role: "assistant"; readonly content: string; readonly toolCalls: ReadonlyArray<ToolCall> }
  | {
    readonly role: "tool"
    readonly toolCallId: string
    readonly toolName: string
    readonly content: string
    readonly isError: boolean
  }

/**
 * A tool as the model sees it: a name, a description and a JSON Schema of its
 * input.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToolDefinition {
  readonly name: string
  readonly description: string
  readonly inputSchema: Readonly<Record<string, unknown>>
}

/**
 * Token usage and cost of one model call (or a sum of them).
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly costUsd: number
}

/**
 * Zero usage.
 *
 * @since 0.1.0
 * @category constants
 */
export const zeroUsage: Usage = Object.freeze({ inputTokens: 0, outputTokens: 0, costUsd: 0 })

/**
 * Adds two usages.
 *
 * @since 0.1.0
 * @category utils
 */
export const addUsage = (a: Usage, b: Usage): Usage => ({
  inputTokens: a.inputTokens + b.inputTokens,
  outputTokens: a.outputTokens + b.outputTokens,
  costUsd: a.costUsd + b.costUsd
})

/**
 * What the agent asks the model.
 *
 * @since 0.1.0
 * @category models
 */
export interface ModelRequest {
  readonly messages: ReadonlyArray<Message>
  readonly tools: ReadonlyArray<ToolDefinition>
  readonly maxTokens?: number | undefined
}

/**
 * The model's complete answer to one request.
 *
 * @since 0.1.0
 * @category models
 */
export interface ModelResponse {
  readonly text: string
  readonly toolCalls: ReadonlyArray<ToolCall>
  readonly usage: Usage
  readonly stopReason: string
}

/**
 * One piece of a streamed answer. The last part of a successful stream is
 * always a `Finish` carrying the whole response. A `Usage` part (optional)
 * says what the call has used so far, as the provider reported it before
 * the answer ended: a call cancelled after it is charged that, not nothing.
 * The agent does not pass `Usage` parts on to its consumers.
 *
 * @since 0.1.0
 * @category models
 */
export type StreamPart =
  | { readonly _tag: "TextDelta"; readonly text: string }
  | { readonly _tag: "ToolCallPart"; readonly call: ToolCall }
  | { readonly _tag: "Usage"; readonly usage: Usage }
  | { readonly _tag: "Finish"; readonly response: ModelResponse }

/**
 * Prices in USD per million tokens.
 *
 * @since 0.1.0
 * @category models
 */
export interface Price {
  readonly inputPerMillion: number
  readonly outputPerMillion: number
}

/**
 * The cost of `inputTokens` + `outputTokens` at `price`.
 *
 * @since 0.1.0
 * @category utils
 */
export const costOf = (price: Price, inputTokens: number, outputTokens: number): number =>
  (inputTokens * price.inputPerMillion + outputTokens * price.outputPerMillion) / 1_000_000

/**
 * Why a model call failed. `retryable` is true for rate limits, overload,
 * server errors and connection failures, and false for everything the same
 * request would fail with again (a 400, bad credentials).
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelError extends Schema.TaggedError<ModelError>("jeevesagent/ModelError")("ModelError", {
  reason: Schema.Literal(
    "rate_limited",
    "overloaded",
    "server_error",
    "connection",
    "bad_request",
    "authentication",
    "invalid_response",
    "unknown"
  ),
  retryable: Schema.Boolean,
  status: Schema.optional(Schema.Number),
  /**
   * How long the provider asked to wait before a retry (a 429's or 529's
   * `retry-after`), in milliseconds. {@link retryRetryable} waits at least
   * this long, and does not retry when it is over a minute.
   */
  retryAfterMillis: Schema.optional(Schema.Number),
  /**
   * What the provider reported using before the call failed (a stream cut
   * off after it began): the agent charges this rather than nothing.
   */
  usage: Schema.optional(Schema.Struct({ inputTokens: Schema.Number, outputTokens: Schema.Number, costUsd: Schema.Number })),
  description: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `Model call failed (${this.reason}${this.status === undefined ? "" : `, HTTP ${this.status}`}): ${this.description}`
  }
}

/**
 * A model layer was configured in a way that cannot work (no API key, an
 * unpriced model while a cost cap is configured, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelConfigError extends Schema.TaggedError<ModelConfigError>("jeevesagent/ModelConfigError")(
  "ModelConfigError",
  { option: Schema.String, description: Schema.String }
) {
  override get message(): string {
    return `Invalid model configuration (${this.option}): ${this.description}`
  }
}

/**
 * The model service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The model's name, e.g. `claude-sonnet-4-5` or `scripted`. */
  readonly name: string
  /** USD per million tokens, when known. Budgets use it to estimate a call. */
  readonly price: Price | undefined
  readonly complete: (request: ModelRequest) => Effect.Effect<ModelResponse, ModelError>
  readonly stream: (request: ModelRequest) => Stream.Stream<StreamPart, ModelError>
}

/**
 * The model service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Model extends Context.Tag("jeevesagent/Model")<Model, Service>() {}

/**
 * Builds a model service. When only `complete` is given, `stream` emits the
 * complete answer as one text delta, its tool calls, and the finish part.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: {
  readonly name: string
  readonly price?: Price | undefined
  readonly complete: (request: ModelRequest) => Effect.Effect<ModelResponse, ModelError>
  readonly stream?: ((request: ModelRequest) => Stream.Stream<StreamPart, ModelError>) | undefined
}): Service => ({
  name: options.name,
  price: options.price,
  complete: options.complete,
  stream: options.stream ?? ((request) => Stream.flatMap(Stream.fromEffect(options.complete(request)), responseParts))
})

/**
 * The stream parts of a complete response.
 *
 * @since 0.1.0
 * @category utils
 */
export const responseParts = (response: ModelResponse): Stream.Stream<StreamPart> =>
  Stream.fromIterable(internal.responseParts(response))

/**
 * One scripted model turn.
 *
 * - `toolCalls` without an `id` get `call_<n>` ids.
 * - `usage` is reported exactly (zero when absent).
 * - `latency` delays the answer (read through `Clock`, so `TestClock` drives it).
 * - `error` makes the call fail with that error instead.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScriptedTurn {
  readonly text?: string | undefined
  readonly toolCalls?: ReadonlyArray<{ readonly name: string; readonly args: unknown; readonly id?: string | undefined }> | undefined
  readonly usage?: {
    readonly inputTokens: number
    readonly outputTokens: number
    readonly costUsd?: number | undefined
  } | undefined
  readonly latency?: Duration.DurationInput | undefined
  readonly error?: ModelError | undefined
}

/**
 * A script: a list of turns played in order (shared by every caller of the
 * layer, answering `""` once used up), or a function of the request and the
 * current {@link RunContext} — for per-user scripts.
 *
 * @since 0.1.0
 * @category models
 */
export type Script =
  | ReadonlyArray<ScriptedTurn>
  | ((request: ModelRequest, context: RunContext) => ScriptedTurn | Effect.Effect<ScriptedTurn, ModelError>)

/**
 * A scripted model service (name `scripted`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeScripted: (script: Script, options?: { readonly name?: string | undefined }) => Service =
  internal.makeScripted

/**
 * A layer of a scripted model. See {@link Script}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerScripted = (script: Script, options?: { readonly name?: string | undefined }): Layer.Layer<Model> =>
  Layer.sync(Model, () => makeScripted(script, options))

/**
 * Options of the echo model.
 *
 * @since 0.1.0
 * @category models
 */
export interface EchoOptions {
  /** Prepended to the echoed text. Default `"Echo: "`. */
  readonly prefix?: string | undefined
  /** USD per token, input and output alike. Default 0. */
  readonly costPerToken?: number | undefined
  /** Delay before each streamed word. Default none. */
  readonly chunkDelay?: Duration.DurationInput | undefined
}

/**
 * An echo model service (name `echo`): replies with the prefix and the last
 * user message. Input tokens are the whitespace-separated words of all
 * messages; output tokens are the words of the reply (at least 1).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeEcho: (options?: EchoOptions) => Service = internal.makeEcho

/**
 * A layer of the echo model.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEcho = (options?: EchoOptions): Layer.Layer<Model> => Layer.sync(Model, () => makeEcho(options))

/**
 * The default retry schedule for retryable model errors: exponential backoff
 * from 1 second (×2, capped at 30 seconds, jittered), at most 2 retries.
 *
 * @since 0.1.0
 * @category retries
 */
export const defaultRetrySchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("1 second", 2).pipe(
  Schedule.union(Schedule.spaced("30 seconds")),
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(2))
)

/**
 * Retries `self` with `schedule` while the failure is a retryable
 * {@link ModelError}. A non-retryable error (a 400, bad credentials) fails at
 * once.
 *
 * @since 0.1.0
 * @category retries
 */
export const retryRetryable = <A, R>(
  self: Effect.Effect<A, ModelError, R>,
  schedule: Schedule.Schedule<unknown, unknown> = defaultRetrySchedule
): Effect.Effect<A, ModelError, R> =>
  // The schedule driver is built only after a first retryable failure: a
  // successful call pays nothing for the retry policy.
  Effect.catchIf(self, (error) => error.retryable, (first) => {
    let replayFirst = true
    const attempt = Effect.suspend(() => {
      if (!replayFirst) return self
      replayFirst = false
      return Effect.fail(first)
    })
    return retryModelErrors(attempt, schedule, () => true)
  })

/** A retry after a provider's `retry-after` over this long is not made: the call fails now. */
const MAX_RETRY_AFTER_MILLIS = 60_000

/**
 * `Effect.retry` of a model call while `retryable` and `more()` hold, the
 * schedule's delay stretched to the `retry-after` the provider gave (at most
 * a minute; a longer one fails the call at once).
 *
 * @internal
 */
export const retryModelErrors = <A, R>(
  self: Effect.Effect<A, ModelError, R>,
  schedule: Schedule.Schedule<unknown, unknown>,
  more: (error: ModelError) => boolean
): Effect.Effect<A, ModelError, R> => {
  // The error's wait, read before the schedule steps (the input is seen first), stretches its delay.
  let asked = 0
  const honoured = schedule.pipe(
    Schedule.modifyDelay((_, delay) => (asked > Duration.toMillis(delay) ? Duration.millis(asked) : delay)),
    Schedule.tapInput((error: ModelError) => Effect.sync(() => void (asked = error.retryAfterMillis ?? 0)))
  )
  return Effect.retry(self, {
    schedule: honoured,
    while: (error) => error.retryable && (error.retryAfterMillis ?? 0) <= MAX_RETRY_AFTER_MILLIS && more(error)
  })
}
