import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, Schema, TestClock } from "effect"
import { Agent, Approval, Hooks, Model, RunContext, Tool } from "jeevesagent"

const call: Tool.Call = { id: "call_7", name: "send_email", args: { to: "bob@example.com" }, destructive: false }
const okResult: Tool.Result = { callId: "call_7", name: "send_email", status: "ok", output: "sent" }

/** The denial of `beforeTool` as `userId`, or `undefined` when every hook let the call go on. */
const before = (service: Hooks.Service, userId: string | null = "alice") =>
  service.beforeTool(call).pipe(
    Effect.match({ onFailure: (denied) => denied, onSuccess: () => undefined }),
    RunContext.withUser(userId),
    Effect.orDie
  )

const denied = (reason: string) => new Approval.ToolDenied({ tool: "send_email", reason })

/** Runs `effect` with a logger that keeps the warnings' texts. */
const withWarnings = <A, E, R>(effect: (warnings: Array<string>) => Effect.Effect<A, E, R>) => {
  const warnings: Array<string> = []
  const capture = Logger.make(({ logLevel, message }) => {
    if (logLevel.label === "WARN") warnings.push([message].flat().join(" "))
  })
  return Effect.provide(effect(warnings), Logger.add(capture))
}

describe("Hooks.make: beforeTool", () => {
  it.effect("hooks run in order; the first deny wins and later hooks do not run", () =>
    Effect.gen(function*() {
      const ran: Array<string> = []
      const hook = (name: string, answer?: { readonly deny: string }): Hooks.BeforeTool => () =>
        Effect.sync(() => {
          ran.push(name)
          return answer
        })
      const hooks = Hooks.make({
        beforeTool: [hook("first"), hook("second", { deny: "no mail on Sundays" }), hook("third", { deny: "later" })]
      })
      assert.deepStrictEqual(yield* before(hooks), denied("no mail on Sundays"))
      assert.deepStrictEqual(ran, ["first", "second"])
    }))

  it.effect("nothing, null or undefined lets the call go on; an empty deny uses the default reason", () =>
    Effect.gen(function*() {
      const allowing = Hooks.make({
        beforeTool: [() => Effect.void, () => Effect.succeed(undefined), () => Effect.succeed(null as unknown as undefined)]
      })
      assert.isUndefined(yield* before(allowing))
      const emptyDeny = Hooks.make({ beforeTool: [() => Effect.succeed({ deny: "" })] })
      assert.deepStrictEqual(yield* before(emptyDeny), denied("denied by hook"))
    }))

  it.effect("a hook that fails, dies, throws or answers nonsense denies with `hook failed` and logs why", () =>
    withWarnings((warnings) =>
      Effect.gen(function*() {
        const broken: ReadonlyArray<Hooks.BeforeTool> = [
          () => Effect.fail("policy server down"),
          () => Effect.die(new Error("null pointer")),
          () => {
            throw new Error("thrown before any effect")
          },
          () => Effect.succeed(true as unknown as undefined),
          () => Effect.succeed({ deny: 42 } as unknown as { deny: string })
        ]
        for (const hook of broken) {
          assert.deepStrictEqual(yield* before(Hooks.make({ beforeTool: [hook] })), denied(Hooks.reasons.failed))
        }
        assert.strictEqual(warnings.length, broken.length)
        assert.include(warnings[0], "beforeTool hook #1 failed; treating as deny: policy server down")
        assert.include(warnings[1], "null pointer")
        assert.include(warnings[2], "thrown before any effect")
        assert.include(warnings[3], "answered true")
      })
    ))

  it.effect("a hook past its timeout (5 seconds by default) denies with `hook timed out`", () =>
    Effect.gen(function*() {
      const slow = Hooks.make({ beforeTool: [() => Effect.never] })
      const fiber = yield* Effect.fork(before(slow))
      yield* TestClock.adjust("4999 millis")
      assert.isNull(fiber.unsafePoll())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), denied(Hooks.reasons.timedOut))

      let signal: AbortSignal | undefined
      const slowPromise = Hooks.makePromise({
        timeout: "100 millis",
        beforeTool: [(_call, _userId, options) => {
          signal = options.signal
          return new Promise(() => {})
        }]
      })
      const promiseFiber = yield* Effect.fork(before(slowPromise))
      yield* TestClock.adjust("100 millis")
      assert.deepStrictEqual(yield* Fiber.join(promiseFiber), denied(Hooks.reasons.timedOut))
      assert.isTrue(signal?.aborted)
    }))

  it.effect("a secret in a hook's error is redacted in the warning", () =>
    withWarnings((warnings) =>
      Effect.gen(function*() {
        const key = "sk-ant-api03-abcdefghijklmnop"
        const hooks = Hooks.make({ beforeTool: [() => Effect.fail(new Error(`bad key ${key}`))] })
        assert.deepStrictEqual(yield* before(hooks), denied(Hooks.reasons.failed))
        assert.notInclude(warnings.join("\n"), key)
        assert.include(warnings.join("\n"), "bad key [REDACTED]")
      })
    ))

  it.effect("Effect hooks get the run context; Promise hooks get the user id", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const effectHooks = Hooks.make({
        beforeTool: [(c, context) => Effect.sync(() => void seen.push([c.id, context.userId, context.sessionId]))]
      })
      const promiseHooks = Hooks.makePromise({
        beforeTool: [async (c, userId) => void seen.push([c.id, userId])]
      })
      yield* before(effectHooks, "alice").pipe(RunContext.withUser("alice", { sessionId: "sess_1" }))
      yield* before(promiseHooks, null)
      assert.deepStrictEqual(seen, [["call_7", "alice", "sess_1"], ["call_7", null]])
    }))

  it.effect("a Promise hook can deny, and a rejected or throwing one denies with `hook failed`", () =>
    Effect.gen(function*() {
      const hooks = (hook: Hooks.PromiseBeforeTool) => Hooks.makePromise({ beforeTool: [hook] })
      assert.deepStrictEqual(
        yield* before(hooks(async (_c, userId) => (userId === "mallory" ? { deny: "blocked user" } : undefined)), "mallory"),
        denied("blocked user")
      )
      assert.isUndefined(yield* before(hooks(async (_c, userId) => (userId === "mallory" ? { deny: "blocked user" } : undefined))))
      assert.deepStrictEqual(yield* before(hooks(() => Promise.reject(new Error("x")))), denied(Hooks.reasons.failed))
      assert.deepStrictEqual(
        yield* before(hooks(() => {
          throw new Error("sync")
        })),
        denied(Hooks.reasons.failed)
      )
    }))
})

