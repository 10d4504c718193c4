import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Approval from "../Approval.js"
import * as RunContext from "../RunContext.js"
import * as Secrets from "../Secrets.js"
import type * as Tool from "../Tool.js"
import { describeCause, type Guarded, guardNow, safeJson } from "./approvalGuard.js"
import { denial } from "./denied.js"

/** Arguments longer than this are cut in warnings, after redaction. */
const LOGGED_ARGS_CHARS = 1000

/** The gate's timeout; a `TypeError` naming the option and the value when it is not a positive duration. */
const decodeTimeout = (input: Duration.DurationInput): Duration.Duration => {
  const decoded = Duration.decodeUnknown(input)
  if (decoded._tag === "Some" && Duration.greaterThan(decoded.value, Duration.zero)) return decoded.value
  const shown = typeof input === "string" ? JSON.stringify(input) : String(input)
  throw new TypeError(
    `Approval: the timeout (approvalTimeout) must be a positive duration such as "30 seconds", got ${shown}`
  )
}

/** @internal */
export const make = (handler: Approval.Handler, options?: Approval.Options): Approval.Service => {
  const timeout = decodeTimeout(options?.timeout ?? Approval.defaultTimeout)
  const redact = options?.redact ?? Secrets.redactPatterns

  const denied = (call: Tool.Call, reason: string, policyReason: string) =>
    Effect.fail(denial({ tool: call.name, reason, policyReason }))

  const failed = (call: Tool.Call, policyReason: string, problem: string) =>
    Effect.zipRight(
      Effect.logWarning(`approval handler failed for tool ${call.name}; treating as deny: ${redact(problem)}`).pipe(
        Effect.annotateLogs({
          tool: call.name,
          call_id: call.id,
          args: redact(safeJson(call.args)).slice(0, LOGGED_ARGS_CHARS)
        })
      ),
      denied(call, Approval.reasons.handlerFailed, policyReason)
    )

  const answered = (call: Tool.Call, policyReason: string, outcome: Guarded<boolean>): Effect.Effect<void, Approval.ToolDenied> => {
    switch (outcome._tag) {
      case "Done":
        if (outcome.value === true) return Effect.void
        if (outcome.value === false) return denied(call, Approval.reasons.declined, policyReason)
        // Only an explicit `true` approves; anything else is a broken handler, and fails closed.
        return failed(call, policyReason, `it answered ${safeJson(outcome.value)}, not a boolean`)
      case "Failed":
        return failed(call, policyReason, describeCause(outcome.cause))
      case "TimedOut":
        return Effect.zipRight(
          Effect.logWarning(
            `approval handler did not answer for tool ${call.name} within ${Duration.format(timeout)}; ` +
              "treating as deny"
          ).pipe(Effect.annotateLogs({ tool: call.name, call_id: call.id })),
          denied(call, Approval.reasons.timedOut, policyReason)
        )
    }
  }

  return {
    // The run context read and the handler called in one step; a handler that answers at once costs no more.
    request: (call, policyReason) =>
      Effect.withFiberRuntime((fiber) => {
        const userId = fiber.getFiberRef(RunContext.ref).userId
        const guarded = guardNow(() => handler(call, userId), timeout)
        return Effect.isEffect(guarded) ?
          Effect.flatMap(guarded, (outcome) => answered(call, policyReason, outcome)) :
          answered(call, policyReason, guarded)
      })
  }
}
