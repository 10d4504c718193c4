import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Redacted from "effect/Redacted"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import type * as ManagedRuntime from "effect/ManagedRuntime"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as Agent from "../Agent.js"
import * as AnthropicModel from "../AnthropicModel.js"
import type { AgentEvent } from "../AgentEvent.js"
import * as Approval from "../Approval.js"
import * as AuditLog from "../AuditLog.js"
import * as Hooks from "../Hooks.js"
import * as Memory from "../Memory.js"
import * as PgMemory from "../PgMemory.js"
import * as SqliteMemory from "../SqliteMemory.js"
import * as Budget from "../Budget.js"
import * as Model from "../Model.js"
import * as Permissions from "../Permissions.js"
import * as Secrets from "../Secrets.js"
import * as Telemetry from "../Telemetry.js"
import type { AgentOptions } from "../promise.js"

/** @internal */
export type Services = Agent.Agent | Exclude<Agent.Requirements, Model.Model>

/** @internal */
export const AuditLogTag = AuditLog.AuditLog

/** @internal */
export type BudgetOptions = Budget.Config & Budget.LayerOptions

const budgetLayer = (options: AgentOptions): Layer.Layer<Budget.Budget, unknown> => {
  const budget = options.budget
  if (budget === undefined) return Budget.layerNone
  if (isLayer(budget)) return budget as Layer.Layer<Budget.Budget, unknown>
  const { maxUsers, userIdleTtl, ...config } = budget
  return Budget.layer(config, { maxUsers, userIdleTtl })
}

const isLayer = (u: unknown): u is Layer.Layer<never, unknown, unknown> => Layer.isLayer(u)

/** @internal */
export const secretsLayer = (options: AgentOptions): Layer.Layer<Secrets.Secrets, unknown> => {
  const secrets = options.secrets
  if (secrets === undefined) return Secrets.layerEnv
  if (isLayer(secrets)) return secrets as Layer.Layer<Secrets.Secrets, unknown>
  if (isSecretsService(secrets)) return Layer.succeed(Secrets.Secrets, secrets)
  if (isPromiseBackend(secrets)) return Layer.sync(Secrets.Secrets, () => Secrets.fromPromise(secrets))
  return Secrets.layerDict(secrets as Readonly<Record<string, string>>)
}

const isSecretsService = (u: unknown): u is Secrets.Service =>
  typeof u === "object" && u !== null && typeof (u as Secrets.Service).resolve === "function" &&
  typeof (u as Secrets.Service).redact === "function"

/** Whether a cost cap is configured: then an unpriced model is a configuration error, not $0. */
const hasCostCap = (options: AgentOptions): boolean => {
  const budget = options.budget
  if (budget === undefined || isLayer(budget)) return false
  return budget.maxCostUsd !== undefined || budget.perUserMaxCostUsd !== undefined
}

const isPromiseBackend = (u: unknown): u is Secrets.PromiseBackend =>
  typeof u === "object" && u !== null && typeof (u as Secrets.PromiseBackend).resolve === "function"

/** @internal */
export const modelLayer = (options: AgentOptions): Layer.Layer<Model.Model, unknown, Secrets.Secrets> => {
  const model = options.model
  if (isLayer(model)) return model as Layer.Layer<Model.Model, unknown, Secrets.Secrets>
  if (model === "echo") return Model.layerEcho()
  if (model === "scripted") {
    if (options.script === undefined) {
      return Layer.fail(new Model.ModelConfigError({ option: "script", description: `model "scripted" needs a script` }))
    }
    return Model.layerScripted(options.script)
  }
  if (model.startsWith("claude-")) {
    return AnthropicModel.layer({
      model,
      apiKey: options.apiKey,
      baseURL: options.baseURL,
      prices: options.prices,
      maxTokens: options.maxTokens,
      requireCost: hasCostCap(options)
    })
  }
  return Layer.fail(
    new Model.ModelConfigError({
      option: "model",
      description: `unknown model ${JSON.stringify(model)}; use "claude-...", "scripted", "echo" or a Layer of Model`
    })
  )
}

