import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
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
import * as Budget from "../Budget.js"
import * as Model from "../Model.js"
import * as Permissions from "../Permissions.js"
import * as Secrets from "../Secrets.js"
import * as Telemetry from "../Telemetry.js"
import type { AgentOptions } from "../promise.js"
import { knownKeys } from "./permissions.js"

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
  // Read now, like every other option: an options object changed after this call changes nothing here.
  const holder: BuiltSecrets = { service: undefined, failed: false, alone: undefined }
  // The service the runtime built, kept: a rejection of a runtime that failed to build is masked with
  // it (it knows the values it handed out meanwhile); a second build would be another instance.
  const layer = Layer.tapErrorCause(
    Layer.tap(baseSecretsLayer(options), (context) =>
      Effect.sync(() => {
        holder.service = Context.get(context, Secrets.Secrets)
      })),
    () =>
      Effect.sync(() => {
        holder.failed = true
      })
  )
  builtSecrets.set(layer, holder)
  return layer
}

/** What became of the secrets layer of one agent. */
interface BuiltSecrets {
  /** The service the runtime built. */
  service: Secrets.Service | undefined
  /** The runtime's build of it failed: it is not built again (a vault that is down is not asked per call). */
  failed: boolean
  /** The redaction of the layer built alone, once, when the runtime failed before building it. */
  alone: Promise<((text: string) => string) | undefined> | undefined
}

/** The state of each secrets layer {@link secretsLayer} made. */
const builtSecrets = new WeakMap<Layer.Layer<Secrets.Secrets, unknown>, BuiltSecrets>()

