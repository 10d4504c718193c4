/**
 * Text holding a lone UTF-16 surrogate — a string cut in the middle of an
 * emoji (`title.slice(0, n)`) used as a session id, a block name or a fact's
 * predicate, or simply stored as episode text — gives the same results on
 * every backend (each database would otherwise keep, replace or re-encode it
 * its own way, collapsing distinct keys on one backend only):
 * - a session id or block name with one is refused (`MemoryError`), as such
 *   user ids are: two ids differing only there must not become one;
 * - text (episodes, block content, fact fields) is stored with each lone
 *   surrogate as U+FFFD, as a UTF-8 database decodes it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const outcome = <A>(effect: Effect.Effect<A, { readonly _tag: string }>) =>
  Effect.match(effect, {
    onFailure: (error) => ({ failed: `${error._tag} ${"method" in error ? String(error.method) : ""}` }),
    onSuccess: (value) => ({ value })
  })

const script = Effect.gen(function*() {
  const m = yield* Memory.Memory
  return {
    remember: [
      yield* outcome(m.remember({ sessionId: "tab \ud83d", input: "first tab", output: "ok" })),
      yield* outcome(m.remember({ sessionId: "tab \ud83e", input: "second tab", output: "ok" }))
    ].map((o) => ("value" in o ? "stored" : o)),
    session: yield* outcome(Effect.map(m.sessionMessages("tab \ud83d"), (messages) => messages.map((msg) => msg.content))),
    blocks: yield* outcome(
      Effect.zipRight(
        Effect.all([m.updateBlock("note \ud83d", "one"), m.updateBlock("note \ud83e", "two")]),
        Effect.map(m.working, (blocks) => blocks.map((b) => [b.name, b.content]))
      )
    ),
    facts: yield* outcome(
      Effect.zipRight(
        Effect.all([
          m.appendFact({ subject: "user", predicate: "likes \ud83d", object: "one" }),
          m.appendFact({ subject: "user", predicate: "likes \ud83e", object: "two" })
        ]),
        Effect.map(m.export, (data) => data.facts.map((f) => [f.predicate, f.object, f.validUntil === null]))
      )
    ),
    text: yield* outcome(
      Effect.zipRight(
        m.remember({ sessionId: "plain", input: "party \ud83d", output: "ok" }),
        Effect.map(m.sessionMessages("plain"), (messages) => messages.map((msg) => msg.content))
      )
    )
  }
}).pipe(RunContext.withUser("alice", { sessionId: "s1" }))

describe("lone surrogates in session ids, block names, predicates and text", () => {
  it.effect("every backend gives the same results", () =>
    Effect.gen(function*() {
      const results: Record<string, unknown> = {}
      for (const backend of backends) results[backend.name] = yield* script.pipe(Effect.provide(backend.fresh()))
      const show = (value: unknown) => JSON.stringify(value).replace(/[\ud800-\udfff\ufffd]/g, (c) => `<${c.charCodeAt(0).toString(16)}>`)
      const differing = backends
        .filter((backend) => show(results[backend.name]) !== show(results.memory))
        .map((backend) => `${backend.name}: ${show(results[backend.name])}`)
      assert.deepStrictEqual(differing, [], `memory: ${show(results.memory)}`)
      assert.deepStrictEqual(results.memory, {
        remember: [{ failed: "MemoryError remember" }, { failed: "MemoryError remember" }],
        session: { failed: "MemoryError sessionMessages" },
        blocks: { failed: "MemoryError updateBlock" },
        facts: { value: [["likes \ufffd", "one", false], ["likes \ufffd", "two", true]] },
        text: { value: ["party \ufffd", "ok"] }
      })
    }))
})
