import { assert, describe, it } from "@effect/vitest"
import { Cause, Chunk, Deferred, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { Agent, AgentEvent, Budget, Model, Tool } from "jeevesagent"

const noop = Tool.make("noop", {
  description: "Does nothing",
  parameters: Schema.Struct({}),
  handler: () => Effect.succeed("done")
})

/** An agent over `script` with the given budget, everything else the defaults. */
const agentLayer = (script: Model.Script, budget: Layer.Layer<Budget.Budget, Budget.BudgetConfigError>) =>
  Agent.layer({ tools: [noop] }).pipe(
    Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, budget)),
    Layer.provide(Model.layerScripted(script)),
    Layer.orDie
  )

/** Counts model calls per user; every call answers with `usage`. */
const countingScript = (usage: (userId: string | null) => Model.ScriptedTurn["usage"]) => {
  const calls = new Map<string | null, number>()
  const script: Model.Script = (_request, context) => {
    calls.set(context.userId, (calls.get(context.userId) ?? 0) + 1)
    return { text: "ok", usage: usage(context.userId) }
  }
  return { calls, script }
}

describe("Budget in the agent loop", () => {
  it.effect("a user over the cap is blocked before the next model call; other users are not", () => {
    const { calls, script } = countingScript(() => ({ inputTokens: 30, outputTokens: 30 }))
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const first = yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(first.turns, 1)
      assert.isFalse(first.interrupted)
      // 60 < 100: still allowed, and it goes over.
      const second = yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(second.turns, 1)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 120)

      const blocked = yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(blocked.turns, 0)
      assert.isTrue(blocked.interrupted)
      assert.strictEqual(blocked.interruptionReason, "budget:per_user_max_tokens")
      assert.strictEqual(blocked.tokensIn + blocked.tokensOut, 0)
      assert.strictEqual(calls.get("alice"), 2)

      const bob = yield* agent.run("hi", { userId: "bob" })
      assert.strictEqual(bob.turns, 1)
      assert.isFalse(bob.interrupted)
      assert.strictEqual((yield* budget.usageFor("bob")).tokensTotal, 60)
      assert.strictEqual((yield* budget.globalUsage).tokensTotal, 180)
    }).pipe(Effect.provide(agentLayer(script, Budget.layer({ perUserMaxTokens: 100 }))))
  })

  it.effect("a wrapper that spreads the in-memory service and replaces reserve is the one the agent calls", () => {
    const { script } = countingScript(() => ({ inputTokens: 10, outputTokens: 5 }))
    const reserved: Array<number> = []
    const wrapped = Layer.effect(
      Budget.Budget,
      Effect.map(Budget.Budget, (inner): Budget.Service => ({
        ...inner,
        reserve: (estimate) => Effect.zipLeft(inner.reserve(estimate), Effect.sync(() => reserved.push(estimate.outputTokens)))
      }))
    ).pipe(Layer.provide(Budget.layer({ perUserMaxTokens: 1_000 })))
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(reserved.length, 1)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 15)
    }).pipe(Effect.provide(agentLayer(script, wrapped)))
  })

  it.effect("a reservation copied by a wrapper ({ ...reservation }) is still released when the model fails", () => {
    const failing: Model.Script = () => ({ error: new Model.ModelError({ reason: "bad_request", retryable: false, description: "no" }) })
    const copying = Layer.effect(
      Budget.Budget,
      Effect.map(Budget.Budget, (inner): Budget.Service => ({
        ...inner,
        reserve: (estimate) => Effect.map(inner.reserve(estimate), (reservation) => ({ ...reservation }))
      }))
    ).pipe(Layer.provide(Budget.layer({ perUserMaxTokens: 1_000 })))
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const exit = yield* Effect.exit(agent.run("hi", { userId: "alice" }))
      assert.isTrue(Exit.isFailure(exit) && Cause.failureOption(exit.cause)._tag === "Some")
      const budget = yield* Budget.Budget
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
    }).pipe(Effect.provide(agentLayer(failing, copying)))
  })

  it.effect("going over mid-run stops the run at the start of the next turn", () => {
    const script: Model.Script = () => ({
      toolCalls: [{ name: "noop", args: {} }],
      usage: { inputTokens: 20, outputTokens: 20 }
    })
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const result = yield* agent.run("loop", { userId: "alice" })
      // 0, 40, 80 are under 100; 120 is not.
      assert.strictEqual(result.turns, 3)
      assert.isTrue(result.interrupted)
      assert.strictEqual(result.interruptionReason, "budget:per_user_max_tokens")
      assert.strictEqual(result.tokensIn + result.tokensOut, 120)
    }).pipe(Effect.provide(agentLayer(script, Budget.layer({ perUserMaxTokens: 100 }))))
  })

  it.effect("max_tokens = 0 interrupts every run with a budget: reason (original smoke test)", () =>
    Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const result = yield* agent.run("hi")
      assert.isTrue(result.interrupted)
      assert.strictEqual(result.interruptionReason, "budget:max_tokens")
      assert.strictEqual(result.turns, 0)
    }).pipe(Effect.provide(agentLayer(() => ({ text: "never" }), Budget.layer({ maxTokens: 0 })))))

  it.effect("agent.stream emits budget_warning, then budget_exceeded before completed", () => {
    const { script } = countingScript(() => ({ inputTokens: 30, outputTokens: 30 }))
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      yield* agent.run("hi", { userId: "alice" })

      const warned = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.stream("hi", { userId: "alice" })))
      const warning = warned.find(AgentEvent.AgentEvent.$is("budget_warning"))
      assert.deepStrictEqual(warning && { turn: warning.turn, reason: warning.reason }, {
        turn: 1,
        reason: "per-user tokens at 60%"
      })
      assert.isUndefined(warned.find(AgentEvent.AgentEvent.$is("budget_exceeded")))

      const blocked = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.stream("hi", { userId: "alice" })))
      const tags = blocked.map((event) => event._tag)
      assert.deepStrictEqual(tags, ["started", "budget_exceeded", "completed"])
      const exceeded = blocked[1]
      assert.isTrue(exceeded !== undefined && AgentEvent.AgentEvent.$is("budget_exceeded")(exceeded))
      if (exceeded !== undefined && AgentEvent.AgentEvent.$is("budget_exceeded")(exceeded)) {
        assert.strictEqual(exceeded.reason, "per_user_max_tokens")
      }
      const completed = blocked[2]
      if (completed !== undefined && AgentEvent.AgentEvent.$is("completed")(completed)) {
        assert.isTrue(completed.result.interrupted)
        assert.strictEqual(completed.result.interruptionReason, "budget:per_user_max_tokens")
      } else {
        assert.fail("the last event is not completed")
      }
    }).pipe(Effect.provide(agentLayer(script, Budget.layer({ perUserMaxTokens: 100, softWarningAt: 0.5 }))))
  })

  it.effect("a model whose complete throws before returning its effect: the run dies and the reservation is released", () => {
    let calls = 0
    const throwsOnce = Model.make({
      name: "throws-once",
      complete: (request) => {
        calls++
        if (calls === 1) throw new Error(`cannot encode ${request.messages.length} messages`)
        return Effect.succeed({ text: "ok", toolCalls: [], usage: { inputTokens: 1, outputTokens: 1, costUsd: 0 }, stopReason: "end_turn" })
      }
    })
    const layer = Agent.layer().pipe(
      Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 1_000 }))),
      Layer.provide(Layer.succeed(Model.Model, throwsOnce)),
      Layer.orDie
    )
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const exit = yield* Effect.exit(agent.run("hi", { userId: "alice" }))
      assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause), "the run died")
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 0)
      // The estimate (4096 output tokens) is no longer held: the next run is allowed and charged what it used.
      const next = yield* agent.run("hi", { userId: "alice" })
      assert.isFalse(next.interrupted)
      assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a streamed answer cut off after part of it reached the caller is charged the whole estimate (fail closed)", () => {
    let calls = 0
    // A stream that delivers a chunk, then waits: the caller stops before any finish part (and its usage) came.
    const cutOff = Layer.succeed(Model.Model, Model.Model.of({
      name: "cut-off",
      price: undefined,
      complete: () => Effect.dieMessage("not used"),
      stream: () =>
        Stream.concat(
          Stream.sync((): Model.StreamPart => {
            calls++
            return { _tag: "TextDelta", text: "the whole" }
          }),
          Stream.never
        )
    }))
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const events = yield* Stream.runCollect(
        agent.stream("hi", { userId: "alice" }).pipe(Stream.takeUntil(AgentEvent.AgentEvent.$is("model_chunk")))
      )
      assert.isTrue(Chunk.some(events, AgentEvent.AgentEvent.$is("model_chunk")), "part of the answer reached the caller")
      const used = yield* budget.usageFor("alice")
      // The estimate: the request's bytes in, the default max_tokens (4096) out.
      assert.strictEqual(used.tokensOut, 4096)
      assert.isAbove(used.tokensIn, 0)
      const next = yield* agent.run("hi", { userId: "alice" })
      assert.strictEqual(next.interruptionReason, "budget:per_user_max_tokens")
      assert.strictEqual(calls, 1)
    }).pipe(
      Effect.provide(
        Agent.layer({ tools: [noop] }).pipe(
          Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer({ perUserMaxTokens: 100 }))),
          Layer.provide(cutOff),
          Layer.orDie
        )
      )
    )
  })

  it.effect("a failed model call releases its reservation", () => {
    let failNext = true
    const script: Model.Script = () => {
      if (failNext) {
        failNext = false
        return Effect.fail(
          new Model.ModelError({ reason: "bad_request", retryable: false, description: "scripted failure" })
        )
      }
      return { text: "ok", usage: { inputTokens: 0, outputTokens: 0 } }
    }
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const failure = yield* Effect.flip(agent.run("hi", { userId: "alice" }))
      assert.strictEqual(failure._tag, "ModelError")
      // A leaked 4096-token estimate would block this run (cap 1 token).
      const result = yield* agent.run("hi", { userId: "alice" })
      assert.isFalse(result.interrupted)
      assert.strictEqual(result.turns, 1)
    }).pipe(Effect.provide(agentLayer(script, Budget.layer({ perUserMaxTokens: 1 }))))
  })

  it.effect("an interrupted model call releases its reservation", () =>
    Effect.gen(function*() {
      const inCall = yield* Deferred.make<void>()
      let hang = true
      const script: Model.Script = () => {
        if (!hang) return { text: "ok" }
        hang = false
        return Effect.zipRight(Deferred.succeed(inCall, undefined), Effect.never)
      }
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const running = yield* Effect.fork(agent.run("hi", { userId: "alice" }))
        yield* Deferred.await(inCall)
        yield* Fiber.interrupt(running)
        const result = yield* agent.run("hi", { userId: "alice" })
        assert.isFalse(result.interrupted)
        assert.strictEqual(result.turns, 1)
      }).pipe(Effect.provide(agentLayer(script, Budget.layer({ perUserMaxTokens: 1 }))))
    }))
})
