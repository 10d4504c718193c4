/**
 * Which tool calls may run: allow, deny with a reason, or ask a human.
 *
 * The agent asks the {@link Permissions} service about every tool call after
 * the `beforeTool` hooks and before the tool runs. An `Ask` goes to the
 * approval handler (see `Approval`).
 *
 * @example
 * ```ts
 * import { Permissions } from "jeevesagent"
 *
 * const Everything = Permissions.allowAll
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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
