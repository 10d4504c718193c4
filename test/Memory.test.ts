import { assert, describe, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { Memory, RunContext } from "jeevesagent"
import { makeInMemoryStore } from "jeevesagent/internal/memory"
import { memoryConformance } from "./support/memoryConformance.js"

const blocksOf = (userId: string) =>
  Effect.flatMap(Memory.Memory, (m) => m.working).pipe(
    RunContext.withUser(userId),
    Effect.map((blocks) => blocks.map((b) => b.content))
  )

const write = (userId: string, content = `${userId}'s block`) =>
  Effect.flatMap(Memory.Memory, (m) =>
    Effect.all([
      m.updateBlock("notes", content),
      m.remember({ input: `${userId} said`, output: "ok" }),
      m.appendFact({ subject: userId, predicate: "is", object: "here" })
    ])).pipe(RunContext.withUser(userId))

const everything = (userId: string) =>
  Effect.flatMap(Memory.Memory, (m) => m.export).pipe(
    RunContext.withUser(userId),
    Effect.map((e) => [e.blocks.length, e.episodes.length, e.facts.length])
  )

describe("Memory.layerInMemory", () => {
  memoryConformance(it, () => Memory.layerInMemory())

  it.effect("past maxUsers the least recently touched user is dropped, with all their data", () =>
    Effect.gen(function*() {
      yield* write("alice")
      yield* write("bob")
      assert.deepStrictEqual(yield* everything("alice"), [1, 1, 1]) // touches alice: bob is now the oldest
      yield* write("charlie")
      assert.deepStrictEqual(yield* everything("bob"), [0, 0, 0])
      assert.deepStrictEqual(yield* everything("charlie"), [1, 1, 1])
    }).pipe(Effect.provide(Memory.layerInMemory({ maxUsers: 2 }))))

  it.effect("reads count as touches: the first user in is the first out, and a read brings a user back in", () =>
    Effect.gen(function*() {
      yield* write("alice")
      yield* write("bob")
      yield* write("charlie")
      // alice was first in: gone. Reading her makes an (empty) alice the most recent, so bob goes.
      assert.deepStrictEqual(yield* blocksOf("alice"), [])
      assert.deepStrictEqual(yield* blocksOf("charlie"), ["charlie's block"])
      assert.deepStrictEqual(yield* blocksOf("bob"), [])
    }).pipe(Effect.provide(Memory.layerInMemory({ maxUsers: 2 }))))

  it.effect("a user idle for userIdleTtl starts afresh; touching resets the idle clock", () =>
    Effect.gen(function*() {
      yield* write("alice")
      yield* write("bob")
      yield* TestClock.adjust("59 minutes")
      assert.deepStrictEqual(yield* blocksOf("bob"), ["bob's block"])
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(yield* everything("alice"), [0, 0, 0])
      // bob was touched 1 minute ago.
      assert.deepStrictEqual(yield* everything("bob"), [1, 1, 1])
    }).pipe(Effect.provide(Memory.layerInMemory({ userIdleTtl: "1 hour" }))))

  it.effect("the sweep frees idle users nobody touches again", () =>
    Effect.gen(function*() {
      const { residency, store } = yield* makeInMemoryStore({ userIdleTtl: "1 hour" })
      yield* store.writeBlock("alice", { name: "a", content: "x", append: false, now: new Date(0) })
      yield* store.writeBlock("bob", { name: "a", content: "x", append: false, now: new Date(0) })
      assert.deepStrictEqual(yield* residency, { users: 2, usersWithData: 2 })
      yield* TestClock.adjust("59 minutes")
      yield* store.working("bob")
      yield* TestClock.adjust("31 minutes")
      // Any access sweeps the idle users: alice has been idle 90 minutes and is
      // dropped entirely, bob (31 minutes) stays.
      yield* store.working("carol")
      assert.deepStrictEqual(yield* residency, { users: 2, usersWithData: 1 })
    }))

  it.effect("null bounds keep everybody", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 50; i++) yield* write(`user_${i}`)
      yield* TestClock.adjust("365 days")
      for (let i = 0; i < 50; i++) assert.deepStrictEqual(yield* everything(`user_${i}`), [1, 1, 1])
    }).pipe(Effect.provide(Memory.layerInMemory({ maxUsers: null, userIdleTtl: null }))))

  it.effect("invalid bounds are a defect naming the option", () =>
    Effect.gen(function*() {
      for (const [options, text] of [
        [{ maxUsers: 0 }, "maxUsers must be a positive integer or null, got 0"],
        [{ maxUsers: 1.5 }, "maxUsers must be a positive integer or null, got 1.5"],
        [{ userIdleTtl: 0 }, "userIdleTtl must be a positive finite duration or null, got 0"],
        [{ userIdleTtl: "soon" }, "userIdleTtl must be a positive finite duration or null, got soon"]
      ] as const) {
        const exit = yield* Effect.exit(Memory.makeInMemory(options as Memory.InMemoryOptions))
        assert.isTrue(exit._tag === "Failure")
        assert.include(String(exit), text)
      }
    }))
})
