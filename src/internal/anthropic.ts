import Anthropic, { APIConnectionError, APIError, APIUserAbortError } from "@anthropic-ai/sdk"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import type * as AnthropicModel from "../AnthropicModel.js"
import * as Model from "../Model.js"
import * as Secrets from "../Secrets.js"
import { modelErrorWith } from "./model.js"
import { withServiceSpan, withServiceStreamSpan } from "./spans.js"

const API_KEY_VARIABLE = "ANTHROPIC_API_KEY"
const DEFAULT_MAX_TOKENS = 4096
/** Prompt-cache writes cost 1.25× the input price, cache reads 0.1× (5-minute cache). */
const CACHE_WRITE_FACTOR = 1.25
const CACHE_READ_FACTOR = 0.1
/**
 * Above this `max_tokens` the SDK refuses a non-streaming request that has no
 * explicit timeout (it could outlive the 10-minute default), so `complete`
 * collects a stream instead.
 */
const NON_STREAMING_MAX_TOKENS = 21_333

// ---- prices -----------------------------------------------------------------

const isValidPrice = (price: Model.Price | undefined): boolean =>
  price !== undefined &&
  Number.isFinite(price.inputPerMillion) && price.inputPerMillion >= 0 &&
  Number.isFinite(price.outputPerMillion) && price.outputPerMillion >= 0

/** @internal */
export const priceFor = (
  model: string,
  table: Readonly<Record<string, Model.Price>>
): Model.Price | undefined => {
  let best: string | undefined
  for (const prefix of Object.keys(table)) {
    if (model.startsWith(prefix) && (best === undefined || prefix.length > best.length)) best = prefix
  }
  return best === undefined ? undefined : table[best]
}

// ---- requests -----------------------------------------------------------------

type Block = Anthropic.ContentBlockParam
interface Turn {
  readonly role: "user" | "assistant"
  readonly blocks: Array<Block>
}

/** A text block, unless the text is empty or only whitespace (the API refuses such a block with a 400). */
const textBlocks = (text: string): Array<Block> => (text.trim() === "" ? [] : [{ type: "text", text }])

/**
 * Our messages as the Messages API wants them: system messages joined into
 * the top-level `system`; assistant tool calls as `tool_use` blocks; tool
 * results as `tool_result` blocks of the following user turn. Consecutive
 * messages of one role become one turn, so the tool results of one assistant
 * turn always arrive together.
 *
 * @internal
 */
export const toMessages = (messages: ReadonlyArray<Model.Message>): {
  readonly system: string | undefined
  readonly messages: Array<Anthropic.MessageParam>
} => {
  const system: Array<string> = []
  const turns: Array<Turn> = []
  const push = (role: Turn["role"], blocks: Array<Block>) => {
    if (blocks.length === 0) return
    const last = turns.at(-1)
    if (last !== undefined && last.role === role) last.blocks.push(...blocks)
    else turns.push({ role, blocks })
  }
  for (const message of messages) {
    switch (message.role) {
      case "system":
        if (message.content !== "") system.push(message.content)
        break
      case "user":
        push("user", textBlocks(message.content))
        break
      case "assistant":
        push("assistant", [
          ...textBlocks(message.content),
          ...message.toolCalls.map((call): Block => ({
            type: "tool_use",
            id: call.id,
            name: call.name,
            input: call.args ?? {}
          }))
        ])
        break
      case "tool":
        push("user", [{
          type: "tool_result",
          tool_use_id: message.toolCallId,
          ...(message.content === "" ? {} : { content: message.content }),
          ...(message.isError ? { is_error: true } : {})
        }])
        break
    }
  }
  return {
    system: system.length === 0 ? undefined : system.join("\n\n"),
    messages: turns.map((turn): Anthropic.MessageParam => {
      const only = turn.blocks.length === 1 ? turn.blocks[0]! : undefined
      return { role: turn.role, content: only !== undefined && only.type === "text" ? only.text : turn.blocks }
    })
  }
}

const toTool = (definition: Model.ToolDefinition): Anthropic.Tool => ({
  name: definition.name,
  description: definition.description,
  input_schema: definition.inputSchema as Anthropic.Tool.InputSchema
})

