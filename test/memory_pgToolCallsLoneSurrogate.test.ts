/**
 * Tool-call arguments holding a lone UTF-16 surrogate (a model's answer or a
 * tool argument cut in the middle of an emoji: "\ud83d") are stored on every
 * backend with the lone surrogate as U+FFFD, as fact `sources` are: Postgres's
 * `jsonb` refuses the `\ud83d` escape, which would fail `remember` — and an
 * agent run, which remembers its episode after the model calls, at its end.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Agent, Memory, Model, RunContext, Tool } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const CUT = "party \ud83d" // the first half of 🎉 (U+1F389), its second half cut off

const as = (userId: string) => RunContext.withUser(userId, { sessionId: "s1" })

describe("a lone surrogate in tool-call arguments and fact sources", () => {
  it.effect("remember and appendFact succeed on every backend (Postgres: jsonb refuses the \\ud83d escape)", () =>
    Effect.gen(function*() {
      for (const backend of backends) {
        const result = yield* Effect.gen(function*() {
          const m = yield* Memory.Memory
          yield* m.remember({ input: "plan it", output: "done", toolCalls: [{ name: "note", args: { text: CUT } }] })
          yield* m.appendFact({ subject: "user", predicate: "plans", object: "a party", sources: [CUT] })
          const data = yield* m.export
          return {
            args: data.episodes.map((e) => e.toolCalls.map((c) => (c.args as { text: string }).text)),
            sources: data.facts.map((f) => f.sources)
          }
        }).pipe(as("alice"), Effect.provide(backend.fresh()), Effect.either)
        assert.strictEqual(result._tag, "Right", `${backend.name}: ${result._tag === "Left" ? String(result.left) : ""}`)
        if (result._tag !== "Right") continue
        const stored = CUT.replace("\ud83d", "\ufffd")
        assert.deepStrictEqual(result.right, { args: [[stored]], sources: [[stored]] }, backend.name)
      }
    }))

  it.effect("an agent run whose tool call carries a lone surrogate completes on every backend", () =>
    Effect.gen(function*() {
      const note = Tool.make("note", {
        description: "takes a note",
        parameters: Schema.Struct({ text: Schema.String }),
        handler: () => Effect.succeed("noted")
      })
      for (const backend of backends) {
        const MemoryLive = backend.fresh()
        const AgentLive = Agent.layer({ tools: [note] }).pipe(
          Layer.provide(Model.layerScripted((request) =>
            request.messages.at(-1)!.role === "tool" ?
              { text: "noted it" } :
              { toolCalls: [{ name: "note", args: { text: CUT } }] }
          )),
          Layer.provide(MemoryLive),
          Layer.provide(Agent.layerDefaults)
        )
        const exit = yield* Effect.exit(
          Effect.flatMap(Agent.Agent, (agent) => agent.run("note my party", { userId: "alice", sessionId: "s1" })).pipe(
            Effect.provide(AgentLive)
          )
        )
        assert.strictEqual(exit._tag, "Success", `${backend.name}: ${String(exit)}`)
      }
    }))
})
