import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as MetricLabel from "effect/MetricLabel"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"
import * as Stream from "effect/Stream"
import * as Take from "effect/Take"
import * as Tracer from "effect/Tracer"
import type * as Agent from "../Agent.js"
import { AgentEvent } from "../AgentEvent.js"
import * as Approval from "../Approval.js"
import * as AuditLog from "../AuditLog.js"
import * as Budget from "../Budget.js"
import * as Hooks from "../Hooks.js"
import * as Memory from "../Memory.js"
import * as Model from "../Model.js"
import * as Permissions from "../Permissions.js"
import * as RunContext from "../RunContext.js"
import * as Secrets from "../Secrets.js"
import * as Telemetry from "../Telemetry.js"
import type * as Tool from "../Tool.js"
import * as AuditInternal from "./audit.js"
import * as BudgetInternal from "./budget.js"
import { denial } from "./denied.js"
import { describeFailure, stringifyOutput } from "./describe.js"
import { prefix } from "./unicode.js"
import { forEachConcurrent } from "./forkAll.js"
import { newId } from "./ids.js"
import { canSetRefs, endSpan, makeSpan, refsOf, resetRefs, setRefs, spanNow, withParent, withParentSpan, withSpan } from "./locally.js"
import * as Metrics from "./metrics.js"
import { type RunHold, runHoldOf } from "./memory.js"
import * as MemoryInternal from "./memoryStore.js"
import { modelErrorWith } from "./model.js"
import * as PermissionsInternal from "./permissions.js"
import { preRedacted, type PreRedactedOptions, setRedactedAttribute } from "./secretsSinks.js"
import { serviceSpans } from "./spans.js"

type Emit = ((event: AgentEvent) => Effect.Effect<void>) | undefined

/** Per-run mutable state; one object per run, never shared. */
interface RunState {
  readonly context: RunContext.RunContext
  readonly emit: Emit
  turns: number
  usage: Model.Usage
  output: string
  /** The last answer's stop reason; undefined before one came. */
  stopReason?: string | undefined
  auditFailures: number
  /** Audit entries submitted without waiting and not yet durable. */
  auditPending: number
  /** Fibers of the run waiting for its pending entries, resumed once there are none. */
  auditWaiters?: Array<() => void> | undefined
  /** Submitted entries that failed, to log from the run's fiber. */
  auditLost?: Array<{ readonly action: string; readonly message: string }> | undefined
  readonly toolCalls: Array<Agent.ToolCallRecord>
  /** Budget only: the UTF-8 bytes of the first `estimatedMessages` messages. */
  estimatedBytes: number
  estimatedMessages: number
  /** Clock millis when the run's loop began (its `run_started`); undefined before. */
  startedMillis?: number | undefined
  /** Streaming only: part of the current model call's answer has reached the caller (the provider did process it). */
  answerDelivered?: boolean | undefined
  /** The run's end is recorded (`run_completed`, the duration metric): a later failure adds none. */
  closed?: boolean | undefined
  /** Streaming only: the usage in the current model call's finish part, once it came (the call is then done). */
  finishedUsage?: Model.Usage | undefined
  /** Streaming only: the usage the current model call reported before its answer ended (a `Usage` part). */
  startedUsage?: Model.Usage | undefined
  /** The usage the failed attempts of the model call being retried reported (see `chargingAttempts`). */
  retriedUsage?: Model.Usage | undefined
  /** Budget only: what the current model call reserved, which an unknown figure of a failed attempt is charged at. */
  callEstimate?: Model.Usage | undefined
  /** Telemetry only: the open `jeeves.turn` span. */
  turnSpan?: Tracer.Span | undefined
  /** Telemetry only: the user id attribute, computed once per run (`null` = omitted). */
  userIdTag?: string | null | undefined
  /** Telemetry only: the session id attribute, redacted once per run. */
  sessionTag?: string | undefined
}

/** Usage no figure of which is known: settling with it charges the whole estimate (`Budget.Reservation`). */
const UNKNOWN_USAGE: Model.Usage = Object.freeze({ inputTokens: Number.NaN, outputTokens: Number.NaN, costUsd: Number.NaN })

/**
 * The usage a failed model call had reported before it failed (a stream cut
 * off after it began, `ModelError.usage`): charged instead of nothing.
 */
/**
 * `retry(counted)`, where `counted` is `attempt` adding up the usage each
 * failed attempt reported: the answer (or the final error) carries the usage
 * of every attempt, so a retried call is charged what the provider billed.
 * While the retries run the sum is in `state.retriedUsage`, for a call
 * interrupted during a later attempt ({@link withRetried}).
 */
const chargingAttempts = (
  state: RunState,
  attempt: Effect.Effect<Model.ModelResponse, Model.ModelError>,
  retry: (counted: Effect.Effect<Model.ModelResponse, Model.ModelError>) => Effect.Effect<Model.ModelResponse, Model.ModelError>
): Effect.Effect<Model.ModelResponse, Model.ModelError> =>
  Effect.suspend(() => {
    state.retriedUsage = undefined
    const counted = Effect.tapError(attempt, (error) => {
      // What the failed attempt reported: in its error, or (a stream whose error carries none) at its start.
      const reported = error.usage ?? state.startedUsage
      if (reported !== undefined) {
        state.retriedUsage = state.retriedUsage === undefined ? reported : Model.addUsage(state.retriedUsage, reported)
      }
      return Effect.void
    })
    return Effect.matchEffect(retry(counted), {
      // A figure a failed attempt could not report (NaN: cut off after it generated part of its answer) counts
      // at the call's estimate, as it is charged when the call is not retried; one below zero as nothing.
      onSuccess: (response) => {
        const spent = state.retriedUsage
        state.retriedUsage = undefined
        return Effect.succeed(
          spent === undefined ? response : { ...response, usage: Model.addUsage(response.usage, chargeableOf(spent, state.callEstimate)) }
        )
      },
      // The final attempt's own usage is in `spent` already.
      onFailure: (error) => {
        const spent = state.retriedUsage
        state.retriedUsage = undefined
        return Effect.fail(spent === undefined || spent === error.usage ? error : modelErrorWith(error, { usage: spent }))
      }
    })
  })

/**
 * `reported` (what the call's last attempt used) plus what the earlier
 * attempts of a call interrupted while it was being retried reported: the
 * provider billed those too. A call that ended otherwise has none left.
 */
const withRetried = (state: RunState, reported: Model.Usage | undefined): Model.Usage | undefined => {
  const earlier = state.retriedUsage
  if (earlier === undefined) return reported
  state.retriedUsage = undefined
  return reported === undefined ? earlier : Model.addUsage(earlier, reported)
}

/**
 * `usage` as charged: a figure that is not a finite number (unknown) at the
 * call's `estimate` (0 without a budget, which has none), one below zero as
 * 0 (a bad figure never lowers a charge).
 */
const chargeableOf = (usage: Model.Usage, estimate: Model.Usage | undefined): Model.Usage => {
  const figure = (value: number, fallback: number | undefined) =>
    Number.isFinite(value) ? Math.max(0, value) : Math.max(0, fallback ?? 0)
  return {
    inputTokens: figure(usage.inputTokens, estimate?.inputTokens),
    outputTokens: figure(usage.outputTokens, estimate?.outputTokens),
    costUsd: figure(usage.costUsd, estimate?.costUsd)
  }
}

/**
 * What a streamed call cancelled after it began used: what it reported, its
 * output unknown (charged at the estimate) once part of the answer went out.
 */
const cancelledUsage = (state: RunState): Model.Usage | undefined => {
  const started = state.startedUsage
  if (started === undefined || state.answerDelivered !== true) return started
  return { inputTokens: started.inputTokens, outputTokens: Number.NaN, costUsd: Number.NaN }
}

const failedUsage = (cause: Cause.Cause<unknown>): Model.Usage | undefined => {
  const failure = Cause.failureOption(cause)
  return failure._tag === "Some" && failure.value instanceof Model.ModelError ? failure.value.usage : undefined
}

/** The attributes of a call's spans (telemetry only). */
type CallAttributes = {
  readonly tool: string
  readonly call_id: string
  readonly turn: number
}

type Metered =
  | { readonly _tag: "Blocked"; readonly reason: string }
  | {
    readonly _tag: "Answered"
    readonly response: Model.ModelResponse
    /** Its token and cost metrics are recorded already ({@link reservedNow}). */
    readonly usageRecorded?: true
  }

/** The attributes a `jeeves.run` span ends with: how the run went. */
const runOutcome = (exit: Exit.Exit<Agent.RunResult, unknown>) =>
  exit._tag === "Failure" ? undefined : exit.value.interruptionReason === undefined ?
  { turns: exit.value.turns, interrupted: exit.value.interrupted } :
  { turns: exit.value.turns, interrupted: exit.value.interrupted, interruption_reason: exit.value.interruptionReason }

const DEFAULT_MAX_TURNS = 50
const DEFAULT_MAX_TOKENS = 4096
const PROMPT_AUDIT_CHARS = 500
const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []

/**
 * An upper bound on a request's input tokens, for budget reservations: every
 * token is at least one UTF-8 byte. (Characters / 4 is no bound: non-Latin
 * text can exceed it, and the cap's overshoot bound rests on estimates not
 * falling short.) `fixedBytes` covers what every request carries (tools).
 */
const messageBytes = (message: Model.Message): number => {
  let bytes = Buffer.byteLength(message.content, "utf8")
  if (message.role === "assistant") {
    // The arguments as the model gave them: those of a call refused as not JSON (a cycle, a bigint) are
    // estimated as they print, never thrown on.
    for (const call of message.toolCalls) bytes += Buffer.byteLength(stringifyOutput(call.args), "utf8") + 32
  }
  return bytes
}

/**
 * {@link messageBytes} of a run's messages, counted once each: a run only
 * ever appends to its messages, so each call adds the new ones.
 */
const estimateInputTokens = (state: RunState, messages: ReadonlyArray<Model.Message>, fixedBytes: number): number => {
  for (let i = state.estimatedMessages; i < messages.length; i++) state.estimatedBytes += messageBytes(messages[i]!)
  state.estimatedMessages = messages.length
  return state.estimatedBytes + fixedBytes
}

/** The denial of a call whose permission check threw, died or answered no decision. */
const CHECK_FAILED = "permission check failed"
const drainKey = Symbol.for("jeevesagent/internal/agent/drain")

/**
 * Waits for the agent's background work (the `run_completed` entries of
 * cancelled runs, with a log of the user's own); nothing for a service not
 * made by {@link make}. The agent layer runs it when it closes.
 *
 * @internal
 */
export const drain = (service: Agent.Service): Effect.Effect<void> =>
  (service as { readonly [drainKey]?: Effect.Effect<void> })[drainKey] ?? Effect.void

/** How long the `run_completed` entry of a cancelled run may take with a log of the user's own. */
const CANCELLED_ENTRY_TIMEOUT = Duration.seconds(30)

/** The reason of an approval request that was pending when its run was interrupted. */
const CANCELLED_REASON = "run interrupted"

/** Tool arguments nested deeper than this are refused (JSON Schema tool arguments are a few levels deep). */
const MAX_ARGS_DEPTH = 64

/**
 * Checks and freezes model-provided tool arguments in place (frozen so no
 * hook or approver can change what was approved before the tool runs).
 * Returns why they cannot be used, if they cannot: nested deeper than
 * {@link MAX_ARGS_DEPTH} (which would overflow the stack of whatever walks
 * them), a cycle, a bigint (not JSON: the episode and audit entry could not
 * hold it), or an own `__proto__` key (`JSON.parse` keeps it as a key;
 * decoding would make it the prototype of the object the tool gets). The
 * recursion is bounded by the depth limit; shared objects are walked once.
 */
