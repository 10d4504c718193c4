/**
 * Claude as the agent's {@link Model.Model}, over `@anthropic-ai/sdk`.
 *
 * - The API key is the `apiKey` option, else `ANTHROPIC_API_KEY` from the
 *   `Secrets` service (`lookupSync`), else from the environment. None is a
 *   {@link Model.ModelConfigError} naming both.
 * - The SDK never retries (`maxRetries: 0`): failures become
 *   {@link Model.ModelError}s whose `retryable` flag the agent's retry
 *   `Schedule` honours — 429, 529, other 5xx and connection failures are
 *   retryable; a 400, 404, 422, 401 or 403 is not.
 * - Interrupting a call aborts its HTTP request, a streamed body included.
 * - Cost comes from {@link prices} (USD per million tokens, longest model
 *   prefix wins), extended or overridden by the `prices` option. With
 *   `requireCost: true` an unpriced model is a configuration error instead of
 *   counting as $0.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Agent, Secrets } from "jeevesagent"
 * import * as AnthropicModel from "jeevesagent/AnthropicModel"
 *
 * const ModelLive = AnthropicModel.layer({
 *   model: "claude-sonnet-4-6",
 *   maxTokens: 2048,
 *   requireCost: true // a cost cap is configured: an unpriced model must not count as $0
 * })
 *
 * // No `apiKey` option: the key is ANTHROPIC_API_KEY from the Secrets service.
 * const AgentLive = Agent.layer({ instructions: "Be brief." }).pipe(
 *   Layer.provide(ModelLive),
 *   Layer.provide(Layer.merge(Agent.layerDefaults, Secrets.layerDict({ ANTHROPIC_API_KEY: "sk-ant-..." })))
 * )
 *
 * const program = Effect.flatMap(Agent.Agent, (agent) => agent.run("Hello", { userId: "alice" })).pipe(
 *   Effect.provide(AgentLive)
 * )
 * ```
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import * as internal from "./internal/anthropic.js"
import * as Model from "./Model.js"
import type * as Secrets from "./Secrets.js"

/**
 * Options of {@link layer} and {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The model id, e.g. `claude-sonnet-4-5` or `claude-haiku-4-5-20251001`. */
  readonly model: string
  /** Wins over `ANTHROPIC_API_KEY` from the Secrets service and the environment. */
  readonly apiKey?: string | Redacted.Redacted<string> | undefined
  /** The API's base URL; the SDK's default (or `ANTHROPIC_BASE_URL`) when omitted. */
  readonly baseURL?: string | undefined
  /**
   * The most `max_tokens` a call may ask for. A request's own `maxTokens`
   * (the agent's) is capped by it; without one it is used as is. Default 4096.
   */
  readonly maxTokens?: number | undefined
  /**
   * Prices by model prefix, looked up before {@link prices}: the longest
   * prefix here that matches the model wins, even over a longer built-in one
   * (`{ "claude-sonnet-4": ... }` prices `claude-sonnet-4-5` too); the
   * built-in table is used only when none here matches.
   */
  readonly prices?: Readonly<Record<string, Model.Price>> | undefined
  /**
   * Fail with a {@link Model.ModelConfigError} when no price is known for the
   * model, instead of counting its calls as $0. Set it when a cost cap is
   * configured.
   */
  readonly requireCost?: boolean | undefined
  /** The longest to wait for a response's headers. The SDK's default (10 minutes) when omitted. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * Claude prices in USD per million tokens, by model-id prefix. The longest
 * prefix that matches a model id wins, so `claude-opus-4-5` overrides the
 * `claude-opus-4` family. Long-context surcharges are not modelled. Cache
 * writes are charged at 1.25× and cache reads at 0.1× the input price.
 *
 * @since 0.1.0
 * @category prices
 */
export const prices: Readonly<Record<string, Model.Price>> = Object.freeze({
  "claude-opus-4": { inputPerMillion: 15, outputPerMillion: 75 },
  "claude-opus-4-5": { inputPerMillion: 5, outputPerMillion: 25 },
  "claude-opus-4-6": { inputPerMillion: 5, outputPerMillion: 25 },
  "claude-sonnet-4": { inputPerMillion: 3, outputPerMillion: 15 },
  "claude-haiku-4-5": { inputPerMillion: 1, outputPerMillion: 5 },
  "claude-3-7-sonnet": { inputPerMillion: 3, outputPerMillion: 15 },
  "claude-3-5-sonnet": { inputPerMillion: 3, outputPerMillion: 15 },
  "claude-3-5-haiku": { inputPerMillion: 0.8, outputPerMillion: 4 },
  "claude-3-opus": { inputPerMillion: 15, outputPerMillion: 75 },
  "claude-3-haiku": { inputPerMillion: 0.25, outputPerMillion: 1.25 }
})

/**
 * The price of `model`: the entry of `table` (default {@link prices}) with
 * the longest prefix of the model id, or `undefined` when none matches.
 *
 * @since 0.1.0
 * @category prices
 */
export const priceFor = (
  model: string,
  table: Readonly<Record<string, Model.Price>> = prices
): Model.Price | undefined => internal.priceFor(model, table)

/**
 * Builds the Claude model service. The API key is resolved here, once:
 * `apiKey`, else the `Secrets` service's `lookupSync("ANTHROPIC_API_KEY")`, else the
 * environment.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Model.Service, Model.ModelConfigError, Secrets.Secrets> =>
  internal.make(options, prices)

/**
 * A layer of the Claude model service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Model.Model, Model.ModelConfigError, Secrets.Secrets> =>
  Layer.effect(Model.Model, make(options))
