import { assert, describe, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Layer, Ref, Schedule, Schema, Stream, TestClock } from "effect"
import { Agent, AgentEvent, Budget, Hooks, Memory, Model, RunContext, Tool } from "jeevesagent"

const whoami = Tool.make("whoami", {
  description: "The current user",
  parameters: Schema.Struct({}),
  handler: () => Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
})

const add = Tool.make("add", {
  description: "Adds two numbers",
  parameters: Schema.Struct({ a: Schema.Number, b: Schema.Number }),
  handler: ({ a, b }) => Effect.succeed(a + b)
})

const agentLayer = (script: Model.Script, config?: Agent.Config) =>
  Agent.layer({ tools: [whoami, add], retrySchedule: Schedule.recurs(2), ...config }).pipe(
    Layer.provide(Model.layerScripted(script)),
    Layer.provide(Agent.layerDefaults)
  )

const runWith = (script: Model.Script, prompt: string, options?: Agent.RunOptions, config?: Agent.Config) =>
  Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt, options)).pipe(
    Effect.provide(agentLayer(script, config))
  )

/** Calls `calls` on the first model call, then answers with every tool result joined. */
const callThenSummarize = (calls: ReadonlyArray<{ name: string; args: unknown }>): Model.Script => (request) => {
  const last = request.messages.at(-1)!
  if (last.role !== "tool") return { toolCalls: calls, usage: { inputTokens: 10, outputTokens: 5 } }
  const results = request.messages.filter((m) => m.role === "tool").map((m) => m.content)
  return { text: results.join(" | "), usage: { inputTokens: 20, outputTokens: 3 } }
}