const checkArgs = (value: unknown): string | undefined => {
  if (typeof value !== "object" || value === null) return typeof value === "bigint" ? BIGINT : undefined
  // The usual arguments: one object of plain values, checked and frozen without the walk's sets.
  const keys = Object.keys(value)
  let flat = true
  for (const key of keys) {
    const field = (value as Record<string, unknown>)[key]
    if (typeof field === "object" && field !== null) {
      flat = false
      break
    }
    if (typeof field === "bigint") return BIGINT
  }
  if (!flat) return checkNested(value, 0, new Set(), new Set())
  if (Object.prototype.hasOwnProperty.call(value, "__proto__")) return `the key "__proto__" is not allowed`
  Object.freeze(value)
  return undefined
}

/** A custom model's bigint argument: JSON has none, so no tool could get it back as the model meant it. */
const BIGINT = "a bigint is not a JSON value"

/** {@link checkArgs} over nested arguments: `onPath` finds cycles, `done` walks shared objects once. */
const checkNested = (value: unknown, depth: number, onPath: Set<object>, done: Set<object>): string | undefined => {
  if (typeof value === "bigint") return BIGINT
  if (typeof value !== "object" || value === null || done.has(value)) return undefined
  if (onPath.has(value)) return "they refer to themselves (a cycle)"
  if (depth >= MAX_ARGS_DEPTH) return `nested deeper than ${MAX_ARGS_DEPTH} levels`
  if (Object.prototype.hasOwnProperty.call(value, "__proto__")) return `the key "__proto__" is not allowed`
  onPath.add(value)
  for (const key of Object.keys(value)) {
    const problem = checkNested((value as Record<string, unknown>)[key], depth + 1, onPath, done)
    if (problem !== undefined) return problem
  }
  onPath.delete(value)
  done.add(value)
  Object.freeze(value)
  return undefined
}

/** Why the calls of an answer cut off at `max_tokens` are not run. */
const CUT_OFF = "the answer was cut off (max_tokens) before this call was surely complete; it was not run"

/** The calls whose arguments {@link checkArgs} refused, or whose answer was cut off, with why: their tool is not run. */
const refusedArgs = new WeakMap<Tool.Call, string>()

/** An error result's text is cut to this many characters (it goes back to the model, and may echo its input). */
const MAX_ERROR_CHARS = 2_000

/** The `tool` tag of `jeeves.tool.duration_ms` for a call of a tool the agent does not have. */
const UNKNOWN_TOOL_TAG = "unknown"

/**
 * Whether `fiber` itself is being interrupted (by another fiber), as
 * opposed to running an effect that failed with an interruption of its
 * own. Effect 3's `FiberRuntime` knows (`isInterrupted`); without it, every
 * interruption counts as from outside, as before.
 */
const interruptedFromOutside = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => {
  const runtime = fiber as unknown as { readonly isInterrupted?: () => boolean }
  return typeof runtime.isInterrupted !== "function" || runtime.isInterrupted()
}

/** Whether a call's handler was called (set by `execute` when asked): `afterTool` hooks run only then. */
interface Executed {
  ran: boolean
}

/** `handler`'s effect, recorded in `executed` (when given) as called. */
const ran = <A, E, R>(executed: Executed | undefined, handler: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  if (executed !== undefined) executed.ran = true
  return handler
}

/** The decoded arguments of a governed call, decoded before it was checked (what the tool gets). */
type Decoded = { readonly value: unknown }

/** Whether a sync decode failed only because the schema needs effects (the effectful decoder decides then). */
const needsEffects = (issue: ParseResult.ParseIssue): boolean => {
  switch (issue._tag) {
    case "Forbidden":
      return true
    case "Composite":
      return Array.isArray(issue.issues) ? issue.issues.some(needsEffects) : needsEffects(issue.issues as ParseResult.ParseIssue)
    case "Pointer":
    case "Refinement":
    case "Transformation":
      return needsEffects(issue.issue)
    default:
      return false
  }
}

/**
 * The arguments as the tool gets them, encoded back to JSON and copied (so
 * freezing them freezes nothing the tool holds); `undefined` when the schema
 * has no transformation, or encoding fails or throws (a one-way transform):
 * the model's arguments are shown then.
 */
