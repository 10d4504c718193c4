/**
 * A session id holding NUL (U+0000). PgMemory stores such text as U+FFFD
 * (README: "instead of failing the run at its end") and maps the session id
 * it reads by (`sessionMessages`, `forget`) the same way — but `recall`'s
 * `excludeSessionId` goes to Postgres as is, which refuses NUL in text. The
 * agent seeds every run with `recall(prompt, { excludeSessionId: sessionId })`,
 * so on Postgres every run in such a session fails before the model is
 * called; in memory and SQLite it succeeds.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Agent, Memory, Model, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const SESSION = "chat\u0000tab-1"

/** Two runs of one user in the NUL session; what the second run's model call saw, or how the runs failed. */
const script = (fresh: () => Layer.Layer<Memory.Memory, unknown>) =>
  Effect.gen(function*() {
    const seen: Array<ReadonlyArray<string>> = []
    const MemoryLive = fresh()
    const AgentLive = Agent.layer().pipe(
      Layer.provide(Model.layerScripted((request) => {
        seen.push(request.messages.map((m) => `${m.role}:${m.content}`))
        return { text: `answer ${seen.length}` }
      })),
      Layer.provide(MemoryLive),
      Layer.provide(Agent.layerDefaults)
    )
    const exit = yield* Effect.exit(Effect.gen(function*() {
      const agent = yield* Agent.Agent
      yield* agent.run("my favourite colour is teal", { userId: "alice", sessionId: SESSION })
      yield* agent.run("what is my favourite colour?", { userId: "alice", sessionId: SESSION })
    }).pipe(Effect.provide(Layer.merge(AgentLive, MemoryLive))))
    return Exit.isSuccess(exit) ? { ok: true, secondRun: seen[1] } : { ok: false, failure: String(Exit.causeOption(exit)) }
  })

describe("a session id holding NUL", () => {
  it.live("runs in it succeed and see their history on every backend (Postgres: recall's excludeSessionId keeps the NUL)", () =>
    Effect.gen(function*() {
      const results: Record<string, unknown> = {}
      for (const backend of backends) results[backend.name] = yield* script(backend.fresh)
      const expected = {
        ok: true,
        secondRun: ["user:my favourite colour is teal", "assistant:answer 1", "user:what is my favourite colour?"]
      }
      for (const backend of backends) assert.deepStrictEqual(results[backend.name], expected, backend.name)
    }).pipe(RunContext.withUser(null)))

  it.live("recall with excludeSessionId holding NUL answers on every backend as in memory", () =>
    Effect.gen(function*() {
      const results: Record<string, unknown> = {}
      for (const backend of backends) {
        results[backend.name] = yield* Effect.gen(function*() {
          const m = yield* Memory.Memory
          yield* m.remember({ sessionId: "other", input: "teal is nice", output: "ok" })
          yield* m.remember({ sessionId: SESSION, input: "teal again", output: "ok" })
          return yield* Effect.either(m.recall("teal", { excludeSessionId: SESSION }).pipe(
            Effect.map((episodes) => episodes.map((e) => e.input)),
            Effect.mapError((error) => error.message)
          ))
        }).pipe(RunContext.withUser("alice"), Effect.provide(backend.fresh()))
      }
      for (const backend of backends) {
        assert.deepStrictEqual(results[backend.name], results.memory, `${backend.name} agrees with memory`)
      }
    }))
})
