/**
 * The human approval gate for tool calls a permission policy answers with
 * `Ask`.
 *
 * Every outcome other than an explicit approval is a typed {@link ToolDenied}:
 * a declined request, no handler wired, a handler that fails, throws, dies or
 * answers something other than a boolean, and a handler that does not answer
 * in time (default 5 minutes). The gate fails closed. An `Ask` always reaches
 * the handler, whatever hooks are registered.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Approval } from "jeevesagent"
 *
 * // Ask a human (here: a rule) before any destructive call runs.
 * const ApprovalLive = Approval.layerPromise(
 *   async (call, userId) => userId === "alice" && call.name !== "drop_database",
 *   { timeout: "2 minutes" }
 * )
 *
 * // The same with an Effect handler.
 * const ApprovalEffect = Approval.layer((call) => Effect.succeed(call.name === "write_file"))
 *
 * // Every `Ask` is denied with "approval required; no approver".
 * const NoApprover = Approval.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as internal from "./internal/approval.js"
import * as guard from "./internal/approvalGuard.js"
import * as RunContext from "./RunContext.js"
import type * as Tool from "./Tool.js"

/**
 * The reasons the approval gate itself gives.
 *
 * @since 0.1.0
 * @category constants
 */
export const reasons = {
  declined: "approval declined",
  noApprover: "approval required; no approver",
  handlerFailed: "approval handler failed",
  timedOut: "approval timed out"
} as const

/**
 * A tool call was denied. `reason` is the approval outcome or the hook's or
 * policy's own reason; `policyReason` keeps the policy's reason when the
 * approval gate denied an `Ask`, so both are visible.
 *
 * @since 0.1.0
 * @category errors
 */
export class ToolDenied extends Schema.TaggedError<ToolDenied>("jeevesagent/ToolDenied")("ToolDenied", {
  tool: Schema.String,
  reason: Schema.String,
  policyReason: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return this.policyReason === undefined || this.policyReason === "" ?
      this.reason :
      `${this.reason} (${this.policyReason})`
  }
}

/**
 * The approval service: succeeds with nothing (or `true`) when the call
 * may run, fails with {@link ToolDenied} otherwise. A success with any other
 * value denies (fail closed): `false` as the human declining, anything else
 * as a failed handler — an `Effect<boolean>` compiles where the service's
 * `Effect<void>` is expected. It acts for the user of the current
 * `RunContext`; `policyReason` is the reason the policy asked.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly request: (call: Tool.Call, policyReason: string) => Effect.Effect<void, ToolDenied>
}

/**
 * The approval service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class ApprovalHandler extends Context.Tag("jeevesagent/ApprovalHandler")<ApprovalHandler, Service>() {}

/**
 * No approver: every request is denied with
 * `"approval required; no approver"`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({
  request: (call: Tool.Call, policyReason: string) =>
    Effect.fail(new ToolDenied({ tool: call.name, reason: reasons.noApprover, policyReason }))
})

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<ApprovalHandler> = Layer.succeed(ApprovalHandler, none)

/**
 * How long a handler has to answer before the call is denied with
 * `"approval timed out"`: 5 minutes.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTimeout: Duration.Duration = Duration.minutes(5)

/**
 * An approval handler: answers `true` to let the call run, `false` to
 * decline. `userId` is the user of the current run (`null` when anonymous).
 * Only `true` approves: a failure, a defect, a thrown exception or any
 * non-boolean answer is a deny with `"approval handler failed"`.
 *
 * @since 0.1.0
 * @category models
 */
export type Handler = (call: Tool.Call, userId: string | null) => Effect.Effect<boolean, unknown>

/**
 * An approval handler as an async function. Most handlers need only the call
 * and the user id; the last argument's `signal` aborts when the timeout
 * passes or the run is interrupted, so a pending human request can be
 * withdrawn.
 *
 * @since 0.1.0
 * @category models
 */
export type PromiseHandler = (
  call: Tool.Call,
  userId: string | null,
  options: Tool.PromiseHandlerContext
) => PromiseLike<boolean> | boolean

/**
 * Options of the approval gate.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long the handler may take. Default {@link defaultTimeout}. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Redacts the warning logged when a handler fails (its error and the
   * call's arguments). The layers use the `Secrets` service's `redact` when
   * one is in their context, `Secrets.redactPatterns` otherwise.
   */
  readonly redact?: ((text: string) => string) | undefined
}

/**
 * Builds the approval gate around an Effect handler.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (handler: Handler, options?: Options): Service => internal.make(handler, options)

/**
 * Builds the approval gate around an async handler.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePromise = (handler: PromiseHandler, options?: Options): Service =>
  make(
    (call, userId) =>
      Effect.flatMap(RunContext.current, (context) =>
        guard.fromPromise((signal) => handler(call, userId, { signal, context }))),
    options
  )

const layerWith = (build: (options: Options) => Service, options: Options | undefined) =>
  Layer.effect(
    ApprovalHandler,
    Effect.map(guard.layerRedact, (redact) => build({ ...options, redact: options?.redact ?? redact }))
  )

/**
 * The layer of {@link make}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (handler: Handler, options?: Options): Layer.Layer<ApprovalHandler> =>
  layerWith((resolved) => make(handler, resolved), options)

/**
 * The layer of {@link makePromise}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPromise = (handler: PromiseHandler, options?: Options): Layer.Layer<ApprovalHandler> =>
  layerWith((resolved) => makePromise(handler, resolved), options)

/**
 * The outcome of an approval request, for audit entries and metrics.
 * `cancelled`: the run was interrupted while the request was pending (its
 * `approval_decision` entry has the reason `run interrupted`, and the call
 * never runs).
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = "approved" | "declined" | "no_approver" | "failed" | "timed_out" | "cancelled"

/**
 * The outcome a denial of the approval gate stands for. A reason this module
 * does not give (a custom gate's own) counts as `"declined"`.
 *
 * @since 0.1.0
 * @category utils
 */
export const outcomeOf = (denied: ToolDenied): Exclude<Outcome, "approved" | "cancelled"> => {
  switch (denied.reason) {
    case reasons.noApprover:
      return "no_approver"
    case reasons.handlerFailed:
      return "failed"
    case reasons.timedOut:
      return "timed_out"
    default:
      return "declined"
  }
}