/** @internal */
export const toParams = (
  model: string,
  maxTokens: number,
  request: Model.ModelRequest
): Anthropic.MessageCreateParamsNonStreaming => {
  const { messages, system } = toMessages(request.messages)
  return {
    model,
    max_tokens: maxTokens,
    messages,
    ...(system === undefined ? {} : { system }),
    ...(request.tools.length === 0 ? {} : { tools: request.tools.map(toTool) })
  }
}

// ---- responses ----------------------------------------------------------------

interface RawUsage {
  readonly input_tokens?: number | null | undefined
  readonly output_tokens?: number | null | undefined
  readonly cache_creation_input_tokens?: number | null | undefined
  readonly cache_read_input_tokens?: number | null | undefined
}

/**
 * Usage as we count it: `inputTokens` includes prompt-cache writes and reads
 * (the API reports them apart from `input_tokens`), and the cost prices them
 * at their cache rates.
 *
 * @internal
 */
export const toUsage = (raw: RawUsage, price: Model.Price | undefined): Model.Usage => {
  const fresh = raw.input_tokens ?? 0
  const cacheWrite = raw.cache_creation_input_tokens ?? 0
  const cacheRead = raw.cache_read_input_tokens ?? 0
  const outputTokens = raw.output_tokens ?? 0
  const costUsd = price === undefined ?
    0 :
    Model.costOf(price, fresh + cacheWrite * CACHE_WRITE_FACTOR + cacheRead * CACHE_READ_FACTOR, outputTokens)
  return { inputTokens: fresh + cacheWrite + cacheRead, outputTokens, costUsd }
}

/** @internal */
export const fromMessage = (message: Anthropic.Message, price: Model.Price | undefined): Model.ModelResponse => {
  let text = ""
  const toolCalls: Array<Model.ToolCall> = []
  for (const block of message.content) {
    if (block.type === "text") text += block.text
    else if (block.type === "tool_use") toolCalls.push({ id: block.id, name: block.name, args: block.input })
  }
  return { text, toolCalls, usage: toUsage(message.usage, price), stopReason: message.stop_reason ?? "end_turn" }
}

/** `error` with the usage the response had reported when it failed, if any. */
const withUsage = (error: Model.ModelError, usage: Model.Usage | undefined): Model.ModelError =>
  usage === undefined || error.usage !== undefined ? error : modelErrorWith(error, { usage })

const invalidResponse = (description: string, cause?: unknown) =>
  new Model.ModelError({ reason: "invalid_response", retryable: false, description, cause })

/**
 * Folds the raw stream events of one response into stream parts: a text delta
 * per text delta, a tool call when its block stops (its JSON complete), and
 * the finish part at `message_stop`.
 *
 * @internal
 */
export class StreamAccumulator {
  private text = ""
  private readonly toolCalls: Array<Model.ToolCall> = []
  private readonly toolBlocks = new Map<number, { id: string; name: string; json: string }>()
  /**
   * Tool calls whose input was not valid JSON when their block stopped: an
   * answer cut off at `max_tokens` ends that way (the stop reason comes
   * after the block), anything else is an invalid response. Decided at
   * `message_stop`.
   */
  private readonly cutCalls: Array<{ id: string; name: string; json: string; cause: unknown }> = []
  private startUsage: RawUsage = {}
  private deltaUsage: RawUsage = {}
  private stopReason: string | null = null
  finished = false

  constructor(private readonly price: Model.Price | undefined) {}

