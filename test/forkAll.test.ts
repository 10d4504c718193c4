import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Either, Exit, Fiber, FiberId, FiberRef, Option, Supervisor } from "effect"
import { forEachConcurrent } from "../src/internal/forkAll.js"

type ForEach = <A, B, E, R>(
  items: ReadonlyArray<A>,
  f: (item: A, index: number) => Effect.Effect<B, E, R>
) => Effect.Effect<Array<B>, E, R>

const unbounded: ForEach = (items, f) => Effect.forEach(items, f, { concurrency: "unbounded" })

const label = FiberRef.unsafeMake("outer")

/** Counts the fibers forked while it supervises. */
class ForkCounter extends Supervisor.AbstractSupervisor<number> {
  forks = 0
  readonly value = Effect.sync(() => this.forks)
  override onStart() {
    this.forks++
  }
}

/** Signals `started`, then runs until interrupted; its interruption handler takes a scheduler turn before recording. */
const runsUntilInterrupted = (started: Deferred.Deferred<void>, interrupted: Array<number>, index: number) =>
  Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(
    Effect.onInterrupt(() => Effect.zipRight(Effect.yieldNow(), Effect.sync(() => void interrupted.push(index))))
  )

describe("internal/forkAll", () => {
  it.effect("returns the results in input order, whatever the completion order", () =>
    Effect.gen(function*() {
      const first = yield* Deferred.make<void>()
      const second = yield* Deferred.make<void>()
      const completed: Array<number> = []
      const results = yield* forEachConcurrent(["a", "b", "c"], (item, index) => {
        const body = index === 0 ?
          Deferred.await(first) :
          index === 1 ?
          Effect.zipRight(Deferred.await(second), Deferred.succeed(first, undefined)) :
          Deferred.succeed(second, undefined)
        return Effect.as(Effect.zipRight(body, Effect.sync(() => void completed.push(index))), `${item}${index}`)
      })
      assert.deepStrictEqual(completed, [2, 1, 0])
      assert.deepStrictEqual(results, ["a0", "b1", "c2"])
    }))

  it.effect("a typed failure interrupts the running siblings, awaits them, and reaches the caller as the error", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted: Array<number> = []
      // The first item waits (so the second is forked), then fails.
      const call = forEachConcurrent([0, 1], (index) =>
        index === 0 ?
          Effect.zipRight(Deferred.await(started), Effect.fail("boom" as const)) :
          runsUntilInterrupted(started, interrupted, index))
      assert.deepStrictEqual(yield* Effect.either(call), Either.left("boom" as const))
      assert.deepStrictEqual(interrupted, [1])

      const exit = yield* Effect.exit(call)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        assert.strictEqual(Cause.squash(exit.cause), "boom")
        assert.deepStrictEqual(Array.from(Cause.failures(exit.cause)), ["boom"])
      }
      assert.strictEqual(yield* Effect.catchAll(call, (error) => Effect.succeed(`caught ${error}`)), "caught boom")
    }))

  it.effect("an item's own interruption interrupts the running siblings and fails the whole", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted: Array<number> = []
      const exit = yield* Effect.exit(forEachConcurrent([0, 1], (index) =>
        index === 0 ?
          Effect.zipRight(Deferred.await(started), Effect.interrupt) :
          runsUntilInterrupted(started, interrupted, index)))
      assert.deepStrictEqual(interrupted, [1])
      assert.isTrue(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause))
    }))

  it.effect("a failure reaches every forked item, wherever the caller's op budget makes it yield", () =>
    Effect.gen(function*() {
      // An item left uninterrupted would keep the call from ever returning.
      for (let budget = 16; budget <= 64; budget++) {
        const exit = yield* Effect.exit(Effect.withMaxOpsBeforeYield(
          forEachConcurrent(Array.from({ length: 12 }, (_, index) => index), (index) =>
            index === 0 ? Effect.zipRight(Effect.yieldNow(), Effect.fail("first")) : Effect.never),
          budget
        ))
        assert.isTrue(Exit.isFailure(exit) && Cause.squash(exit.cause) === "first")
      }
    }))


  /** Runs `items` with a fork counter; each item reports whether it ran in the caller's fiber. */
  const inCallerFlags = (items: ReadonlyArray<Effect.Effect<void>>) =>
    Effect.gen(function*() {
      const caller = yield* Effect.fiberId
      const counter = new ForkCounter()
      const flags = yield* Effect.supervised(
        forEachConcurrent(items, (item) =>
          Effect.flatMap(Effect.fiberId, (id) => Effect.as(item, FiberId.threadName(id) === FiberId.threadName(caller)))),
        counter
      )
      return { flags, forks: counter.forks }
    })

  it.effect("items that never suspend run one after another in the calling fiber, with no fork", () =>
    Effect.gen(function*() {
      let called = 0
      assert.deepStrictEqual(yield* forEachConcurrent([], () => Effect.sync(() => called++)), [])
      assert.strictEqual(called, 0)
      const started: Array<number> = []
      const item = (index: number) => Effect.sync(() => void started.push(index))
      assert.deepStrictEqual(yield* inCallerFlags([item(0), item(1), item(2)]), { flags: [true, true, true], forks: 0 })
      assert.deepStrictEqual(started, [0, 1, 2])
    }))

  it.effect("once an item suspends, the items not yet started are forked at once, in input order", () =>
    Effect.gen(function*() {
      const released = yield* Deferred.make<void>()
      const started: Array<number> = []
      const item = (index: number, body: Effect.Effect<void> = Effect.void) =>
        Effect.zipRight(Effect.sync(() => void started.push(index)), body)
      // The second item waits for the fourth: run one after another, this never ends.
      const result = yield* inCallerFlags([
        item(0),
        item(1, Deferred.await(released)),
        item(2),
        item(3, Deferred.succeed(released, undefined))
      ])
      assert.deepStrictEqual(result, { flags: [true, true, false, false], forks: 2 })
      assert.deepStrictEqual(started, [0, 1, 2, 3])
    }))

  it.effect("still runs the items concurrently, the first one included", () =>
    Effect.gen(function*() {
      const left = yield* Deferred.make<string>()
      const right = yield* Deferred.make<string>()
      const results = yield* forEachConcurrent([[left, right], [right, left]] as const, ([mine, theirs], index) =>
        Effect.zipRight(Deferred.succeed(mine, `from ${index}`), Deferred.await(theirs)))
      assert.deepStrictEqual(results, ["from 1", "from 0"])
    }))

  it.effect("another item's failure interrupts the other children at once and reaches the caller once the first item is done", () =>
    Effect.gen(function*() {
      const thirdStarted = yield* Deferred.make<void>()
      const thirdInterrupted = yield* Deferred.make<void>()
      const events: Array<string> = []
      const exit = yield* Effect.exit(forEachConcurrent([0, 1, 2], (index) => {
        switch (index) {
          case 0:
            // Not interrupted: it finishes, after the third item was interrupted.
            return Effect.zipRight(Deferred.await(thirdInterrupted), Effect.sync(() => void events.push("first done")))
          case 1:
            return Effect.zipRight(Deferred.await(thirdStarted), Effect.fail("boom" as const))
          default:
            return Effect.zipRight(Deferred.succeed(thirdStarted, undefined), Effect.never).pipe(
              Effect.onInterrupt(() =>
                Effect.zipRight(Effect.sync(() => void events.push("third interrupted")), Deferred.succeed(thirdInterrupted, undefined))
              )
            )
        }
      }))
      assert.deepStrictEqual(events, ["third interrupted", "first done"])
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.deepStrictEqual(Array.from(Cause.failures(exit.cause)), ["boom"])
    }))

  it.effect("the first item's failure interrupts the children, awaits them, and reaches the caller", () =>
    Effect.gen(function*() {
      const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
      const interrupted: Array<number> = []
      const defect = new Error("kaboom")
      const exit = yield* Effect.exit(forEachConcurrent([0, 1, 2], (index) =>
        index === 0 ?
          Effect.zipRight(Effect.forEach(started, Deferred.await), Effect.die(defect)) :
          runsUntilInterrupted(started[index - 1]!, interrupted, index)))
      assert.deepStrictEqual(interrupted.sort(), [1, 2])
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.strictEqual(Cause.squash(exit.cause), defect)
    }))

  it.effect("interrupting the caller interrupts the first item and the children, awaited before the caller goes on", () =>
    Effect.gen(function*() {
      const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
      const interrupted: Array<number> = []
      let interruptedWhenCallerExited: ReadonlyArray<number> = []
      const caller = yield* Effect.fork(
        forEachConcurrent([0, 1], (index) => runsUntilInterrupted(started[index]!, interrupted, index))
          .pipe(Effect.onExit(() => Effect.sync(() => interruptedWhenCallerExited = [...interrupted].sort())))
      )
      for (const deferred of started) yield* Deferred.await(deferred)
      const exit = yield* Fiber.interrupt(caller)
      assert.isTrue(Exit.isInterrupted(exit))
      assert.deepStrictEqual(interruptedWhenCallerExited, [0, 1])
    }))

  it.effect("a forked item sees the caller's FiberRefs as they were before the first item; every item's changes reach the caller", () =>
    Effect.gen(function*() {
      const other = FiberRef.unsafeMake("none")
      const seen = yield* Effect.locally(
        forEachConcurrent([0, 1], (index): Effect.Effect<string> =>
          index === 0 ?
            Effect.as(Effect.zipRight(FiberRef.set(label, "set by 0"), Effect.yieldNow()), "first") :
            Effect.zipRight(FiberRef.set(other, "set by 1"), FiberRef.get(label))),
        label,
        "inner"
      )
      assert.strictEqual(seen[1], "inner")
      assert.strictEqual(yield* FiberRef.get(other), "set by 1")
      // Outside the locally: the first item's change stays in the caller.
      yield* forEachConcurrent([0, 1], (index) =>
        index === 0 ? Effect.zipRight(FiberRef.set(label, "set by 0"), Effect.yieldNow()) : Effect.void)
      assert.strictEqual(yield* FiberRef.get(label), "set by 0")
    }))

  it.effect("wherever the caller's op budget makes it yield, every item runs exactly once and results keep their order", () =>
    Effect.gen(function*() {
      // Each budget puts the caller's yield at a different point: before, inside or between items.
      for (let budget = 16; budget <= 96; budget++) {
        const started: Array<number> = []
        const results = yield* Effect.withMaxOpsBeforeYield(
          forEachConcurrent([0, 1, 2, 3], (index) =>
            Effect.as(Effect.zipRight(Effect.sync(() => void started.push(index)), Effect.yieldNow()), index * 10)),
          budget
        )
        assert.deepStrictEqual(results, [0, 10, 20, 30], `budget ${budget}`)
        assert.deepStrictEqual([...started].sort(), [0, 1, 2, 3], `budget ${budget}`)
      }
    }))

  it("works under Effect.runSync when the items complete synchronously, and forks on its scheduler otherwise", () => {
    assert.deepStrictEqual(
      Effect.runSync(forEachConcurrent([1, 2, 3], (n) => Effect.succeed(n * 2))),
      [2, 4, 6]
    )
    const waiting = Effect.flatMap(Deferred.make<number>(), (deferred) =>
      forEachConcurrent([0, 1], (index) =>
        index === 0 ? Deferred.await(deferred) : Effect.as(Deferred.succeed(deferred, 42), -1)))
    assert.deepStrictEqual(Effect.runSync(waiting), [42, -1])
  })

  it.effect("interrupting the caller while an item runs in it fails with that interruption only", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const caller = yield* Effect.fork(forEachConcurrent([0, 1], (index) =>
        index === 0 ? Effect.zipRight(Deferred.succeed(started, undefined), Effect.never) : Effect.never))
      yield* Deferred.await(started)
      const exit = yield* Fiber.interrupt(caller)
      const me = yield* Effect.fiberId
      assert.isTrue(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause))
      if (Exit.isFailure(exit)) {
        assert.deepStrictEqual(Array.from(Cause.interruptors(exit.cause)).map(FiberId.threadName), [FiberId.threadName(me)])
      }
    }))

  it.effect("a fork that throws (a supervisor failing on start) fails the call with that defect, every item accounted for", () =>
    Effect.gen(function*() {
      const boom = new Error("supervisor refused")
      class Refusing extends Supervisor.AbstractSupervisor<void> {
        readonly value = Effect.void
        override onStart(): void {
          throw boom
        }
      }
      const exit = yield* Effect.exit(Effect.supervised(
        forEachConcurrent([0, 1, 2], (index) => index === 0 ? Effect.yieldNow() : Effect.void),
        new Refusing()
      ))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.strictEqual(Cause.squash(exit.cause), boom)
    }))

  it.effect("an item that fails in the caller before any suspension: the items after it never start", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const exit = yield* Effect.exit(forEachConcurrent([0, 1, 2], (index) =>
        Effect.zipRight(Effect.sync(() => void started.push(index)), index === 1 ? Effect.fail("boom" as const) : Effect.void)))
      // Let a pending fork of the rest run, if one were (wrongly) left.
      yield* Effect.yieldNow()
      assert.deepStrictEqual(started, [0, 1])
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.deepStrictEqual(Array.from(Cause.failures(exit.cause)), ["boom"])
    }))

  // Behaviours of effect's forEach that forEachConcurrent keeps: checked against both.
  // The items yield first, so that all but the first are forked.
  const yieldingFirst: ForEach = (items, f) =>
    forEachConcurrent(items, (item, index) => Effect.zipRight(Effect.yieldNow(), f(item, index)))
  for (
    const [name, run] of [
      ["forEachConcurrent", forEachConcurrent],
      ["forEachConcurrent, items that yield first", yieldingFirst],
      ["Effect.forEach", unbounded]
    ] as const
  ) {
    it.effect(`${name}: fibers an item forks outlive the item`, () =>
      Effect.gen(function*() {
        const forked = yield* run([0, 1], () => Effect.fork(Effect.never))
        for (const fiber of forked) assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* Fiber.interruptAll(forked)
      }))

    it.effect(`${name}: an item never sees a FiberRef its sibling set, however the sibling ran`, () =>
      Effect.gen(function*() {
        const seen = yield* run([0, 1, 2], (index): Effect.Effect<string> =>
          index === 2 ? FiberRef.get(label) : FiberRef.set(label, `set by ${index}`).pipe(Effect.as("set")))
        assert.strictEqual(seen[2], "outer")
        // The changes still reach the caller on success.
        assert.include(["set by 0", "set by 1"], yield* FiberRef.get(label))
      }))

    it.effect(`${name}: FiberRef changes made by the items are joined into the caller on success`, () =>
      Effect.gen(function*() {
        yield* run([0, 1], (index) => FiberRef.set(label, `set by ${index}`))
        assert.include(["set by 0", "set by 1"], yield* FiberRef.get(label))
      }))
  }
})
