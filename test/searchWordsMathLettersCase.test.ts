/**
 * Search words are lower-cased BEFORE the compatibility decomposition, so a
 * letter whose NFKD is an upper-case ASCII letter but which has no lower case
 * of its own (mathematical alphanumerics such as "𝐋𝐢𝐬𝐛𝐨𝐧", styled text common
 * in pasted social-media posts; "ℍ", "ℒ", ...) is indexed as "Lisbon" with a
 * capital. The in-memory and Postgres backends then compare case-sensitively,
 * while SQLite's `ascii` FTS5 tokenizer folds ASCII case: the same store and
 * query give different results per backend, and a search is no longer
 * case-insensitive ("lisbon" misses "𝐋𝐢𝐬𝐛𝐨𝐧").
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const script = Effect.gen(function*() {
  const m = yield* Memory.Memory
  yield* m.remember({ input: "I moved to 𝐋𝐢𝐬𝐛𝐨𝐧", output: "ok" })
  yield* m.remember({ input: "Lisbon is lovely", output: "ok" })
  yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "𝐋𝐢𝐬𝐛𝐨𝐧" })
  const recall = (query: string) => Effect.map(m.recall(query), (episodes) => episodes.map((e) => e.input).sort())
  const facts = (query: string) => Effect.map(m.recallFacts(query), (found) => found.map((f) => f.object))
  return {
    plain: yield* recall("lisbon"),
    styled: yield* recall("𝐋𝐢𝐬𝐛𝐨𝐧"),
    fact: yield* facts("lisbon")
  }
}).pipe(RunContext.withUser("alice"))

describe("search words of letters without a lower case of their own", () => {
  it.live("every backend finds them case-insensitively, and all agree", () =>
    Effect.gen(function*() {
      const results: Record<string, unknown> = {}
      for (const backend of backends) results[backend.name] = yield* Effect.provide(script, backend.fresh())
      const expected = {
        plain: ["I moved to 𝐋𝐢𝐬𝐛𝐨𝐧", "Lisbon is lovely"],
        styled: ["I moved to 𝐋𝐢𝐬𝐛𝐨𝐧", "Lisbon is lovely"],
        fact: ["𝐋𝐢𝐬𝐛𝐨𝐧"]
      }
      assert.deepStrictEqual(results, Object.fromEntries(backends.map((b) => [b.name, expected])))
    }))
})