  push(event: Anthropic.RawMessageStreamEvent): Array<Model.StreamPart> | Model.ModelError {
    switch (event.type) {
      case "message_start":
        // A proxy in front of the API may leave usage out.
        this.startUsage = event.message.usage ?? {}
        // What the provider bills once it began: charged if the call is cancelled from here on.
        return this.startUsage.input_tokens === undefined ? [] : [{ _tag: "Usage", usage: this.response().usage }]
      case "content_block_start": {
        const block = event.content_block
        if (block.type === "tool_use") {
          this.toolBlocks.set(event.index, { id: block.id, name: block.name, json: "" })
        } else if (block.type === "text" && block.text !== "") {
          return [this.appendText(block.text)]
        }
        return []
      }
      case "content_block_delta": {
        const delta = event.delta
        if (delta.type === "text_delta") return delta.text === "" ? [] : [this.appendText(delta.text)]
        if (delta.type === "input_json_delta") {
          const block = this.toolBlocks.get(event.index)
          if (block !== undefined) block.json += delta.partial_json
        }
        return []
      }
      case "content_block_stop": {
        const block = this.toolBlocks.get(event.index)
        if (block === undefined) return []
        this.toolBlocks.delete(event.index)
        let args: unknown
        try {
          args = block.json.trim() === "" ? {} : JSON.parse(block.json)
        } catch (cause) {
          this.cutCalls.push({ ...block, cause })
          return []
        }
        const call: Model.ToolCall = { id: block.id, name: block.name, args }
        this.toolCalls.push(call)
        return [{ _tag: "ToolCallPart", call }]
      }
      case "message_delta":
        this.stopReason = event.delta.stop_reason ?? this.stopReason
        this.deltaUsage = event.usage ?? {}
        return []
      case "message_stop": {
        const parts: Array<Model.StreamPart> = []
        for (const cut of this.cutCalls) {
          // Cut off at max_tokens: given as it came, for the record (the agent runs no call of a cut-off
          // answer). Otherwise the model wrote JSON that does not parse: that call gets an error result.
          const call: Model.ToolCall = this.stopReason === "max_tokens" ?
            { id: cut.id, name: cut.name, args: { incomplete_input: cut.json } } :
            {
              id: cut.id,
              name: cut.name,
              args: {},
              invalidArgs: `the model's JSON does not parse (${cut.cause instanceof Error ? cut.cause.message : String(cut.cause)})`
            }
          this.toolCalls.push(call)
          parts.push({ _tag: "ToolCallPart", call })
        }
        this.finished = true
        parts.push({ _tag: "Finish", response: this.response() })
        return parts
      }
      default:
        return []
    }
  }

  private appendText(text: string): Model.StreamPart {
    this.text += text
    return { _tag: "TextDelta", text }
  }

  /**
   * The usage reported so far, once `message_start` came: what a call cut
   * off after it began used. Its output count is a placeholder until a
   * `message_delta` reports one: once part of the answer was given out,
   * the output (and so the cost) is unknown — NaN, charged at the estimate.
   */
  partialUsage(): Model.Usage | undefined {
    if (this.startUsage.input_tokens === undefined) return undefined
    const usage = this.response().usage
    const delivered = this.text !== "" || this.toolCalls.length > 0
    return delivered && this.deltaUsage.output_tokens === undefined ?
      { inputTokens: usage.inputTokens, outputTokens: Number.NaN, costUsd: Number.NaN } :
      usage
  }

  /** `message_delta` usage is cumulative; fields it leaves out come from `message_start`. */
  private response(): Model.ModelResponse {
    const start = this.startUsage
    const delta = this.deltaUsage
    const usage = toUsage({
      input_tokens: delta.input_tokens ?? start.input_tokens,
      output_tokens: delta.output_tokens ?? start.output_tokens,
      cache_creation_input_tokens: delta.cache_creation_input_tokens ?? start.cache_creation_input_tokens,
      cache_read_input_tokens: delta.cache_read_input_tokens ?? start.cache_read_input_tokens
    }, this.price)
    return { text: this.text, toolCalls: this.toolCalls, usage, stopReason: this.stopReason ?? "end_turn" }
  }
}

// ---- errors -------------------------------------------------------------------

type Classification = Pick<Model.ModelError, "reason" | "retryable">

const classifyStatus = (status: number): Classification => {
  if (status === 429) return { reason: "rate_limited", retryable: true }
  if (status === 529) return { reason: "overloaded", retryable: true }
  if (status === 408) return { reason: "connection", retryable: true }
  if (status >= 500) return { reason: "server_error", retryable: true }
  if (status === 400 || status === 404 || status === 413 || status === 422) {
    return { reason: "bad_request", retryable: false }
  }
  if (status === 401 || status === 403) return { reason: "authentication", retryable: false }
  return { reason: "unknown", retryable: false }
}

