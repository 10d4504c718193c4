/**
 * The in-memory Memory is read and written inside the agent's own steps
 * (the same operations, in the same order): what the model is shown, what is
 * remembered and how a bad episode fails are those of the service's own
 * methods, which any other Memory service (or a wrapped one) goes through.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, FastCheck, Layer, Schema } from "effect"
import { Agent, Memory, Model, RunContext, Telemetry, Tool } from "jeevesagent"
import { notPlain, plainJsonCopy, syncMemoryOf } from "../src/internal/memoryStore.js"

describe("plainJsonCopy", () => {
  it.prop(
    "equals the JSON round trip wherever it copies",
    [FastCheck.anything({ withNullPrototype: true, withSparseArray: true, withBigInt: true, withDate: true, withMap: true, withTypedArray: true })],
    ([value]) => {
      const copy = plainJsonCopy(value)
      if (copy !== notPlain) assert.deepStrictEqual(copy, JSON.parse(JSON.stringify(value)))
    },
    { fastCheck: { numRuns: 1000 } }
  )

  /** -0 (JSON writes 0) and a `__proto__` member (a copy by assignment would set the prototype) go the round trip. */
  const leftToRoundTrip = (value: unknown): boolean =>
    Object.is(value, -0) ||
    (typeof value === "object" && value !== null &&
      (Object.keys(value).includes("__proto__") || Object.values(value).some(leftToRoundTrip)))

  it.prop("copies every other JSON value", [FastCheck.jsonValue()], ([value]) => {
    if (leftToRoundTrip(value)) return
    assert.deepStrictEqual(plainJsonCopy(value), JSON.parse(JSON.stringify(value)))
  }, { fastCheck: { numRuns: 1000 } })

  it("leaves to the round trip what JSON would drop, replace or refuse", () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    // eslint-disable-next-line no-sparse-arrays
    for (const value of [{ a: undefined }, [undefined], [1, , 2], { n: Number.NaN }, -0, { d: new Date(0) }, { b: BigInt(1) }, cyclic, JSON.parse('{"__proto__":1}'), { toJSON: () => 1 }]) {
      assert.strictEqual(plainJsonCopy(value), notPlain, JSON.stringify(value, (_k, v) => typeof v === "bigint" ? "bigint" : v === cyclic ? "cycle" : v) ?? "undefined")
    }
    const args = { path: "/srv", n: [1, 2.5, true, null, { deep: "x" }] }
    const copy = plainJsonCopy(args) as typeof args
    assert.deepStrictEqual(copy, args)
    assert.notStrictEqual(copy, args)
    assert.notStrictEqual(copy.n, args.n)
  })
})

describe("syncMemoryOf", () => {
  it.effect("is there for the in-memory service only, until one of its per-run methods is replaced", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.makeInMemory()
      assert.isDefined(syncMemoryOf(memory))
      // Spread copies keep it while the methods are the same ones.
      assert.isDefined(syncMemoryOf({ ...memory }))
      for (const method of ["working", "recall", "recallFacts", "sessionMessages", "remember"] as const) {
        const replaced = { ...memory, [method]: memory[method] === memory.working ? Effect.succeed([]) : () => Effect.die("x") }
        assert.isUndefined(syncMemoryOf(replaced as Memory.Service), method)
      }
      assert.isUndefined(syncMemoryOf(Memory.none))
    }))
})

const echo = Tool.make("echo", {
  description: "Echoes",
  parameters: Schema.Struct({ text: Schema.String }),
  handler: ({ text }) => Effect.succeed(text)
})

/** Calls echo once per run, then answers; records every request it is shown. */
const recording = (shown: Array<ReadonlyArray<Model.Message>>): Model.Script => (request) => {
  shown.push(request.messages)
  const last = request.messages.at(-1)!
  return last.role === "tool" ?
    { text: `noted: ${last.content}` } :
    { toolCalls: [{ name: "echo", args: { text: `${last.content} (echoed)` } }] }
}

/** The in-memory service as is (read in the agent's step), or wrapped so the agent goes through its methods. */
const memoryLayer = (direct: boolean) =>
  Layer.effect(
    Memory.Memory,
    Effect.map(Memory.makeInMemory(), (memory): Memory.Service =>
      direct ? memory : { ...memory, remember: (episode) => memory.remember(episode) })
  )

