/**
 * PgMemory hands JS Dates to node-postgres, which writes them in the
 * process's LOCAL time zone with the offset cut to whole minutes. Before
 * standard time, most zones had offsets with seconds (LMT / mean time), so in
 * such a zone a historical time — a fact's validFrom such as a birth date, a
 * validAt/knownAt, an episode's occurredAt — is stored and compared off by
 * those seconds. Africa/Monrovia was UTC-0:44:30 until 1972: a fact valid
 * from 1960-01-01T00:00:00Z comes back valid from 1959-12-31T23:59:30Z (and
 * is closed 30 seconds early). Memory and SQLite keep the exact millisecond.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { backends } from "./support/threeBackends.js"

let savedTz: string | undefined
beforeAll(() => {
  savedTz = process.env.TZ
  process.env.TZ = "Africa/Monrovia"
})
afterAll(() => {
  if (savedTz === undefined) delete process.env.TZ
  else process.env.TZ = savedTz
})

const BORN = new Date("1960-01-01T00:00:00.000Z")

const MOVED = new Date("1965-06-01T12:00:00.000Z")

const script = Effect.gen(function*() {
  const m = yield* Memory.Memory
  yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Monrovia", validFrom: BORN })
  yield* m.appendFact({ subject: "alice", predicate: "lives in", object: "Accra", validFrom: MOVED })
  const facts = (yield* m.export).facts
  return facts.map((f) => [f.object, f.validFrom.toISOString(), f.validUntil?.toISOString() ?? null])
}).pipe(RunContext.withUser("alice"))

describe("historical times in a process whose zone had an offset with seconds", () => {
  it.live("keep their exact instant on every backend", () =>
    Effect.gen(function*() {
      // Local time 23:15:30 the day before: an offset of -0:44:30, which node-postgres writes as -00:44.
      assert.deepStrictEqual([BORN.getHours(), BORN.getMinutes(), BORN.getSeconds()], [23, 15, 30], "the zone is in effect")
      const results: Record<string, unknown> = {}
      for (const backend of backends) results[backend.name] = yield* Effect.provide(script, backend.fresh())
      const expected = [
        ["Monrovia", "1960-01-01T00:00:00.000Z", "1965-06-01T12:00:00.000Z"],
        ["Accra", "1965-06-01T12:00:00.000Z", null]
      ]
      assert.deepStrictEqual(results, Object.fromEntries(backends.map((b) => [b.name, expected])))
    }))
})
