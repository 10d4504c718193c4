import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, FiberRef } from "effect"
import { RunContext } from "jeevesagent"

const userOf = Effect.map(RunContext.current, (ctx) => ctx.userId)

describe("RunContext", () => {
  it.effect("outside any run the context is anonymous and empty", () =>
    Effect.gen(function*() {
      const ctx = yield* RunContext.current
      assert.deepStrictEqual(ctx, RunContext.empty)
      assert.isNull(ctx.userId)
    }))

  it.effect("withUser installs the user and restores the outer context afterwards", () =>
    Effect.gen(function*() {
      const inner = yield* userOf.pipe(RunContext.withUser("bob"), RunContext.withUser("alice"))
      assert.strictEqual(inner, "bob")
      const outer = yield* userOf.pipe(
        Effect.zipLeft(userOf.pipe(RunContext.withUser("bob"))),
        RunContext.withUser("alice")
      )
      assert.strictEqual(outer, "alice")
      assert.isNull(yield* userOf)
    }))

  it.effect("keeps unset fields, and the session only for the same user", () =>
    Effect.gen(function*() {
      const same = yield* RunContext.current.pipe(
        RunContext.withUser("alice"),
        RunContext.withUser("alice", { sessionId: "s1", metadata: { plan: "pro" } })
      )
      assert.strictEqual(same.sessionId, "s1")
      assert.deepStrictEqual(same.metadata, { plan: "pro" })
      const other = yield* RunContext.current.pipe(
        RunContext.withUser("bob"),
        RunContext.withUser("alice", { sessionId: "s1" })
      )
      assert.notStrictEqual(other.sessionId, "s1")
      assert.match(other.sessionId, /^sess_[0-9A-Z]{26}$/)
    }))

  it.effect("forked fibers inherit the context; a child's withUser does not leak into the parent", () =>
    Effect.gen(function*() {
      const seen = yield* Effect.all([userOf, userOf, userOf], { concurrency: "unbounded" })
      assert.deepStrictEqual(seen, ["alice", "alice", "alice"])
      const child = yield* Effect.fork(userOf.pipe(RunContext.withUser("mallory")))
      assert.strictEqual(yield* Fiber.join(child), "mallory")
      assert.strictEqual(yield* userOf, "alice")
    }).pipe(RunContext.withUser("alice")))

  it.effect("the outer context is back after a failure, a defect and an interruption", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.exit(Effect.zipRight(userOf, Effect.fail("no")).pipe(RunContext.withUser("bob")))
      assert.isTrue(Exit.isFailure(failed))
      assert.strictEqual(yield* userOf, "alice")
      const died = yield* Effect.exit(Effect.zipRight(userOf, Effect.die("boom")).pipe(RunContext.withUser("bob")))
      assert.isTrue(Exit.isFailure(died))
      assert.strictEqual(yield* userOf, "alice")

      // A finalizer outside the interrupted run sees the outer user, not the run's.
      const seen: Array<string | null> = []
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(
          RunContext.withUser("bob"),
          Effect.onExit(() => Effect.map(userOf, (user) => void seen.push(user)))
        )
      )
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(seen, ["alice"])
    }).pipe(RunContext.withUser("alice")))

  it.effect("like Effect.locally, other FiberRefs set inside a run are kept", () =>
    Effect.gen(function*() {
      const other = FiberRef.unsafeMake(0)
      yield* FiberRef.set(other, 7).pipe(RunContext.withUser("bob"))
      assert.strictEqual(yield* FiberRef.get(other), 7)
      assert.isNull(yield* userOf)
    }))

  it.effect("concurrent runs for different users never see each other", () =>
    Effect.gen(function*() {
      const users = Array.from({ length: 50 }, (_, i) => `user_${i}`)
      const seen = yield* Effect.forEach(
        users,
        (user) => Effect.zipRight(Effect.yieldNow(), userOf).pipe(RunContext.withUser(user)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(seen, users)
    }))

  describe("InvalidUserId", () => {
    const rejects = (userId: string, rule: RunContext.UserIdRule) =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(userOf.pipe(RunContext.withUser(userId)))
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Effect.flip(userOf.pipe(RunContext.withUser(userId)))
        assert.instanceOf(error, RunContext.InvalidUserId)
        assert.strictEqual(error.rule, rule)
        assert.isString(error.message)
        return error.message
      })

    it.effect("empty", () =>
      Effect.map(rejects("", "empty"), (message) => assert.include(message, "empty")))
    it.effect("over 256 characters", () =>
      Effect.gen(function*() {
        const message = yield* rejects("x".repeat(257), "too_long")
        assert.include(message, "257")
        assert.include(message, "256")
        assert.strictEqual(yield* userOf.pipe(RunContext.withUser("x".repeat(256))), "x".repeat(256))
      }))
    it.effect("control characters", () =>
      Effect.gen(function*() {
        for (const id of ["a\nb", "tab\there", "nul\u0000", "del\u007f", "c1\u0085", "ls\u2028"]) {
          yield* rejects(id, "control_characters")
        }
      }))
    it.effect("a lone surrogate (UTF-8 stores would merge it with the id holding U+FFFD there)", () =>
      Effect.gen(function*() {
        for (const id of ["alice\ud800", "\udfffbob", "x\ud83d"]) {
          const message = yield* rejects(id, "lone_surrogate")
          assert.include(message, "lone surrogate")
        }
        assert.strictEqual(yield* userOf.pipe(RunContext.withUser("alice\ufffd")), "alice\ufffd")
        assert.strictEqual(yield* userOf.pipe(RunContext.withUser("emoji \ud83d\ude00")), "emoji \ud83d\ude00")
      }))
    it.effect("the reserved anonymous sentinel", () =>
      Effect.map(rejects(RunContext.ANONYMOUS_USER, "reserved"), (message) => assert.include(message, "reserved")))
    it.effect("unicode and punctuation are fine; absent means anonymous", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* userOf.pipe(RunContext.withUser("Zoë <zoe@example.com>")), "Zoë <zoe@example.com>")
        assert.isNull(yield* userOf.pipe(RunContext.withUser(undefined)))
        assert.isNull(yield* userOf.pipe(RunContext.withUser(null)))
      }))
  })

  it("userKey maps anonymous to the sentinel, which no valid id can equal", () => {
    assert.strictEqual(RunContext.userKey(null), RunContext.ANONYMOUS_USER)
    assert.strictEqual(RunContext.userKey("alice"), "alice")
    assert.strictEqual(RunContext.checkUserId(RunContext.ANONYMOUS_USER), "reserved")
  })
})
