/**
 * Facts arriving out of valid-time order: the store already has an open fact
 * valid from 2024, and then learns an older one (valid from 2020) for the
 * same subject and predicate. This happens whenever facts come in late:
 * `Memory.autoExtract` appends facts valid from the episode's time, so an
 * imported old episode, or two concurrent runs of one user whose
 * extractions finish in the other order, append the older fact last.
 *
 * A fact is never closed before it starts, and the older fact does not
 * override the newer one: asked about now, the store answers "Lisbon";
 * asked about 2022, "Porto" — on every backend.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { Budget, Memory, Model, RunContext } from "jeevesagent"
import { backends } from "./support/threeBackends.js"

const as = (userId: string) => RunContext.withUser(userId, { sessionId: "s1" })
const y = (year: number) => new Date(`${year}-01-01T00:00:00.000Z`)

const check = Effect.gen(function*() {
  const m = yield* Memory.Memory
  const at = (date: Date) => m.recallFacts("lives", { validAt: date }).pipe(Effect.map((fs) => fs.map((f) => f.object)))
  assert.deepStrictEqual(yield* at(y(2025)), ["Lisbon"], "valid in 2025")
  assert.deepStrictEqual(yield* at(y(2022)), ["Porto"], "valid in 2022")
  for (const fact of (yield* m.export).facts) {
    assert.isTrue(
      fact.validUntil === null || fact.validUntil.getTime() >= fact.validFrom.getTime(),
      `${fact.object} closed (${fact.validUntil?.toISOString()}) before it starts (${fact.validFrom.toISOString()})`
    )
  }
})

describe("a fact older in valid time than the open one", () => {
  for (const backend of backends) {
    it.effect(`${backend.name}: appendFact does not close the newer fact before it starts`, () =>
      Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* TestClock.setTime(y(2026).getTime())
        yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon", validFrom: y(2024) })
        yield* TestClock.adjust("1 hour")
        const late = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Porto", validFrom: y(2020) })
        // It comes back as stored: closed where the newer fact starts, known closed from the moment it was recorded.
        assert.deepStrictEqual([late.validUntil, late.supersededAt], [y(2024), late.recordedAt])
        yield* check
      }).pipe(as("alice"), Effect.provide(backend.fresh())))
  }

  it.effect("auto-extract of an older episode remembered later does not override the newer fact", () => {
    const ModelLive = Model.layerScripted((request) => ({
      text: JSON.stringify([{
        subject: "user",
        predicate: "lives in",
        object: request.messages[1]!.content.includes("Porto") ? "Porto" : "Lisbon"
      }])
    }))
    const MemoryLive = Memory.autoExtract().pipe(
      Layer.provide(Memory.layerInMemory()),
      Layer.provide(Layer.merge(ModelLive, Budget.layerNone))
    )
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* TestClock.setTime(y(2026).getTime())
      yield* m.remember({ input: "I live in Lisbon", output: "ok", occurredAt: y(2024) })
      // Imported history: an older conversation remembered afterwards.
      yield* m.remember({ input: "I live in Porto", output: "ok", occurredAt: y(2020) })
      yield* check
    }).pipe(as("alice"), Effect.provide(MemoryLive))
  })
})
