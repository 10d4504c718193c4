/**
 * Tools the model can call, with Schema-typed parameters.
 *
 * Arguments from the model are decoded with the tool's Schema before the
 * handler runs. Arguments that do not decode become the tool result
 * `ERROR: invalid arguments: ...`, which the model can read and correct; a
 * handler that fails, throws or times out becomes `ERROR: ...`. Neither ends
 * the run.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { RunContext, Tool } from "jeevesagent"
 *
 * const whoami = Tool.make("whoami", {
 *   description: "Returns the id of the user this run is for",
 *   parameters: Schema.Struct({}),
 *   handler: () => Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
 * })
 *
 * const deleteFile = Tool.fromPromise("delete_file", {
 *   description: "Deletes a file",
 *   parameters: Schema.Struct({ path: Schema.String }),
 *   destructive: true,
 *   timeout: "10 seconds",
 *   handler: async ({ path }) => `deleted ${path}`
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as JSONSchema from "effect/JSONSchema"
import * as Schema from "effect/Schema"
import type * as Model from "./Model.js"
import * as RunContext from "./RunContext.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("jeevesagent/Tool")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A tool. `A` is the decoded type of its arguments.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tool<A = any> {
  readonly [TypeId]: TypeId
  readonly name: string
  readonly description: string
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly parameters: Schema.Schema<A, any, never>
  /** Destructive calls need approval under `Permissions.standard` in `default` mode. */
  readonly destructive: boolean
  /** The longest a call may run; `undefined` means no limit. */
  readonly timeout: Duration.Duration | undefined
  /** The definition the model sees. */
  readonly definition: Model.ToolDefinition
  readonly handler: (args: A) => Effect.Effect<unknown, unknown>
}

/**
 * Any tool.
 *
 * @since 0.1.0
 * @category models
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Any = Tool<any>

/**
 * Whether `u` is a {@link Tool}.
 *
 * @since 0.1.0
 * @category guards
 */
export const isTool = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u

/**
 * Options shared by {@link make} and {@link fromPromise}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<A, I> {
  readonly description: string
  readonly parameters: Schema.Schema<A, I, never>
  readonly destructive?: boolean | undefined
  /**
   * The longest a call may run: then it gets the error result `timed out
   * after ...` and the handler is interrupted. A handler that cannot be
   * interrupted yet (inside an uninterruptible region) goes on in the
   * background until it can be; the run does not wait for it.
   */
  readonly timeout?: Duration.DurationInput | undefined
}

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/

const definitionOf = (name: string, description: string, parameters: Schema.Schema.AnyNoContext): Model.ToolDefinition => {
  const { $schema: _ignored, ...inputSchema } = JSONSchema.make(parameters) as unknown as Record<string, unknown>
  return { name, description, inputSchema: inlineTopRef(inputSchema) }
}

/**
 * A schema whose top level is only a reference to one of its `$defs` (what
 * `JSONSchema.make` gives for a `Schema.Class` or a Struct with an
 * `identifier`) with that definition at the top level instead, the `$defs`
 * kept for the references inside it: model APIs require the top level to be
 * the object itself (`type: "object"`).
 */
const lookup = (defs: unknown, key: string | undefined): object | undefined => {
  if (key === undefined || defs === null || typeof defs !== "object" || !Object.hasOwn(defs, key)) return undefined
  const target = (defs as Record<string, unknown>)[key]
  return target !== null && typeof target === "object" ? target : undefined
}

const safelyDecoded = (text: string): string | undefined => {
  try {
    return decodeURIComponent(text)
  } catch {
    return undefined
  }
}

const inlineTopRef = (schema: Record<string, unknown>): Record<string, unknown> => {
  const { $defs: defs, $ref: ref, ...rest } = schema
  const prefix = "#/$defs/"
  if (typeof ref !== "string" || !ref.startsWith(prefix) || Object.keys(rest).length > 0) return schema
  const pointer = ref.slice(prefix.length).replace(/~1/g, "/").replace(/~0/g, "~")
  // effect writes the identifier as it is (a `%` in it is no escape); a percent-encoded one is tried after.
  const target = lookup(defs, pointer) ?? lookup(defs, safelyDecoded(pointer))
  if (target === undefined) return schema
  return { ...(target as Record<string, unknown>), $defs: defs }
}

/**
 * Makes a tool whose handler returns an Effect. The handler's result becomes
 * the tool result: a string as is, `undefined` and `null` as an empty text,
 * anything else as JSON.
 *
 * The name must match `^[a-zA-Z0-9_-]{1,64}$` (what model APIs accept); a
 * wrong name throws at construction, as it is a programming error.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A, I, E>(
  name: string,
  options: Options<A, I> & { readonly handler: (args: A) => Effect.Effect<unknown, E> }
): Tool<A> => {
  if (!TOOL_NAME.test(name)) {
    throw new TypeError(`Tool name ${JSON.stringify(name)} must match ${TOOL_NAME.source}`)
  }
  return {
    [TypeId]: TypeId,
    name,
    description: options.description,
    parameters: options.parameters,
    destructive: options.destructive ?? false,
    timeout: options.timeout === undefined ? undefined : Duration.decode(options.timeout),
    definition: definitionOf(name, options.description, options.parameters),
    handler: options.handler
  }
}

/**
 * What a promise handler receives besides its arguments: the run context and
 * an `AbortSignal` that fires when the call is interrupted or times out.
 *
 * @since 0.1.0
 * @category models
 */
export interface PromiseHandlerContext {
  readonly signal: AbortSignal
  readonly context: RunContext.RunContext
}

/**
 * Makes a tool from an async function.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromPromise = <A, I>(
  name: string,
  options: Options<A, I> & {
    readonly handler: (args: A, context: PromiseHandlerContext) => Promise<unknown> | unknown
  }
): Tool<A> =>
  make(name, {
    description: options.description,
    parameters: options.parameters,
    destructive: options.destructive,
    timeout: options.timeout,
    handler: (args: A) =>
      Effect.flatMap(RunContext.current, (context) =>
        Effect.tryPromise({
          try: (signal) => Promise.resolve(options.handler(args, { signal, context })),
          catch: (error) => error
        }))
  })

/**
 * A tool call on its way through the governance pipeline: the model's call
 * with `destructive` stamped from the tool's definition (an unknown tool is
 * never destructive — it cannot run anyway).
 *
 * @since 0.1.0
 * @category models
 */
export interface Call {
  readonly id: string
  readonly name: string
  readonly args: unknown
  readonly destructive: boolean
}

/**
 * The outcome of one tool call, as the model sees it and as it is recorded in
 * `RunResult.toolCalls`.
 *
 * - `ok`: the tool ran and returned `output`.
 * - `error`: the arguments did not decode, the tool failed, threw or timed
 *   out; `output` is `ERROR: ...`.
 * - `denied`: a hook, the permission policy or the approval gate denied it;
 *   the tool never ran; `output` is `DENIED: <reason>`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Result {
  readonly callId: string
  readonly name: string
  readonly status: "ok" | "error" | "denied"
  readonly output: string
  /** The denial reason or error message. */
  readonly reason?: string | undefined
}
