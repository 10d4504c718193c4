/**
 * The plain-Node facade: an agent with `async` methods, for programs that do
 * not use Effect.
 *
 * One `createAgent` call builds one `ManagedRuntime` holding every service
 * (budget, memory, audit log, ...), shared by all runs of all users. Rejected
 * promises carry our typed errors (`instanceof` works), never Effect's
 * `FiberFailure`. Every call takes an `AbortSignal`. Call `dispose()` when done:
 * it interrupts the calls still in flight (they reject with `AgentDisposed`)
 * and closes files and pools.
 *
 * @example
 * ```ts
 * import { createAgent } from "jeevesagent/promise"
 *
 * const agent = createAgent({ model: "echo", instructions: "Be brief." })
 * const result = await agent.run("hello", { userId: "alice" })
 * console.log(result.output) // "Echo: hello"
 * await agent.dispose()
 * ```
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import * as Agent from "./Agent.js"
import type { AgentEvent } from "./AgentEvent.js"
import type * as Approval from "./Approval.js"
import type * as AuditLog from "./AuditLog.js"
import * as Budget from "./Budget.js"
import type * as Hooks from "./Hooks.js"
import * as internal from "./internal/promise.js"
import * as Memory from "./Memory.js"
import type * as Model from "./Model.js"
import type * as Permissions from "./Permissions.js"
import * as RunContext from "./RunContext.js"
import type * as Secrets from "./Secrets.js"
import type * as Telemetry from "./Telemetry.js"
import type * as Tool from "./Tool.js"

/**
 * Permission options: one policy for everybody, or a policy per user.
 *
 * @since 0.1.0
 * @category models
 */
export type PermissionsOptions =
  | Permissions.StandardOptions
  | {
    readonly perUser: Readonly<Record<string, Permissions.Policy>>
    readonly anonymous?: Permissions.Policy | undefined
    readonly default: Permissions.Policy
  }

/**
 * Options of {@link createAgent}. Each service option also accepts a ready
 * `Layer` of that service.
 *
 * @since 0.1.0
 * @category models
 */
export interface AgentOptions {
  /**
   * `"claude-..."` for Claude (`jeevesagent/AnthropicModel`), `"scripted"`
   * (with `script`), `"echo"`, or a `Layer<Model>`.
   */
  readonly model: string | Layer.Layer<Model.Model, unknown, Secrets.Secrets>
  /** The script of the `"scripted"` model. */
  readonly script?: Model.Script | undefined
  /** Explicit API key for Claude (else `Secrets`, then `ANTHROPIC_API_KEY`). */
  readonly apiKey?: string | undefined
  /** The Anthropic API's base URL (a proxy or gateway). */
  readonly baseURL?: string | undefined
  /** Extra or overriding prices (USD per million tokens) by model-id prefix, looked up before `AnthropicModel.prices` (an entry here wins, even over a longer built-in prefix). */
  readonly prices?: Readonly<Record<string, Model.Price>> | undefined
  readonly instructions?: string | undefined
  readonly tools?: ReadonlyArray<Tool.Any> | undefined
  readonly maxTurns?: number | undefined
  readonly maxTokens?: number | undefined
  /**
   * Budget caps (`maxTokens`, `maxCostUsd`, `perUserMaxTokens`, `perUserMaxCostUsd`, ... — see
   * `Budget.Config`) and the per-user state bounds `maxUsers` / `userIdleTtl`, or a layer such as
   * `PgBudget.layer(...)`.
   */
  readonly budget?: internal.BudgetOptions | Layer.Layer<Budget.Budget, unknown> | undefined
  /**
   * The tool policy. Absent: every call is allowed — unless `approvalHandler`
   * is given, then destructive calls ask it (`{ mode: "default" }`).
   */
  readonly permissions?: PermissionsOptions | Layer.Layer<Permissions.Permissions, unknown> | undefined
  /** Asked about every `Ask` decision; resolve `true` to let the call run. */
  readonly approvalHandler?: Approval.PromiseHandler | undefined
  /** How long the approval handler may take. Default 5 minutes. */
  readonly approvalTimeout?: Duration.DurationInput | undefined
  readonly hooks?: Hooks.PromiseOptions | Layer.Layer<Hooks.Hooks, unknown> | undefined
  /** `"memory"` (default), `"sqlite:PATH"`, `"postgres://..."`, or a layer. */
  readonly memory?: string | Layer.Layer<Memory.Memory, unknown> | undefined
  /** Per-user state bounds of the in-memory store. */
  readonly memoryBounds?: Memory.InMemoryOptions | undefined
  /**
   * A tamper-evident JSONL audit log: `{ path, secret }` (or `keyring`, `durability`), or a layer
   * such as `AuditLog.layerMemory(...)` / `PgAuditLog.layer(...)`.
   */
  readonly auditLog?: AuditLog.FileOptions | Layer.Layer<AuditLog.AuditLog, unknown> | undefined
  /**
   * A record of secrets, a Secrets service, an async backend (`{ resolve, store?, lookupSync? }`),
   * or a layer. Default: the environment. Error messages, logs and audit payloads are masked
   * with its `redact`.
   */
  readonly secrets?:
    | Readonly<Record<string, string>>
    | Secrets.Service
    | Secrets.PromiseBackend
    | Layer.Layer<Secrets.Secrets, unknown>
    | undefined
  /** Fact extraction after each run. Default: on for Claude models (with a one-time notice), off otherwise. */
  readonly autoExtract?: boolean | undefined
  /** Spans and metrics through effect's tracer: `true`, the options of `Telemetry.layer` (`userIdAttribute`, `metricUserIdAttribute`, `serviceSpans`), or a layer such as `Telemetry.layerOtel(...)`. */
  readonly telemetry?: boolean | Parameters<typeof Telemetry.layer>[0] | Layer.Layer<Telemetry.Telemetry, unknown> | undefined
}

