/**
 * The agent: one shared loop serving many users.
 *
 * `Agent.layer(config)` needs the services it governs with — `Model`,
 * `Budget`, `Permissions`, `ApprovalHandler`, `Hooks`, `Memory`, `AuditLog`,
 * `Secrets`, `Telemetry`. {@link layerDefaults} provides the honest simple
 * ones (no budget, allow all, no approver, no hooks, in-memory memory, no
 * audit log, secrets from the environment, no telemetry); provide your own
 * after it to replace any of them.
 *
 * @example
 * ```ts
 * import { Effect, Layer, Schema } from "effect"
 * import { Agent, Model, RunContext, Tool } from "jeevesagent"
 *
 * const whoami = Tool.make("whoami", {
 *   description: "The current user's id",
 *   parameters: Schema.Struct({}),
 *   handler: () => Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
 * })
 *
 * const AgentLive = Agent.layer({ instructions: "Be brief.", tools: [whoami] }).pipe(
 *   Layer.provide(Model.layerScripted((_request, ctx) => ({ text: `hello ${ctx.userId}` }))),
 *   Layer.provide(Agent.layerDefaults)
 * )
 *
 * const program = Effect.gen(function*() {
 *   const agent = yield* Agent.Agent
 *   const result = yield* agent.run("hi", { userId: "alice" })
 *   return result.output // "hello alice"
 * }).pipe(Effect.provide(AgentLive))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Schedule from "effect/Schedule"
import type * as Stream from "effect/Stream"
import type * as AgentEvent from "./AgentEvent.js"
import * as Approval from "./Approval.js"
import * as AuditLog from "./AuditLog.js"
import * as Budget from "./Budget.js"
import * as Hooks from "./Hooks.js"
import * as internal from "./internal/agent.js"
import * as Memory from "./Memory.js"
import type * as Model from "./Model.js"
import * as Permissions from "./Permissions.js"
import type * as RunContext from "./RunContext.js"
import * as Secrets from "./Secrets.js"
import * as Telemetry from "./Telemetry.js"
import type * as Tool from "./Tool.js"

/**
 * Agent configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** The system prompt. */
  readonly instructions?: string | undefined
  readonly tools?: ReadonlyArray<Tool.Any> | undefined
  /** Model calls per run before it stops with `max_turns_exceeded`. Default 50; a positive integer (else the layer dies). */
  readonly maxTurns?: number | undefined
  /** `max_tokens` of each model call, and what the budget reserves for its output. Default 4096; a positive integer. */
  readonly maxTokens?: number | undefined
  /** Retries of retryable model errors. Default {@link Model.defaultRetrySchedule}. */
  readonly retrySchedule?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * Per-run options.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** Omit for an anonymous run. */
  readonly userId?: string | null | undefined
  /** Continue this session (its history is replayed); a new `sess_...` id when omitted, `""` or blank. */
  readonly sessionId?: string | undefined
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
}

/**
 * One tool call of a run, with its outcome.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToolCallRecord extends Tool.Result {
  readonly args: unknown
  readonly destructive: boolean
  readonly turn: number
}

/**
 * The result of a run.
 *
 * `interrupted` is true when the run stopped before the model finished:
 * `interruptionReason` is `max_turns_exceeded` or `budget:<field>`.
 * `stopReason` is why the model's last answer ended, as the provider
 * reported it: `end_turn` for a finished answer; `max_tokens` (the
 * `output` is cut off), `refusal` (the provider declined to continue) and
 * any other reason mean the output is not a finished answer, which a caller
 * showing it to a user should check. `undefined` when no answer came.
 * `auditFailures` counts audit entries that could not be written (while it
 * is non-zero, destructive tools were denied with `audit unavailable`).
 *
 * @since 0.1.0
 * @category models
 */
export interface RunResult {
  readonly runId: string
  readonly sessionId: string
  readonly userId: string | null
  readonly output: string
  readonly turns: number
  readonly tokensIn: number
  readonly tokensOut: number
  readonly costUsd: number
  readonly startedAt: Date
  readonly finishedAt: Date
  readonly interrupted: boolean
  readonly interruptionReason: string | undefined
  /** Why the model's last answer ended (`end_turn`, `max_tokens`, `refusal`, ...); `undefined` when none came. */
  readonly stopReason: string | undefined
  readonly toolCalls: ReadonlyArray<ToolCallRecord>
  readonly auditFailures: number
}

/**
 * Everything a run can fail with. Denials, tool failures, budget blocks and
 * the turn cap are not failures: they are in the {@link RunResult}.
 *
 * @since 0.1.0
 * @category errors
 */
export type AgentError =
  | RunContext.InvalidUserId
  | Model.ModelError
  | Budget.BudgetUnavailable
  | Memory.MemoryError

/**
 * The agent service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly run: (prompt: string, options?: RunOptions) => Effect.Effect<RunResult, AgentError>
  /** The same run as a stream of events; interrupting the consumer interrupts the run. */
  readonly stream: (prompt: string, options?: RunOptions) => Stream.Stream<AgentEvent.AgentEvent, AgentError>
}

/**
 * The agent service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Agent extends Context.Tag("jeevesagent/Agent")<Agent, Service>() {}

/**
 * The services the agent loop needs.
 *
 * @since 0.1.0
 * @category models
 */
export type Requirements =
  | Model.Model
  | Budget.Budget
  | Permissions.Permissions
  | Approval.ApprovalHandler
  | Hooks.Hooks
  | Memory.Memory
  | AuditLog.AuditLog
  | Secrets.Secrets
  | Telemetry.Telemetry

/**
 * Builds the agent service from the services in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (config?: Config) => Effect.Effect<Service, never, Requirements> = internal.make

/**
 * The agent layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config?: Config): Layer.Layer<Agent, never, Requirements> =>
  // On close, background audit entries of cancelled runs finish first (the log closes after the agent).
  Layer.scoped(Agent, Effect.tap(make(config), (service) => Effect.addFinalizer(() => internal.drain(service))))

/**
 * The default governance services: `Budget.layerNone`,
 * `Permissions.allowAll`, `Approval.layerNone`, `Hooks.layerNone`,
 * `Memory.layerInMemory()`, `AuditLog.layerNone`, `Secrets.layerEnv`,
 * `Telemetry.layerNone`. Everything but the `Model`.
 *
 * To replace some, merge yours after it:
 * `Layer.provide(Layer.mergeAll(Agent.layerDefaults, myBudgetLayer))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDefaults: Layer.Layer<Exclude<Requirements, Model.Model>> = Layer.mergeAll(
  Budget.layerNone,
  Permissions.allowAll,
  Approval.layerNone,
  Hooks.layerNone,
  Memory.layerInMemory(),
  AuditLog.layerNone,
  Secrets.layerEnv,
  Telemetry.layerNone
)