/** An `error` event in the middle of a stream has no status, only the error type. */
const classifyType = (type: string | null): Classification => {
  switch (type) {
    case "rate_limit_error":
      return { reason: "rate_limited", retryable: true }
    case "overloaded_error":
      return { reason: "overloaded", retryable: true }
    case "api_error":
      return { reason: "server_error", retryable: true }
    case "timeout_error":
      return { reason: "connection", retryable: true }
    case "invalid_request_error":
    case "not_found_error":
    case "request_too_large":
      return { reason: "bad_request", retryable: false }
    case "authentication_error":
    case "permission_error":
      return { reason: "authentication", retryable: false }
    default:
      return { reason: "unknown", retryable: false }
  }
}

const NETWORK_ERROR_CODE = /^(UND_ERR|ECONN|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH)/

/**
 * A socket that dies while a body streams surfaces from fetch (undici) as
 * `TypeError: terminated` caused by an error with a network code — not as an
 * SDK error.
 */
const isNetworkFailure = (error: unknown): error is Error => {
  let current: unknown = error
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    const code = (current as { readonly code?: unknown }).code
    if (typeof code === "string" && NETWORK_ERROR_CODE.test(code)) return true
    current = current.cause
  }
  return error instanceof TypeError && (error.message === "terminated" || error.message === "fetch failed")
}

/**
 * The wait a response asked for before a retry, in milliseconds:
 * `retry-after-ms`, else `retry-after` in seconds or as an HTTP date;
 * `undefined` when absent or unreadable.
 */
const retryAfterOf = (headers: unknown): number | undefined => {
  const get = (name: string): string | null | undefined =>
    headers instanceof Headers ? headers.get(name) : (headers as Record<string, string | undefined> | undefined)?.[name]
  const millis = Number(get("retry-after-ms") ?? Number.NaN)
  if (Number.isFinite(millis) && millis >= 0) return millis
  const value = get("retry-after")
  if (value === null || value === undefined || value.trim() === "") return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(value)
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined
}

/**
 * Maps whatever the SDK threw to a {@link Model.ModelError}: HTTP statuses
 * and stream error types to reasons, connection failures and timeouts to a
 * retryable `connection`.
 *
 * @internal
 */
export const toModelError = (error: unknown): Model.ModelError => {
  if (error instanceof APIUserAbortError) {
    return new Model.ModelError({ reason: "connection", retryable: false, description: error.message, cause: error })
  }
  if (error instanceof APIConnectionError) {
    return new Model.ModelError({ reason: "connection", retryable: true, description: error.message, cause: error })
  }
  if (error instanceof APIError) {
    const classification = error.status === undefined ? classifyType(error.type) : classifyStatus(error.status)
    const retryAfterMillis = classification.retryable ? retryAfterOf(error.headers) : undefined
    return new Model.ModelError({
      ...classification,
      ...(error.status === undefined ? {} : { status: error.status }),
      ...(retryAfterMillis === undefined ? {} : { retryAfterMillis }),
      description: error.apiMessage ?? error.message,
      cause: error
    })
  }
  if (isNetworkFailure(error)) {
    return new Model.ModelError({ reason: "connection", retryable: true, description: error.message, cause: error })
  }
  return new Model.ModelError({
    reason: "unknown",
    retryable: false,
    description: error instanceof Error ? error.message : String(error),
    cause: error
  })
}

// ---- configuration ------------------------------------------------------------

const configError = (option: string, description: string) => new Model.ModelConfigError({ option, description })

const environmentKey: Effect.Effect<Option.Option<Redacted.Redacted<string>>> = Config.option(
  Config.redacted(API_KEY_VARIABLE)
).pipe(
  Effect.map(Option.filter((key) => Redacted.value(key) !== "")),
  Effect.orElseSucceed(() => Option.none())
)

/**
 * The API key: the explicit option, else the Secrets service's
 * `lookupSync("ANTHROPIC_API_KEY")`, else the environment (read through the
 * ConfigProvider, which is the process environment unless replaced).
 *
 * @internal
 */
