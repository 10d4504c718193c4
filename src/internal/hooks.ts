import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { ToolDenied } from "../Approval.js"
import * as Hooks from "../Hooks.js"
import * as RunContext from "../RunContext.js"
import * as Secrets from "../Secrets.js"
import type * as Tool from "../Tool.js"
import { describeCause, guard, type Guarded, safeJson } from "./approvalGuard.js"
import { denial } from "./denied.js"

/** @internal */
export const make = (options: Hooks.Options): Hooks.Service => {
  const before = [...(options.beforeTool ?? [])]
  const after = [...(options.afterTool ?? [])]
  if (before.length === 0 && after.length === 0) return Hooks.none
  const timeout = Duration.decode(options.timeout ?? Hooks.defaultTimeout)
  const redact = options.redact ?? Secrets.redactPatterns

  const warn = (call: Tool.Call, message: string) =>
    Effect.logWarning(redact(message)).pipe(Effect.annotateLogs({ tool: call.name, call_id: call.id }))

  const denyWith = (call: Tool.Call, reason: string, warning?: string): Effect.Effect<never, ToolDenied> => {
    const denied = Effect.fail(denial({ tool: call.name, reason }))
    return warning === undefined ? denied : Effect.zipRight(warn(call, warning), denied)
  }

  const verdict = (call: Tool.Call, hook: number, outcome: Guarded<unknown>): Effect.Effect<void, ToolDenied> => {
    switch (outcome._tag) {
      case "Done": {
        const value = outcome.value
        if (value === undefined || value === null) return Effect.void
        if (typeof value === "object" && "deny" in value && typeof value.deny === "string") {
          return denyWith(call, value.deny === "" ? Hooks.reasons.denied : value.deny)
        }
        // A hook can only deny; an answer we cannot read must not let the call through.
        return denyWith(
          call,
          Hooks.reasons.failed,
          `beforeTool hook #${hook} answered ${safeJson(value)}, not nothing or { deny }; treating as deny`
        )
      }
      case "Failed":
        return denyWith(
          call,
          Hooks.reasons.failed,
          `beforeTool hook #${hook} failed; treating as deny: ${describeCause(outcome.cause)}`
        )
      case "TimedOut":
        return denyWith(
          call,
          Hooks.reasons.timedOut,
          `beforeTool hook #${hook} did not finish within ${Duration.format(timeout)}; treating as deny`
        )
    }
  }

  return {
    isEmpty: false,
    beforeTool: (call) =>
      before.length === 0 ? Effect.void : Effect.flatMap(RunContext.current, (context) =>
        Effect.forEach(
          before,
          (hook, index) =>
            Effect.flatMap(guard(() => hook(call, context), timeout), (outcome) => verdict(call, index + 1, outcome)),
          { discard: true }
        )),
    afterTool: (call, result) =>
      after.length === 0 ? Effect.void : Effect.flatMap(RunContext.current, (context) =>
        Effect.forEach(
          after,
          (hook, index) =>
            Effect.flatMap(guard(() => hook(call, result, context), timeout), (outcome) => {
              switch (outcome._tag) {
                case "Done":
                  return Effect.void
                case "Failed":
                  return warn(call, `afterTool hook #${index + 1} failed: ${describeCause(outcome.cause)}`)
                case "TimedOut":
                  return warn(call, `afterTool hook #${index + 1} did not finish within ${Duration.format(timeout)}`)
              }
            }),
          { discard: true }
        ))
  }
}