/**
 * The rejection of a call interrupted by `dispose()` (a pending `run()`, an
 * open `stream()`, an admin call), and of every call made after it.
 *
 * @since 0.1.0
 * @category errors
 */
export class AgentDisposed extends Schema.TaggedError<AgentDisposed>("jeevesagent/AgentDisposed")("AgentDisposed", {}) {
  override get message(): string {
    return "The agent was disposed: dispose() interrupts the calls in flight and refuses new ones"
  }
}

/**
 * Per-call options.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /**
   * Aborting it, even while the call is still starting (building the services
   * on first use), interrupts the call, which rejects with the signal's
   * reason (an `AbortError` by default). An already aborted signal rejects at once.
   */
  readonly signal?: AbortSignal | undefined
}

/**
 * Per-run options.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions extends Agent.RunOptions, CallOptions {}

/**
 * Admin access to one user's memory.
 *
 * @since 0.1.0
 * @category models
 */
export interface UserMemory {
  readonly working: (options?: CallOptions) => Promise<ReadonlyArray<Memory.MemoryBlock>>
  readonly updateBlock: (name: string, content: string, options?: CallOptions) => Promise<void>
  readonly appendBlock: (name: string, content: string, options?: CallOptions) => Promise<void>
  readonly recall: (
    query: string,
    options?: CallOptions & { readonly limit?: number | undefined }
  ) => Promise<ReadonlyArray<Memory.Episode>>
  readonly recallFacts: (
    query: string,
    options?: CallOptions & {
      readonly limit?: number | undefined
      readonly validAt?: Date | undefined
      readonly knownAt?: Date | undefined
    }
  ) => Promise<ReadonlyArray<Memory.Fact>>
  readonly profile: (options?: CallOptions) => Promise<Memory.MemoryProfile>
  readonly forget: (
    options?: CallOptions & { readonly sessionId?: string | undefined; readonly before?: Date | undefined }
  ) => Promise<number>
  readonly export: (options?: CallOptions) => Promise<Memory.MemoryExport>
}

/**
 * An agent with a Promise API.
 *
 * @since 0.1.0
 * @category models
 */