const telemetryLayer = (options: AgentOptions): Layer.Layer<Telemetry.Telemetry, unknown> => {
  const telemetry = options.telemetry
  if (telemetry === undefined || telemetry === false) return Telemetry.layerNone
  if (telemetry === true) return Telemetry.layer()
  if (isLayer(telemetry)) return telemetry as Layer.Layer<Telemetry.Telemetry, unknown>
  return Telemetry.layer(telemetry)
}

const permissionsLayer = (options: AgentOptions): Layer.Layer<Permissions.Permissions, unknown> | undefined => {
  const permissions = options.permissions
  if (permissions === undefined) return undefined
  if (isLayer(permissions)) return permissions as Layer.Layer<Permissions.Permissions, unknown>
  // Suspended so a bad option (an unknown mode) rejects `ready()` / the first call instead of throwing here.
  return Layer.suspend(() =>
    "perUser" in permissions ?
      Permissions.perUser({ policies: permissions.perUser, anonymous: permissions.anonymous, default: permissions.default }) :
      Permissions.standard(permissions)
  )
}

const approvalLayer = (options: AgentOptions): Layer.Layer<Approval.ApprovalHandler, unknown, Secrets.Secrets> | undefined =>
  options.approvalHandler === undefined ?
    undefined :
    Approval.layerPromise(options.approvalHandler, { timeout: options.approvalTimeout })

const hooksLayer = (options: AgentOptions): Layer.Layer<Hooks.Hooks, unknown, Secrets.Secrets> | undefined => {
  const hooks = options.hooks
  if (hooks === undefined) return undefined
  if (isLayer(hooks)) return hooks as Layer.Layer<Hooks.Hooks, unknown>
  return Hooks.layerPromise(hooks)
}

const auditLogLayer = (options: AgentOptions): Layer.Layer<AuditLog.AuditLog, unknown, Secrets.Secrets> | undefined => {
  const auditLog = options.auditLog
  if (auditLog === undefined) return undefined
  if (isLayer(auditLog)) return auditLog as Layer.Layer<AuditLog.AuditLog, unknown>
  return AuditLog.layerFile(auditLog).pipe(Layer.provide(NodeFileSystem.layer))
}

const storeLayer = (options: AgentOptions): Layer.Layer<Memory.Memory, unknown> => {
  const memory = options.memory
  if (memory === undefined || memory === "memory") return Memory.layerInMemory(options.memoryBounds)
  if (isLayer(memory)) return memory as Layer.Layer<Memory.Memory, unknown>
  if (memory.startsWith("sqlite:")) return SqliteMemory.layer({ filename: memory.slice("sqlite:".length) })
  if (memory.startsWith("postgres://") || memory.startsWith("postgresql://")) {
    return PgMemory.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(memory) })))
  }
  return Layer.fail(
    new Memory.MemoryError({
      method: "layer",
      description: `unknown memory ${JSON.stringify(memory)}; use "memory", "sqlite:PATH", "postgres://..." or a Layer of Memory`
    })
  )
}

/** Whether facts are extracted after each run: on by default for Claude models, announced once then. */
const autoExtractMode = (options: AgentOptions): "off" | "on" | "announced" => {
  if (options.autoExtract === false) return "off"
  if (options.autoExtract === true) return "on"
  return typeof options.model === "string" && options.model.startsWith("claude-") ? "announced" : "off"
}

/** @internal */
export const layerFromOptions = (options: AgentOptions): Layer.Layer<Services, unknown> => {
  // Each layer value is built once per runtime (layers are memoized by reference), so the agent,
  // the auto-extractor and the facade's admin calls share one model, one budget, one store.
  const secrets = secretsLayer(options)
  const model = modelLayer(options).pipe(Layer.provide(secrets))
  const budget = budgetLayer(options)
  const telemetry = telemetryLayer(options)
  const store = storeLayer(options)
  const extract = autoExtractMode(options)
  const memory = extract === "off" ?
    store :
    Memory.autoExtract({ announce: extract === "announced" }).pipe(
      Layer.provide(Layer.mergeAll(store, model, budget, telemetry))
    )

  const overrides: Array<Layer.Layer<never, unknown, Secrets.Secrets>> = [memory, budget, telemetry]
  for (const layer of [permissionsLayer(options), approvalLayer(options), hooksLayer(options), auditLogLayer(options)]) {
    if (layer !== undefined) overrides.push(layer)
  }
  // Later layers win: each configured service (and the secrets) replaces its default.
  const configured = Layer.mergeAll(Secrets.layerRedactingLogger, ...overrides).pipe(Layer.provide(secrets))
  const services = Layer.mergeAll(Agent.layerDefaults, secrets, configured)
  const agent = Agent.layer({
    instructions: options.instructions,
    tools: options.tools,
    maxTurns: options.maxTurns,
    maxTokens: options.maxTokens
  }).pipe(Layer.provide(model))
  return Layer.provideMerge(agent, services) as Layer.Layer<Services, unknown>
}

