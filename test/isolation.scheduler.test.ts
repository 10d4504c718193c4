/**
 * Whole-agent isolation under many interleavings: the same commands and
 * invariants as `isolation.model.test.ts`, but every step of a run — each
 * model answer, each whoami result, each approver answer — waits for a
 * promise an `fc.scheduler` resolves, in an order fast-check chooses (and
 * shrinks, and replays).
 */
import { describe, it } from "@effect/vitest"
import { Effect, FastCheck as fc, type Runtime } from "effect"
import { Memory, RunContext } from "jeevesagent"
import {
  arbCommands,
  assertCaught,
  assertHolds,
  InvariantViolation,
  makeWorld,
  runCommands,
  type WorldOptions
} from "./support/isolationModel.js"

const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Drives a batch of runs to completion. A step is released only once the
 * set of pending steps has stopped growing, so the scheduler chooses among
 * every run that can move, not just the first to get there.
 */
const driveWith = (s: fc.Scheduler) => async <A>(batch: Promise<A>): Promise<A> => {
  let settled = false
  const done = batch.then(() => {
    settled = true
  }, () => {
    settled = true
  })
  let idle = 0
  while (!settled) {
    let pending = -1
    while (pending !== s.count() && !settled) {
      pending = s.count()
      await macrotask()
    }
    if (settled) break
    if (s.count() > 0) {
      idle = 0
      await s.waitOne()
    } else if (++idle > 1000) {
      throw new InvariantViolation(`a batch of runs is stuck with nothing scheduled:\n${String(s)}`)
    }
  }
  await done
  if (s.count() !== 0) throw new InvariantViolation(`steps left over after a batch:\n${String(s)}`)
  return batch
}

const scheduled = (s: fc.Scheduler): WorldOptions => ({
  step: (label) => Effect.asVoid(Effect.promise(() => s.schedule(Promise.resolve(label), label))),
  settle: driveWith(s)
})

const property =
  (decorate?: (s: fc.Scheduler) => (memory: Memory.Service) => Memory.Service) => (outer: Runtime.Runtime<never>) =>
    fc.asyncProperty(
      fc.scheduler(),
      arbCommands({ maxRuns: 5, maxCommands: 12 }),
      (s, commands) =>
        runCommands(() => makeWorld(outer, { ...scheduled(s), decorateMemory: decorate?.(s) }), commands)
    )

/**
 * A race, not a key bug: the store remembers "the current user" in one
 * variable shared by every fiber, set when the run's seed starts and read
 * when it asks for the session history, with an asynchronous store call in
 * between. Runs one at a time are fine; two interleaved runs leak.
 */
const racyCurrentUser = (s: fc.Scheduler) => (memory: Memory.Service): Memory.Service => {
  let current: string | null = null
  return {
    ...memory,
    working: Effect.flatMap(RunContext.current, (context) => {
      current = context.userId
      return Effect.zipRight(Effect.promise(() => s.schedule(Promise.resolve(), "store round trip")), memory.working)
    }),
    // Outside a run (an admin read) it uses the context; inside one, the variable its seed set.
    sessionMessages: (sessionId, options) =>
      Effect.flatMap(RunContext.current, (context) =>
        context.runId === "" ?
          memory.sessionMessages(sessionId, options) :
          RunContext.withUser(current)(memory.sessionMessages(sessionId, options)))
  }
}

describe("whole-agent isolation (fc.scheduler interleavings)", () => {
  it.effect(
    "no interleaving of users' runs leaks data, loses usage or misattributes an audit entry",
    () => assertHolds(property(), 15)
  )

  it.effect("the checks catch a memory that races on a shared current user", () =>
    assertCaught(property(racyCurrentUser), 11, "the history replayed is this user's session only"))
})
