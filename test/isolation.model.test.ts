/**
 * Whole-agent isolation, model-based (`fc.commands` + `fc.asyncModelRun`):
 * one shared Agent, users whose ids are prefixes of each other plus
 * anonymous, concurrent batches of runs, working blocks, approvals, budget
 * blocks, per-user permissions, and evictions by idle time (TestClock) and by
 * new users pushing out the least recently used.
 * The invariants are in `support/isolationModel.ts`.
 */
import { describe, it } from "@effect/vitest"
import { Effect, FastCheck as fc, type Runtime } from "effect"
import { Memory, RunContext } from "jeevesagent"
import {
  arbCommands,
  assertCaught,
  assertHolds,
  makeWorld,
  runCommands,
  type WorldOptions
} from "./support/isolationModel.js"

const property = (options: WorldOptions = {}) => (outer: Runtime.Runtime<never>) =>
  fc.asyncProperty(
    arbCommands({ maxRuns: 4, maxCommands: 20 }),
    (commands) => runCommands(() => makeWorld(outer, options), commands)
  )

/**
 * A tenant-key normalization bug: working blocks are read under a
 * "canonical" id (lower case, `_` for anything else), so `USER_1` and
 * `user 1` read `user_1`'s blocks. Writes stay correct, which is what makes
 * this kind of leak easy to miss.
 */
const canonicalWorkingBlocks = (memory: Memory.Service): Memory.Service => ({
  ...memory,
  working: Effect.flatMap(RunContext.current, (context) =>
    context.userId === null ?
      memory.working :
      RunContext.withUser(context.userId.toLowerCase().replace(/[^a-z0-9]/g, "_"))(memory.working))
})

describe("whole-agent isolation (model-based)", () => {
  it.effect(
    "no user sees another's data, the budget ledger is exact, the audit chain verifies and attributes",
    () => assertHolds(property(), 25)
  )

  it.effect("the checks catch a leaky memory", () =>
    assertCaught(property({ decorateMemory: canonicalWorkingBlocks }), 7, "working blocks"))
})
