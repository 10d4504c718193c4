import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { BoundedUsers, type Entry } from "../src/internal/boundedUsers.js"

class TestEntry implements Entry {
  lastTouched = 0
  pinned = false
  constructor(readonly id: number) {}
}

/**
 * The reference: the table as it was first written, a `Map` re-inserted on
 * every touch so that its insertion order is the touch order. Exact, but a
 * touch is O(n) in V8 (deleted entries stay in their hash chain).
 */
class MapTable<V extends Entry> {
  readonly entries = new Map<string, V>()
  constructor(readonly maxUsers: number | null, readonly idleTtlMillis: number | null) {}

  get(key: string, now: number): V | undefined {
    this.sweep(now)
    const entry = this.entries.get(key)
    if (entry !== undefined) this.touch(key, entry, now)
    return entry
  }

  insert(key: string, entry: V, now: number): V {
    this.sweep(now)
    this.touch(key, entry, now)
    if (this.maxUsers !== null) {
      let guard = this.entries.size
      while (this.entries.size > this.maxUsers && guard-- > 0) {
        const [oldestKey, oldest] = this.entries.entries().next().value!
        if (oldestKey === key) break
        if (oldest.pinned) this.touch(oldestKey, oldest, now)
        else this.entries.delete(oldestKey)
      }
    }
    return entry
  }

  touch(key: string, entry: V, now: number): void {
    this.entries.delete(key)
    entry.lastTouched = now
    this.entries.set(key, entry)
  }

  private sweep(now: number): void {
    const ttl = this.idleTtlMillis
    if (ttl === null) return
    let guard = this.entries.size
    for (const [key, entry] of this.entries) {
      if (guard-- <= 0 || now - entry.lastTouched < ttl) return
      if (entry.pinned) this.touch(key, entry, now)
      else this.entries.delete(key)
    }
  }
}

const KEYS = ["a", "b", "c", "d", "e", "f"]

type Command =
  | { readonly _tag: "get"; readonly key: number }
  | { readonly _tag: "insert"; readonly key: number }
  | { readonly _tag: "touch"; readonly key: number }
  | { readonly _tag: "pin"; readonly key: number; readonly pinned: boolean }
  | { readonly _tag: "wait"; readonly millis: number }

const arbKey = fc.nat(KEYS.length - 1)
const arbCommand: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ _tag: fc.constant("get" as const), key: arbKey }),
  fc.record({ _tag: fc.constant("insert" as const), key: arbKey }),
  fc.record({ _tag: fc.constant("touch" as const), key: arbKey }),
  fc.record({ _tag: fc.constant("pin" as const), key: arbKey, pinned: fc.boolean() }),
  fc.record({ _tag: fc.constant("wait" as const), millis: fc.integer({ min: 0, max: 40 }) })
)

/** Each table's entries, as `[key, id, lastTouched, pinned]`, least recently touched first. */
const snapshotOf = (entries: Iterable<[string, TestEntry]>) =>
  Array.from(entries, ([key, entry]) => [key, entry.id, entry.lastTouched, entry.pinned] as const)

describe("BoundedUsers", () => {
  it.prop(
    "behaves exactly like the Map-reinsertion table: same entries, order, touch times and evictions",
    [
      fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }),
      fc.option(fc.integer({ min: 1, max: 50 }), { nil: null }),
      fc.array(arbCommand, { maxLength: 120 })
    ],
    ([maxUsers, idleTtlMillis, commands]) => {
      const table = new BoundedUsers<TestEntry>("test", maxUsers, idleTtlMillis)
      const reference = new MapTable<TestEntry>(maxUsers, idleTtlMillis)
      // The key each entry was stored under, for the table's snapshot.
      const keyOf = new Map<TestEntry, string>()
      // Each side's entry objects, by id, so pinning changes both.
      const tableEntries = new Map<number, TestEntry>()
      const referenceEntries = new Map<number, TestEntry>()
      let now = 0
      let nextId = 0
      for (const command of commands) {
        switch (command._tag) {
          case "wait": {
            now += command.millis
            break
          }
          case "get": {
            const key = KEYS[command.key]!
            assert.strictEqual(table.get(key, now)?.id, reference.get(key, now)?.id)
            break
          }
          case "insert": {
            const key = KEYS[command.key]!
            // The contract: only absent keys are inserted (the callers `get` first).
            const held = table.get(key, now)
            assert.strictEqual(held?.id, reference.get(key, now)?.id)
            if (held !== undefined) break
            const id = nextId++
            const mine = new TestEntry(id)
            const theirs = new TestEntry(id)
            keyOf.set(mine, key)
            tableEntries.set(id, mine)
            referenceEntries.set(id, theirs)
            table.insert(key, mine, now)
            reference.insert(key, theirs, now)
            break
          }
          case "touch": {
            // As the budget does on settle: a key the table holds, with the entry it holds.
            const key = KEYS[command.key]!
            const theirs = reference.entries.get(key)
            if (theirs === undefined) break
            table.touch(key, tableEntries.get(theirs.id)!, now)
            reference.touch(key, theirs, now)
            break
          }
          case "pin": {
            const theirs = reference.entries.get(KEYS[command.key]!)
            if (theirs === undefined) break
            theirs.pinned = command.pinned
            tableEntries.get(theirs.id)!.pinned = command.pinned
            break
          }
        }
        assert.deepStrictEqual(
          snapshotOf(Array.from(table.values(), (entry) => [keyOf.get(entry)!, entry] as [string, TestEntry])),
          snapshotOf(reference.entries)
        )
      }
    },
    { fastCheck: { numRuns: 500 } }
  )
})
