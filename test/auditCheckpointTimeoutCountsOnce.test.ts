/**
 * A checkpoint sink call that times out (30 s) and later fails is one failed
 * checkpoint, not two: the sink's backoff doubles once per failure (1 s, 2 s,
 * 4 s, ...), so counting the late failure again would make a slow sink wait
 * twice as long as a down one before it is tried again.
 */
import { assert, describe, it } from "@effect/vitest"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Deferred, Effect, TestClock } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const scratch = scratchDirectories("jeeves-audit-checkpoint-timeout-")
afterAll(scratch.removeAll)

/** Lets the forked loop and the appends' file operations (real I/O) run until `done()` holds. */
const settle = (done: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !done(); i++) yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
  })

describe("audit checkpoints: a sink call that times out", () => {
  it.effect("and then fails counts once for the backoff", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      let calls = 0
      const sink = () =>
        Effect.suspend(() => {
          calls++
          // The first call hangs past the timeout, then fails; the others fail at once.
          return calls === 1 ? Effect.zipRight(Deferred.await(release), Effect.fail(new Error("late"))) : Effect.fail(new Error("down"))
        })
      const path = join(scratch.make(), "audit.jsonl")
      yield* Effect.scoped(Effect.gen(function*() {
        const audit = yield* AuditLog.makeFile({
          path,
          secret: "checkpoint-timeout-secret-0123456789",
          logId: "log_checkpoint_timeout",
          signing: "inline",
          checkpoints: { sink, everyEntries: 1, interval: "1 hour" }
        })
        yield* audit.append({ actor: "system", action: "step", payload: { i: 1 } })
        yield* settle(() => calls === 1)
        yield* TestClock.adjust("30 seconds") // the first call times out: one failure, backoff 1 s
        yield* Deferred.succeed(release, undefined) // ... and fails later: the same failure
        yield* settle(() => false)
        yield* TestClock.adjust("1 second")
        yield* audit.append({ actor: "system", action: "step", payload: { i: 2 } })
        yield* settle(() => calls === 2) // the second failure: backoff 2 s (4 s if the first counted twice)
        yield* audit.append({ actor: "system", action: "step", payload: { i: 3 } })
        yield* settle(() => false)
        yield* TestClock.adjust("2 seconds")
        yield* settle(() => calls === 3)
        assert.strictEqual(calls, 3, "the sink is tried again 2 s after its second failure")
      })).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
    }), 20_000)
})