export const resolveApiKey = (
  apiKey: string | Redacted.Redacted<string> | undefined
): Effect.Effect<Redacted.Redacted<string>, Model.ModelConfigError, Secrets.Secrets> =>
  Effect.flatMap(findApiKey(apiKey), (key) => {
    // A key read from a file often ends in a newline; one with a character an HTTP header cannot carry
    // would make fetch throw with the whole header (the key) in its message.
    const value = Redacted.value(key).trim()
    return HEADER_SAFE.test(value) ?
      Effect.succeed(value === Redacted.value(key) ? key : Redacted.make(value)) :
      Effect.fail(configError(
        "apiKey",
        "the API key holds a character an HTTP header cannot carry (a line break, a control or non-ASCII character); it is not shown here"
      ))
  })

/** What an API key may hold: visible ASCII. */
const HEADER_SAFE = /^[\x21-\x7e]+$/

/**
 * `error` without the API key in its description, and without its cause
 * when that quotes it (an SDK or fetch error echoing a header).
 */
const withoutKey = (error: Model.ModelError, key: string): Model.ModelError => {
  const cause = error.cause
  const causeText = cause instanceof Error ? `${cause.message} ${cause.stack ?? ""}` : String(cause ?? "")
  if (!error.description.includes(key) && !causeText.includes(key)) return error
  return modelErrorWith(error, { description: error.description.split(key).join(Secrets.REDACTED), dropCause: true })
}

const findApiKey = (
  apiKey: string | Redacted.Redacted<string> | undefined
): Effect.Effect<Redacted.Redacted<string>, Model.ModelConfigError, Secrets.Secrets> =>
  Effect.gen(function*() {
    if (apiKey !== undefined) {
      const key = Redacted.isRedacted(apiKey) ? apiKey : Redacted.make(apiKey)
      if (Redacted.value(key) === "") return yield* configError("apiKey", "the apiKey option is empty")
      return key
    }
    const secrets = yield* Secrets.Secrets
    const fromSecrets = secrets.lookupSync(API_KEY_VARIABLE)
    if (fromSecrets !== undefined && fromSecrets !== "") return Redacted.make(fromSecrets)
    const fromEnvironment = yield* environmentKey
    if (Option.isSome(fromEnvironment)) return fromEnvironment.value
    return yield* configError(
      "apiKey",
      `no Anthropic API key: pass the apiKey option, or provide ${API_KEY_VARIABLE} through the Secrets service or the environment`
    )
  })

const validate = (options: AnthropicModel.Options): Effect.Effect<void, Model.ModelConfigError> => {
  if (options.model.trim() === "") return Effect.fail(configError("model", "the model name is empty"))
  if (options.maxTokens !== undefined && !(Number.isInteger(options.maxTokens) && options.maxTokens > 0)) {
    return Effect.fail(configError("maxTokens", `must be a positive integer, got ${options.maxTokens}`))
  }
  if (options.timeout !== undefined) {
    const timeout = Duration.decodeUnknown(options.timeout)
    if (Option.isNone(timeout) || !Duration.isFinite(timeout.value) || Duration.toMillis(timeout.value) <= 0) {
      return Effect.fail(configError("timeout", `must be a positive finite duration, got ${String(options.timeout)}`))
    }
  }
  for (const [prefix, price] of Object.entries(options.prices ?? {})) {
    if (!isValidPrice(price)) {
      return Effect.fail(
        configError("prices", `the price of ${JSON.stringify(prefix)} must have finite, non-negative USD amounts`)
      )
    }
  }
  return Effect.void
}

// ---- the service --------------------------------------------------------------