const canonicalArgs = (
  encode: ((value: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined,
  value: unknown
): unknown => {
  if (encode === undefined) return undefined
  try {
    const encoded = encode(value)
    if (encoded._tag === "Left" || checkArgs(encoded.right) !== undefined) return undefined
    return deepFreeze(JSON.parse(JSON.stringify(encoded.right)) as unknown)
  } catch {
    return undefined
  }
}

/** Why arguments did not decode, as the call's error result says it. */
const invalidArguments = (failure: unknown): string =>
  ParseResult.isParseError(failure) ?
    `invalid arguments: ${ParseResult.TreeFormatter.formatErrorSync(failure)}` :
    describeFailure(failure)

/** A JSON value, frozen all the way down (the arguments that were checked cannot change before the tool runs). */
const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/** Both holds of a user's state at once (either may be absent). */
const bothHolds = (a: RunHold | undefined, b: RunHold | undefined): RunHold | undefined =>
  a === undefined ? b : b === undefined ? a : (user, now) => {
    const releaseA = a(user, now)
    const releaseB = b(user, now)
    return (at) => {
      releaseA(at)
      releaseB(at)
    }
  }

/** Whether a failure of a service of the user's is the denial the contract allows. */
const isToolDenied = (value: unknown): value is Approval.ToolDenied =>
  typeof value === "object" && value !== null && (value as { readonly _tag?: unknown })._tag === "ToolDenied" &&
  typeof (value as { readonly reason?: unknown }).reason === "string"

/**
 * A denial a service of the user's failed with, as our class: a plain
 * `{ _tag: "ToolDenied", reason }` (from JavaScript, or another copy of the
 * library) has no `message`, which the denied call's result is made of.
 */
const asDenial = (call: Tool.Call, value: Approval.ToolDenied): Approval.ToolDenied => {
  if (value instanceof Approval.ToolDenied) return value
  const { policyReason, reason } = value as { readonly policyReason?: unknown; readonly reason: string }
  return denial({
    tool: call.name,
    reason: reason === "" ? Hooks.reasons.denied : reason,
    ...(typeof policyReason === "string" ? { policyReason } : {})
  })
}

/** The reasons of a custom policy's `Deny` and `Ask` that came without one. */
const POLICY_DENIED = "denied by policy"
const POLICY_ASKED = "approval required by policy"

/** A custom policy's reason as text: one that is not a non-empty string (from JavaScript, say) is `fallback`. */
const policyReasonOf = (reason: unknown, fallback: string): string =>
  typeof reason === "string" && reason !== "" ? reason : fallback

/**
 * What a custom Hooks service's `beforeTool` succeeded with (its type says
 * nothing, but `Effect<{ deny }>` compiles as `Effect<void>`): nothing
 * passes; `{ deny }` denies with its reason; anything else denies (fail closed).
 */
const hookAnswer = (call: Tool.Call, answer: unknown): Effect.Effect<void, Approval.ToolDenied> => {
  if (answer === undefined || answer === null) return Effect.void
  const reason = typeof answer === "object" ? (answer as { readonly deny?: unknown }).deny : undefined
  return Effect.fail(denial({
    tool: call.name,
    reason: typeof reason === "string" ? (reason === "" ? Hooks.reasons.denied : reason) : Hooks.reasons.failed
  }))
}

/**
 * A step of a governance service the user may have written (a permissions
 * check, a hook, an approval gate): called lazily, so a throw is a defect,
 * and any cause but the run's own interruption — a defect, a failure, the
 * service interrupting itself — goes to `problem`, which fails closed.
 */
const userService = <A, E, E2>(
  step: () => Effect.Effect<A, E>,
  problem: (cause: Cause.Cause<E>) => Effect.Effect<A, E2>
): Effect.Effect<A, E2> =>
  Effect.withFiberRuntime((fiber) =>
    Effect.catchAllCause(Effect.suspend(step), (cause) =>
      Cause.isInterruptedOnly(cause) && interruptedFromOutside(fiber) ? Effect.failCause(cause as Cause.Cause<never>) : problem(cause))
  )

/** Stands for a missing decision: it has no `_tag`, so it is denied as an unknown one. */
const NO_DECISION = Object.freeze({}) as Permissions.Decision

const checkFailed = () => Effect.succeed(Permissions.Decision.Deny({ reason: CHECK_FAILED }))

class ToolTimeout {
  constructor(readonly duration: Duration.Duration) {}
}

/** The call's arguments did not decode: unlike a `ParseError` of the handler's own, "invalid arguments". */
class ArgumentsInvalid {
  constructor(readonly error: ParseResult.ParseError) {}
}

const formatBlocks = (blocks: ReadonlyArray<Memory.MemoryBlock>): string =>
  blocks.map((block) => `<${block.name}>\n${block.content}\n</${block.name}>`).join("\n\n")

const formatRecall = (facts: ReadonlyArray<Memory.Fact>, episodes: ReadonlyArray<Memory.Episode>): string => {
  const sections: Array<string> = []
  if (facts.length > 0) {
    sections.push("Known facts:\n" + facts.map((f) => `- ${f.subject} ${f.predicate} ${f.object}`).join("\n"))
  }
  if (episodes.length > 0) {
    sections.push(
      "Relevant past episodes:\n" + episodes.map((e) => `- user: ${e.input}\n  assistant: ${e.output}`).join("\n")
    )
  }
  return sections.join("\n\n")
}

/** @internal */
export const make = (config?: Agent.Config): Effect.Effect<Agent.Service, never, Agent.Requirements> =>
  Effect.gen(function*() {
    const model = yield* Model.Model
    const budget = yield* Budget.Budget
    const permissions = yield* Permissions.Permissions
    const approval = yield* Approval.ApprovalHandler
    const hooks = yield* Hooks.Hooks
    const memory = yield* Memory.Memory
    const audit = yield* AuditLog.AuditLog
    const secrets = yield* Secrets.Secrets
    const telemetry = yield* Telemetry.Telemetry

    const instructions = config?.instructions ?? ""
    const tools = config?.tools ?? []
    const maxTurns = config?.maxTurns ?? DEFAULT_MAX_TURNS
    const maxTokens = config?.maxTokens ?? DEFAULT_MAX_TOKENS
    const retrySchedule = config?.retrySchedule ?? Model.defaultRetrySchedule

    if (!Number.isInteger(maxTurns) || maxTurns < 1) {
      return yield* Effect.dieMessage(`Agent config: maxTurns must be a positive integer, got ${maxTurns}`)
    }
    // It bounds what the budget reserves for each call: a zero or negative one would reserve too little.
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) {
      return yield* Effect.dieMessage(`Agent config: maxTokens must be a positive integer, got ${maxTokens}`)
    }

    const toolsByName = new Map<string, Tool.Any>()
    for (const tool of tools) {
      if (toolsByName.has(tool.name)) {
        return yield* Effect.dieMessage(`Agent config: two tools are named ${JSON.stringify(tool.name)}`)
      }
      toolsByName.set(tool.name, tool)
    }
    // Arguments decode synchronously when the schema allows it (no effect ops on
    // the common path); a schema that needs effects falls back to decodeUnknown.
    const decoders = new Map(
      tools.map((tool) =>
        [tool.name, {
          sync: Schema.decodeUnknownEither(tool.parameters, { errors: "all" }),
          effect: Schema.decodeUnknown(tool.parameters, { errors: "all" }),
          // Defaults and transformations: what the tool gets is not what the model sent, so a governed
          // call is checked with its arguments as the tool will get them (encoded back to JSON).
          canonical: SchemaAST.encodedBoundAST(tool.parameters.ast) === tool.parameters.ast ?
            undefined :
            Schema.encodeEither(tool.parameters as Schema.Schema<unknown, unknown>)
        }] as const
      )
    )
    const toolDefinitions = tools.map((tool) => tool.definition)
    const toolDefinitionBytes = Buffer.byteLength(JSON.stringify(toolDefinitions), "utf8")

    // Fast paths: a layer that cannot change the outcome costs nothing.
    const budgetOn = budget !== Budget.none
    const syncReserve = BudgetInternal.syncReserveOf(budget)
    const permissionsOn = permissions !== Permissions.allowAllService
    // A built-in policy, no hooks, and an audit log that takes entries without waiting (or none):
    // the permission step is decided inside one step ({@link decideNow}).
    const syncCheck = PermissionsInternal.syncCheckOf(permissions)
    // `isEmpty` only as `none` itself has it: `{ ...Hooks.none, beforeTool }` copies the flag with the spread.
    const hooksOn = !(hooks.isEmpty && hooks.beforeTool === Hooks.none.beforeTool && hooks.afterTool === Hooks.none.afterTool)
    const auditOn = audit.enabled
    const telemetryOn = telemetry.enabled
    const governed = permissionsOn || hooksOn
    const memoryOn = memory !== Memory.none

    // ---- telemetry (every use is behind `telemetryOn`) ---------------------

    // The agent's Secrets ride in each span's context, so a redacting tracer
    // (Telemetry.layerOtel) masks the values this service handed out.
    const spanContext = telemetryOn ? Context.make(Secrets.Secrets, secrets) : Context.empty()

    /**
     * Span options, undefined attributes dropped. Attribute strings come
     * redacted: the ones below are redacted once per run or call and reused,
     * so the options are marked `preRedacted` and a redacting tracer does
     * not scan them again (nor the span names, the agent's own literals).
     */
    const spanOptions = (attributes: Record<string, unknown>, parent?: Tracer.AnySpan): PreRedactedOptions => {
      let defined = attributes
      for (const key in attributes) {
        if (attributes[key] === undefined) {
          defined = {}
          for (const name in attributes) if (attributes[name] !== undefined) defined[name] = attributes[name]
          break
        }
      }
      return parent === undefined ?
        { attributes: defined, context: spanContext, captureStackTrace: false, [preRedacted]: true } :
        { attributes: defined, context: spanContext, captureStackTrace: false, parent, [preRedacted]: true }
    }

    const modelTag = telemetryOn ? secrets.redact(model.name) : model.name

    const sessionAttribute = (state: RunState): string =>
      state.sessionTag ??= secrets.redact(state.context.sessionId)

    /** `tool`, `call_id` and `turn` of a call: a registered tool's name as is, anything the model made up redacted. */
    const callAttributes = (call: Tool.Call, turn: number): CallAttributes => ({
      tool: toolsByName.has(call.name) ? call.name : secrets.redact(call.name),
      call_id: secrets.redact(call.id),
      turn
    })

    /**
     * Wraps `effect` in a span, a child of `parent` if given (else of the
     * fiber's current span). Call only when telemetry is on.
     */
    const traced = <A, E, R>(
      name: string,
      attributes: Record<string, unknown>,
      effect: Effect.Effect<A, E, R>,
      annotate?: (exit: Exit.Exit<A, E>) => Record<string, unknown> | undefined,
      parent?: Tracer.AnySpan
    ): Effect.Effect<A, E, R> => withSpan(effect, name, spanOptions(attributes, parent), annotate)

    /**
     * Runs `effect` under the open turn span, if any. The turn span is not
     * installed for the whole turn: the agent's own spans in it name it as
     * their parent, and only the budget backend's settle or release (which
     * may make spans of its own) runs under it.
     */
    const inTurn = <A, E, R>(state: RunState, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      telemetryOn && state.turnSpan !== undefined ? withParentSpan(effect, state.turnSpan) : effect

    /** Ends the open turn span, if any, with `exit`, inside the caller's step. */
    const endTurnSpanNow = (state: RunState, exit: Exit.Exit<unknown, unknown>, fiber: Fiber.RuntimeFiber<unknown, unknown>) => {
      const turnSpan = state.turnSpan
      state.turnSpan = undefined
      if (turnSpan !== undefined) endSpan(turnSpan, exit, fiber)
    }

    /** Ends the open turn span, if any, with `exit`. */
    const endTurnSpan = (state: RunState, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
      state.turnSpan === undefined ? Effect.void : Effect.withFiberRuntime((fiber) => {
        endTurnSpanNow(state, exit, fiber)
        return Effect.void
      })

    /** Ends the previous turn's span and opens the span of `turn`, in one step. Call only when telemetry is on. */
    const openTurn = (state: RunState, turn: number): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        endTurnSpanNow(state, Exit.void, fiber)
        const options = spanOptions({ turn, session_id: sessionAttribute(state) })
        const made = spanNow(fiber, "jeeves.turn", options)
        if (made === undefined) {
          return Effect.map(makeSpan("jeeves.turn", options), (span) => {
            state.turnSpan = span
          })
        }
        if (made !== "unsampled") state.turnSpan = made
        return Effect.void
      })

    /** The `user_id` attribute under `telemetry.userIdAttribute` (undefined = omitted). */
    const userAttribute = (state: RunState): string | undefined => {
      if (state.userIdTag === undefined) {
        const value = Telemetry.userIdValue(telemetry.userIdAttribute, state.context.userId)
        state.userIdTag = value === undefined ? null : telemetry.userIdAttribute === "raw" ? secrets.redact(value) : value
      }
      return state.userIdTag ?? undefined
    }

    /** The user id as a metric tag (per `metricUserIdAttribute`; usually omitted, to bound cardinality). */
    const metricUserAttribute = (state: RunState): string | undefined =>
      telemetry.metricUserIdAttribute === telemetry.userIdAttribute ?
        userAttribute(state) :
        telemetry.metricUserIdAttribute === "raw" ?
        secrets.redact(Telemetry.userIdValue("raw", state.context.userId)!) :
        Telemetry.userIdValue(telemetry.metricUserIdAttribute, state.context.userId)

    const recordUsage = (state: RunState, usage: Model.Usage): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        recordUsageNow(fiber, state, usage)
        return Effect.void
      })

    /** {@link recordUsage} inside the caller's step. */
    const recordUsageNow = (fiber: Fiber.RuntimeFiber<unknown, unknown>, state: RunState, usage: Model.Usage) => {
      const attributes = { model: modelTag, user_id: metricUserAttribute(state) }
      const tags = fiber.getFiberRef(FiberRef.currentMetricLabels)
      // A figure a cut-off call could not report (NaN) is not counted.
      if (Number.isFinite(usage.inputTokens)) Metrics.unsafeRecord(Metrics.tokensInput, usage.inputTokens, attributes, tags)
      if (Number.isFinite(usage.outputTokens)) Metrics.unsafeRecord(Metrics.tokensOutput, usage.outputTokens, attributes, tags)
      if (usage.costUsd > 0) Metrics.unsafeRecord(Metrics.costUsd, usage.costUsd, attributes, tags)
    }

    const warn = (message: string, annotations: Record<string, unknown>) =>
      Effect.logWarning(secrets.redact(message)).pipe(
        Effect.annotateLogs(Secrets.redactDeep(annotations, secrets.redact))
      )

    const emit = (state: RunState, event: AgentEvent): Effect.Effect<void> =>
      state.emit === undefined ? Effect.void : state.emit(event)

    const written = Effect.succeed(true)
    const submit = auditOn ? AuditInternal.submitterOf(audit) : undefined
    const decidedNow = syncCheck !== undefined && !hooksOn && (!auditOn || submit !== undefined)

    /** Settles one submitted entry: counts a failure, times it, and wakes a run waiting for its entries. */
    const submitted = (
      state: RunState,
      action: string,
      clock: Clock.Clock | undefined,
      startedNanos: bigint,
      tags: ReadonlyArray<MetricLabel.MetricLabel>
    ) =>
    (outcome: AuditInternal.Outcome) => {
      const ok = outcome._tag === "Success"
      if (clock !== undefined) {
        const millis = Number(clock.unsafeCurrentTimeNanos() - startedNanos) / 1_000_000
        Metrics.unsafeRecord(Metrics.auditAppend, millis, { action, ok }, tags)
      }
      if (!ok) {
        state.auditFailures++
        ;(state.auditLost ??= []).push({ action, message: describeFailure(Cause.squash(outcome.cause)) })
      }
      if (--state.auditPending === 0 && state.auditWaiters !== undefined) {
        const waiters = state.auditWaiters
        state.auditWaiters = undefined
        for (const resume of waiters) resume()
      }
    }

    /**
     * Appends an entry without waiting for it to be durable: it takes its
     * place in the chain now and the run goes on. A destructive call waits
     * for the entries before it ({@link entriesDurable}); the run returns
     * only once all of them are durable ({@link settleAudit}). Falls back to
     * {@link record} (awaited) for a store that cannot take entries that way.
     */
    const note = (state: RunState, input: AuditLog.AppendInput): Effect.Effect<void> => {
      if (!auditOn) return Effect.void
      if (submit === undefined) return Effect.asVoid(record(state, input))
      return Effect.withFiberRuntime((fiber) => noteNow(fiber, state, input) ? Effect.void : Effect.asVoid(record(state, input)))
    }

    /**
     * {@link note} inside the caller's step: submits the entry; false when
     * the log did not take it that way (the caller then falls back to
     * {@link record}). Call only with `submit` defined.
     */
    const noteNow = (fiber: Fiber.RuntimeFiber<unknown, unknown>, state: RunState, input: AuditLog.AppendInput): boolean => {
      const clock = telemetryOn ? Context.get(fiber.currentDefaultServices, Clock.Clock) : undefined
      const done = submitted(
        state,
        input.action,
        clock,
        clock === undefined ? BigInt(0) : clock.unsafeCurrentTimeNanos(),
        clock === undefined ? noLabels : fiber.getFiberRef(FiberRef.currentMetricLabels)
      )
      state.auditPending++
      let taken = false
      try {
        taken = submit!(fiber, input, done)
      } catch {
        // A log that throws while taking the entry: it goes through `record` (awaited), which reports it.
      }
      if (taken) return true
      state.auditPending--
      return false
    }

    /**
     * Waits until every entry the run submitted so far is durable (or
     * failed). No canceler: an interrupted wait leaves its waiter in the
     * run's own list, where waking it is a no-op (effect ignores a resume
     * after an interruption), and a canceler would cost every wait an
     * interruption handler.
     */
    const auditDurable = (state: RunState): Effect.Effect<void> =>
      Effect.suspend(() =>
        state.auditPending === 0 ? Effect.void : Effect.async<void>((resume) => {
          if (state.auditPending === 0) return resume(Effect.void)
          ;(state.auditWaiters ??= []).push(() => resume(Effect.void))
        })
      )

    /** Waits until every entry the run submitted is durable, then logs the ones that failed. */
    const settleAudit = (state: RunState): Effect.Effect<void> =>
      Effect.flatMap(auditDurable(state), () => {
        const lost = state.auditLost
        if (lost === undefined) return Effect.void
        state.auditLost = undefined
        return Effect.forEach(lost, ({ action, message }) => warn(`audit append failed: ${message}`, { action }), {
          discard: true
        })
      })

    /**
     * Appends an entry a destructive call depends on. With a log that takes
     * entries without waiting, it is submitted (returning false only if it
     * failed at once) and the call waits for all of them together, once,
     * just before it runs ({@link entriesDurable}); otherwise it is awaited.
     * A safe call's entries are only submitted.
     */
    const guarding = (state: RunState, call: Tool.Call, input: AuditLog.AppendInput): Effect.Effect<boolean> => {
      if (!call.destructive) return Effect.as(note(state, input), true)
      if (submit === undefined) return record(state, input)
      return Effect.withFiberRuntime((fiber) => {
        const now = guardingNow(fiber, state, call, input)
        return typeof now === "boolean" ? Effect.succeed(now) : now
      })
    }

    /** {@link guarding} inside the caller's step: the answer itself when the entry was submitted. */
    const guardingNow = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      state: RunState,
      call: Tool.Call,
      input: AuditLog.AppendInput
    ): boolean | Effect.Effect<boolean> => {
      if (submit === undefined) return record(state, input)
      const failuresBefore = state.auditFailures
      if (noteNow(fiber, state, input)) return call.destructive ? state.auditFailures === failuresBefore : true
      return call.destructive ? Effect.map(record(state, input), () => state.auditFailures === failuresBefore) : Effect.as(record(state, input), true)
    }

    /**
     * Before a destructive call runs: every entry submitted so far (its
     * `tool_call`, decision and approval among them) is durable, and none
     * of the run's entries failed since the call began. False = deny.
     */
    const entriesDurable = (state: RunState, failuresBefore: number): Effect.Effect<boolean> =>
      // An awaited log's entries are durable once appended: only whether one failed is left to check.
      submit === undefined ? Effect.sync(() => state.auditFailures === failuresBefore) : Effect.suspend(() =>
        state.auditPending === 0 ?
          Effect.succeed(state.auditFailures === failuresBefore) :
          Effect.map(auditDurable(state), () => state.auditFailures === failuresBefore)
      )

    /** Appends an audit entry; a failure is logged and counted, never fatal. Returns whether it was written. */
    const record = (state: RunState, input: AuditLog.AppendInput): Effect.Effect<boolean> => {
      if (!auditOn) return written
      const failed = (error: AuditLog.AuditUnavailable) => {
        state.auditFailures++
        return Effect.as(warn(`audit append failed: ${error.message}`, { action: input.action }), false)
      }
      if (!telemetryOn) return Effect.matchEffect(audit.append(input), { onFailure: failed, onSuccess: () => written })
      // Timed into `jeeves.audit.append_ms` by the fiber's clock, in the append's own steps.
      return Effect.withFiberRuntime((fiber) => {
        const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
        const startedNanos = clock.unsafeCurrentTimeNanos()
        const timed = (ok: boolean) =>
          Metrics.unsafeRecord(
            Metrics.auditAppend,
            Number(clock.unsafeCurrentTimeNanos() - startedNanos) / 1_000_000,
            { action: input.action, ok },
            fiber.getFiberRef(FiberRef.currentMetricLabels)
          )
        return Effect.matchEffect(audit.append(input), {
          onFailure: (error) => {
            timed(false)
            return failed(error)
          },
          onSuccess: () => {
            timed(true)
            return written
          }
        })
      })
    }

    // ---- seed messages ----------------------------------------------------

    /** The messages of a run without memory: the instructions and the prompt. */
    const unseeded = (prompt: string): Array<Model.Message> =>
      instructions === "" ?
        [{ role: "user", content: prompt }] :
        [{ role: "system", content: instructions }, { role: "user", content: prompt }]

    // Generator bodies are hoisted with `Effect.fnUntraced` (made once per agent):
    // a fresh `Effect.gen(function*() {...})` closure per call costs V8 about
    // 2 µs to set up, more than the rest of a turn's framework work.
    const seedMessages = (
      prompt: string,
      blocks: ReadonlyArray<Memory.MemoryBlock>,
      facts: ReadonlyArray<Memory.Fact>,
      episodes: ReadonlyArray<Memory.Episode>,
      history: ReadonlyArray<Model.Message>
    ): Array<Model.Message> => {
      const messages: Array<Model.Message> = []
      if (instructions !== "") messages.push({ role: "system", content: instructions })
      if (blocks.length > 0) messages.push({ role: "system", content: formatBlocks(blocks) })
      if (facts.length > 0 || episodes.length > 0) {
        messages.push({ role: "system", content: formatRecall(facts, episodes) })
      }
      for (const message of history) messages.push(message)
      messages.push({ role: "user", content: prompt })
      return messages
    }

    const recallOptions = (context: RunContext.RunContext) => ({ limit: 3, excludeSessionId: context.sessionId })
    const factOptions = { limit: 5 }
    const historyOptions = { limit: 20 }

    const seedBySteps = Effect.fnUntraced(function*(prompt: string, context: RunContext.RunContext) {
      const blocks = yield* memory.working
      const facts = yield* memory.recallFacts(prompt, factOptions)
      const episodes = yield* memory.recall(prompt, recallOptions(context))
      const history = yield* memory.sessionMessages(context.sessionId, historyOptions)
      return seedMessages(prompt, blocks, facts, episodes, history)
    })

    // The in-memory Memory: the run's reads and its episode in the agent's own step
    // (the same operations, in the same order, at one instant), unless service spans are on.
    const syncMemory = MemoryInternal.syncMemoryOf(memory)

    /** Runs `f` on the synchronous memory now; its typed failures fail, as the service's methods do. */
    const memoryNow = <A>(
      bySteps: Effect.Effect<A, Memory.MemoryError | RunContext.InvalidUserId>,
      f: (sync: NonNullable<typeof syncMemory>, now: number) => A
    ): Effect.Effect<A, Memory.MemoryError | RunContext.InvalidUserId> =>
      syncMemory === undefined ? bySteps : Effect.withFiberRuntime((fiber) => {
        if (fiber.getFiberRef(serviceSpans)) return bySteps
        try {
          return Effect.succeed(f(syncMemory, Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()))
        } catch (error) {
          const failure = MemoryInternal.rejection(error)
          if (failure === undefined) throw error
          return Effect.fail(failure)
        }
      })

    const seed = (prompt: string, context: RunContext.RunContext) =>
      memoryNow(seedBySteps(prompt, context), (sync, now) =>
        seedMessages(
          prompt,
          sync.working(context, now),
          sync.recallFacts(context, now, prompt, factOptions),
          sync.recall(context, now, prompt, recallOptions(context)),
          sync.sessionMessages(context, now, context.sessionId, historyOptions)
        ))

    const remember = (context: RunContext.RunContext, episode: Memory.NewEpisode) =>
      memoryNow(memory.remember(episode), (sync, now) => sync.remember(context, now, episode))

    // ---- model call -------------------------------------------------------

    /**
     * `model.complete(request)` called when the effect runs, so that a model
     * whose `complete` throws before returning its effect fails the call
     * (a defect) inside the reservation's watch, which releases it, rather
     * than the step that made the reservation.
     */
    const completeCall = (request: Model.ModelRequest) => Effect.suspend(() => model.complete(request))

    /**
     * {@link completeCall} retried on retryable errors, charging every
     * attempt: the usage failed attempts reported (the provider billed them)
     * is added to the answer's, or to the final error's. Nothing is set up
     * before a first retryable failure.
     */
    const completeRetried = (state: RunState, request: Model.ModelRequest): Effect.Effect<Model.ModelResponse, Model.ModelError> =>
      Effect.catchIf(completeCall(request), (error) => error.retryable, (first) => {
        let replayFirst = true
        const attempt = Effect.suspend(() => {
          if (!replayFirst) return completeCall(request)
          replayFirst = false
          return Effect.fail(first)
        })
        return chargingAttempts(state, attempt, (counted) => Model.retryModelErrors(counted, retrySchedule, () => true))
      })

    const callModel = (state: RunState, request: Model.ModelRequest, turn: number) => {
      if (state.emit === undefined) {
        const completed = completeRetried(state, request)
        return telemetryOn ?
          traced("jeeves.model.complete", modelAttributes(state, turn), completed, undefined, state.turnSpan) :
          completed
      }
      const streamed = Effect.suspend(() => {
        let emitted = false
        let finished: Model.ModelResponse | undefined
        // What an attempt reported at its start is its own: a retry's is not added to the failed one's.
        const attempt = Stream.suspend(() => {
          state.startedUsage = undefined
          return model.stream(request)
        }).pipe(
          Stream.runForEach((part) => {
            if (part._tag === "Finish") {
              finished = part.response
              // Known now, whatever happens before the stream ends (the consumer stopping, say).
              state.finishedUsage = part.response.usage
              return Effect.void
            }
            if (part._tag === "Usage") {
              state.startedUsage = part.usage
              return Effect.void
            }
            emitted = true
            state.answerDelivered = true
            return emit(state, AgentEvent.model_chunk({ turn, part }))
          }),
          Effect.flatMap(() =>
            finished === undefined ?
              Effect.fail(
                new Model.ModelError({
                  reason: "invalid_response",
                  retryable: false,
                  description: "the model's stream ended without a finish part"
                })
              ) :
              Effect.succeed(finished)
          )
        )
        // A stream is retried only while nothing of it has reached the consumer.
        return chargingAttempts(state, attempt, (counted) => Model.retryModelErrors(counted, retrySchedule, () => !emitted))
      })
      return telemetryOn ?
        traced("jeeves.model.stream", modelAttributes(state, turn), streamed, undefined, state.turnSpan) :
        streamed
    }

    const modelAttributes = (state: RunState, turn: number) => ({
      model: modelTag,
      turn,
      session_id: sessionAttribute(state),
      tool_count: toolDefinitions.length
    })

    /** Emits a budget warning; with telemetry, counts it too. */
    const budgetWarning = (state: RunState, turn: number, warning: string): Effect.Effect<void> => {
      const emitted = emit(state, AgentEvent.budget_warning({ turn, reason: warning }))
      if (!telemetryOn) return emitted
      const reason = Metrics.warningKind(warning)
      return Effect.zipRight(Metrics.record(Metrics.budgetWarnings, 1, { reason, user_id: metricUserAttribute(state) }), emitted)
    }

    /** One metered model call: reserve, call, settle (or release on any other exit). */
    const meteredCall = (
      state: RunState,
      request: Model.ModelRequest,
      turn: number
    ): Effect.Effect<Metered, Model.ModelError | Budget.BudgetUnavailable> => {
      if (!budgetOn) {
        const called = Effect.map(callModel(state, request, turn), (response) => ({ _tag: "Answered", response }) as const)
        if (!telemetryOn) return called
        // Usage the provider reported before the call failed (or was cancelled) is counted, as with a
        // budget it is charged.
        return Effect.suspend(() => {
          state.answerDelivered = false
          state.finishedUsage = undefined
          state.startedUsage = undefined
          return Effect.onError(called, (cause) => {
            const reported = withRetried(state, state.finishedUsage ?? failedUsage(cause) ?? cancelledUsage(state))
            return reported === undefined ? Effect.void : recordUsage(state, reported)
          })
        })
      }
      const inputTokens = estimateInputTokens(state, request.messages, toolDefinitionBytes)
      const estimate: Model.Usage = {
        inputTokens,
        outputTokens: maxTokens,
        costUsd: model.price === undefined ? 0 : Model.costOf(model.price, inputTokens, maxTokens)
      }
      state.callEstimate = estimate
      const reserveOptions = telemetryOn ?
        spanOptions({
          turn,
          session_id: sessionAttribute(state),
          estimated_input_tokens: inputTokens,
          estimated_output_tokens: maxTokens
        }, state.turnSpan) :
        undefined
      if (syncReserve !== undefined) {
        // The in-memory budget: reserve inside this step, no effect of its own. Nothing runs
        // under its span, so the span is made and ended here, never installed as a parent.
        return Effect.uninterruptibleMask((restore) =>
          Effect.withFiberRuntime((fiber) => {
            let span: Tracer.Span | undefined
            if (reserveOptions !== undefined) {
              const made = spanNow(fiber, "jeeves.budget.reserve", reserveOptions)
              if (made === undefined) {
                // The one-step span does not apply here: effect's own.
                return Effect.flatMap(
                  restore(withSpan(budget.reserve(estimate), "jeeves.budget.reserve", reserveOptions)),
                  (reservation) => reserved(state, request, turn, restore, reservation)
                )
              }
              if (made !== "unsampled") span = made
            }
            let reservation: Budget.Reservation
            try {
              reservation = syncReserve(fiber, estimate)
            } catch (defect) {
              if (span !== undefined) endSpan(span, Exit.die(defect), fiber)
              throw defect
            }
            if (span !== undefined) endSpan(span, Exit.succeed(reservation), fiber)
            return reservedNow(fiber, state, request, turn, restore, reservation)
          })
        )
      }
      const reserve = reserveOptions === undefined ?
        budget.reserve(estimate) :
        withSpan(budget.reserve(estimate), "jeeves.budget.reserve", reserveOptions)
      return Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(reserve), (reservation) => reserved(state, request, turn, restore, reservation))
      )
    }

    /**
     * {@link reserved} for the in-memory budget's grant, in the reserving
     * step: the `jeeves.model.complete` span made and installed here (one
     * masked step for the reservation, the span and the call), and on
     * success the span ended, the grant settled and the usage metrics
     * recorded in one handler. Falls back to {@link reserved} where this
     * does not apply (a warning to emit, streaming, no telemetry, the
     * one-step span not applicable). Runs masked.
     */
    const reservedNow = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      state: RunState,
      request: Model.ModelRequest,
      turn: number,
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
      reservation: Budget.Reservation
    ): Effect.Effect<Metered, Model.ModelError> => {
      if (
        !telemetryOn || state.emit !== undefined || !(reservation instanceof BudgetInternal.Grant) ||
        reservation.warning !== undefined || !canSetRefs(fiber)
      ) {
        return reserved(state, request, turn, restore, reservation)
      }
      const span = spanNow(fiber, "jeeves.model.complete", spanOptions(modelAttributes(state, turn), state.turnSpan))
      if (span === undefined) return reserved(state, request, turn, restore, reservation)
      const completed = completeRetried(state, request)
      const previous = fiber.getFiberRef(FiberRef.currentContext)
      const before = refsOf(fiber)
      const installed = span === "unsampled" ?
        undefined :
        setRefs(fiber, FiberRef.currentContext, withParent(previous, span))
      return Effect.matchCauseEffect(restore(completed), {
        onFailure: (cause) => {
          if (span !== "unsampled") {
            resetRefs(fiber, before, installed, FiberRef.currentContext, previous)
            endSpan(span, Exit.failCause(cause), fiber)
          }
          const partial = withRetried(state, failedUsage(cause))
          if (partial !== undefined) {
            reservation.unsafeSettle(partial)
            // Counted as charged: the token and cost metrics agree with the budget.
            recordUsageNow(fiber, state, partial)
          }
          return Effect.zipRight(partial === undefined ? reservation.release : Effect.void, Effect.failCause(cause))
        },
        onSuccess: (response): Effect.Effect<Metered> => {
          if (span !== "unsampled") {
            resetRefs(fiber, before, installed, FiberRef.currentContext, previous)
            endSpan(span, Exit.succeed(response), fiber)
          }
          reservation.unsafeSettle(response.usage)
          recordUsageNow(fiber, state, response.usage)
          return Effect.succeed({ _tag: "Answered", response, usageRecorded: true })
        }
      })
    }

    /** The model call under a reservation: settle on success, release on any other exit. Runs masked. */
    const reserved = (
      state: RunState,
      request: Model.ModelRequest,
      turn: number,
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
      reservation: Budget.Reservation
    ): Effect.Effect<Metered, Model.ModelError> => {
      if (reservation._tag === "Blocked") {
        return Effect.succeed({ _tag: "Blocked", reason: reservation.reason } as const)
      }
      state.answerDelivered = false
      state.finishedUsage = undefined
      state.startedUsage = undefined
      const called = restore(
        reservation.warning === undefined ?
          callModel(state, request, turn) :
          Effect.zipRight(budgetWarning(state, turn, reservation.warning), callModel(state, request, turn))
      )
      return Effect.matchCauseEffect(called, {
        onFailure: (cause) => {
          // A call that failed or was interrupted is released (charged nothing), unless the provider had
          // reported usage before it failed (charged that), or part of its answer reached the caller: the
          // provider did the work, its usage is unknown, so the whole estimate is charged (fail closed).
          const reported = withRetried(state, state.finishedUsage ?? failedUsage(cause) ?? cancelledUsage(state))
          const partial = reported ?? (state.answerDelivered === true ? UNKNOWN_USAGE : undefined)
          const recorded = telemetryOn && reported !== undefined ? recordUsage(state, reported) : Effect.void
          const finish = partial !== undefined ?
            Effect.catchAll(reservation.settle(partial), (error) => warn(`budget settle failed: ${error.message}`, { turn })) :
            reservation.release
          return Effect.zipRight(
            Effect.zipRight(recorded, reservation instanceof BudgetInternal.Grant ? finish : inTurn(state, finish)),
            Effect.failCause(cause)
          )
        },
        onSuccess: (response): Effect.Effect<Metered> => {
          const answered = { _tag: "Answered", response } as const
          if (reservation instanceof BudgetInternal.Grant) {
            reservation.unsafeSettle(response.usage)
            return Effect.succeed(answered)
          }
          // The answer is kept even if the ledger cannot be settled now: the reservation (an upper
          // bound) stays charged until the backend reclaims it, so nothing goes unmetered.
          return Effect.as(
            Effect.catchAll(
              inTurn(state, reservation.settle(response.usage)),
              (error) => warn(`budget settle failed: ${error.message}`, { turn })
            ),
            answered
          )
        }
      })
    }

    // ---- tools ------------------------------------------------------------

    const deny = (call: Tool.Call, reason: string) => denial({ tool: call.name, reason })

    const decisionEntry = (
      call: Tool.Call,
      turn: number,
      decision: "allow" | "deny" | "ask",
      source: "hook" | "policy",
      reason: string | null
    ): AuditLog.AppendInput => ({
      actor: "system",
      action: "permission_decision",
      payload: { tool: call.name, call_id: call.id, turn, destructive: call.destructive, decision, source, reason }
    })

    /** Audits (and counts) one permission decision. Returns whether the entry was written. */
    const decisionRecorded = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      decision: "allow" | "deny" | "ask",
      source: "hook" | "policy",
      reason: string | null
    ): Effect.Effect<boolean> => {
      const counted = telemetryOn ?
        Metrics.record(Metrics.permissionDecisions, 1, {
          tool: call.name,
          decision,
          source,
          user_id: metricUserAttribute(state)
        }) :
        Effect.void
      if (!auditOn) return Effect.as(counted, true)
      return Effect.zipRight(
        counted,
        guarding(state, call, decisionEntry(call, turn, decision, source, reason))
      )
    }

    /** Asks the approval gate; audits, counts and times the outcome, the denial as a value. */
    const askApproval = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      policyReason: string,
      attributes: CallAttributes | undefined,
      parent?: Tracer.AnySpan
    ): Effect.Effect<Either.Either<void, Approval.ToolDenied>> => {
      // Timed by the fiber's clock and recorded in the answer's own steps.
      const answered = Effect.withFiberRuntime<Either.Either<void, Approval.ToolDenied>>((fiber) => {
        const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
        const startedNanos = clock.unsafeCurrentTimeNanos()
        /** Counts and times the outcome; its audit entry. */
        const outcomeEntry = (outcome: Approval.Outcome, reason: string | null): AuditLog.AppendInput => {
          const millis = Number(clock.unsafeCurrentTimeNanos() - startedNanos) / 1_000_000
          if (telemetryOn) {
            const tags = fiber.getFiberRef(FiberRef.currentMetricLabels)
            Metrics.unsafeRecord(Metrics.approvalRequests, 1, { tool: call.name, outcome, user_id: metricUserAttribute(state) }, tags)
            Metrics.unsafeRecord(Metrics.approvalDuration, millis, { tool: call.name, outcome }, tags)
          }
          return {
            actor: "system",
            action: "approval_decision",
            payload: { tool: call.name, call_id: call.id, turn, outcome, reason, policy_reason: policyReason, duration_ms: millis }
          }
        }
        const decided = (denial: Approval.ToolDenied | undefined): Effect.Effect<Either.Either<void, Approval.ToolDenied>> => {
          const entry = outcomeEntry(denial === undefined ? "approved" : Approval.outcomeOf(denial), denial === undefined ? null : denial.reason)
          const audited = !auditOn ? true : guardingNow(fiber, state, call, entry)
          const recorded = (written: boolean): Either.Either<void, Approval.ToolDenied> => {
            if (denial !== undefined) return Either.left(denial)
            // An approved destructive call runs only once its approval is on record.
            return call.destructive && !written ? Either.left(deny(call, "audit unavailable")) : allowed
          }
          return typeof audited === "boolean" ? Effect.succeed(recorded(audited)) : Effect.map(audited, recorded)
        }
        // A run interrupted while the gate waits (a human deciding) still records how the request ended.
        const request = Effect.onInterrupt(Effect.suspend(() => approval.request(call, policyReason)), () => {
          // A gate that interrupted itself is a failed handler, decided below.
          if (!interruptedFromOutside(fiber)) return Effect.void
          const entry = outcomeEntry("cancelled", CANCELLED_REASON)
          return auditOn ? note(state, entry) : Effect.void
        })
        return Effect.matchCauseEffect(request, {
          onFailure: (cause) => {
            // The run interrupted: no outcome to decide (the entry above records it).
            if (Cause.isInterruptedOnly(cause) && interruptedFromOutside(fiber)) return Effect.failCause(cause as Cause.Cause<never>)
            // A defect, a self-interruption or a failure that is not a denial: a failed handler, deny.
            const failure = Cause.failureOption(cause)
            return decided(
              failure._tag === "Some" && !Cause.isDie(cause) && isToolDenied(failure.value) ?
                asDenial(call, failure.value) :
                denial({ tool: call.name, reason: Approval.reasons.handlerFailed, policyReason })
            )
          },
          // Only an explicit approval lets the call run: a custom gate's `Effect<boolean>` compiles as the
          // service's `Effect<void>`, so `false` is the human declining, and any other value fails closed.
          onSuccess: (answer: unknown) =>
            decided(
              answer === undefined || answer === true ?
                undefined :
                denial({
                  tool: call.name,
                  reason: answer === false ? Approval.reasons.declined : Approval.reasons.handlerFailed,
                  policyReason
                })
            )
        })
      })
      // A denial is an outcome (a Left), not a tracing error: the span ends OK and says which.
      return attributes === undefined ? answered : traced("jeeves.approval", attributes, answered, approvalOutcome, parent)
    }

    /** {@link askApproval} failing with the denial. */
    const askApprovalOrFail = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      policyReason: string,
      attributes: CallAttributes | undefined
    ): Effect.Effect<void, Approval.ToolDenied> =>
      Effect.flatMap(
        askApproval(state, call, turn, policyReason, attributes),
        (outcome) => (outcome._tag === "Left" ? Effect.fail(outcome.left) : Effect.void)
      )

    /** The outcome attribute of a `jeeves.approval` span. */
    const approvalOutcome = (exit: Exit.Exit<Either.Either<void, Approval.ToolDenied>>) =>
      exit._tag === "Failure" ?
        undefined :
        { outcome: exit.value._tag === "Left" ? Approval.outcomeOf(exit.value.left) : "approved" }

    /** Hooks, then the policy, then the approval gate. Fails with the denial. */
    const authorize = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      auditWritten: boolean,
      attributes?: CallAttributes
    ): Effect.Effect<void, Approval.ToolDenied> => {
      if (call.destructive && !auditWritten) return Effect.fail(deny(call, "audit unavailable"))
      const decided = !permissionsOn ? Effect.void : userService(() => permissions.check(call), checkFailed).pipe(
        Effect.flatMap((answer) => {
          // A permissions service of the user's may answer anything at all (`undefined` takes the default branch).
          const decision: Permissions.Decision = answer ?? NO_DECISION
          switch (decision._tag) {
            case "Allow":
              return Effect.asVoid(decisionRecorded(state, call, turn, "allow", "policy", null))
            case "Deny": {
              const reason = policyReasonOf(decision.reason, POLICY_DENIED)
              return Effect.zipRight(
                decisionRecorded(state, call, turn, "deny", "policy", reason),
                Effect.fail(deny(call, reason))
              )
            }
            case "Ask": {
              const reason = policyReasonOf(decision.reason, POLICY_ASKED)
              return Effect.zipRight(
                decisionRecorded(state, call, turn, "ask", "policy", reason),
                askApprovalOrFail(state, call, turn, reason, attributes)
              )
            }
            default:
              // A permissions service of the user's that answered something else: deny (fail closed).
              return Effect.zipRight(
                decisionRecorded(state, call, turn, "deny", "policy", CHECK_FAILED),
                Effect.fail(deny(call, CHECK_FAILED))
              )
          }
        })
      )
      if (!hooksOn) return decided
      return userService(() => Effect.flatMap(hooks.beforeTool(call), (answer: unknown) => hookAnswer(call, answer)), (cause) => {
        const failure = Cause.failureOption(cause)
        return Effect.fail(failure._tag === "Some" && isToolDenied(failure.value) ? asDenial(call, failure.value) : deny(call, "hook failed"))
      }).pipe(
        Effect.tapError((denied) => decisionRecorded(state, call, turn, "deny", "hook", denied.reason)),
        Effect.zipRight(decided)
      )
    }

    /** Hooks, policy and approval under a `jeeves.permission.check` span, the outcome on the span. */
    const checked = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      auditWritten: boolean,
      attributes: CallAttributes
    ): Effect.Effect<Either.Either<void, Approval.ToolDenied>> =>
      traced(
        "jeeves.permission.check",
        checkAttributes(call, turn, attributes),
        Effect.either(authorize(state, call, turn, auditWritten, attributes)),
        checkOutcome
      )

    const checkAttributes = (call: Tool.Call, turn: number, attributes: CallAttributes) => ({
      tool: attributes.tool,
      call_id: attributes.call_id,
      turn,
      destructive: call.destructive
    })

    /** The outcome attributes of a `jeeves.permission.check` span. */
    const checkOutcome = (exit: Exit.Exit<Either.Either<void, Approval.ToolDenied>>) =>
      exit._tag === "Failure" ? undefined : exit.value._tag === "Left" ?
      { allowed: false, reason: secrets.redact(exit.value.left.reason) } :
      { allowed: true }

    const allowed: Either.Either<void, Approval.ToolDenied> = Either.void

    /**
     * The permission step with a built-in policy, no hooks and an audit log
     * that takes entries without waiting: the decision, its metric, its
     * entry and the check span in this step, with no effect of their own.
     * Only an `Ask` goes on to the approval gate (a child of the check
     * span, which ends after it). Same outcomes as {@link checked} /
     * {@link authorize}.
     */
    const decideNow = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      auditWritten: boolean,
      attributes: CallAttributes | undefined
    ): Effect.Effect<Either.Either<void, Approval.ToolDenied>> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.withFiberRuntime((fiber) => {
          let span: Tracer.Span | undefined
          if (attributes !== undefined) {
            const made = spanNow(fiber, "jeeves.permission.check", spanOptions(checkAttributes(call, turn, attributes)))
            // Where the one-step span does not apply: effect's own, installed.
            if (made === undefined) return restore(checked(state, call, turn, auditWritten, attributes))
            if (made !== "unsampled") span = made
          }
          const outcome = policyNow(fiber, state, call, turn, auditWritten, attributes, span)
          if (Either.isEither(outcome)) {
            if (span !== undefined) endCheckSpan(span, Exit.succeed(outcome), fiber)
            return Effect.succeed(outcome)
          }
          if (span === undefined) return restore(outcome)
          const checkSpan = span
          // Masked here already: the handlers run on every exit, interruption included.
          return Effect.matchCauseEffect(restore(outcome), {
            onFailure: (cause) => {
              endCheckSpan(checkSpan, Exit.failCause(cause), fiber)
              return Effect.failCause(cause)
            },
            onSuccess: (value) => {
              endCheckSpan(checkSpan, Exit.succeed(value), fiber)
              return Effect.succeed(value)
            }
          })
        })
      )

    const endCheckSpan = (
      span: Tracer.Span,
      exit: Exit.Exit<Either.Either<void, Approval.ToolDenied>>,
      fiber: Fiber.RuntimeFiber<unknown, unknown>
    ) => {
      const extra = checkOutcome(exit)
      if (extra !== undefined && span.status._tag !== "Ended") {
        for (const key in extra) setRedactedAttribute(span, key, extra[key as keyof typeof extra])
      }
      endSpan(span, exit, fiber)
    }

    /** {@link decideNow}'s decision: final, or the approval (or an audit fallback) still to run. */
    const policyNow = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      state: RunState,
      call: Tool.Call,
      turn: number,
      auditWritten: boolean,
      attributes: CallAttributes | undefined,
      span: Tracer.Span | undefined
    ): Either.Either<void, Approval.ToolDenied> | Effect.Effect<Either.Either<void, Approval.ToolDenied>> => {
      if (call.destructive && !auditWritten) return Either.left(deny(call, "audit unavailable"))
      let decision: Permissions.Decision
      try {
        decision = syncCheck!(state.context.userId, call)
      } catch {
        decision = Permissions.Decision.Deny({ reason: CHECK_FAILED })
      }
      switch (decision._tag) {
        case "Allow": {
          const entry = decisionNow(fiber, state, call, turn, "allow", null)
          return entry === undefined ? allowed : Effect.as(entry, allowed)
        }
        case "Deny": {
          const entry = decisionNow(fiber, state, call, turn, "deny", decision.reason)
          const denied = Either.left(deny(call, decision.reason))
          return entry === undefined ? denied : Effect.as(entry, denied)
        }
        case "Ask": {
          const entry = decisionNow(fiber, state, call, turn, "ask", decision.reason)
          const asked = askApproval(state, call, turn, decision.reason, attributes, span)
          return entry === undefined ? asked : Effect.zipRight(entry, asked)
        }
      }
    }

    /**
     * {@link decisionRecorded} of a policy decision inside the caller's
     * step; the entry's append when the log did not take it without
     * waiting, else undefined.
     */
    const decisionNow = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      state: RunState,
      call: Tool.Call,
      turn: number,
      decision: "allow" | "deny" | "ask",
      reason: string | null
    ): Effect.Effect<boolean> | undefined => {
      if (telemetryOn) {
        Metrics.unsafeRecord(Metrics.permissionDecisions, 1, {
          tool: call.name,
          decision,
          source: "policy",
          user_id: metricUserAttribute(state)
        }, fiber.getFiberRef(FiberRef.currentMetricLabels))
      }
      if (!auditOn) return undefined
      const input = decisionEntry(call, turn, decision, "policy", reason)
      return noteNow(fiber, state, input) ? undefined : record(state, input)
    }

    const toolCallEntry = (call: Tool.Call, turn: number): AuditLog.AppendInput => ({
      actor: "model",
      action: "tool_call",
      payload: { tool: call.name, call_id: call.id, args: call.args, destructive: call.destructive, turn }
    })

    const toolResultEntry = (call: Tool.Call, turn: number, result: Tool.Result): AuditLog.AppendInput => ({
      actor: "system",
      action: "tool_result",
      payload: {
        tool: call.name,
        call_id: call.id,
        ok: result.status === "ok",
        denied: result.status === "denied",
        error: result.status === "error" ? result.reason : null,
        reason: result.status === "denied" ? result.reason : null,
        turn
      }
    })

    /**
     * A call's start with a log that takes entries without waiting: its
     * start time (when `timed`) and its submitted `tool_call` entry, in one
     * step. `written` as {@link guarding} reports it.
     */
    const callOpened = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      timed: boolean
    ): Effect.Effect<{ readonly startedNanos: bigint | undefined; readonly written: boolean }> =>
      Effect.withFiberRuntime((fiber) => {
        const startedNanos = timed ? Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos() : undefined
        const input = toolCallEntry(call, turn)
        const failuresBefore = state.auditFailures
        if (!noteNow(fiber, state, input)) {
          return Effect.map(
            call.destructive ? record(state, input) : Effect.as(record(state, input), true),
            (written) => ({ startedNanos, written })
          )
        }
        return Effect.succeed({ startedNanos, written: !call.destructive || state.auditFailures === failuresBefore })
      })

    /** A call's end with a log that takes entries without waiting: its duration metric and its `tool_result` entry, in one step. */
    const callClosed = (
      state: RunState,
      call: Tool.Call,
      turn: number,
      result: Tool.Result,
      timedTool: string | undefined,
      startedNanos: bigint | undefined
    ): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        if (timedTool !== undefined && startedNanos !== undefined) recordToolDuration(fiber, timedTool, result, startedNanos)
        const input = toolResultEntry(call, turn, result)
        return noteNow(fiber, state, input) ? Effect.void : Effect.asVoid(record(state, input))
      })

    const recordToolDuration = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      tool: string,
      result: Tool.Result,
      startedNanos: bigint
    ) => {
      const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos()
      Metrics.unsafeRecord(Metrics.toolDuration, Number(now - startedNanos) / 1_000_000, {
        // A name the model made up is no series of its own (each would be kept for the life of the process).
        tool: toolsByName.has(tool) ? tool : UNKNOWN_TOOL_TAG,
        ok: result.status === "ok",
        denied: result.status === "denied"
      }, fiber.getFiberRef(FiberRef.currentMetricLabels))
    }

    /** Records `jeeves.tool.duration_ms` for a call that started at `startedNanos`. */
    const toolTimed = (tool: string, result: Tool.Result, startedNanos: bigint): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        recordToolDuration(fiber, tool, result, startedNanos)
        return Effect.void
      })

    /**
     * `handled`, failing with {@link ToolTimeout} after `timeout`. At the timeout the handler is
     * interrupted without waiting for it: one inside an uninterruptible region (a pool checkout that
     * hangs) goes on in the background, and the call has its result at its timeout all the same. The
     * run's own interruption interrupts it and waits for its finalizers, as without a timeout.
     */
    const withTimeout = <A, E, R>(handled: Effect.Effect<A, E, R>, timeout: Duration.Duration) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Effect.fork(restore(handled)), (fiber) =>
          restore(Effect.timeoutFail(Fiber.join(fiber), { duration: timeout, onTimeout: () => new ToolTimeout(timeout) })).pipe(
            Effect.tapError((error) => (error instanceof ToolTimeout ? Fiber.interruptFork(fiber) : Effect.void)),
            Effect.onInterrupt(() => Fiber.interrupt(fiber))
          ))
      )

    const execute = (
      tool: Tool.Any,
      call: Tool.Call,
      checked?: Decoded,
      executed?: Executed
    ): Effect.Effect<Tool.Result> => {
      const decode = decoders.get(tool.name)!
      const errorResult = (full: string): Tool.Result => {
        // Redacted (it goes to the model, a third party: an error often quotes a connection string),
        // and before it is cut: a secret cut in two would no longer be recognized downstream.
        const redacted = secrets.redact(full)
        const message = redacted.length > MAX_ERROR_CHARS ? `${prefix(redacted, MAX_ERROR_CHARS)}…` : redacted
        return { callId: call.id, name: call.name, status: "error", output: `ERROR: ${message}`, reason: message }
      }
      const refused = refusedArgs.get(call)
      if (refused !== undefined) return Effect.succeed(errorResult(refused))
      // `ran` records that the handler was called (afterTool hooks see only calls that executed).
      const handled = Effect.suspend(() => {
        if (checked !== undefined) return ran(executed, tool.handler(checked.value))
        const decoded = decode.sync(call.args)
        if (decoded._tag === "Right") return ran(executed, tool.handler(decoded.right))
        // Invalid arguments (or a schema that needs effects): the effectful decoder says which.
        return Effect.flatMap(
          Effect.mapError(decode.effect(call.args), (error) => new ArgumentsInvalid(error)),
          (value) => ran(executed, tool.handler(value))
        )
      })
      const run = tool.timeout === undefined ? handled : withTimeout(handled, tool.timeout)
      return Effect.matchCauseEffect(run, {
        onSuccess: (value) =>
          Effect.succeed<Tool.Result>({ callId: call.id, name: call.name, status: "ok", output: stringifyOutput(value) }),
        onFailure: (cause) => {
          if (Cause.isInterruptedOnly(cause)) {
            // The run (or a sibling's failure) interrupting this fiber goes on as an interruption; a
            // handler that interrupted itself (or joined an interrupted fiber) failed: an error result.
            return Effect.withFiberRuntime((fiber) =>
              interruptedFromOutside(fiber) ?
                Effect.failCause(cause as Cause.Cause<never>) :
                Effect.succeed(errorResult("the tool was interrupted"))
            )
          }
          const failure = Cause.squash(cause)
          // A ParseError of the handler's own (it decoded a response, a row) is its failure like any other.
          if (failure instanceof ArgumentsInvalid) {
            return Effect.succeed(
              errorResult(`invalid arguments: ${ParseResult.TreeFormatter.formatErrorSync(failure.error)}`)
            )
          }
          if (failure instanceof ToolTimeout) {
            return Effect.succeed(errorResult(`timed out after ${Duration.format(failure.duration)}`))
          }
          return Effect.succeed(errorResult(describeFailure(failure)))
        }
      })
    }

    /** One tool call: audit, authorize, execute, audit the result. */
    const toolBody = Effect.fnUntraced(function*(
      state: RunState,
      call: Tool.Call,
      tool: Tool.Any | undefined,
      turn: number,
      attributes: CallAttributes | undefined,
      decoded: Decoded | undefined
    ) {
      const failuresBefore = state.auditFailures
      let startedNanos: bigint | undefined
      let auditWritten: boolean
      if (submit !== undefined && state.emit === undefined) {
        // The start time and the submitted `tool_call` entry in one step.
        const opened = yield* callOpened(state, call, turn, attributes !== undefined)
        startedNanos = opened.startedNanos
        auditWritten = opened.written
      } else {
        startedNanos = attributes === undefined ? undefined : yield* Clock.currentTimeNanos
        if (state.emit !== undefined) yield* state.emit(AgentEvent.tool_call({ turn, call }))
        auditWritten = !auditOn || (yield* guarding(state, call, toolCallEntry(call, turn)))
      }
      let result: Tool.Result
      if (tool === undefined) {
        const known = toolsByName.size === 0 ? "none" : [...toolsByName.keys()].join(", ")
        const message = `unknown tool ${JSON.stringify(call.name)} (available: ${known})`
        result = { callId: call.id, name: call.name, status: "error", output: `ERROR: ${message}`, reason: message }
      } else if (refusedArgs.has(call)) {
        // Never run (arguments refused, or cut off at max_tokens): no policy, hook or human is asked about it.
        result = yield* execute(tool, call)
      } else {
        let decision: Either.Either<void, Approval.ToolDenied> | undefined
        if (decidedNow) {
          decision = yield* decideNow(state, call, turn, auditWritten, attributes)
        } else if (governed || !auditWritten) {
          decision = attributes !== undefined ?
            yield* checked(state, call, turn, auditWritten, attributes) :
            yield* Effect.either(authorize(state, call, turn, auditWritten))
        }
        // A destructive call runs only once its entries are on record.
        if (
          call.destructive && auditOn && (decision === undefined || decision._tag === "Right") &&
          !(yield* entriesDurable(state, failuresBefore))
        ) {
          decision = Either.left(deny(call, "audit unavailable"))
        }
        if (decision !== undefined && decision._tag === "Left") {
          // Redacted: a hook's or a custom policy's reason goes to the model, a third party.
          const reason = secrets.redact(decision.left.message)
          result = { callId: call.id, name: call.name, status: "denied", output: `DENIED: ${reason}`, reason }
        } else {
          const executed: Executed | undefined = hooksOn ? { ran: false } : undefined
          result = yield* execute(tool, call, decoded, executed)
          if (executed?.ran === true) {
            // Frozen, as the call is: a hook observes the result; it cannot change what the model, the run's
            // result and the audit log get.
            const observed = Object.freeze(result)
            yield* userService(() => hooks.afterTool(call, observed), (cause) =>
              warn(`afterTool hook failed: ${describeFailure(Cause.squash(cause))}`, { tool: call.name })
            )
          }
        }
      }
      if (submit !== undefined) {
        // The duration metric and the submitted `tool_result` entry in one step.
        yield* callClosed(state, call, turn, result, startedNanos === undefined ? undefined : attributes!.tool, startedNanos)
      } else {
        if (startedNanos !== undefined) yield* toolTimed(attributes!.tool, result, startedNanos)
        if (auditOn) yield* note(state, toolResultEntry(call, turn, result))
      }
      if (state.emit !== undefined) yield* state.emit(AgentEvent.tool_result({ turn, result }))
      return toCallRecord(result, call, turn)
    })

    // Built field by field: an object spread here cost more than the tool call.
    const toCallRecord = (result: Tool.Result, call: Tool.Call, turn: number): Agent.ToolCallRecord =>
      result.reason === undefined ?
        {
          callId: result.callId,
          name: result.name,
          status: result.status,
          output: result.output,
          args: call.args,
          destructive: call.destructive,
          turn
        } :
        {
          callId: result.callId,
          name: result.name,
          status: result.status,
          output: result.output,
          reason: result.reason,
          args: call.args,
          destructive: call.destructive,
          turn
        }

    const runTool = (
      state: RunState,
      modelCall: Model.ToolCall,
      turn: number,
      cutOff = false
    ): Effect.Effect<Agent.ToolCallRecord> => {
      const tool = toolsByName.get(modelCall.name)
      // Frozen so no hook or approver can change what was approved before the tool runs. Arguments
      // that cannot be used are not passed on (not even to the audit log or an approver): the call
      // carries why, and its tool gives an error result.
      const problem = modelCall.invalidArgs ?? checkArgs(modelCall.args)
      let args = problem === undefined ? modelCall.args : Object.freeze({ refused_arguments: problem })
      let refusal = problem !== undefined ? `invalid arguments: ${problem}` : cutOff ? CUT_OFF : undefined
      // A governed call is decoded before it is checked: arguments that do not decode are refused (nobody
      // is asked about a call that cannot run), and the checks see the arguments as the tool will get them.
      let decoded: Decoded | undefined
      if (refusal === undefined && governed && tool !== undefined) {
        const decode = decoders.get(tool.name)!
        try {
          const result = decode.sync(modelCall.args)
          if (result._tag === "Right") {
            decoded = { value: result.right }
            args = canonicalArgs(decode.canonical, result.right) ?? args
          } else if (needsEffects(result.left.issue)) {
            // A schema that decodes with effects: decoded here, before the checks, all the same.
            return Effect.flatMap(Effect.either(Effect.catchAllDefect(decode.effect(modelCall.args), (defect) => Effect.fail(defect))), (effected) =>
              effected._tag === "Right" ?
                called(state, modelCall, tool, turn, canonicalArgs(decode.canonical, effected.right) ?? args, undefined, {
                  value: effected.right
                }) :
                called(state, modelCall, tool, turn, args, invalidArguments(effected.left), undefined))
          } else {
            refusal = invalidArguments(result.left)
          }
        } catch (error) {
          // A transformation of the user's that throws: the call's error result, as when the tool decodes.
          refusal = describeFailure(error)
        }
      }
      return called(state, modelCall, tool, turn, args, refusal, decoded)
    }

    /** {@link runTool} once the arguments are settled: the call made, refused or not, and run. */
    const called = (
      state: RunState,
      modelCall: Model.ToolCall,
      tool: Tool.Any | undefined,
      turn: number,
      args: unknown,
      refusal: string | undefined,
      decoded: Decoded | undefined
    ): Effect.Effect<Agent.ToolCallRecord> => {
      const call: Tool.Call = Object.freeze({
        id: modelCall.id,
        name: modelCall.name,
        args,
        destructive: tool?.destructive ?? false
      })
      if (refusal !== undefined) refusedArgs.set(call, refusal)

      if (tool !== undefined && !auditOn && !governed && !telemetryOn && state.emit === undefined) {
        // Nothing to audit, authorize, trace or emit.
        return Effect.map(execute(tool, call, decoded), (result) => toCallRecord(result, call, turn))
      }
      const attributes = telemetryOn ? callAttributes(call, turn) : undefined
      const body = toolBody(state, call, tool, turn, attributes, decoded)
      return attributes !== undefined ? traced("jeeves.tool", attributes, body, undefined, state.turnSpan) : body
    }

    const runTools = (state: RunState, calls: ReadonlyArray<Model.ToolCall>, turn: number, cutOff: boolean) =>
      calls.length === 1 ?
        Effect.map(runTool(state, calls[0]!, turn, cutOff), (result) => [result]) :
        // runTool turns every failure into a result except an interruption (the run's, or a
        // handler's own), so the calls can start in this fiber (see forEachConcurrent).
        forEachConcurrent(calls, (call) => runTool(state, call, turn, cutOff))

    // ---- the loop ---------------------------------------------------------

    /**
     * The run's end in one step: its `jeeves.session.duration_ms` and its
     * submitted `run_completed` entry (awaited where the log does not take
     * entries without waiting).
     */
    /** The `run_completed` entry: the run's summary, and `error` (redacted already) for a failed run. */
    const runCompleted = (
      state: RunState,
      elapsedMillis: number,
      interruptionReason: string | undefined,
      error?: string
    ): AuditLog.AppendInput => ({
      actor: "system",
      action: "run_completed",
      payload: {
        turns: state.turns,
        interrupted: interruptionReason !== undefined,
        interruption_reason: interruptionReason ?? null,
        ...(error === undefined ? {} : { error }),
        tokens_in: state.usage.inputTokens,
        tokens_out: state.usage.outputTokens,
        cost_usd: state.usage.costUsd,
        elapsed_ms: elapsedMillis
      }
    })

    const closeRun = (state: RunState, elapsedMillis: number, interruptionReason: string | undefined): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        const interrupted = interruptionReason !== undefined
        state.closed = true
        if (telemetryOn) {
          Metrics.unsafeRecord(Metrics.sessionDuration, elapsedMillis, {
            interrupted,
            turns: state.turns,
            user_id: metricUserAttribute(state)
          }, fiber.getFiberRef(FiberRef.currentMetricLabels))
        }
        if (!auditOn) return Effect.void
        const input = runCompleted(state, elapsedMillis, interruptionReason)
        return submit !== undefined && noteNow(fiber, state, input) ? Effect.void : Effect.asVoid(record(state, input))
      })

    /**
     * The prompt as its `run_started` entry holds it: the first
     * {@link PROMPT_AUDIT_CHARS} characters, of the redacted prompt when it is
     * longer (a secret cut in two would no longer be recognized by the log's
     * own redaction).
     */
    const promptForAudit = (prompt: string): string =>
      prompt.length > PROMPT_AUDIT_CHARS ? secrets.redact(prompt).slice(0, PROMPT_AUDIT_CHARS) : prompt

    /**
     * The `run_completed` entry of a run that failed or was interrupted (one
     * whose `run_started` was written): `interrupted: true`, the reason
     * `"error"` (with the failure, redacted, cut at 500 characters) or
     * `"cancelled"`, so no started run is left without an end in the log.
     * Submitted in the caller's step; for a failure through a log that
     * takes no entries without waiting, the append to await, else undefined.
     */
    const closeFailedRunNow = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      state: RunState,
      cause: Cause.Cause<unknown>
    ): Effect.Effect<boolean> | undefined => {
      // Not started, or closed already (its end recorded, the run stopped after that): nothing to add.
      if (state.startedMillis === undefined || state.closed === true) return undefined
      const cancelled = Cause.isInterruptedOnly(cause)
      const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
      if (telemetryOn) {
        // Every run is timed, the ones that failed or were cancelled too.
        Metrics.unsafeRecord(Metrics.sessionDuration, now - state.startedMillis, {
          interrupted: true,
          turns: state.turns,
          user_id: metricUserAttribute(state)
        }, fiber.getFiberRef(FiberRef.currentMetricLabels))
      }
      if (!auditOn) return undefined
      const input = cancelled ?
        runCompleted(state, now - state.startedMillis, "cancelled") :
        runCompleted(
          state,
          now - state.startedMillis,
          "error",
          secrets.redact(describeFailure(Cause.squash(cause))).slice(0, PROMPT_AUDIT_CHARS)
        )
      if (submit !== undefined && noteNow(fiber, state, input)) return undefined
      // An awaited log: a failure waits for its entry (as for its other entries); a cancelled run does
      // not, so its entry is written in the background, as the run (its RunContext still installed).
      if (!cancelled) return record(state, input)
      const runtime = Runtime.make({
        context: fiber.getFiberRef(FiberRef.currentContext),
        fiberRefs: fiber.getFiberRefs(),
        runtimeFlags: Runtime.defaultRuntimeFlags
      })
      const writing = Runtime.runFork(runtime)(Effect.timeout(record(state, input), CANCELLED_ENTRY_TIMEOUT))
      // The agent layer's close waits for it (before the log it writes to closes).
      background.add(writing)
      writing.addObserver(() => background.delete(writing))
      return undefined
    }

    const loop = Effect.fnUntraced(function*(prompt: string, state: RunState) {
      const context = state.context
      const clock = yield* Effect.clock
      const startedMillis = clock.unsafeCurrentTimeMillis()
      state.startedMillis = startedMillis
      if (auditOn) yield* note(state, {
        actor: "user",
        action: "run_started",
        payload: { prompt: promptForAudit(prompt), model: model.name, max_turns: maxTurns }
      })
      if (state.emit !== undefined) yield* state.emit(AgentEvent.started({ runId: context.runId, sessionId: context.sessionId, userId: context.userId }))
      const messages = memoryOn ? yield* seed(prompt, context) : unseeded(prompt)

      let interruptionReason: string | undefined
      while (true) {
        if (state.turns >= maxTurns) {
          interruptionReason = "max_turns_exceeded"
          break
        }
        const turn = state.turns + 1
        if (telemetryOn) yield* openTurn(state, turn)
        const request: Model.ModelRequest = { messages: [...messages], tools: toolDefinitions, maxTokens }
        const answer = yield* meteredCall(state, request, turn)
        if (answer._tag === "Blocked") {
          interruptionReason = `budget:${answer.reason}`
          if (telemetryOn) {
            yield* Metrics.record(Metrics.budgetExceeded, 1, { reason: answer.reason, user_id: metricUserAttribute(state) })
          }
          if (auditOn) yield* note(state, {
            actor: "system",
            action: "budget_blocked",
            payload: { reason: answer.reason, turn }
          })
          if (state.emit !== undefined) yield* state.emit(AgentEvent.budget_exceeded({ turn, reason: answer.reason }))
          break
        }
        state.turns = turn
        const response = answer.response
        state.usage = Model.addUsage(state.usage, response.usage)
        if (telemetryOn && answer.usageRecorded !== true) yield* recordUsage(state, response.usage)
        state.output = response.text
        state.stopReason = response.stopReason
        messages.push({ role: "assistant", content: response.text, toolCalls: response.toolCalls })
        if (response.toolCalls.length === 0) break
        // An answer cut off at max_tokens may end inside a tool call: none of its calls is run (each gets an
        // error result), so a side-effecting tool never runs on arguments the model did not finish.
        const results = yield* runTools(state, response.toolCalls, turn, response.stopReason === "max_tokens")
        for (const result of results) {
          state.toolCalls.push(result)
          messages.push({
            role: "tool",
            toolCallId: result.callId,
            toolName: result.name,
            content: result.output,
            isError: result.status !== "ok"
          })
        }
      }
      if (telemetryOn) yield* endTurnSpan(state, Exit.void)

      if (memoryOn) yield* remember(context, {
        sessionId: context.sessionId,
        input: prompt,
        output: state.output,
        toolCalls: state.toolCalls.map((call) => ({ name: call.name, args: call.args }))
      })
      const finishedMillis = clock.unsafeCurrentTimeMillis()
      const interrupted = interruptionReason !== undefined
      if (telemetryOn || auditOn) yield* closeRun(state, finishedMillis - startedMillis, interruptionReason)
      // The result reports audit failures and is an acknowledgement: every entry of the run is durable first.
      if (auditOn) yield* settleAudit(state)
      const result: Agent.RunResult = {
        runId: context.runId,
        sessionId: context.sessionId,
        userId: context.userId,
        output: state.output,
        turns: state.turns,
        tokensIn: state.usage.inputTokens,
        tokensOut: state.usage.outputTokens,
        costUsd: state.usage.costUsd,
        startedAt: new Date(startedMillis),
        finishedAt: new Date(finishedMillis),
        interrupted,
        interruptionReason,
        stopReason: state.stopReason,
        toolCalls: state.toolCalls,
        auditFailures: state.auditFailures
      }
      if (state.emit !== undefined) yield* state.emit(AgentEvent.completed({ result }))
      return result
    })

    const start = (
      prompt: string,
      options: Agent.RunOptions | undefined,
      emitEvent: Emit
    ): Effect.Effect<Agent.RunResult, Agent.AgentError> => {
      const requested = options?.userId ?? null
      const rule = requested === null ? undefined : RunContext.checkUserId(requested)
      if (rule !== undefined) return Effect.fail(RunContext.invalidUserId(rule, requested))
      // Frozen: the hooks, tools and approval handlers it is handed to cannot switch whose policy decides.
      const context: RunContext.RunContext = Object.freeze({
        userId: requested,
        // An empty or blank session id (an empty form field) is no session: a new one, as when none is given.
        sessionId: options?.sessionId === undefined || (typeof options.sessionId === "string" && options.sessionId.trim() === "") ?
          newId("sess") :
          options.sessionId,
        runId: newId("run"),
        metadata: options?.metadata ?? {}
      })
      const state: RunState = {
        context,
        emit: emitEvent,
        turns: 0,
        usage: Model.zeroUsage,
        output: "",
        // Set here, if only to undefined, so every run's state has one shape.
        stopReason: undefined,
        retriedUsage: undefined,
        callEstimate: undefined,
        auditFailures: 0,
        auditPending: 0,
        toolCalls: [],
        estimatedBytes: 0,
        estimatedMessages: 0
      }
      return runScoped(state, loop(prompt, state))
    }

    const runAttributes = (state: RunState) => ({
      session_id: sessionAttribute(state),
      run_id: state.context.runId,
      max_turns: maxTurns,
      model: modelTag,
      user_id: userAttribute(state)
    })

    /** Entries still being written in the background (see {@link closeFailedRunNow}). */
    const background = new Set<Fiber.RuntimeFiber<unknown, unknown>>()

    // The in-memory Memory and Budget: the user's state and ledger are in use (never evicted) while a run of
    // theirs is in flight.
    const holdRun = bothHolds(runHoldOf(memory), BudgetInternal.runHoldOf(budget))
    const nowOn = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
      Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()

    /**
     * The run under its RunContext and `jeeves.run` span: both installed in
     * one step and one FiberRef write, taken down in one on every exit, the
     * open turn span ended before the run span, and on a failure (not an
     * interruption) the run's submitted entries settled first. One masked
     * step instead of four nested wrappers; {@link runComposed} where the
     * one-step span does not apply.
     */
    const runScoped = (state: RunState, looped: Effect.Effect<Agent.RunResult, Agent.AgentError>) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.withFiberRuntime<Agent.RunResult, Agent.AgentError>((fiber) => {
          if (!canSetRefs(fiber)) return restore(runComposed(state, looped))
          let span: Tracer.Span | undefined
          if (telemetryOn) {
            const made = spanNow(fiber, "jeeves.run", spanOptions(runAttributes(state)))
            if (made === undefined) return restore(runComposed(state, looped))
            if (made !== "unsampled") span = made
          }
          const previousRun = fiber.getFiberRef(RunContext.ref)
          const previousContext = fiber.getFiberRef(FiberRef.currentContext)
          const before = refsOf(fiber)
          const installed = span === undefined ?
            setRefs(fiber, RunContext.ref, state.context) :
            setRefs(fiber, RunContext.ref, state.context, FiberRef.currentContext, withParent(previousContext, span))
          const release = holdRun?.(RunContext.userKey(state.context.userId), nowOn(fiber))
          const finish = (exit: Exit.Exit<Agent.RunResult, Agent.AgentError>) => {
            release?.(nowOn(fiber))
            if (span === undefined) resetRefs(fiber, before, installed, RunContext.ref, previousRun)
            else resetRefs(fiber, before, installed, RunContext.ref, previousRun, FiberRef.currentContext, previousContext)
            if (telemetryOn) endTurnSpanNow(state, exit, fiber)
            if (span !== undefined && span.status._tag !== "Ended") {
              const outcome = runOutcome(exit)
              if (outcome !== undefined) for (const key in outcome) setRedactedAttribute(span, key, outcome[key as keyof typeof outcome])
              endSpan(span, exit, fiber)
            }
          }
          return Effect.matchCauseEffect(restore(looped), {
            onFailure: (cause) => {
              const failed = () => {
                finish(Exit.failCause(cause))
                return Effect.failCause(cause)
              }
              const closing = closeFailedRunNow(fiber, state, cause)
              if (!auditOn || Cause.isInterruptedOnly(cause)) return failed()
              const settled = Effect.flatMap(settleAudit(state), failed)
              return closing === undefined ? settled : Effect.zipRight(closing, settled)
            },
            onSuccess: (result) => {
              finish(Exit.succeed(result))
              return Effect.succeed(result)
            }
          })
        })
      )

    /** {@link runScoped} as nested wrappers, for a fiber or tracer the one-step path does not apply to. */
    const runComposed = (state: RunState, looped: Effect.Effect<Agent.RunResult, Agent.AgentError>) => {
      // A failed run still has its submitted entries settled before the failure is reported.
      const settled = !auditOn && !telemetryOn ? looped : Effect.onExit(looped, (exit) =>
        Exit.isSuccess(exit) ? Effect.void : Effect.withFiberRuntime((fiber) => {
          const closing = closeFailedRunNow(fiber, state, exit.cause)
          if (!auditOn || Cause.isInterruptedOnly(exit.cause)) return Effect.void
          return closing === undefined ? settleAudit(state) : Effect.zipRight(closing, settleAudit(state))
        }))
      const held = holdRun === undefined ? settled : Effect.acquireUseRelease(
        Effect.clockWith((clock) =>
          Effect.sync(() => holdRun(RunContext.userKey(state.context.userId), clock.unsafeCurrentTimeMillis()))
        ),
        () => settled,
        (release) => Effect.clockWith((clock) => Effect.sync(() => release(clock.unsafeCurrentTimeMillis())))
      )
      const body = RunContext.locally(state.context)(held)
      if (!telemetryOn) return body
      return traced("jeeves.run", runAttributes(state), Effect.onExit(body, (exit) => endTurnSpan(state, exit)), runOutcome)
    }

    const service: Agent.Service & { readonly [drainKey]: Effect.Effect<void> } = {
      [drainKey]: Effect.suspend(() => Fiber.awaitAll([...background])).pipe(Effect.asVoid),
      run: (prompt, options) => start(prompt, options, undefined),
      stream: (prompt, options) =>
        Stream.unwrapScoped(
          Effect.gen(function*() {
            const queue = yield* Effect.acquireRelease(
              Queue.bounded<Take.Take<AgentEvent, Agent.AgentError>>(128),
              Queue.shutdown
            )
            yield* start(prompt, options, (event) => Queue.offer(queue, Take.of(event))).pipe(
              Effect.exit,
              Effect.flatMap((exit) =>
                Queue.offer(queue, Exit.isSuccess(exit) ? Take.end : Take.failCause(exit.cause))
              ),
              Effect.forkScoped
            )
            return Stream.flattenTake(Stream.fromQueue(queue))
          })
        )
    }
    return service
  })
