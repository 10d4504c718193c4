/**
 * Events emitted by `Agent.stream`, in order: `started`, then per turn an
 * optional `budget_warning`, the model's `model_chunk`s, a `tool_call` for
 * each call and a `tool_result` for each as it completes (the calls of a
 * turn run concurrently), an optional `budget_exceeded`,
 * and finally `completed` with the run's result.
 *
 * @example
 * ```ts
 * import { AgentEvent } from "jeevesagent"
 *
 * const describe = AgentEvent.AgentEvent.$match({
 *   started: (e) => `run ${e.runId} started`,
 *   budget_warning: (e) => `warning: ${e.reason}`,
 *   model_chunk: (e) => (e.part._tag === "TextDelta" ? e.part.text : ""),
 *   tool_call: (e) => `calling ${e.call.name}`,
 *   tool_result: (e) => `${e.result.name}: ${e.result.status}`,
 *   budget_exceeded: (e) => `blocked: ${e.reason}`,
 *   completed: (e) => `done: ${e.result.output}`
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type { RunResult } from "./Agent.js"
import type * as Model from "./Model.js"
import type * as Tool from "./Tool.js"

/**
 * An agent event.
 *
 * @since 0.1.0
 * @category models
 */
export type AgentEvent = Data.TaggedEnum<{
  started: { readonly runId: string; readonly sessionId: string; readonly userId: string | null }
  budget_warning: { readonly turn: number; readonly reason: string }
  model_chunk: {
    readonly turn: number
    readonly part: Exclude<Model.StreamPart, { readonly _tag: "Finish" | "Usage" }>
  }
  tool_call: { readonly turn: number; readonly call: Tool.Call }
  tool_result: { readonly turn: number; readonly result: Tool.Result }
  budget_exceeded: { readonly turn: number; readonly reason: string }
  completed: { readonly result: RunResult }
}>

/**
 * Constructors, guards and matchers of {@link AgentEvent}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const AgentEvent = Data.taggedEnum<AgentEvent>()

/**
 * The `_tag` of an event.
 *
 * @since 0.1.0
 * @category models
 */
export type Kind = AgentEvent["_tag"]