export interface JeevesAgent {
  /**
   * Runs the agent for a user. Rejects with `InvalidUserId`, `ModelError`, ...; an abort rejects
   * with the signal's reason, `dispose()` with `AgentDisposed`.
   */
  readonly run: (prompt: string, options?: RunOptions) => Promise<Agent.RunResult>
  /**
   * The same run as events. Breaking out of the loop, aborting (even before the first event) or
   * `dispose()` stops the run; the iterator then rejects as `run` would.
   */
  readonly stream: (prompt: string, options?: RunOptions) => AsyncIterable<AgentEvent>
  /** A user's budget totals (`null` for anonymous). */
  readonly usageFor: (userId: string | null, options?: CallOptions) => Promise<Budget.UsageTotals>
  readonly globalUsage: (options?: CallOptions) => Promise<Budget.UsageTotals>
  readonly audit: {
    readonly query: (filter?: AuditLog.QueryFilter, options?: CallOptions) => Promise<ReadonlyArray<AuditLog.AuditEntry>>
    readonly verify: (options?: CallOptions) => Promise<AuditLog.VerifyReport>
  }
  /** One user's memory (`null` for anonymous). An invalid id rejects with `InvalidUserId`. */
  readonly memory: (userId: string | null) => UserMemory
  /**
   * Builds every service now, surfacing configuration errors (otherwise the first call does).
   * Aborting its signal (`AbortSignal.timeout(...)` to bound a start-up whose database or vault
   * hangs) rejects with the signal's reason; the build goes on for the next call.
   */
  readonly ready: (options?: CallOptions) => Promise<void>
  /**
   * The runtime, for Effect programs that want to share it. Effects run on it directly are not
   * calls of this agent: `dispose()` does not interrupt them.
   */
  readonly runtime: ManagedRuntime.ManagedRuntime<internal.Services, unknown>
  /**
   * Interrupts every call in flight (each rejects with `AgentDisposed`; a pending approval is
   * abandoned), waits for them to finish their cleanup, then closes the services: the audit log
   * is drained, files and pools are closed. Calls made afterwards reject with `AgentDisposed`.
   * Calling it again returns the same promise.
   */
  readonly dispose: () => Promise<void>
}

/**
 * Creates an agent. Services are built lazily on the first call (or by
 * `ready()`), once, and shared by every user.
 *
 * @since 0.1.0
 * @category constructors
 */
export const createAgent = (options: AgentOptions): JeevesAgent => {
  // One secrets layer: the runtime's, and the one that masks rejections when the runtime cannot be built.
  const secrets = internal.secretsLayer(options)
  const runtime = ManagedRuntime.make(internal.layerFromOptions(options, secrets))
  const lifecycle = internal.makeLifecycle(runtime, () => new AgentDisposed(), secrets)
  const execute = <A>(effect: Effect.Effect<A, unknown, internal.Services>, signal?: AbortSignal) =>
    internal.runPromise(lifecycle, effect, signal)

  const withUser = <A, E>(userId: string | null, effect: Effect.Effect<A, E, internal.Services>) =>
    effect.pipe(RunContext.withUser(userId))

  const memoryEffect = <A>(userId: string | null, f: (memory: Memory.Service) => Effect.Effect<A, unknown>) =>
    withUser(userId, Effect.flatMap(Memory.Memory, f))

  return {
    run: (prompt, runOptions) =>
      execute(Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt, runOptions)), runOptions?.signal),
    stream: (prompt, runOptions) =>
      internal.iterate(
        lifecycle,
        Effect.map(Agent.Agent, (agent): Stream.Stream<AgentEvent, unknown> => agent.stream(prompt, runOptions)),
        runOptions?.signal
      ),
    usageFor: (userId, callOptions) =>
      execute(
        Effect.flatMap(RunContext.validateUserId(userId), (valid) =>
          Effect.flatMap(Budget.Budget, (budget) => budget.usageFor(valid))),
        callOptions?.signal
      ),
    globalUsage: (callOptions) => execute(Effect.flatMap(Budget.Budget, (budget) => budget.globalUsage), callOptions?.signal),
    audit: {
      query: (filter, callOptions) =>
        execute(Effect.flatMap(internal.AuditLogTag, (audit) => audit.query(filter)), callOptions?.signal),
      verify: (callOptions) => execute(Effect.flatMap(internal.AuditLogTag, (audit) => audit.verify), callOptions?.signal)
    },
    memory: (userId) => ({
      working: (o) => execute(memoryEffect(userId, (m) => m.working), o?.signal),
      updateBlock: (name, content, o) => execute(memoryEffect(userId, (m) => m.updateBlock(name, content)), o?.signal),
      appendBlock: (name, content, o) => execute(memoryEffect(userId, (m) => m.appendBlock(name, content)), o?.signal),
      recall: (query, o) => execute(memoryEffect(userId, (m) => m.recall(query, { limit: o?.limit })), o?.signal),
      recallFacts: (query, o) =>
        execute(memoryEffect(userId, (m) => m.recallFacts(query, { limit: o?.limit, validAt: o?.validAt, knownAt: o?.knownAt })), o?.signal),
      profile: (o) => execute(memoryEffect(userId, (m) => m.profile), o?.signal),
      forget: (o) =>
        execute(memoryEffect(userId, (m) => m.forget({ sessionId: o?.sessionId, before: o?.before })), o?.signal),
      export: (o) => execute(memoryEffect(userId, (m) => m.export), o?.signal)
    }),
    ready: (callOptions) => execute(Effect.void, callOptions?.signal),
    runtime,
    dispose: () => internal.dispose(lifecycle)
  }
}
