import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Logger, LogLevel, Metric, TestClock } from "effect"
import { Agent, Budget, Memory, Model, RunContext, Telemetry } from "jeevesagent"
import { everyOperation } from "./support/memoryConformance.js"

const as = (userId: string | null, sessionId = "s1") => RunContext.withUser(userId, { sessionId })

const isExtraction = (request: Model.ModelRequest) =>
  request.messages[0]?.role === "system" && request.messages[0].content === Memory.extractionPrompt

/** A model answering every extraction call with `answer`, and counting them. */
const extractor = (answer: Model.ScriptedTurn | ((request: Model.ModelRequest) => Model.ScriptedTurn)) => {
  const calls: Array<{ user: string | null; request: Model.ModelRequest }> = []
  const agentRequests: Array<Model.ModelRequest> = []
  const layer = Model.layerScripted((request, context) => {
    if (!isExtraction(request)) {
      agentRequests.push(request)
      return { text: "agent answer" }
    }
    calls.push({ user: context.userId, request })
    return typeof answer === "function" ? answer(request) : answer
  })
  return { agentRequests, calls, layer }
}

type BudgetCall =
  | { readonly kind: "reserve"; readonly user: string | null; readonly estimate: Model.Usage }
  | { readonly kind: "settle"; readonly user: string | null; readonly usage: Model.Usage }
  | { readonly kind: "release"; readonly user: string | null }

/** A budget that records what it is asked, for whom, and blocks the users in `blocked`. */
const recordingBudget = (blocked: ReadonlyArray<string | null> = []) => {
  const calls: Array<BudgetCall> = []
  const service: Budget.Service = {
    ...Budget.none,
    reserve: (estimate) =>
      Effect.map(RunContext.current, ({ userId: user }): Budget.Reservation => {
        calls.push({ kind: "reserve", user, estimate })
        if (blocked.includes(user)) return { _tag: "Blocked", reason: "per_user_max_tokens" }
        return {
          _tag: "Granted",
          warning: undefined,
          settle: (usage) => Effect.sync(() => void calls.push({ kind: "settle", user, usage })),
          release: Effect.sync(() => void calls.push({ kind: "release", user }))
        }
      })
  }
  return { calls, layer: Layer.succeed(Budget.Budget, service) }
}

const withAutoExtract = (
  model: Layer.Layer<Model.Model>,
  options?: Memory.AutoExtractOptions,
  budget: Layer.Layer<Budget.Budget> = Budget.layerNone
) =>
  Memory.autoExtract(options).pipe(
    Layer.provide(Memory.layerInMemory()),
    Layer.provide(Layer.merge(model, budget))
  )

const captureLogs = () => {
  const lines: Array<{ level: string; message: string; logger: unknown }> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    lines.push({
      level: logLevel.label,
      message: Array.isArray(message) ? message.join(" ") : String(message),
      logger: [...annotations].find(([key]) => key === "logger")?.[1]
    })
  })
  return { lines, layer: Logger.add(logger) }
}

/** The value of an auto-extract metric for these tags (0 when never recorded). */
/** Metrics tagged with raw user ids, as a deployment with a bounded set of tenants opts in to. */
const rawUserIds = Telemetry.layer({ metricUserIdAttribute: "raw" })

const metricValue = (name: string, tags: Record<string, string>) =>
  Effect.map(Metric.snapshot, (pairs) => {
    for (const pair of pairs) {
      if (pair.metricKey.name !== name) continue
      const labels = Object.fromEntries([...pair.metricKey.tags].map((label) => [label.key, label.value]))
      if (JSON.stringify(Object.entries(labels).sort()) !== JSON.stringify(Object.entries(tags).sort())) continue
      const state = pair.metricState as { count?: number; sum?: number }
      return { count: Number(state.count ?? 0), sum: Number(state.sum ?? 0) }
    }
    return { count: 0, sum: 0 }
  })

const facts = (userId: string | null) => Effect.flatMap(Memory.Memory, (m) => m.export).pipe(
  as(userId),
  Effect.map((e) => e.facts)
)

