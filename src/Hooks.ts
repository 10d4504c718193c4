/**
 * Hooks around tool calls.
 *
 * `beforeTool` hooks run in order before the permission check and can only
 * deny: the first deny wins, and a hook that fails, throws or times out
 * denies too (fail closed). They can never approve a call the policy asks
 * about. `afterTool` hooks run only after a tool actually executed; their
 * failures are logged, never fatal. Each hook has its own timeout (default
 * 5 seconds).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Hooks } from "jeevesagent"
 *
 * const HooksLive = Hooks.layer({
 *   beforeTool: [
 *     (call, context) =>
 *       Effect.succeed(context.userId === null && call.destructive ? { deny: "sign in first" } : undefined)
 *   ],
 *   afterTool: [(call, result) => Effect.logInfo(`${call.name}: ${result.status}`)]
 * })
 *
 * // The same with async functions.
 * const HooksPromise = Hooks.layerPromise({
 *   beforeTool: [async (call, userId) => (userId === "mallory" ? { deny: `${call.name}: blocked user` } : undefined)]
 * })
 *
 * const NoHooks = Hooks.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { ToolDenied } from "./Approval.js"
import * as guard from "./internal/approvalGuard.js"
import * as internal from "./internal/hooks.js"
import type * as RunContext from "./RunContext.js"
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
  /**
   * Succeeds with nothing to let the call go on, fails with `ToolDenied` to
   * deny it. A success with a value denies too (fail closed): `{ deny }`
   * with its reason, anything else as a failed hook.
   */
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

/**
 * The reasons hooks deny with when they do not give their own.
 *
 * @since 0.1.0
 * @category constants
 */
export const reasons = {
  /** A hook answered `{ deny: "" }`. */
  denied: "denied by hook",
  /** A hook failed, threw, died or answered something unreadable. */
  failed: "hook failed",
  /** A hook did not finish within its timeout. */
  timedOut: "hook timed out"
} as const

/**
 * How long each hook may take: 5 seconds.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTimeout: Duration.Duration = Duration.seconds(5)

/**
 * A hook run before a tool call, after `destructive` was stamped and before
 * the permission check. Succeed with nothing to let the call go on, or with
 * `{ deny: reason }` to deny it. Any other answer, a failure or a defect
 * denies with `"hook failed"`.
 *
 * @since 0.1.0
 * @category models
 */
export type BeforeTool = (
  call: Tool.Call,
  context: RunContext.RunContext
) => Effect.Effect<void | undefined | { readonly deny: string }, unknown>

/**
 * A hook run after a tool executed (never after a denied call). Its failures
 * are logged and ignored.
 *
 * @since 0.1.0
 * @category models
 */
export type AfterTool = (
  call: Tool.Call,
  result: Tool.Result,
  context: RunContext.RunContext
) => Effect.Effect<unknown, unknown>

/**
 * {@link BeforeTool} as an async function of the call and the user id. The
 * last argument's `signal` aborts when the hook's timeout passes or the run
 * is interrupted.
 *
 * @since 0.1.0
 * @category models
 */
export type PromiseBeforeTool = (
  call: Tool.Call,
  userId: string | null,
  options: Tool.PromiseHandlerContext
) => PromiseLike<void | undefined | { readonly deny: string }> | void | undefined | { readonly deny: string }

/**
 * {@link AfterTool} as an async function.
 *
 * @since 0.1.0
 * @category models
 */
export type PromiseAfterTool = (
  call: Tool.Call,
  result: Tool.Result,
  userId: string | null,
  options: Tool.PromiseHandlerContext
) => unknown

/**
 * Options shared by {@link layer} and {@link layerPromise}.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommonOptions {
  /** How long each hook may take. Default {@link defaultTimeout}. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Redacts the warnings logged when a hook fails. The layers use the
   * `Secrets` service's `redact` when one is in their context,
   * `Secrets.redactPatterns` otherwise.
   */
  readonly redact?: ((text: string) => string) | undefined
}

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends CommonOptions {
  readonly beforeTool?: ReadonlyArray<BeforeTool> | undefined
  readonly afterTool?: ReadonlyArray<AfterTool> | undefined
}

/**
 * Options of {@link layerPromise}.
 *
 * @since 0.1.0
 * @category models
 */
export interface PromiseOptions extends CommonOptions {
  readonly beforeTool?: ReadonlyArray<PromiseBeforeTool> | undefined
  readonly afterTool?: ReadonlyArray<PromiseAfterTool> | undefined
}

/**
 * Builds the hooks service. With no hooks at all it is {@link none}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Service => internal.make(options)

/**
 * Builds the hooks service from async hooks.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePromise = (options: PromiseOptions): Service =>
  make({
    timeout: options.timeout,
    redact: options.redact,
    beforeTool: options.beforeTool?.map((hook): BeforeTool => (call, context) =>
      guard.fromPromise((signal) => hook(call, context.userId, { signal, context }))
    ),
    afterTool: options.afterTool?.map((hook): AfterTool => (call, result, context) =>
      guard.fromPromise((signal) => hook(call, result, context.userId, { signal, context }))
    )
  })

const layerWith = <O extends CommonOptions>(build: (options: O) => Service, options: O) =>
  Layer.effect(
    Hooks,
    Effect.map(guard.layerRedact, (redact) => build({ ...options, redact: options.redact ?? redact }))
  )

/**
 * The layer of {@link make}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Hooks> => layerWith(make, options)

/**
 * The layer of {@link makePromise}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPromise = (options: PromiseOptions): Layer.Layer<Hooks> => layerWith(makePromise, options)
