import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Metric, Schema, TestClock } from "effect"
import { Agent, Budget, Memory, Model, RunContext, Telemetry, Tool } from "jeevesagent"

/** The `jeeves.state.evictions` counter for `store` (a global metric: read before and after). */
const evictions = (store: string) =>
  Effect.map(Metric.snapshot, (pairs) => {
    let total = 0
    for (const pair of pairs) {
      if (pair.metricKey.name !== "jeeves.state.evictions") continue
      if (!pair.metricKey.tags.some((tag) => tag.key === "store" && tag.value === store)) continue
      const state = pair.metricState as unknown as { count: number | bigint }
      total += Number(state.count)
    }
    return total
  })

describe("jeeves.state.evictions", () => {
  it.effect("counts budget users evicted past maxUsers", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ perUserMaxTokens: 1000 }, { maxUsers: 2, userIdleTtl: null })
      const before = yield* evictions("budget")
      for (const user of ["a", "b", "c", "d"]) {
        const reservation = yield* budget.reserve({ inputTokens: 1, outputTokens: 1, costUsd: 0 }).pipe(
          RunContext.withUser(user)
        )
        if (reservation._tag === "Granted") yield* reservation.settle({ inputTokens: 1, outputTokens: 1, costUsd: 0 })
      }
      assert.strictEqual((yield* evictions("budget")) - before, 2)
    }))

  it.effect("counts memory users evicted past maxUsers", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.makeInMemory({ maxUsers: 2, userIdleTtl: null })
      const before = yield* evictions("memory")
      for (const user of ["a", "b", "c"]) {
        yield* memory.updateBlock("notes", user).pipe(RunContext.withUser(user))
      }
      assert.strictEqual((yield* evictions("memory")) - before, 1)
    }))
})

/** A tool that takes a while: a long job, or a wait on an approver. */
const slow = Tool.make("slow", {
  description: "takes a while",
  parameters: Schema.Struct({}),
  handler: () => Effect.as(Effect.sleep("15 minutes"), "done")
})

/** Calls `slow`, then answers "finished" (or what `afterTool` gives). */
const slowScript = (afterTool: () => Effect.Effect<Model.ScriptedTurn> = () => Effect.succeed({ text: "finished" })) =>
  (request: Model.ModelRequest) =>
    request.messages.at(-1)!.role === "tool" ? afterTool() : Effect.succeed({ toolCalls: [{ name: "slow", args: {} }] })

/** An agent over `memoryLive` (also provided, the same instance) running `script`. */
const withAgent = <A, E>(
  memoryLive: Layer.Layer<Memory.Memory>,
  script: Model.Script,
  body: (agent: Agent.Service, memory: Memory.Service) => Effect.Effect<A, E>,
  telemetryLive: Layer.Layer<Telemetry.Telemetry> = Telemetry.layerNone
) => {
  const AgentLive = Agent.layer({ tools: [slow] }).pipe(
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), memoryLive, telemetryLive))
  )
  return Effect.flatMap(Effect.all([Agent.Agent, Memory.Memory]), ([agent, memory]) => body(agent, memory)).pipe(
    Effect.provide(Layer.merge(AgentLive, memoryLive))
  )
}

const seedAlice = (memory: Memory.Service) =>
  Effect.zipRight(
    memory.updateBlock("prefs", "likes tea"),
    memory.appendFact({ subject: "alice", predicate: "lives in", object: "Lisbon" })
  ).pipe(RunContext.withUser("alice"))

/** `[blocks, facts, episodes]` of `userId`. */
const countsOf = (memory: Memory.Service, userId: string | null) =>
  Effect.map(
    memory.export.pipe(RunContext.withUser(userId)),
    (exported) => [exported.blocks.length, exported.facts.length, exported.episodes.length]
  )

