/**
 * Long text in the columns the databases index with the user id: a session
 * id, a block name, a fact's subject or predicate. Postgres cannot index an
 * entry over 2 704 bytes, so every backend refuses those over 256
 * characters up front with the same MemoryError (an agent run in such a
 * session fails at its start, not after its model calls), and stores those
 * of 256 characters of the widest UTF-8 (3 bytes each, with a user id as
 * long) on every backend.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Layer } from "effect"
import { Agent, Memory, Model, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

/** Deterministic, poorly compressible printable text. */
const noise = (length: number, seed: number) => {
  let state = seed
  return Array.from({ length }, () => {
    state = (state * 1103515245 + 12345) % 2147483648
    return String.fromCharCode(33 + (state % 90))
  }).join("")
}

const LONG = 4000

const outcomes = Effect.gen(function*() {
  const m = yield* Memory.Memory
  const outcome = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
    Effect.match(effect, {
      onFailure: (error) => `fails: ${error._tag}${"method" in error ? ` ${String(error.method)}` : ""}`,
      onSuccess: () => "stored"
    })
  return {
    sessionId: yield* outcome(m.remember({ sessionId: noise(LONG, 1), input: "hello", output: "hi" })),
    blockName: yield* outcome(m.updateBlock(noise(LONG, 2), "content")),
    subject: yield* outcome(m.appendFact({ subject: noise(LONG, 3), predicate: "is", object: "long" })),
    predicate: yield* outcome(m.appendFact({ subject: "user", predicate: noise(LONG, 4), object: "long" }))
  }
}).pipe(RunContext.withUser("alice", { sessionId: "s1" }))

describe("long text in indexed columns", () => {
  it.effect("every backend does with it what the in-memory one does", () =>
    Effect.gen(function*() {
      const results: Record<string, unknown> = {}
      for (const backend of backends) results[backend.name] = yield* outcomes.pipe(Effect.provide(backend.fresh()))
      for (const backend of backends) assert.deepStrictEqual(results[backend.name], results.memory, `${backend.name} vs memory`)
      assert.deepStrictEqual(results.memory, {
        sessionId: "fails: MemoryError remember",
        blockName: "fails: MemoryError updateBlock",
        subject: "fails: MemoryError appendFact",
        predicate: "fails: MemoryError appendFact"
      })
    }))

  it.effect("keys of 256 three-byte characters, for a user id as long, are stored on every backend", () =>
    Effect.gen(function*() {
      const wide = (mark: string) => mark + "€".repeat(255)
      for (const backend of backends) {
        const stored = yield* Effect.gen(function*() {
          const m = yield* Memory.Memory
          yield* m.remember({ sessionId: wide("s"), input: "hello", output: "hi" })
          yield* m.updateBlock(wide("b"), "content")
          yield* m.appendFact({ subject: wide("x"), predicate: wide("p"), object: "one" })
          yield* m.appendFact({ subject: wide("x"), predicate: wide("p"), object: "two" })
          const data = yield* m.export
          return [data.episodes.length, data.blocks.length, data.facts.filter((fact) => fact.validUntil === null).length]
        }).pipe(RunContext.withUser(wide("u"), { sessionId: "s1" }), Effect.provide(backend.fresh()))
        assert.deepStrictEqual(stored, [1, 1, 1], backend.name)
      }
    }))

  it.effect("an agent run in a session with a long id ends the same way on every backend", () =>
    Effect.gen(function*() {
      const results: Record<string, string> = {}
      for (const backend of backends) {
        const MemoryLive = backend.fresh()
        const AgentLive = Agent.layer().pipe(
          Layer.provide(Model.layerEcho()),
          Layer.provide(MemoryLive),
          Layer.provide(Agent.layerDefaults)
        )
        const exit = yield* Effect.exit(
          Effect.flatMap(Agent.Agent, (agent) => agent.run("hello", { userId: "alice", sessionId: noise(LONG, 5) })).pipe(
            Effect.provide(AgentLive)
          )
        )
        results[backend.name] = exit._tag === "Success" ? "completed" : String(Cause.squash(exit.cause))
      }
      for (const backend of backends) assert.strictEqual(results[backend.name], results.memory, `${backend.name} vs memory`)
      assert.include(results.memory, "must be at most 256 characters")
    }))
})
