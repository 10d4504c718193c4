import * as Effect from "effect/Effect"
import * as Permissions from "../Permissions.js"
import * as RunContext from "../RunContext.js"
import type * as Tool from "../Tool.js"

const MODES: ReadonlySet<string> = new Set<Permissions.Mode>(["default", "acceptEdits", "bypassPermissions"])

/** @internal */
export const makeStandard = (options: Permissions.StandardOptions = {}): Permissions.Service => {
  const mode = options.mode ?? "default"
  if (!MODES.has(mode)) {
    throw new TypeError(`Permissions: unknown mode ${JSON.stringify(mode)} (use ${[...MODES].join(", ")})`)
  }
  const denied = new Set(options.deniedTools ?? [])
  // `null` means "no allow-list", like an absent one; an empty list denies everything.
  const allowed = options.allowedTools == null ? undefined : new Set(options.allowedTools)
  const decide = (call: Tool.Call): Permissions.Decision => {
    if (denied.has(call.name)) return Permissions.Decision.Deny({ reason: `${call.name}: denied by policy` })
    if (allowed !== undefined && !allowed.has(call.name)) {
      return Permissions.Decision.Deny({ reason: `${call.name}: not in allow-list` })
    }
    if (mode === "bypassPermissions") return Permissions.allow
    if (call.destructive && mode !== "acceptEdits") {
      return Permissions.Decision.Ask({ reason: `${call.name}: destructive call requires approval` })
    }
    return Permissions.allow
  }
  return { check: (call) => Effect.succeed(decide(call)) }
}

const isService = (policy: Permissions.Policy): policy is Permissions.Service =>
  typeof (policy as Partial<Permissions.Service>).check === "function"

const toService = (policy: Permissions.Policy): Permissions.Service =>
  isService(policy) ? policy : makeStandard(policy)

/** @internal */
export const makePerUser = (options: Permissions.PerUserOptions): Permissions.Service => {
  // A Map, not the record itself: a user named "constructor" must not reach Object.prototype.
  const routes = new Map<string, Permissions.Service>()
  for (const [userId, policy] of Object.entries(options.policies)) {
    const rule = userId === RunContext.ANONYMOUS_USER ? undefined : RunContext.checkUserId(userId)
    if (rule !== undefined) {
      // An entry no valid user id can ever match is a configuration mistake, not a policy.
      throw new TypeError(`Permissions.perUser: policy key ${JSON.stringify(userId)} is not a valid user id (${rule})`)
    }
    routes.set(userId, toService(policy))
  }
  if (options.anonymous !== undefined && routes.has(RunContext.ANONYMOUS_USER)) {
    throw new TypeError(
      `Permissions.perUser: the anonymous policy is given twice (as \`anonymous\` and as ${RunContext.ANONYMOUS_USER})`
    )
  }
  const fallback = toService(options.default)
  const anonymous = options.anonymous !== undefined ?
    toService(options.anonymous) :
    routes.get(RunContext.ANONYMOUS_USER) ?? fallback
  return {
    check: (call) =>
      Effect.flatMap(
        RunContext.currentUserId,
        (userId) => (userId === null ? anonymous : routes.get(userId) ?? fallback).check(call)
      )
  }
}