describe("in-memory Memory: a user with a run in flight is in use", () => {
  it.effect("their state outlives userIdleTtl for the whole run", () =>
    withAgent(Memory.layerInMemory({ userIdleTtl: "10 minutes" }), slowScript(), (agent, memory) =>
      Effect.gen(function*() {
        yield* seedAlice(memory)
        const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
        yield* TestClock.adjust("15 minutes")
        const result = yield* Fiber.join(run)
        assert.strictEqual(result.output, "finished")
        assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 1])
      })))

  it.effect("the same through the composed wrappers (telemetry on, tracer off), interrupted runs included", () =>
    withAgent(Memory.layerInMemory({ userIdleTtl: "10 minutes" }), slowScript(), (agent, memory) =>
      Effect.gen(function*() {
        yield* seedAlice(memory)
        const start = (prompt: string) =>
          Effect.fork(agent.run(prompt, { userId: "alice", sessionId: "s" }).pipe(Effect.withTracerEnabled(false)))
        const finished = yield* start("start the long job")
        yield* TestClock.adjust("15 minutes")
        assert.strictEqual((yield* Fiber.join(finished)).output, "finished")
        assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 1])
        const interrupted = yield* start("again")
        yield* TestClock.adjust("12 minutes")
        yield* Fiber.interrupt(interrupted)
        yield* TestClock.adjust("9 minutes")
        assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 1])
        yield* TestClock.adjust("10 minutes")
        assert.deepStrictEqual(yield* countsOf(memory, "alice"), [0, 0, 0])
      }), Telemetry.layer()))

  it.effect("past maxUsers during the run another user is evicted, not them", () =>
    withAgent(Memory.layerInMemory({ maxUsers: 2, userIdleTtl: null }), slowScript(), (agent, memory) =>
      Effect.gen(function*() {
        yield* seedAlice(memory)
        const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
        yield* TestClock.adjust("1 minute")
        for (const user of ["bob", "carol"]) yield* memory.updateBlock("notes", user).pipe(RunContext.withUser(user))
        yield* TestClock.adjust("14 minutes")
        yield* Fiber.join(run)
        assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 1])
        assert.deepStrictEqual(yield* countsOf(memory, "carol"), [1, 0, 0])
        assert.deepStrictEqual(yield* countsOf(memory, "bob"), [0, 0, 0])
      })))

  it.effect("concurrent anonymous runs each hold the shared anonymous state: the first to end does not unpin it", () =>
    withAgent(Memory.layerInMemory({ userIdleTtl: "10 minutes" }), slowScript(), (agent, memory) =>
      Effect.gen(function*() {
        yield* memory.updateBlock("prefs", "shared").pipe(RunContext.withUser(null))
        const first = yield* Effect.fork(agent.run("one", { sessionId: "s1" }))
        yield* TestClock.adjust("14 minutes")
        const second = yield* Effect.fork(agent.run("two", { sessionId: "s2" }))
        yield* TestClock.adjust("1 minute")
        yield* Fiber.join(first)
        // 11 minutes after the first run ended, the second is still in its tool: a sweep keeps the state.
        yield* TestClock.adjust("11 minutes")
        yield* memory.working.pipe(RunContext.withUser("bob"))
        yield* TestClock.adjust("3 minutes")
        yield* Fiber.join(second)
        assert.deepStrictEqual(yield* countsOf(memory, null), [1, 0, 2])
      })))

  for (
    const [name, script, end] of [
      ["dies", slowScript(() => Effect.die("model crashed")), Fiber.await],
      ["is interrupted", slowScript(), Fiber.interrupt]
    ] as const
  ) {
    it.effect(`a run that ${name} releases its hold, touching the state at its end`, () =>
      withAgent(Memory.layerInMemory({ userIdleTtl: "10 minutes" }), script, (agent, memory) =>
        Effect.gen(function*() {
          yield* seedAlice(memory)
          const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
          yield* TestClock.adjust("12 minutes")
          if (name === "dies") yield* TestClock.adjust("3 minutes")
          assert.isTrue(Exit.isFailure(yield* end(run)))
          // Idle from the run's end, not from her last memory call before it.
          yield* TestClock.adjust("9 minutes")
          assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 0])
          // Released: nothing pins her any more, so she idles out.
          yield* TestClock.adjust("10 minutes")
          assert.deepStrictEqual(yield* countsOf(memory, "alice"), [0, 0, 0])
        })))
  }
})

