/**
 * A fact learnt late that falls between two facts the store already has:
 * the user lived in Porto from 2020 and in Lisbon from 2024 (appending
 * Lisbon closed Porto at 2024); then the store learns, late (an imported old
 * conversation, or two runs' auto-extractions finishing in the other order),
 * that the user lived in Berlin from 2022. One value per subject and
 * predicate at any instant, on every backend: Porto in 2021, Berlin in 2023
 * (Berlin comes back closed at 2024, and Porto is cut short at 2022), Lisbon
 * in 2025.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const y = (year: number) => new Date(`${year}-01-01T00:00:00.000Z`)

describe("a fact learnt late between two known ones", () => {
  for (const backend of backends) {
    it.effect(`${backend.name}: one value per instant after an out-of-order append`, () =>
      Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* TestClock.setTime(y(2026).getTime())
        const append = (object: string, from: number) =>
          m.appendFact({ subject: "user", predicate: "lives in", object, validFrom: y(from) })
        yield* append("Porto", 2020)
        yield* TestClock.adjust("1 hour")
        yield* append("Lisbon", 2024)
        yield* TestClock.adjust("1 hour")
        const late = yield* append("Berlin", 2022)
        assert.deepStrictEqual(late.validUntil, y(2024), "Berlin is closed where Lisbon starts")

        const at = (year: number) =>
          m.recallFacts("lives", { validAt: new Date(`${year}-06-01T00:00:00.000Z`) }).pipe(
            Effect.map((facts) => facts.map((fact) => fact.object).sort())
          )
        assert.deepStrictEqual(yield* at(2021), ["Porto"], "valid in 2021")
        assert.deepStrictEqual(yield* at(2025), ["Lisbon"], "valid in 2025")
        assert.deepStrictEqual(yield* at(2023), ["Berlin"], "valid in 2023")
      }).pipe(RunContext.withUser("alice", { sessionId: "s1" }), Effect.provide(backend.fresh())))
  }
})
