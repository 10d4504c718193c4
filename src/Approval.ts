/**
 * The human approval gate for tool calls a permission policy answers with
 * `Ask`.
 *
 * Every outcome other than an explicit approval is a typed {@link ToolDenied}:
 * a declined request, no handler wired, a handler that fails or throws, and a
 * handler that does not answer in time. The gate fails closed.
 *
 * @example
 * ```ts
 * import { Approval } from "jeevesagent"
 *
 * // Every `Ask` is denied with "approval required; no approver".
 * const NoApprover = Approval.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
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
    return this.policyReason === undefined ? this.reason : `${this.reason} (${this.policyReason})`
  }
}

/**
 * The approval service: succeeds when the call may run, fails with
 * {@link ToolDenied} otherwise. It acts for the user of the current
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
