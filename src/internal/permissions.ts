import * as Effect from "effect/Effect"
import * as Permissions from "../Permissions.js"
import * as RunContext from "../RunContext.js"
import type * as Tool from "../Tool.js"

/** How the built-in policies decide without an effect: the decision for a user, made now. @internal */
export type SyncCheck = (userId: string | null, call: Tool.Call) => Permissions.Decision

const syncCheckKey = Symbol.for("jeevesagent/Permissions/syncCheck")

interface SyncMarker {
  /** The `check` the marker belongs to: a copy of the service with another `check` is not built-in any more. */
  readonly check: Permissions.Service["check"]
  readonly unsafe: SyncCheck
}

/** A service whose `check` is `Effect.succeed` of `unsafe`'s decision for the current user. */
const withSyncCheck = (check: Permissions.Service["check"], unsafe: SyncCheck): Permissions.Service =>
  ({ check, [syncCheckKey]: { check, unsafe } satisfies SyncMarker }) as Permissions.Service

/**
 * The decision of a built-in policy (standard, per-user over built-in
 * ones) made without an effect, for the agent to decide inside one step;
 * `undefined` for any other service, or a built-in one whose `check` was
 * replaced.
 *
 * @internal
 */
export const syncCheckOf = (service: Permissions.Service): SyncCheck | undefined => {
  const marker = (service as { readonly [syncCheckKey]?: SyncMarker })[syncCheckKey]
  return marker !== undefined && marker.check === service.check ? marker.unsafe : undefined
}

const MODES: ReadonlySet<string> = new Set<Permissions.Mode>(["default", "acceptEdits", "bypassPermissions"])

/**
 * A tool list as given, checked: an array of strings (a single name, from a
 * config file say, would otherwise become a set of its characters).
 */
const toolList = (option: string, list: unknown): ReadonlyArray<string> => {
  if (!Array.isArray(list) || list.some((name) => typeof name !== "string")) {
    throw new TypeError(`Permissions: ${option} must be an array of tool names, got ${typeof list === "string" ? JSON.stringify(list) : typeof list}`)
  }
  return list
}

/**
 * Refuses options with a key the policy does not know: from JavaScript or a
 * config file (the Python original's `denied_tools`, the facade's
 * `{ policies }` for `{ perUser }`), an ignored key would silently leave out
 * the rule it meant — a tool meant to be denied would run.
 *
 * @internal
 */
export const knownKeys = (where: string, options: unknown, keys: ReadonlyArray<string>): void => {
  if (typeof options !== "object" || options === null || Array.isArray(options) || options instanceof Map) {
    throw new TypeError(`${where}: the options must be a plain object, got ${options instanceof Map ? "a Map" : typeof options}`)
  }
  for (const key of Object.keys(options)) {
    if (!keys.includes(key)) {
      throw new TypeError(`${where}: unknown option ${JSON.stringify(key)} (the options are ${keys.join(", ")})`)
    }
  }
}

const STANDARD_KEYS = ["mode", "allowedTools", "deniedTools"]
const PER_USER_KEYS = ["policies", "anonymous", "default"]

/** @internal */
export const makeStandard = (options: Permissions.StandardOptions = {}): Permissions.Service => {
  knownKeys("Permissions", options, STANDARD_KEYS)
  const mode = options.mode ?? "default"
  if (!MODES.has(mode)) {
    throw new TypeError(`Permissions: unknown mode ${JSON.stringify(mode)} (use ${[...MODES].join(", ")})`)
  }
  const denied = new Set(toolList("deniedTools", options.deniedTools ?? []))
  // `null` means "no allow-list", like an absent one; an empty list denies everything.
  const allowed = options.allowedTools == null ? undefined : new Set(toolList("allowedTools", options.allowedTools))
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
  return withSyncCheck((call) => Effect.succeed(decide(call)), (_userId, call) => decide(call))
}

const isService = (policy: Permissions.Policy): policy is Permissions.Service =>
  typeof (policy as Partial<Permissions.Service>).check === "function"

const toService = (policy: Permissions.Policy): Permissions.Service =>
  isService(policy) ? policy : makeStandard(policy)

/** @internal */
export const makePerUser = (options: Permissions.PerUserOptions): Permissions.Service => {
  knownKeys("Permissions.perUser", options, PER_USER_KEYS)
  // A Map would have no entries to read: every user would get the default policy.
  if (typeof options.policies !== "object" || options.policies === null || options.policies instanceof Map) {
    throw new TypeError(`Permissions.perUser: policies must be a plain object of user id to policy`)
  }
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
  const check: Permissions.Service["check"] = (call) =>
    Effect.flatMap(
      RunContext.currentUserId,
      (userId) => (userId === null ? anonymous : routes.get(userId) ?? fallback).check(call)
    )
  // Built-in all the way down: the routed policies decide without effects too.
  const syncRoutes = new Map<string, SyncCheck>()
  for (const [userId, service] of routes) {
    const sync = syncCheckOf(service)
    if (sync === undefined) return { check }
    syncRoutes.set(userId, sync)
  }
  const syncFallback = syncCheckOf(fallback)
  const syncAnonymous = syncCheckOf(anonymous)
  if (syncFallback === undefined || syncAnonymous === undefined) return { check }
  return withSyncCheck(
    check,
    (userId, call) => (userId === null ? syncAnonymous : syncRoutes.get(userId) ?? syncFallback)(userId, call)
  )
}