const baseSecretsLayer = (options: AgentOptions): Layer.Layer<Secrets.Secrets, unknown> => {
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
export const modelLayer = (options: AgentOptions): Layer.Layer<Model.Model, unknown, Secrets.Secrets | Budget.Budget> => {
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
    // A cost cap given as a ready budget layer (PgBudget.layer({ perUserMaxCostUsd }), say) counts too.
    return Layer.unwrapEffect(Effect.map(Budget.Budget, (budget) =>
      AnthropicModel.layer({
        model,
        apiKey: options.apiKey,
        baseURL: options.baseURL,
        prices: options.prices,
        maxTokens: options.maxTokens,
        requireCost: hasCostCap(options) || budget.costCapped === true
      })))
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
  // An approver is wired to be asked: without a policy, destructive calls ask (mode "default").
  if (permissions === undefined) return options.approvalHandler === undefined ? undefined : Permissions.standard({ mode: "default" })
  if (isLayer(permissions)) return permissions as Layer.Layer<Permissions.Permissions, unknown>
  // Suspended so a bad option (an unknown mode) rejects `ready()` / the first call instead of throwing here.
  return Layer.suspend(() => {
    if (!("perUser" in permissions)) return Permissions.standard(permissions)
    // Checked here: only these keys are passed on, and one left out silently would be a rule left out.
    knownKeys("createAgent permissions", permissions, ["perUser", "anonymous", "default"])
    return Permissions.perUser({ policies: permissions.perUser, anonymous: permissions.anonymous, default: permissions.default })
  })
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

/**
 * A SQL-backed store, its modules loaded only when it is asked for: their
 * packages are optional peer dependencies, so an agent on the in-memory
 * store runs without them. Missing, a `MemoryError` saying what to install.
 */
const optionalStore = <Modules>(
  memory: string,
  packages: string,
  load: () => Promise<Modules>,
  layer: (modules: Modules) => Layer.Layer<Memory.Memory, unknown>
): Layer.Layer<Memory.Memory, unknown> =>
  Layer.unwrapEffect(
    Effect.tryPromise({
      try: load,
      catch: (cause) =>
        new Memory.MemoryError({
          method: "layer",
          description: `memory "${memory}" needs the optional peer dependencies ${packages} (npm install ${packages})`,
          cause
        })
    }).pipe(Effect.map(layer))
  )

const storeLayer = (options: AgentOptions): Layer.Layer<Memory.Memory, unknown> => {
  const memory = options.memory
  if (memory === undefined || memory === "memory") return Memory.layerInMemory(options.memoryBounds)
  if (isLayer(memory)) return memory as Layer.Layer<Memory.Memory, unknown>
  if (memory.startsWith("sqlite:")) {
    const filename = memory.slice("sqlite:".length)
    return optionalStore(
      "sqlite:PATH",
      "@effect/sql @effect/sql-sqlite-node @effect/experimental",
      () => import("../SqliteMemory.js"),
      (SqliteMemory) => SqliteMemory.layer({ filename })
    )
  }
  if (memory.startsWith("postgres://") || memory.startsWith("postgresql://")) {
    return optionalStore(
      "postgres://...",
      "@effect/sql @effect/sql-pg @effect/experimental",
      () => Promise.all([import("../PgMemory.js"), import("@effect/sql-pg/PgClient")]),
      ([PgMemory, PgClient]) => PgMemory.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(memory) })))
    )
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
export const layerFromOptions = (
  options: AgentOptions,
  secrets: Layer.Layer<Secrets.Secrets, unknown> = secretsLayer(options)
): Layer.Layer<Services, unknown> => {
  // Each layer value is built once per runtime (layers are memoized by reference), so the agent,
  // the auto-extractor and the facade's admin calls share one model, one budget, one store.
  const budget = budgetLayer(options)
  const model = modelLayer(options).pipe(Layer.provide(Layer.merge(secrets, budget)))
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
 * One call in flight: how to stop it, and when its fiber has finished
 * (finalizers included).
 */
interface InFlight {
  readonly stop: () => void
  readonly done: Promise<unknown>
}

/**
 * The runtime of one `createAgent` with the calls in flight on it, so that
 * `dispose()` can interrupt them: `ManagedRuntime.dispose()` closes the
 * layers' scope but does not interrupt fibers started with `runFork` /
 * `runPromise`.
 *
 * @internal
 */
export interface Lifecycle {
  readonly runtime: ManagedRuntime.ManagedRuntime<Services, unknown>
  /** The rejection of a call made after `dispose()`, or interrupted by it. */
  readonly disposedError: () => unknown
  readonly inFlight: Set<InFlight>
  /**
   * The Secrets layer of the options alone: what masks a rejection when the
   * runtime's services could not be built (the values of a `secrets` record
   * are known without the rest).
   */
  readonly secrets: Layer.Layer<Secrets.Secrets, unknown> | undefined
  closed: boolean
  disposed: Promise<void> | undefined
}

/** @internal */
export const makeLifecycle = (
  runtime: ManagedRuntime.ManagedRuntime<Services, unknown>,
  disposedError: () => unknown,
  secrets?: Layer.Layer<Secrets.Secrets, unknown>
): Lifecycle => ({ runtime, disposedError, inFlight: new Set(), secrets, closed: false, disposed: undefined })

/**
 * The redaction of the runtime's Secrets service; when the runtime cannot
 * give it (its services failed to build, or it was disposed meanwhile), that
 * of the options' Secrets layer built alone; else the key patterns.
 */
const rejectionRedact = async (lifecycle: Lifecycle): Promise<(text: string) => string> => {
  const fromRuntime = await lifecycle.runtime.runPromiseExit(Secrets.Secrets).catch(() => undefined)
  if (fromRuntime !== undefined && Exit.isSuccess(fromRuntime)) return fromRuntime.value.redact
  const secrets = lifecycle.secrets
  const built = secrets === undefined ? undefined : builtSecrets.get(secrets)
  if (built?.service !== undefined) return built.service.redact
  if (secrets !== undefined && built !== undefined && !built.failed) {
    // Built alone at most once per agent, whatever the number of rejections.
    built.alone ??= Effect.runPromiseExit(
      Effect.scoped(Effect.map(Layer.build(secrets), (context) => Context.get(context, Secrets.Secrets).redact))
    ).then((exit) => (Exit.isSuccess(exit) ? exit.value : undefined))
    const alone = await built.alone
    if (alone !== undefined) return alone
  }
  return Secrets.redactPatterns
}

/** Tracks `fiber` until it ends, its exit; `stop` is what `dispose()` calls to interrupt it. */
const track = <A, E>(
  lifecycle: Lifecycle,
  fiber: Fiber.RuntimeFiber<A, E>,
  stop: () => void
): Promise<Exit.Exit<A, E>> => {
  // The fiber's own observer (called at once if it is done already): no second fiber to await it.
  const done = new Promise<Exit.Exit<A, E>>((resolve) => fiber.addObserver(resolve))
  const call: InFlight = { stop, done }
  lifecycle.inFlight.add(call)
  void done.then(() => lifecycle.inFlight.delete(call))
  return done
}

/**
 * Interrupts every call in flight, waits for their fibers to end (their
 * finalizers run, their audit entries are handed over), then closes the
 * runtime, which drains the audit log and closes files and pools. Later calls
 * reject with the disposed error. Idempotent.
 *
 * @internal
 */
export const dispose = (lifecycle: Lifecycle): Promise<void> => {
  if (lifecycle.disposed === undefined) {
    lifecycle.closed = true
    const calls = Array.from(lifecycle.inFlight)
    for (const call of calls) call.stop()
    lifecycle.disposed = Promise.all(calls.map((call) => call.done)).then(() => lifecycle.runtime.dispose())
  }
  return lifecycle.disposed
}

/** Why a call was interrupted: its signal, else `dispose()`, else an AbortError. */
const interruption = (lifecycle: Lifecycle, signal: AbortSignal | undefined): unknown =>
  !signal?.aborted && lifecycle.closed ? lifecycle.disposedError() : abortReason(signal)

/** Rejects a call made after `dispose()`, or with an already aborted signal. */
const refuseToStart = (lifecycle: Lifecycle, signal: AbortSignal | undefined): void => {
  if (lifecycle.closed) throw lifecycle.disposedError()
  if (signal?.aborted) throw abortReason(signal)
}

/**
 * The error a caller sees: the typed failure itself (squashed from the cause),
 * or, when the call was interrupted by its signal or `dispose()`, the abort
 * reason of its signal (or the disposed error). An interruption from inside
 * (a model client's queue shut down, say) is not the caller's abort: effect's
 * `InterruptedException`, squashed from the cause.
 *
 * @internal
 */
export const toRejection = (
  lifecycle: Lifecycle,
  cause: Cause.Cause<unknown>,
  signal: AbortSignal | undefined
): unknown =>
  Cause.isInterruptedOnly(cause) && (signal?.aborted === true || lifecycle.closed) ?
    interruption(lifecycle, signal) :
    Cause.squash(cause)

/**
 * The rejection, with secrets masked in its message and fields (a copy of the
 * same class, so `instanceof` still holds). Uses the runtime's Secrets
 * service when it could be built (and is not yet disposed), the key patterns
 * otherwise.
 */
const redactedRejection = async (
  lifecycle: Lifecycle,
  cause: Cause.Cause<unknown>,
  signal: AbortSignal | undefined
): Promise<unknown> => {
  const rejection = toRejection(lifecycle, cause, signal)
  if (Cause.isInterruptedOnly(cause)) return rejection
  return Secrets.redactError(rejection, await rejectionRedact(lifecycle))
}

/**
 * Runs `effect` on the runtime as a call of the facade: aborting `signal`, or
 * `dispose()`, interrupts it.
 *
 * @internal
 */
export const runPromise = async <A>(
  lifecycle: Lifecycle,
  effect: Effect.Effect<A, unknown, Services>,
  signal: AbortSignal | undefined
): Promise<A> => {
  refuseToStart(lifecycle, signal)
  const fiber = lifecycle.runtime.runFork(effect)
  const stop = () => fiber.unsafeInterruptAsFork(FiberId.none)
  const done = track(lifecycle, fiber, stop)
  signal?.addEventListener("abort", stop, { once: true })
  try {
    const exit = await done
    if (Exit.isSuccess(exit)) return exit.value
    throw await redactedRejection(lifecycle, exit.cause, signal)
  } finally {
    signal?.removeEventListener("abort", stop)
  }
}

/**
 * An async iterable over a stream run on the runtime. Breaking out of the
 * loop (`return()`, at once, even while a `next()` waits: it then ends with
 * `done`), aborting `signal`, or `dispose()` interrupts the stream (and so
 * the run). The producer starts on the first `next()`. Written by hand, not
 * as an async generator: a generator queues `return()` behind a pending
 * `next()`, so a consumer giving up on a stalled run could not stop it.
 *
 * @internal
 */
export const iterate = (
  lifecycle: Lifecycle,
  makeStream: Effect.Effect<Stream.Stream<AgentEvent, unknown>, never, Services>,
  signal: AbortSignal | undefined
): AsyncIterable<AgentEvent> => ({
  [Symbol.asyncIterator]: (): AsyncIterator<AgentEvent> => {
    type Item = Exit.Exit<AgentEvent, unknown> | undefined
    let started: {
      readonly queue: Queue.Queue<Item>
      readonly producer: Fiber.RuntimeFiber<unknown, unknown>
      readonly stop: () => void
    } | undefined
    let finished = false
    /** Resolve the `next()` calls waiting on the queue with `done`, when the iteration ends. */
    const waiting = new Set<() => void>()

    const start = () => {
      // No `await` until the abort listener is added: an abort in between would be
      // missed, since a `once` listener added to an aborted signal never fires.
      refuseToStart(lifecycle, signal)
      const queue = Effect.runSync(Queue.bounded<Item>(64))
      const producer = lifecycle.runtime.runFork(
        Effect.flatMap(makeStream, (stream) => Stream.runForEach(stream, (event) => Queue.offer(queue, Exit.succeed(event)))).pipe(
          Effect.exit,
          Effect.flatMap((exit) => Queue.offer(queue, Exit.isSuccess(exit) ? undefined : Exit.failCause(exit.cause)))
        )
      )
      // The producer queues its own end unless it could not: interrupted, or failed outside the stream
      // (the runtime's services could not be built). Then its exit wakes the consumer.
      producer.addObserver((exit) => {
        if (Exit.isSuccess(exit)) return
        if (Exit.isInterrupted(exit)) Effect.runFork(Queue.shutdown(queue))
        else Effect.runFork(Queue.offer(queue, Exit.failCause(exit.cause)))
      })
      const stop = () => producer.unsafeInterruptAsFork(FiberId.none)
      track(lifecycle, producer, stop)
      signal?.addEventListener("abort", stop, { once: true })
      started = { queue, producer, stop }
      return started
    }

    /** Stops the producer (if still running) and waits for it; the iteration is over. */
    const finish = async (): Promise<void> => {
      finished = true
      for (const wake of waiting) wake()
      waiting.clear()
      if (started === undefined) return
      signal?.removeEventListener("abort", started.stop)
      started.stop()
      await Effect.runPromise(Fiber.await(started.producer))
      // Nothing more will be queued: any take still waiting (a concurrent `next()`) ends.
      await Effect.runPromise(Queue.shutdown(started.queue))
    }

    const done: IteratorReturnResult<undefined> = { done: true, value: undefined }

    return {
      next: async (): Promise<IteratorResult<AgentEvent>> => {
        if (finished) return done
        const { queue } = started ?? start()
        let wake!: () => void
        const gaveUp = new Promise<"gave up">((resolve) => (wake = () => resolve("gave up")))
        waiting.add(wake)
        const taken = await Promise.race([Effect.runPromiseExit(Queue.take(queue)), gaveUp])
        waiting.delete(wake)
        if (taken === "gave up" || finished) return done
        if (Exit.isFailure(taken)) {
          await finish()
          throw interruption(lifecycle, signal)
        }
        const item = taken.value
        if (item === undefined) {
          await finish()
          return done
        }
        if (Exit.isFailure(item)) {
          await finish()
          throw await redactedRejection(lifecycle, item.cause, signal)
        }
        return { done: false, value: item.value }
      },
      return: async (): Promise<IteratorResult<AgentEvent>> => {
        await finish()
        return done
      },
      throw: async (error?: unknown): Promise<IteratorResult<AgentEvent>> => {
        await finish()
        throw error
      }
    }
  }
})