const abortReason = (signal: AbortSignal | undefined): unknown =>
  signal?.reason ?? new DOMException("This operation was aborted", "AbortError")

/**
 * The error a caller sees: the typed failure itself (squashed from the cause),
 * or the abort reason when the call was interrupted by its signal.
 *
 * @internal
 */
export const toRejection = (cause: Cause.Cause<unknown>, signal: AbortSignal | undefined): unknown =>
  Cause.isInterruptedOnly(cause) ? abortReason(signal) : Cause.squash(cause)

/**
 * The rejection, with secrets masked in its message and fields (a copy of the
 * same class, so `instanceof` still holds). Uses the runtime's Secrets
 * service when it could be built, the key patterns otherwise.
 */
const redactedRejection = async (
  runtime: ManagedRuntime.ManagedRuntime<Services, unknown>,
  cause: Cause.Cause<unknown>,
  signal: AbortSignal | undefined
): Promise<unknown> => {
  const rejection = toRejection(cause, signal)
  if (Cause.isInterruptedOnly(cause)) return rejection
  const secrets = await runtime.runPromiseExit(Secrets.Secrets)
  return Secrets.redactError(rejection, Exit.isSuccess(secrets) ? secrets.value.redact : Secrets.redactPatterns)
}

/** @internal */
export const runPromise = async <A>(
  runtime: ManagedRuntime.ManagedRuntime<Services, unknown>,
  effect: Effect.Effect<A, unknown, Services>,
  signal: AbortSignal | undefined
): Promise<A> => {
  if (signal?.aborted) throw abortReason(signal)
  const exit = await runtime.runPromiseExit(effect, signal === undefined ? undefined : { signal })
  if (Exit.isSuccess(exit)) return exit.value
  throw await redactedRejection(runtime, exit.cause, signal)
}

/**
 * An async iterable over a stream run on `runtime`. Breaking out of the loop,
 * or aborting `signal`, interrupts the stream (and so the run).
 *
 * @internal
 */
export const iterate = (
  runtime: ManagedRuntime.ManagedRuntime<Services, unknown>,
  makeStream: Effect.Effect<Stream.Stream<AgentEvent, unknown>, never, Services>,
  signal: AbortSignal | undefined
): AsyncIterable<AgentEvent> => ({
  [Symbol.asyncIterator]: async function*() {
    if (signal?.aborted) throw abortReason(signal)
    const queue = await runtime.runPromise(Queue.bounded<Exit.Exit<AgentEvent, unknown> | undefined>(64))
    const producer = runtime.runFork(
      Effect.flatMap(makeStream, (stream) => Stream.runForEach(stream, (event) => Queue.offer(queue, Exit.succeed(event)))).pipe(
        Effect.exit,
        Effect.flatMap((exit) => Queue.offer(queue, Exit.isSuccess(exit) ? undefined : Exit.failCause(exit.cause)))
      )
    )
    // The producer cannot report its own interruption, so the abort wakes the consumer itself.
    const onAbort = () =>
      runtime.runFork(
        Effect.zipRight(Fiber.interrupt(producer), Queue.offer(queue, Exit.failCause(Cause.interrupt(FiberId.none))))
      )
    signal?.addEventListener("abort", onAbort, { once: true })
    try {
      while (true) {
        const next = await runtime.runPromise(Queue.take(queue))
        if (next === undefined) return
        if (Exit.isFailure(next)) throw await redactedRejection(runtime, next.cause, signal)
        yield next.value
      }
    } finally {
      signal?.removeEventListener("abort", onAbort)
      await runtime.runPromise(Fiber.interrupt(producer))
    }
  }
})
