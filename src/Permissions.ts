/**
 * Which tool calls may run: allow, deny with a reason, or ask a human.
 *
 * The agent asks the {@link Permissions} service about every tool call after
 * the `beforeTool` hooks and before the tool runs. An `Ask` goes to the
 * approval handler (see `Approval`).
 *
 * {@link standard} decides in a fixed order: the deny-list, then the
 * allow-list (in every mode; an empty list denies everything), then
 * `bypassPermissions` allows, then a destructive call asks unless the mode is
 * `acceptEdits`, and everything else is allowed. {@link perUser} picks a
 * policy by the user of the current `RunContext`.
 *
 * @example
 * ```ts
 * import { Permissions } from "jeevesagent"
 *
 * const PermissionsLive = Permissions.perUser({
 *   policies: {
 *     admin_alice: { mode: "bypassPermissions" },
 *     service_account: { allowedTools: ["read", "search"] }
 *   },
 *   // unknown users, and anonymous runs unless `anonymous` is given
 *   default: { mode: "default", deniedTools: ["delete_account", "send_email"] }
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/permissions.js"
import type * as Tool from "./Tool.js"

/**
 * `default` asks before destructive calls; `acceptEdits` lets destructive
 * calls run; `bypassPermissions` allows everything the lists allow.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "default" | "acceptEdits" | "bypassPermissions"

/**
 * A permission decision.
 *
 * @since 0.1.0
 * @category models
 */
export type Decision = Data.TaggedEnum<{
  Allow: {}
  Deny: { readonly reason: string }
  Ask: { readonly reason: string }
}>

/**
 * Constructors and matchers of {@link Decision}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Decision = Data.taggedEnum<Decision>()

/**
 * The shared `Allow` decision.
 *
 * @since 0.1.0
 * @category constants
 */
export const allow: Decision = Decision.Allow()

/**
 * The permissions service. `check` decides for the user of the current
 * `RunContext`. A check that dies is treated as a deny by the agent.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly check: (call: Tool.Call) => Effect.Effect<Decision>
}

/**
 * The permissions service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Permissions extends Context.Tag("jeevesagent/Permissions")<Permissions, Service>() {}

/**
 * Allows every call. The agent skips the permission step when it sees it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const allowAllService: Service = Object.freeze({ check: () => Effect.succeed(allow) })

/**
 * The layer of {@link allowAllService}.
 *
 * @since 0.1.0
 * @category layers
 */
export const allowAll: Layer.Layer<Permissions> = Layer.succeed(Permissions, allowAllService)

/**
 * Options of {@link standard}. Tool names match exactly.
 *
 * @since 0.1.0
 * @category models
 */
export interface StandardOptions {
  /** Default `"default"`. */
  readonly mode?: Mode | undefined
  /**
   * Only these tools may run, in every mode. Absent (or `null`) means no
   * allow-list; an empty list denies everything.
   */
  readonly allowedTools?: ReadonlyArray<string> | null | undefined
  /** These tools never run; checked first. */
  readonly deniedTools?: ReadonlyArray<string> | undefined
}

/**
 * The standard policy as a service. Decides, in order:
 *
 * 1. tool in `deniedTools` → `Deny("<tool>: denied by policy")`;
 * 2. `allowedTools` given and the tool not in it →
 *    `Deny("<tool>: not in allow-list")`;
 * 3. mode `bypassPermissions` → `Allow`;
 * 4. destructive call and mode not `acceptEdits` →
 *    `Ask("<tool>: destructive call requires approval")`;
 * 5. otherwise `Allow`.
 *
 * An unknown `mode`, or an option key it does not know (the Python
 * original's `denied_tools`, say, which would otherwise be ignored and let
 * the tool run), throws a `TypeError` (a programming error).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStandard = (options?: StandardOptions): Service => internal.makeStandard(options)

/**
 * The layer of {@link makeStandard}.
 *
 * @since 0.1.0
 * @category layers
 */
export const standard = (options?: StandardOptions): Layer.Layer<Permissions> =>
  Layer.succeed(Permissions, makeStandard(options))

/**
 * A policy of {@link perUser}: a ready service, or the options of a
 * {@link standard} policy.
 *
 * @since 0.1.0
 * @category models
 */
export type Policy = Service | StandardOptions

/**
 * Options of {@link perUser}.
 *
 * @since 0.1.0
 * @category models
 */
export interface PerUserOptions {
  /**
   * Policies by user id. Every key must be a valid user id (or
   * `RunContext.ANONYMOUS_USER`, which maps anonymous runs); anything else
   * throws a `TypeError`, as no run could ever match it.
   */
  readonly policies: Readonly<Record<string, Policy>>
  /** The policy of anonymous runs; `default` when absent. */
  readonly anonymous?: Policy | undefined
  /** The policy of every user without an entry. */
  readonly default: Policy
}

/**
 * Routes each check to the policy of the user in the current `RunContext`:
 * the user's entry, the anonymous policy for anonymous runs, otherwise
 * `default`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePerUser = (options: PerUserOptions): Service => internal.makePerUser(options)

/**
 * The layer of {@link makePerUser}.
 *
 * @since 0.1.0
 * @category layers
 */
export const perUser = (options: PerUserOptions): Layer.Layer<Permissions> =>
  Layer.succeed(Permissions, makePerUser(options))
