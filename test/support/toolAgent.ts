/**
 * An agent over a scripted model and some tools, for tests of tool calls.
 */
import { Effect, Layer } from "effect"
import { Agent, Model, type Tool } from "jeevesagent"

/** Asks for `calls`, then answers with every tool result it got. */
export const callThenSummarize = (calls: NonNullable<Model.ScriptedTurn["toolCalls"]>): Model.Script => (request) =>
  request.messages.at(-1)!.role !== "tool" ?
    { toolCalls: calls } :
    { text: request.messages.filter((m) => m.role === "tool").map((m) => m.content).join(" | ") }

/** The agent over `script` and `tools`, with `services` over the defaults. */
export const agentWith = (script: Model.Script, tools: ReadonlyArray<Tool.Any>, ...services: Array<Layer.Layer<never>>) =>
  Agent.layer({ tools }).pipe(
    Layer.provide(Model.layerScripted(script)),
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, ...(services as []))),
    Layer.orDie
  )

/** One run as alice. */
export const run = Effect.flatMap(Agent.Agent, (agent) => agent.run("x", { userId: "alice" }))