describe("bounded memory state under runs that hold it", () => {
  const isExtraction = (request: Model.ModelRequest) =>
    request.messages[0]?.role === "system" && request.messages[0].content === Memory.extractionPrompt

  /** Calls `slow`, then answers "finished"; extraction calls get `[]`. */
  const extractingScript: Model.Script = (request) =>
    isExtraction(request) ?
      { text: "[]" } :
      request.messages.at(-1)!.role === "tool" ?
      { text: "finished" } :
      { toolCalls: [{ name: "slow", args: {} }] }

  const countsOf = (memory: Memory.Service, userId: string | null) =>
    Effect.map(
      memory.export.pipe(RunContext.withUser(userId)),
      (exported) => [exported.blocks.length, exported.facts.length, exported.episodes.length]
    )

  it.effect("with Memory.autoExtract over the in-memory Memory, a user's state still outlives userIdleTtl for the whole run", () => {
    const ModelLive = Model.layerScripted(extractingScript)
    const MemoryLive = Memory.autoExtract().pipe(
      Layer.provide(Memory.layerInMemory({ userIdleTtl: "10 minutes" })),
      Layer.provide(Layer.merge(ModelLive, Budget.layerNone))
    )
    const AgentLive = Agent.layer({ tools: [slow] }).pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, ModelLive, MemoryLive))
    )
    return Effect.gen(function*() {
      const [agent, memory] = yield* Effect.all([Agent.Agent, Memory.Memory])
      yield* Effect.zipRight(
        memory.updateBlock("prefs", "likes tea"),
        memory.appendFact({ subject: "alice", predicate: "lives in", object: "Lisbon" })
      ).pipe(RunContext.withUser("alice"))
      const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
      yield* TestClock.adjust("15 minutes")
      assert.strictEqual((yield* Fiber.join(run)).output, "finished")
      assert.deepStrictEqual(yield* countsOf(memory, "alice"), [1, 1, 1])
    }).pipe(Effect.provide(Layer.merge(AgentLive, MemoryLive)))
  })

  it.effect("a new user's write while every other user is held by a run is kept, over maxUsers until they end", () => {
    const MemoryLive = Memory.layerInMemory({ maxUsers: 1, userIdleTtl: null })
    const AgentLive = Agent.layer({ tools: [slow] }).pipe(
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(extractingScript), MemoryLive))
    )
    return Effect.gen(function*() {
      const [agent, memory] = yield* Effect.all([Agent.Agent, Memory.Memory])
      const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
      yield* TestClock.adjust("1 minute")
      yield* memory.updateBlock("notes", "bob's note").pipe(RunContext.withUser("bob"))
      assert.deepStrictEqual((yield* memory.working.pipe(RunContext.withUser("bob"))).map((b) => b.content), ["bob's note"])
      yield* TestClock.adjust("14 minutes")
      yield* Fiber.join(run)
      assert.deepStrictEqual(yield* countsOf(memory, "alice"), [0, 0, 1])
    }).pipe(Effect.provide(Layer.merge(AgentLive, MemoryLive)))
  })
})

describe("the in-memory budget under runs that hold it", () => {
  /** Turn 1 spends 1000 tokens and calls `slow`; turn 2 would answer. */
  const spendingScript = (turns: { count: number }): Model.Script => (request) => {
    turns.count++
    return request.messages.at(-1)!.role === "tool" ?
      { text: "finished", usage: { inputTokens: 500, outputTokens: 100 } } :
      { toolCalls: [{ name: "slow", args: {} }], usage: { inputTokens: 900, outputTokens: 100 } }
  }

  for (
    const [name, options, crowd] of [
      ["a tool slower than userIdleTtl", { userIdleTtl: "10 minutes" }, 0],
      ["other users crowding past maxUsers", { maxUsers: 2, userIdleTtl: null }, 5]
    ] as const
  ) {
    it.effect(`a user's spend is not forgotten between the turns of their own run: ${name}`, () => {
      const turns = { count: 0 }
      const BudgetLive = Layer.memoize(Budget.layer({ perUserMaxTokens: 1000 }, options))
      return Effect.gen(function*() {
        const budgetLive = yield* BudgetLive
        const [agent, budget] = yield* Effect.all([Agent.Agent, Budget.Budget]).pipe(
          Effect.provide(Layer.merge(
            Agent.layer({ tools: [slow] }).pipe(
              Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(spendingScript(turns)), budgetLive))
            ),
            budgetLive
          ))
        )
        const run = yield* Effect.fork(agent.run("start the long job", { userId: "alice", sessionId: "s" }))
        yield* TestClock.adjust("1 minute")
        for (let i = 0; i < crowd; i++) {
          const reservation = yield* budget.reserve({ inputTokens: 1, outputTokens: 0, costUsd: 0 }).pipe(RunContext.withUser(`other_${i}`))
          if (reservation._tag === "Granted") yield* reservation.settle({ inputTokens: 1, outputTokens: 0, costUsd: 0 })
        }
        yield* TestClock.adjust("14 minutes")
        const result = yield* Fiber.join(run)
        assert.strictEqual(turns.count, 1, "turn 2 is blocked: turn 1 reached the per-user cap")
        assert.strictEqual(result.interruptionReason, "budget:per_user_max_tokens")
        assert.strictEqual((yield* budget.usageFor("alice")).tokensTotal, 1000)
      }).pipe(Effect.scoped)
    })
  }
})