describe("Hooks.make: afterTool", () => {
  it.effect("every afterTool hook runs; failures and timeouts are logged, never fatal", () =>
    withWarnings((warnings) =>
      Effect.gen(function*() {
        const ran: Array<string> = []
        const hooks = Hooks.make({
          timeout: "1 second",
          afterTool: [
            () => Effect.fail("metrics down"),
            () => Effect.never,
            (c, result, context) => Effect.sync(() => ran.push(`${c.name}:${result.status}:${context.userId}`))
          ]
        })
        const fiber = yield* Effect.fork(hooks.afterTool(call, okResult).pipe(RunContext.withUser("alice"), Effect.orDie))
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(fiber)
        assert.deepStrictEqual(ran, ["send_email:ok:alice"])
        assert.strictEqual(warnings.length, 2)
        assert.include(warnings[0], "afterTool hook #1 failed: metrics down")
        assert.include(warnings[1], "afterTool hook #2 did not finish within 1s")
      })
    ))

  it.effect("isEmpty only when there is no hook at all", () =>
    Effect.sync(() => {
      assert.isTrue(Hooks.make({}).isEmpty)
      assert.isTrue(Hooks.make({ beforeTool: [], afterTool: [] }).isEmpty)
      assert.isTrue(Hooks.makePromise({}).isEmpty)
      assert.isFalse(Hooks.make({ afterTool: [() => Effect.void] }).isEmpty)
      assert.isFalse(Hooks.makePromise({ beforeTool: [() => undefined] }).isEmpty)
    }))
})

describe("Hooks, end to end", () => {
  const sendEmail = (bodies: Array<string>) =>
    Tool.make("send_email", {
      description: "Sends an email",
      parameters: Schema.Struct({ to: Schema.String }),
      handler: ({ to }) =>
        to.endsWith("@example.com") ?
          Effect.sync(() => bodies.push(to)).pipe(Effect.as(`sent to ${to}`)) :
          Effect.fail(new Error(`unknown domain of ${to}`))
    })
  const agent = (bodies: Array<string>, hooks: Layer.Layer<Hooks.Hooks>) =>
    Agent.layer({ tools: [sendEmail(bodies)] }).pipe(
      Layer.provide(
        Model.layerScripted((request) => {
          const results = request.messages.filter((m) => m.role === "tool")
          return results.length > 0 ?
            { text: results.map((m) => m.content).join(" | ") } :
            {
              toolCalls: ["bob@example.com", "eve@evil.test", "carol@example.com"].map((to) => ({
                name: "send_email",
                args: { to }
              }))
            }
        })
      ),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, hooks))
    )

  it.effect("a deny reaches the model as DENIED; afterTool sees only calls that executed, errors included", () => {
    const bodies: Array<string> = []
    const after: Array<string> = []
    const hooks = Hooks.layerPromise({
      beforeTool: [(c) => ((c.args as { to: string }).to.startsWith("carol") ? { deny: "carol opted out" } : undefined)],
      afterTool: [(c, result) => void after.push(`${(c.args as { to: string }).to}:${result.status}`)]
    })
    return Effect.gen(function*() {
      const result = yield* Effect.flatMap(Agent.Agent, (a) => a.run("mail everyone", { userId: "alice" }))
      assert.strictEqual(
        result.output,
        "sent to bob@example.com | ERROR: unknown domain of eve@evil.test | DENIED: carol opted out"
      )
      assert.deepStrictEqual(bodies, ["bob@example.com"])
      assert.deepStrictEqual(after.sort(), ["bob@example.com:ok", "eve@evil.test:error"])
    }).pipe(Effect.provide(agent(bodies, hooks)))
  })
})