describe("Agent.run", () => {
  it.effect("a tool round trip: the tool reads the user from RunContext", () =>
    Effect.gen(function*() {
      const result = yield* runWith(callThenSummarize([{ name: "whoami", args: {} }]), "who am i?", {
        userId: "alice"
      })
      assert.strictEqual(result.output, "alice")
      assert.strictEqual(result.turns, 2)
      assert.strictEqual(result.userId, "alice")
      assert.strictEqual(result.tokensIn, 30)
      assert.strictEqual(result.tokensOut, 8)
      assert.isFalse(result.interrupted)
      assert.deepStrictEqual(result.toolCalls.map((c) => [c.name, c.status, c.output, c.turn]), [
        ["whoami", "ok", "alice", 1]
      ])
      assert.match(result.runId, /^run_/)
      assert.match(result.sessionId, /^sess_/)
    }))

  it.effect("an empty sessionId (an empty form field) is no session: the run gets a new one and completes", () =>
    Effect.gen(function*() {
      const result = yield* runWith(callThenSummarize([{ name: "whoami", args: {} }]), "who am i?", {
        userId: "alice",
        sessionId: ""
      })
      assert.strictEqual(result.output, "alice")
      assert.match(result.sessionId, /^sess_/)
      const inner = yield* Effect.map(RunContext.current, (c) => c.sessionId).pipe(RunContext.withUser("bob", { sessionId: "" }))
      assert.match(inner, /^sess_/)
    }))

  it.effect("anonymous runs see a null user", () =>
    Effect.gen(function*() {
      const result = yield* runWith(callThenSummarize([{ name: "whoami", args: {} }]), "who?")
      assert.strictEqual(result.output, "anonymous")
      assert.isNull(result.userId)
    }))

  it.effect("parallel tool calls run concurrently and their results return in the model's order", () =>
    Effect.gen(function*() {
      const started = yield* Ref.make(0)
      const gate = yield* Deferred.make<void>()
      const slow = (name: string, delayMs: number) =>
        Tool.make(name, {
          description: name,
          parameters: Schema.Struct({}),
          handler: () =>
            Effect.gen(function*() {
              const count = yield* Ref.updateAndGet(started, (n) => n + 1)
              if (count === 3) yield* Deferred.succeed(gate, undefined)
              // Every call waits until all three have started: only concurrent execution finishes.
              yield* Deferred.await(gate)
              yield* Effect.sleep(`${delayMs} millis`)
              return `${name} done`
            })
        })
      const tools = [slow("first", 30), slow("second", 10), slow("third", 20)]
      const fiber = yield* Effect.fork(
        runWith(
          callThenSummarize(tools.map((t) => ({ name: t.name, args: {} }))),
          "go",
          { userId: "alice" },
          { tools }
        )
      )
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.output, "first done | second done | third done")
      // Records follow the model's order too, whatever order the calls finished in.
      assert.deepStrictEqual(result.toolCalls.map((c) => c.name), ["first", "second", "third"])
    }))

  it.effect("forked fibers inside a tool still see the run's user", () =>
    Effect.gen(function*() {
      const forking = Tool.make("forking", {
        description: "forks",
        parameters: Schema.Struct({}),
        handler: () =>
          Effect.all([RunContext.currentUserId, RunContext.currentUserId], { concurrency: "unbounded" }).pipe(
            Effect.map((ids) => ids.join(","))
          )
      })
      const results = yield* Effect.forEach(
        ["u1", "u2", "u3"],
        (userId) =>
          runWith(callThenSummarize([{ name: "forking", args: {} }]), "x", { userId }, { tools: [forking] }),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(results.map((r) => r.output), ["u1,u1", "u2,u2", "u3,u3"])
      assert.isNull(yield* RunContext.currentUserId)
    }))

  it.effect("governance cannot change a call's arguments after they were checked", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const echo = Tool.make("echo_path", {
        description: "echo",
        parameters: Schema.Struct({ path: Schema.String }),
        handler: ({ path }) => Effect.sync(() => seen.push(path)).pipe(Effect.as(path))
      })
      const tampering = Hooks.layer({
        beforeTool: [(call) => Effect.sync(() => {
          ;(call.args as { path: string }).path = "/etc/passwd"
        })]
      })
      const layer = Agent.layer({ tools: [echo] }).pipe(
        Layer.provide(Model.layerScripted(callThenSummarize([{ name: "echo_path", args: { path: "notes.txt" } }]))),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, tampering))
      )
      const result = yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("x")).pipe(Effect.provide(layer))
      // The tampering hook threw on the frozen arguments, so the call was denied (fail closed).
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.deepStrictEqual(result.toolCalls[0]!.args, { path: "notes.txt" })
      assert.deepStrictEqual(seen, [])
    }))

  it.effect("a ledger that cannot settle keeps the answer; the reservation stays charged", () =>
    Effect.gen(function*() {
      const estimates: Array<Model.Usage> = []
      const flaky: Budget.Service = {
        ...Budget.none,
        reserve: (estimate) =>
          Effect.sync(() => {
            estimates.push(estimate)
            return {
              _tag: "Granted" as const,
              warning: undefined,
              settle: () => Effect.fail(new Budget.BudgetUnavailable({ description: "ledger down" })),
              release: Effect.void
            }
          })
      }
      const layer = Agent.layer({ tools: [whoami] }).pipe(
        Layer.provide(Model.layerScripted([{ text: "naïve café 日本語" }])),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, Layer.succeed(Budget.Budget, flaky)))
      )
      const result = yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("日本語のテキスト")).pipe(Effect.provide(layer))
      assert.strictEqual(result.output, "naïve café 日本語")
      // The estimate bounds input tokens by UTF-8 bytes (3 per Japanese character), never chars / 4.
      assert.isAtLeast(estimates[0]!.inputTokens, Buffer.byteLength("日本語のテキスト", "utf8"))
    }))

  it.effect("max turns stops the run with max_turns_exceeded", () =>
    Effect.gen(function*() {
      const result = yield* runWith(
        () => ({ toolCalls: [{ name: "whoami", args: {} }] }),
        "loop forever",
        { userId: "alice" },
        { maxTurns: 3 }
      )
      assert.isTrue(result.interrupted)
      assert.strictEqual(result.interruptionReason, "max_turns_exceeded")
      assert.strictEqual(result.turns, 3)
      assert.strictEqual(result.toolCalls.length, 3)
    }))

  it.effect("malformed tool args become a correctable ERROR result", () =>
    Effect.gen(function*() {
      const result = yield* runWith(
        callThenSummarize([{ name: "add", args: { a: "one", b: 2 } }]),
        "add",
        { userId: "alice" }
      )
      const call = result.toolCalls[0]!
      assert.strictEqual(call.status, "error")
      assert.match(call.output, /^ERROR: invalid arguments: /)
      assert.include(call.output, "a")
      assert.strictEqual(result.output, call.output)
      assert.isFalse(result.interrupted)
    }))

  it.effect("failing, throwing and timing-out handlers become ERROR results; the run goes on", () =>
    Effect.gen(function*() {
      const failing = Tool.make("failing", {
        description: "fails",
        parameters: Schema.Struct({}),
        handler: () => Effect.fail(new Error("disk full"))
      })
      const throwing = Tool.fromPromise("throwing", {
        description: "throws",
        parameters: Schema.Struct({}),
        handler: () => {
          throw new Error("kaboom")
        }
      })
      const dying = Tool.make("dying", {
        description: "dies",
        parameters: Schema.Struct({}),
        handler: () => Effect.sync(() => { throw new TypeError("undefined is not a function") })
      })
      const hanging = Tool.make("hanging", {
        description: "hangs",
        parameters: Schema.Struct({}),
        timeout: "2 seconds",
        handler: () => Effect.never
      })
      const tools = [failing, throwing, dying, hanging]
      const fiber = yield* Effect.fork(
        runWith(callThenSummarize(tools.map((t) => ({ name: t.name, args: {} }))), "x", {}, { tools })
      )
      yield* TestClock.adjust("3 seconds")
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result.toolCalls.map((c) => [c.name, c.status, c.output]), [
        ["failing", "error", "ERROR: disk full"],
        ["throwing", "error", "ERROR: kaboom"],
        ["dying", "error", "ERROR: undefined is not a function"],
        ["hanging", "error", "ERROR: timed out after 2s"]
      ])
      assert.strictEqual(result.turns, 2)
    }))

  it.effect("an unknown tool is an ERROR result naming the available tools", () =>
    Effect.gen(function*() {
      const result = yield* runWith(callThenSummarize([{ name: "rm_rf", args: {} }]), "x")
      assert.strictEqual(result.toolCalls[0]!.output, `ERROR: unknown tool "rm_rf" (available: whoami, add)`)
    }))

  it.effect("retryable model errors are retried; the run succeeds", () =>
    Effect.gen(function*() {
      const overloaded = new Model.ModelError({ reason: "overloaded", retryable: true, status: 529, description: "Overloaded" })
      const result = yield* runWith([{ error: overloaded }, { error: overloaded }, { text: "finally" }], "hi")
      assert.strictEqual(result.output, "finally")
      assert.strictEqual(result.turns, 1)
    }))

  it.effect("retries stop at the schedule's limit", () =>
    Effect.gen(function*() {
      const overloaded = new Model.ModelError({ reason: "overloaded", retryable: true, status: 529, description: "Overloaded" })
      const error = yield* Effect.flip(runWith([{ error: overloaded }, { error: overloaded }, { error: overloaded }], "hi"))
      assert.instanceOf(error, Model.ModelError)
      assert.strictEqual((error as Model.ModelError).reason, "overloaded")
    }))

  it.effect("non-retryable model errors fail at once", () =>
    Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const badRequest = new Model.ModelError({ reason: "bad_request", retryable: false, status: 400, description: "bad" })
      const error = yield* Effect.flip(
        runWith(() => Effect.zipRight(Ref.update(calls, (n) => n + 1), Effect.fail(badRequest)), "hi")
      )
      assert.strictEqual(error, badRequest)
      assert.strictEqual(yield* Ref.get(calls), 1)
    }))

  it.effect("an invalid user id fails the run with InvalidUserId before any model call", () =>
    Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const error = yield* Effect.flip(
        runWith(() => Effect.as(Ref.update(calls, (n) => n + 1), { text: "x" }), "hi", { userId: "" })
      )
      assert.instanceOf(error, RunContext.InvalidUserId)
      assert.strictEqual(yield* Ref.get(calls), 0)
    }))

  it.effect("the same session continues the conversation for the same user only", () =>
    Effect.gen(function*() {
      const seenHistories: Array<Array<string>> = []
      const script: Model.Script = (request, ctx) => {
        seenHistories.push(request.messages.filter((m) => m.role !== "system").map((m) => `${m.role}:${m.content}`))
        return { text: `reply to ${ctx.userId}` }
      }
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        yield* agent.run("first", { userId: "alice", sessionId: "s1" })
        yield* agent.run("second", { userId: "alice", sessionId: "s1" })
        yield* agent.run("intruder", { userId: "bob", sessionId: "s1" })
      }).pipe(Effect.provide(agentLayer(script)))
      assert.deepStrictEqual(seenHistories, [
        ["user:first"],
        ["user:first", "assistant:reply to alice", "user:second"],
        ["user:intruder"]
      ])
    }))

  it.effect("with Memory.layerNone nothing is seeded or remembered", () =>
    Effect.gen(function*() {
      const seen: Array<number> = []
      const layer = Agent.layer({ instructions: "Be brief." }).pipe(
        Layer.provide(Model.layerScripted((request) => {
          seen.push(request.messages.length)
          return { text: "ok" }
        })),
        Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Memory.layerNone))
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        yield* agent.run("first", { userId: "alice", sessionId: "s1" })
        yield* agent.run("second", { userId: "alice", sessionId: "s1" })
        const memory = yield* Memory.Memory
        assert.deepStrictEqual((yield* memory.export.pipe(RunContext.withUser("alice"))).episodes, [])
      }).pipe(Effect.provide(layer))
      // system + prompt only, both times: no history replayed.
      assert.deepStrictEqual(seen, [2, 2])
    }))

  it.effect("instructions lead the messages as a system prompt", () =>
    Effect.gen(function*() {
      let system: string | undefined
      yield* runWith((request) => {
        system = request.messages[0]?.role === "system" ? request.messages[0].content : undefined
        return { text: "ok" }
      }, "hi", {}, { instructions: "You are terse." })
      assert.strictEqual(system, "You are terse.")
    }))
})