describe("Memory.autoExtract", () => {
  it.effect("appends the extracted facts for the same user, valid from the episode and sourced to it", () => {
    const model = extractor({
      text: JSON.stringify([
        { subject: "user", predicate: "lives in", object: "Lisbon", confidence: 0.9 },
        { subject: "user", predicate: "likes", object: "tea" }
      ])
    })
    return Effect.gen(function*() {
      yield* TestClock.adjust("1 hour")
      const m = yield* Memory.Memory
      const at = new Date("2024-03-01T12:00:00Z")
      const id = yield* m.remember({ input: "I live in Lisbon and like tea", output: "Noted!", occurredAt: at }).pipe(
        as("alice")
      )
      const stored = yield* facts("alice")
      assert.deepStrictEqual(stored.map((f) => [f.subject, f.predicate, f.object, f.confidence]), [
        ["user", "lives in", "Lisbon", 0.9],
        ["user", "likes", "tea", 1]
      ])
      for (const fact of stored) {
        assert.strictEqual(fact.userId, "alice")
        assert.strictEqual(fact.validFrom.getTime(), at.getTime())
        assert.deepStrictEqual(fact.sources, [id])
        assert.strictEqual(fact.recordedAt.getTime(), 3_600_000)
      }
      assert.deepStrictEqual(yield* facts("bob"), [])
      // The prompt: the original's two messages.
      const [call] = model.calls
      assert.strictEqual(call!.user, "alice")
      assert.deepStrictEqual(call!.request.messages.map((msg) => msg.role), ["system", "user"])
      assert.strictEqual(
        call!.request.messages[1]!.content,
        "Episode (occurred at 2024-03-01T12:00:00.000Z):\n\nUSER: I live in Lisbon and like tea\nASSISTANT: Noted!\n"
      )
      assert.deepStrictEqual(call!.request.tools, [])
    }).pipe(Effect.provide(withAutoExtract(model.layer)))
  })

  it.effect("one user's extracted fact never closes another user's", () => {
    const model = extractor((request) => ({
      text: JSON.stringify([{ subject: "user", predicate: "lives in", object: request.messages[1]!.content.includes("Porto") ? "Porto" : "Lisbon" }])
    }))
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "I live in Porto", output: "ok" }).pipe(as("bob"))
      yield* m.remember({ input: "I live in Lisbon", output: "ok" }).pipe(as("alice"))
      yield* m.remember({ input: "I live in Porto now", output: "ok" }).pipe(as("alice"))
      assert.deepStrictEqual((yield* facts("bob")).map((f) => [f.object, f.validUntil]), [["Porto", null]])
      assert.deepStrictEqual((yield* facts("alice")).map((f) => [f.object, f.validUntil === null]), [
        ["Lisbon", false],
        ["Porto", true]
      ])
    }).pipe(Effect.provide(withAutoExtract(model.layer)))
  })

  it.effect("parsing: fences, non-arrays, the first maxFacts items, skipping incomplete ones, scalars, confidence", () => {
    const answers = [
      "```json\n[{\"subject\": \"a\", \"predicate\": \"b\", \"object\": \"c\"}]\n```",
      "{\"subject\": \"not\", \"predicate\": \"an\", \"object\": \"array\"}",
      "[{\"subject\": \"x\"}, \"text\", null, {\"subject\": \"n\", \"predicate\": \"is\", \"object\": 42, \"confidence\": \"0.25\"}]",
      "[{\"subject\": \"c\", \"predicate\": \"p\", \"object\": \"hi\", \"confidence\": 7}, {\"subject\": \"c\", \"predicate\": \"q\", \"object\": \"lo\", \"confidence\": -1}, {\"subject\": \"c\", \"predicate\": \"r\", \"object\": \"x\", \"confidence\": \"lots\"}]",
      JSON.stringify(Array.from({ length: 5 }, (_, i) => ({ subject: "many", predicate: `p${i}`, object: "o" }))),
      "[]"
    ]
    let next = 0
    const model = extractor(() => ({ text: answers[next++]! }))
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      for (let i = 0; i < answers.length; i++) yield* m.remember({ input: `turn ${i}`, output: "ok" }).pipe(as("alice"))
      const stored = yield* facts("alice")
      assert.deepStrictEqual(stored.map((f) => [f.subject, f.predicate, f.object, f.confidence]), [
        ["a", "b", "c", 1],
        ["n", "is", "42", 0.25],
        ["c", "p", "hi", 1],
        ["c", "q", "lo", 0],
        ["c", "r", "x", 1],
        ["many", "p0", "o", 1],
        ["many", "p1", "o", 1],
        ["many", "p2", "o", 1],
        ["many", "p3", "o", 1]
      ])
    }).pipe(Effect.provide(withAutoExtract(model.layer, { maxFacts: 4 })))
  })

  it.effect("a failed extraction never fails remember: status error, a warning, onError", () => {
    const errors: Array<Memory.AutoExtractError> = []
    const logs = captureLogs()
    let next = 0
    const model = extractor(() =>
      next++ === 0 ?
        { error: new Model.ModelError({ reason: "overloaded", retryable: true, description: "try later" }) } :
        { text: "Sure! Here are the facts: none" }
    )
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      const first = yield* m.remember({ input: "hello", output: "hi" }).pipe(as("carol"))
      const second = yield* m.remember({ input: "hello again", output: "hi" }).pipe(as("carol"))
      // Both episodes are remembered.
      assert.deepStrictEqual((yield* Effect.flatMap(Memory.Memory, (mm) => mm.export).pipe(as("carol"))).episodes.map((e) => e.id), [first, second])
      assert.deepStrictEqual(errors.map((e) => [e.episodeId, e.userId, e.reason]), [
        [first, "carol", "model"],
        [second, "carol", "invalid_output"]
      ])
      assert.include(errors[0]!.message, `auto-extract failed for episode ${first} (user_id=carol):`)
      const warnings = logs.lines.filter((line) => line.level === "WARN")
      // The warning shows the user id as spans do (it becomes an event of the run's span), not raw.
      assert.deepStrictEqual(
        warnings.map((w) => [w.message, w.logger]),
        errors.map((e) => [`auto-extract failed for episode ${e.episodeId}: ${e.description}`, "jeevesagent.memory.auto_extract"])
      )
      for (const warning of warnings) assert.notInclude(JSON.stringify(warning), "carol")
      const invocations = yield* metricValue("jeeves.auto_extract.invocations", { user_id: "carol", status: "error" })
      assert.strictEqual(invocations.count, 2)
    }).pipe(
      Effect.provide(withAutoExtract(model.layer, { onError: (error) => void errors.push(error) }).pipe(Layer.provide(rawUserIds))),
      Effect.provide(logs.layer)
    )
  })

  it.effect("an onError that throws and a store that fails are swallowed too", () => {
    const model = extractor({ text: JSON.stringify([{ subject: "s", predicate: "p", object: "o", confidence: 0.5 }]) })
    const failingFacts = Layer.effect(
      Memory.Memory,
      Effect.map(Memory.makeInMemory(), (inner): Memory.Service => ({
        ...inner,
        appendFact: () => Effect.fail(new Memory.MemoryError({ method: "appendFact", description: "disk full" }))
      }))
    )
    const seen: Array<string> = []
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "x", output: "y" }).pipe(as("dave"))
      assert.deepStrictEqual(seen, ["store"])
    }).pipe(Effect.provide(
      Memory.autoExtract({
        onError: (error) => {
          seen.push(error.reason)
          throw new Error("callback bug")
        }
      }).pipe(Layer.provide(failingFacts), Layer.provide(Layer.merge(model.layer, Budget.layerNone)))
    ))
  })

  it.effect("metrics: duration and invocations tagged user_id and status", () => {
    let calls = 0
    const model = extractor(() => (calls++ === 0 ? { text: "[]", latency: "250 millis" } : { text: "[]" }))
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      const fiber = yield* Effect.fork(m.remember({ input: "x", output: "y" }).pipe(as("erin")))
      while (Chunk.isEmpty(yield* TestClock.sleeps())) yield* Effect.yieldNow()
      yield* TestClock.adjust("250 millis")
      yield* fiber.await
      const duration = yield* metricValue("jeeves.auto_extract.duration_ms", { user_id: "erin", status: "ok" })
      assert.deepStrictEqual(duration, { count: 1, sum: 250 })
      const invocations = yield* metricValue("jeeves.auto_extract.invocations", { user_id: "erin", status: "ok" })
      assert.strictEqual(invocations.count, 1)
      yield* m.remember({ input: "x", output: "y" }).pipe(as(null))
      assert.strictEqual((yield* metricValue("jeeves.auto_extract.invocations", { user_id: "anonymous", status: "ok" })).count, 1)
    }).pipe(Effect.provide(withAutoExtract(model.layer).pipe(Layer.provide(rawUserIds))))
  })

  it.effect("without a Telemetry service the metrics carry no user id (each id would be a series kept for good)", () => {
    const model = extractor({ text: "[]" })
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "x", output: "y" }).pipe(as("untagged_user"))
      const tagged = (yield* Metric.snapshot).filter((pair) =>
        pair.metricKey.name.startsWith("jeeves.auto_extract") &&
        pair.metricKey.tags.some((tag) => tag.key === "user_id" && tag.value.includes("untagged_user"))
      )
      assert.deepStrictEqual(tagged, [])
    }).pipe(Effect.provide(withAutoExtract(model.layer)))
  })

  it.effect("metrics follow the Telemetry service's user id attribute", () => {
    const model = extractor({ text: "[]" })
    const hashed = Telemetry.userIdValue("hashed", "frank")!
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "x", output: "y" }).pipe(as("frank"))
      assert.strictEqual((yield* metricValue("jeeves.auto_extract.invocations", { user_id: hashed, status: "ok" })).count, 1)
      assert.strictEqual((yield* metricValue("jeeves.auto_extract.invocations", { user_id: "frank", status: "ok" })).count, 0)
    }).pipe(Effect.provide(withAutoExtract(model.layer).pipe(Layer.provide(Telemetry.layer({ userIdAttribute: "hashed", metricUserIdAttribute: "hashed" })))))
  })

  it.effect("charged to the same user's budget; a blocked user is skipped without a model call", () => {
    const model = extractor({ text: "[]", usage: { inputTokens: 120, outputTokens: 8, costUsd: 0.001 } })
    const budget = recordingBudget(["grace"])
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "hello", output: "hi" }).pipe(as("heidi"))
      yield* m.remember({ input: "hello", output: "hi" }).pipe(as("grace"))
      assert.strictEqual(model.calls.length, 1)
      assert.deepStrictEqual(budget.calls.map((c) => [c.kind, c.user]), [
        ["reserve", "heidi"],
        ["settle", "heidi"],
        ["reserve", "grace"]
      ])
      const [reserve, settle] = budget.calls
      assert.strictEqual(reserve!.kind === "reserve" && reserve.estimate.outputTokens, 64)
      assert.deepStrictEqual(settle!.kind === "settle" && settle.usage, { inputTokens: 120, outputTokens: 8, costUsd: 0.001 })
      assert.strictEqual((yield* metricValue("jeeves.auto_extract.invocations", { user_id: "grace", status: "skipped_budget" })).count, 1)
      // The episode itself is remembered either way.
      assert.strictEqual((yield* Effect.flatMap(Memory.Memory, (mm) => mm.profile).pipe(as("grace"))).episodes, 1)
    }).pipe(Effect.provide(withAutoExtract(model.layer, { maxTokens: 64 }, budget.layer).pipe(Layer.provide(rawUserIds))))
  })

  it.effect("a failed model call releases its reservation", () => {
    const model = extractor({ error: new Model.ModelError({ reason: "server_error", retryable: true, description: "500" }) })
    const budget = recordingBudget()
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "hello", output: "hi" }).pipe(as("ivan"))
      assert.deepStrictEqual(budget.calls.map((c) => c.kind), ["reserve", "release"])
    }).pipe(Effect.provide(withAutoExtract(model.layer, {}, budget.layer)))
  })

  it.effect("with the in-memory Budget the extraction shows in the user's usage", () => {
    const model = extractor({ text: "[]", usage: { inputTokens: 100, outputTokens: 5 } })
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "hello", output: "hi" }).pipe(as("judy"))
      const budget = yield* Budget.Budget
      assert.strictEqual((yield* budget.usageFor("judy")).tokensTotal, 105)
      assert.strictEqual((yield* budget.usageFor("mallory")).tokensTotal, 0)
    }).pipe(Effect.provide(
      Memory.autoExtract().pipe(
        Layer.provide(Memory.layerInMemory()),
        Layer.provideMerge(Layer.merge(model.layer, Budget.layer({})))
      )
    ))
  })

  it.effect("forwards every other method to the wrapped memory", () => {
    const called: Array<string> = []
    const inner = Effect.map(Memory.makeInMemory(), (service): Memory.Service => {
      const wrapped: Record<string, unknown> = {}
      for (const [name, value] of Object.entries(service)) {
        wrapped[name] = typeof value === "function" ?
          (...args: Array<unknown>) => Effect.zipRight(Effect.sync(() => called.push(name)), value(...args)) :
          Effect.zipRight(Effect.sync(() => called.push(name)), value as Effect.Effect<unknown>)
      }
      return wrapped as unknown as Memory.Service
    })
    const model = extractor({ text: "[]" })
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      const operations = everyOperation(m)
      yield* Effect.all(Object.values(operations)).pipe(as("kim"))
      assert.deepStrictEqual(called, Object.keys(operations))
    }).pipe(Effect.provide(
      Memory.autoExtract().pipe(
        Layer.provide(Layer.effect(Memory.Memory, inner)),
        Layer.provide(Layer.merge(model.layer, Budget.layerNone))
      )
    ))
  })

  it.effect("the default-on notice is logged once per process, never for an explicit opt-in", () => {
    const logs = captureLogs()
    const model = extractor({ text: "[]" })
    const build = (options?: Memory.AutoExtractOptions) =>
      Effect.scoped(Layer.build(withAutoExtract(model.layer, options)))
    return Effect.gen(function*() {
      yield* build()
      yield* build({ announce: false })
      assert.deepStrictEqual(logs.lines, [])
      yield* build({ announce: true })
      yield* build({ announce: true })
      assert.deepStrictEqual(logs.lines, [{ level: "INFO", message: Memory.autoExtractNotice, logger: "jeevesagent.memory.auto_extract" }])
      assert.include(Memory.autoExtractNotice, "AutoExtractMemory enabled by default for this model class.")
    }).pipe(Effect.provide(logs.layer), Logger.withMinimumLogLevel(LogLevel.Info))
  })

  it.effect("invalid options are a defect naming the option", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(withAutoExtract(extractor({}).layer, { maxFacts: 0 }))))
      assert.include(String(exit), "maxFacts must be a positive integer, got 0")
    }))

  it.effect("end to end: an agent run stores the extracted fact under its user", () => {
    const model = extractor({ text: "[{\"subject\": \"user\", \"predicate\": \"prefers\", \"object\": \"dark mode\"}]" })
    const MemoryLive = withAutoExtract(model.layer)
    const AgentLive = Agent.layer().pipe(
      Layer.provide(model.layer),
      Layer.provide(MemoryLive),
      Layer.provide(Agent.layerDefaults)
    )
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const result = yield* agent.run("I prefer dark mode", { userId: "alice" })
      assert.strictEqual(result.output, "agent answer")
      const stored = yield* facts("alice")
      assert.deepStrictEqual(stored.map((f) => [f.userId, f.object]), [["alice", "dark mode"]])
      assert.deepStrictEqual(yield* facts("bob"), [])
      // The next run of alice is seeded with it; bob's is not.
      yield* agent.run("am I into dark mode?", { userId: "alice" })
      yield* agent.run("am I into dark mode?", { userId: "bob" })
      const seeded = (request: Model.ModelRequest) => request.messages.some((m) => m.content.includes("user prefers dark mode"))
      assert.deepStrictEqual(model.agentRequests.map(seeded), [false, true, false])
    }).pipe(Effect.provide(Layer.merge(AgentLive, MemoryLive)))
  })
})