const transcript = (direct: boolean, serviceSpans = false) => {
  const shown: Array<ReadonlyArray<Model.Message>> = []
  const layer = Agent.layer({ instructions: "Be brief.", tools: [echo] }).pipe(
    Layer.provideMerge(Layer.mergeAll(
      Agent.layerDefaults,
      Model.layerScripted(recording(shown)),
      memoryLayer(direct),
      serviceSpans ? Telemetry.layer({ serviceSpans: true }) : Telemetry.layerNone
    ))
  )
  return Effect.gen(function*() {
    const agent = yield* Agent.Agent
    const memory = yield* Memory.Memory
    yield* memory.updateBlock("profile", "likes tea").pipe(RunContext.withUser("alice"))
    yield* memory.appendFact({ subject: "alice", predicate: "drinks", object: "tea" }).pipe(RunContext.withUser("alice"))
    for (const [user, session, prompt] of [
      ["alice", "s1", "what do I drink"],
      ["alice", "s1", "and tea again"],
      ["alice", "s2", "tea please"],
      ["bob", "s3", "what do I drink"],
      ["alice", "s2", "more tea"]
    ] as const) {
      yield* agent.run(prompt, { userId: user, sessionId: session })
    }
    const exported = yield* Effect.all([
      memory.export.pipe(RunContext.withUser("alice")),
      memory.export.pipe(RunContext.withUser("bob"))
    ])
    // Episode ids and times differ from one run of the test to the next.
    const episodes = exported.map((data) =>
      data.episodes.map(({ id: _id, occurredAt: _at, ...episode }) => episode)
    )
    return { shown, episodes }
  }).pipe(Effect.provide(layer))
}

describe("the agent over the in-memory Memory", () => {
  it.effect("shows the model and remembers exactly what it does through the service's methods", () =>
    Effect.gen(function*() {
      const inStep = yield* transcript(true)
      const bySteps = yield* transcript(false)
      assert.deepStrictEqual(inStep, bySteps)
      // What both show: blocks, facts, a past episode of another session, and the session's history.
      const fifthRun = inStep.shown[8]!.map((message) => message.content).join("\n")
      assert.include(fifthRun, "likes tea")
      assert.include(fifthRun, "alice drinks tea")
      assert.include(fifthRun, "user: and tea again")
      assert.strictEqual(inStep.episodes[0]!.length, 4)
      assert.strictEqual(inStep.episodes[1]!.length, 1)
      // With service spans on the service's own methods run (and record their spans): same outcome.
      assert.deepStrictEqual(yield* transcript(true, true), inStep)
    }))

  it.effect("an episode the store refuses fails the run with the same MemoryError either way", () =>
    Effect.gen(function*() {
      // A model answering with tool arguments that JSON cannot encode (a `toJSON` that throws): the
      // episode's tool calls cannot be stored.
      const unencodable = { toJSON: () => { throw new Error("cannot encode") } }
      const script: Model.Script = (request) =>
        request.messages.at(-1)!.role === "tool" ?
          { text: "done" } :
          { toolCalls: [{ name: "echo", args: { text: "x", extra: unencodable } }] }
      const failure = (direct: boolean) =>
        Effect.gen(function*() {
          const agent = yield* Agent.Agent
          return yield* Effect.exit(agent.run("go", { userId: "carol", sessionId: "s" }))
        }).pipe(
          Effect.provide(
            Agent.layer({ tools: [echo] }).pipe(
              Layer.provide(Layer.mergeAll(Agent.layerDefaults, Model.layerScripted(script), memoryLayer(direct)))
            )
          )
        )
      const inStep = yield* failure(true)
      const bySteps = yield* failure(false)
      assert.isTrue(Exit.isFailure(inStep))
      const errorOf = (exit: typeof inStep) =>
        Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
      const error = errorOf(inStep)
      assert.instanceOf(error, Memory.MemoryError)
      assert.strictEqual((error as Memory.MemoryError).method, "remember")
      assert.deepStrictEqual(
        { message: error?.message, tag: error?._tag },
        { message: errorOf(bySteps)?.message, tag: errorOf(bySteps)?._tag }
      )
    }))
})
