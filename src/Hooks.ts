/**
 * Hooks around tool calls.
 *
 * `beforeTool` hooks run in order before the permission check and can only
 * deny: the first deny wins, and a hook that fails, throws or times out
 * denies too (fail closed). They can never approve a call the policy asks
 * about. `afterTool` hooks run only after a tool actually executed; their
 * failures are logged, never fatal.
 *
 * @example
 * ```ts
 * import { Hooks } from "jeevesagent"
 *
 * const NoHooks = Hooks.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { ToolDenied } from "./Approval.js"
import type * as Tool from "./Tool.js"

/**
 * The hooks service. Both methods act for the user of the current
 * `RunContext`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** True when no hook is registered; the agent then skips both steps. */
  readonly isEmpty: boolean
  readonly beforeTool: (call: Tool.Call) => Effect.Effect<void, ToolDenied>
  readonly afterTool: (call: Tool.Call, result: Tool.Result) => Effect.Effect<void>
}

/**
 * The hooks service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Hooks extends Context.Tag("jeevesagent/Hooks")<Hooks, Service>() {}

/**
 * No hooks.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({
  isEmpty: true,
  beforeTool: () => Effect.void,
  afterTool: () => Effect.void
})

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<Hooks> = Layer.succeed(Hooks, none)
