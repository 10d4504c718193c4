/**
 * An agent over a scripted model and some tools, for tests of tool calls.
 */
import { Effect, Layer, Schema } from "effect"
import { Agent, Model, Tool } from "jeevesagent"

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

/**
 * A tool with one string parameter `field` that records each value it ran
 * with in `ran` (so a test sees whether a denied call's body ran).
 */
export const recordingTool = (
  name: string,
  field: string,
  ran: Array<string>,
  options?: { readonly destructive?: boolean }
) =>
  Tool.make(name, {
    description: `${name} (records what it ran with)`,
    parameters: Schema.Struct({ [field]: Schema.String }),
    destructive: options?.destructive ?? false,
    handler: (args) => Effect.sync(() => ran.push(args[field]!)).pipe(Effect.as(`${name} ran`))
  })

/** The destructive `delete_file(path)` of the governance tests, recording the paths it deleted. */
export const deleteFile = (deleted: Array<string>) => recordingTool("delete_file", "path", deleted, { destructive: true })

/** `send_email(to)`, not destructive, recording who it sent to. */
export const sendEmail = (sent: Array<string>) => recordingTool("send_email", "to", sent)