/** @internal */
export const make = (
  options: AnthropicModel.Options,
  defaultPrices: Readonly<Record<string, Model.Price>>
): Effect.Effect<Model.Service, Model.ModelConfigError, Secrets.Secrets> =>
  Effect.gen(function*() {
    yield* validate(options)
    const model = options.model
    // The caller's table first: an entry of theirs for a family wins over a longer built-in prefix of that family.
    const price = priceFor(model, options.prices ?? {}) ?? priceFor(model, defaultPrices)
    if (price === undefined && options.requireCost === true) {
      return yield* configError(
        "prices",
        `no price is known for model ${JSON.stringify(model)} and a cost cap needs one: ` +
          `add it with the prices option: prices: { ${JSON.stringify(model)}: ` +
          `{ inputPerMillion: <USD>, outputPerMillion: <USD> } } (per million tokens; a prefix covers a family)`
      )
    }
    const apiKey = yield* resolveApiKey(options.apiKey)
    const timeout = options.timeout === undefined ? undefined : Duration.toMillis(Duration.decode(options.timeout))
    const modelError = (error: unknown) => withoutKey(toModelError(error), Redacted.value(apiKey))
    const client = new Anthropic({
      apiKey: Redacted.value(apiKey),
      baseURL: options.baseURL,
      // Retries are the agent's, with a Schedule, on retryable ModelErrors only.
      maxRetries: 0,
      ...(timeout === undefined ? {} : { timeout })
    })

    const maxTokensOf = (request: Model.ModelRequest): number => {
      const requested = request.maxTokens
      const ceiling = options.maxTokens
      if (requested === undefined) return ceiling ?? DEFAULT_MAX_TOKENS
      return ceiling === undefined ? requested : Math.min(requested, ceiling)
    }

    const stream = (request: Model.ModelRequest): Stream.Stream<Model.StreamPart, Model.ModelError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        // One controller for the whole response: closing the stream's scope
        // (completion, failure, interruption) aborts the HTTP request, body
        // included. Aborting first also lets a pending read settle at once.
        const controller = yield* Effect.acquireRelease(
          Effect.sync(() => new AbortController()),
          (controller) => Effect.sync(() => controller.abort())
        )
        const params: Anthropic.MessageCreateParamsStreaming = {
          ...toParams(model, maxTokensOf(request), request),
          stream: true
        }
        const events = yield* Effect.tryPromise({
          try: () => client.messages.create(params, { signal: controller.signal }),
          catch: modelError
        })
        const iterator = events[Symbol.asyncIterator]()
        const accumulator = new StreamAccumulator(price)
        // A failure after the response began carries what it reported using (charged, not nothing).
        const failed = (error: Model.ModelError) => Option.some(withUsage(error, accumulator.partialUsage()))
        const next = Effect.tryPromise({ try: () => iterator.next(), catch: (error) => failed(modelError(error)) })
        // `message_stop` ends the message: the stream ends there, without waiting for the body's end (a
        // connection dropped or left open after it must not fail or hold an answer that is complete).
        const parts = Stream.repeatEffectOption(
          Effect.flatMap(Effect.suspend(() => (accumulator.finished ? Effect.fail(Option.none()) : next)), (result) => {
            if (result.done === true) {
              return accumulator.finished ?
                Effect.fail(Option.none()) :
                Effect.fail(failed(
                  new Model.ModelError({
                    reason: "connection",
                    retryable: true,
                    description: "the response stream ended before message_stop"
                  })
                ))
            }
            const pushed = accumulator.push(result.value)
            return pushed instanceof Model.ModelError ? Effect.fail(failed(pushed)) : Effect.succeed(pushed)
          })
        )
        return Stream.flattenIterables(parts)
      })).pipe(withServiceStreamSpan("AnthropicModel.stream", { attributes: { model } }))

    const complete = (request: Model.ModelRequest): Effect.Effect<Model.ModelResponse, Model.ModelError> => {
      const maxTokens = maxTokensOf(request)
      const answer = timeout === undefined && maxTokens > NON_STREAMING_MAX_TOKENS ?
        Stream.runFold(
          stream(request),
          undefined as Model.ModelResponse | undefined,
          (last, part) => (part._tag === "Finish" ? part.response : last)
        ).pipe(Effect.flatMap((response) =>
          response === undefined ? Effect.fail(invalidResponse("the stream ended without a response")) : Effect.succeed(response)
        )) :
        Effect.tryPromise({
          try: (signal) => client.messages.create(toParams(model, maxTokens, request), { signal }),
          catch: modelError
        }).pipe(Effect.map((message) => fromMessage(message, price)))
      return withServiceSpan("AnthropicModel.complete", { attributes: { model } })(answer)
    }

    return Model.make({ name: model, price, complete, stream })
  })