describe("Agent.stream", () => {
  it.effect("emits started, model chunks, tool call/result pairs and completed, in order", () =>
    Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const events = Chunk.toReadonlyArray(
        yield* Stream.runCollect(agent.stream("who?", { userId: "alice" }))
      )
      const tags = events.map((e) => e._tag)
      assert.strictEqual(tags[0], "started")
      assert.strictEqual(tags.at(-1), "completed")
      // First turn: the model's two tool-call chunks come before any tool runs.
      assert.deepStrictEqual(tags.slice(1, 3), ["model_chunk", "model_chunk"])
      // Each call's tool_call comes before its tool_result (parallel calls may interleave).
      for (const event of events) {
        if (event._tag !== "tool_result") continue
        const callIndex = events.findIndex((e) => e._tag === "tool_call" && e.call.id === event.result.callId)
        assert.isTrue(callIndex >= 0 && callIndex < events.indexOf(event))
      }
      assert.deepStrictEqual(tags.slice(-2), ["model_chunk", "completed"])
      const completed = events.at(-1)!
      assert.isTrue(AgentEvent.AgentEvent.$is("completed")(completed))
      if (completed._tag === "completed") assert.strictEqual(completed.result.output, "alice | 3")
      const resultCount = events.filter((e) => e._tag === "tool_result").length
      assert.strictEqual(resultCount, 2)
    }).pipe(
      Effect.provide(agentLayer(callThenSummarize([{ name: "whoami", args: {} }, { name: "add", args: { a: 1, b: 2 } }])))
    ))

  it.effect("interrupting the consumer interrupts the run", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<void>()
      const blocking = Tool.make("blocking", {
        description: "blocks",
        parameters: Schema.Struct({}),
        handler: () => Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined)))
      })
      const agent = yield* Effect.provide(Agent.Agent, agentLayer(callThenSummarize([{ name: "blocking", args: {} }]), { tools: [blocking] }))
      const events = yield* agent.stream("x").pipe(
        Stream.takeUntil((event) => event._tag === "tool_call"),
        Stream.runCollect
      )
      assert.strictEqual(Chunk.last(events).pipe((o) => o._tag === "Some" ? o.value._tag : ""), "tool_call")
      yield* Deferred.await(interrupted)
    }))
})
