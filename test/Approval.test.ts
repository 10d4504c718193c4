import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Logger, Ref, Schema, TestClock } from "effect"
import { Agent, Approval, Hooks, Model, Permissions, RunContext, Secrets, Tool } from "jeevesagent"

const POLICY_REASON = "delete_file: destructive call requires approval"

const call = (args: unknown = { path: "/tmp/a" }): Tool.Call => ({ id: "call_1", name: "delete_file", args, destructive: true })

/** The denial of a request to `service` as `userId`, or `undefined` when approved. */
const request = (service: Approval.Service, userId: string | null = "alice", args?: unknown) =>
  service.request(call(args), POLICY_REASON).pipe(
    Effect.match({ onFailure: (denied) => denied, onSuccess: () => undefined }),
    RunContext.withUser(userId),
    Effect.orDie
  )

const denial = (reason: string) => new Approval.ToolDenied({ tool: "delete_file", reason, policyReason: POLICY_REASON })

interface LogLine {
  readonly level: string
  readonly text: string
  readonly annotations: Record<string, unknown>
}

/** Collects the messages and annotations of every log line of `effect`. */
const withLogs = <A, E, R>(effect: (lines: Array<LogLine>) => Effect.Effect<A, E, R>) => {
  const lines: Array<LogLine> = []
  const capture = Logger.make(({ annotations, logLevel, message }) => {
    lines.push({ level: logLevel.label, text: [message].flat().join(" "), annotations: Object.fromEntries(annotations) })
  })
  return Effect.provide(effect(lines), Logger.add(capture))
}

// ---- end to end ---------------------------------------------------------------

const tools = (bodies: Array<string>) => [
  Tool.make("delete_file", {
    description: "Deletes a file",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: true,
    handler: ({ path }) => Effect.sync(() => bodies.push(path)).pipe(Effect.as(`deleted ${path}`))
  }),
  Tool.make("read_file", {
    description: "Reads a file",
    parameters: Schema.Struct({ path: Schema.String }),
    handler: ({ path }) => Effect.sync(() => bodies.push(`read ${path}`)).pipe(Effect.as(`contents of ${path}`))
  })
]

/** A model that makes `calls` in its first turn, then answers with the tool outputs it was given. */
const callsThenSummary = (calls: ReadonlyArray<{ readonly name: string; readonly args: unknown }>) =>
  Model.layerScripted((request) => {
    const results = request.messages.filter((m) => m.role === "tool")
    return results.length === 0 ? { toolCalls: calls } : { text: results.map((m) => m.content).join(" | ") }
  })

type Governance = Layer.Layer<Approval.ApprovalHandler> | Layer.Layer<Hooks.Hooks> | Layer.Layer<Permissions.Permissions>

const agent = (
  bodies: Array<string>,
  governance: ReadonlyArray<Governance>,
  calls = [{ name: "delete_file", args: { path: "/tmp/a" } }]
) =>
  Agent.layer({ tools: tools(bodies) }).pipe(
    Layer.provide(callsThenSummary(calls)),
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, Permissions.standard({ mode: "default" }), ...governance))
  )

const run = (userId: string | null = "alice") => Effect.flatMap(Agent.Agent, (a) => a.run("please delete /tmp/a", { userId }))

describe("Approval, end to end (the original's test_approval_handler)", () => {
  it.effect("a handler that approves lets the tool run; it is called once with the call and the user", () => {
    const bodies: Array<string> = []
    const seen: Array<[string, string | null, boolean]> = []
    const handler = Approval.layerPromise(async (call, userId) => {
      seen.push([call.name, userId, call.destructive])
      return true
    })
    return Effect.gen(function*() {
      const result = yield* run()
      assert.deepStrictEqual(seen, [["delete_file", "alice", true]])
      assert.deepStrictEqual(bodies, ["/tmp/a"])
      assert.strictEqual(result.output, "deleted /tmp/a")
      assert.strictEqual(result.turns, 2)
    }).pipe(Effect.provide(agent(bodies, [handler])))
  })

  it.effect("a handler that declines blocks the body; the model reads the denial and the run goes on", () => {
    const bodies: Array<string> = []
    return Effect.gen(function*() {
      const result = yield* run()
      assert.deepStrictEqual(bodies, [])
      assert.strictEqual(result.output, `DENIED: approval declined (${POLICY_REASON})`)
      assert.strictEqual(result.toolCalls[0]?.status, "denied")
      assert.strictEqual(result.interrupted, false)
    }).pipe(Effect.provide(agent(bodies, [Approval.layerPromise(() => false)])))
  })

  it.effect("no handler falls back to deny", () => {
    const bodies: Array<string> = []
    return Effect.gen(function*() {
      const result = yield* run()
      assert.deepStrictEqual(bodies, [])
      assert.strictEqual(result.toolCalls[0]?.reason, `approval required; no approver (${POLICY_REASON})`)
    }).pipe(Effect.provide(agent(bodies, [])))
  })

  it.effect("a raising handler is a deny", () => {
    const bodies: Array<string> = []
    const raising = Approval.layerPromise(async () => {
      throw new Error("approval service down")
    })
    return Effect.gen(function*() {
      const result = yield* run()
      assert.deepStrictEqual(bodies, [])
      assert.strictEqual(result.toolCalls[0]?.reason, `approval handler failed (${POLICY_REASON})`)
    }).pipe(Effect.provide(agent(bodies, [raising])))
  })

  it.effect("upstream regression: an ask still routes to the handler with hooks attached", () => {
    const bodies: Array<string> = []
    let asked = 0
    const hooks = Hooks.layerPromise({ beforeTool: [() => undefined], afterTool: [() => undefined] })
    const declining = Approval.layerPromise(() => {
      asked++
      return false
    })
    return Effect.gen(function*() {
      const result = yield* run()
      assert.strictEqual(asked, 1)
      assert.deepStrictEqual(bodies, [])
      assert.strictEqual(result.toolCalls[0]?.reason, `approval declined (${POLICY_REASON})`)
    }).pipe(Effect.provide(agent(bodies, [hooks, declining])))
  })

  it.effect("upstream regression: an ask is denied with hooks attached and no handler", () => {
    const bodies: Array<string> = []
    const hooks = Hooks.layer({ beforeTool: [() => Effect.void], afterTool: [() => Effect.void] })
    return Effect.gen(function*() {
      const result = yield* run()
      assert.deepStrictEqual(bodies, [])
      assert.strictEqual(result.toolCalls[0]?.reason, `approval required; no approver (${POLICY_REASON})`)
    }).pipe(Effect.provide(agent(bodies, [hooks])))
  })

  it.effect("concurrent calls in one turn each get their own decision and approval", () => {
    const bodies: Array<string> = []
    const calls = [
      { name: "delete_file", args: { path: "/tmp/a" } },
      { name: "read_file", args: { path: "/etc/motd" } },
      { name: "delete_file", args: { path: "/etc/passwd" } },
      { name: "delete_file", args: { path: "/tmp/b" } }
    ]
    return Effect.gen(function*() {
      // The handler answers only once all three approvals are waiting at the same time.
      const allAsked = yield* Deferred.make<void>()
      const asked = yield* Ref.make<Array<string>>([])
      const handler = Approval.layer((call) =>
        Effect.gen(function*() {
          const ids = yield* Ref.updateAndGet(asked, (ids) => [...ids, call.id])
          if (ids.length === 3) yield* Deferred.succeed(allAsked, undefined)
          yield* Deferred.await(allAsked)
          return !(call.args as { path: string }).path.startsWith("/etc")
        })
      )
      const fiber = yield* Effect.fork(run().pipe(Effect.provide(agent(bodies, [handler], calls))))
      yield* TestClock.adjust(Approval.defaultTimeout) // were the approvals serial, they would time out here
      const result = yield* Fiber.join(fiber)

      assert.strictEqual(new Set(yield* Ref.get(asked)).size, 3)
      const outcomes = result.toolCalls.map((c) => [(c.args as { path: string }).path, c.status, c.reason])
      assert.deepStrictEqual(outcomes.sort(), [
        ["/etc/motd", "ok", undefined],
        ["/etc/passwd", "denied", `approval declined (${POLICY_REASON})`],
        ["/tmp/a", "ok", undefined],
        ["/tmp/b", "ok", undefined]
      ])
      assert.deepStrictEqual([...bodies].sort(), ["/tmp/a", "/tmp/b", "read /etc/motd"])
      assert.strictEqual(
        result.output,
        `deleted /tmp/a | contents of /etc/motd | DENIED: approval declined (${POLICY_REASON}) | deleted /tmp/b`
      )
    })
  })

  it.effect("interrupting a run while it waits for approval interrupts the handler", () => {
    const bodies: Array<string> = []
    const interruptWhileWaiting = (makeLayer: (waiting: Deferred.Deferred<void>) => Layer.Layer<Approval.ApprovalHandler>) =>
      Effect.gen(function*() {
        const waiting = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(run().pipe(Effect.provide(agent(bodies, [makeLayer(waiting)]))))
        yield* Deferred.await(waiting)
        assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      })
    return Effect.gen(function*() {
      let signal: AbortSignal | undefined
      yield* interruptWhileWaiting((waiting) =>
        Approval.layerPromise((_call, _userId, options) => {
          signal = options.signal
          Deferred.unsafeDone(waiting, Exit.void)
          return new Promise<boolean>(() => {})
        })
      )
      assert.isTrue(signal?.aborted)

      const released = yield* Deferred.make<void>()
      yield* interruptWhileWaiting((waiting) =>
        Approval.layer(() =>
          Deferred.succeed(waiting, undefined).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() => Deferred.succeed(released, undefined))
          )
        )
      )
      yield* Deferred.await(released)
      assert.deepStrictEqual(bodies, [])
    })
  })
})

// ---- the service --------------------------------------------------------------

describe("Approval.make / makePromise", () => {
  it.effect("only `true` approves; every other outcome is a typed denial keeping the policy's reason", () =>
    Effect.gen(function*() {
      const effectGate = (answer: () => Effect.Effect<boolean, unknown>) => Approval.make(answer)
      const promiseGate = (answer: () => PromiseLike<boolean> | boolean) => Approval.makePromise(answer)
      const failed = denial(Approval.reasons.handlerFailed)
      const cases: ReadonlyArray<readonly [Approval.Service, Approval.ToolDenied | undefined]> = [
        [effectGate(() => Effect.succeed(true)), undefined],
        [effectGate(() => Effect.succeed(false)), denial(Approval.reasons.declined)],
        [effectGate(() => Effect.fail("nope")), failed],
        [effectGate(() => Effect.die("boom")), failed],
        [effectGate(() => Effect.interrupt), failed],
        [effectGate(() => {
          throw new Error("thrown while building the effect")
        }), failed],
        [effectGate(() => Effect.succeed(1 as unknown as boolean)), failed],
        [promiseGate(async () => true), undefined],
        [promiseGate(() => true), undefined],
        [promiseGate(async () => false), denial(Approval.reasons.declined)],
        [promiseGate(() => Promise.reject(new Error("rejected"))), failed],
        [promiseGate(() => {
          throw new Error("thrown synchronously")
        }), failed],
        [promiseGate(async () => "true" as unknown as boolean), failed],
        [promiseGate(async () => undefined as unknown as boolean), failed],
        [Approval.none, denial(Approval.reasons.noApprover)]
      ]
      for (const [gate, expected] of cases) {
        assert.deepStrictEqual(yield* request(gate), expected)
      }
      assert.strictEqual(failed.message, `approval handler failed (${POLICY_REASON})`)
    }))

  it.effect("the handler receives the call and the current user (null when anonymous)", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const gate = Approval.make((call, userId) => Effect.sync(() => seen.push([call, userId])).pipe(Effect.as(true)))
      const promiseGate = Approval.makePromise((call, userId, { context }) => {
        seen.push([call.id, userId, context.userId])
        return true
      })
      yield* request(gate, "alice")
      yield* request(gate, null)
      yield* request(promiseGate, "bob")
      assert.deepStrictEqual(seen, [[call(), "alice"], [call(), null], ["call_1", "bob", "bob"]])
    }))

  it.effect("no answer within 5 minutes (the default) is `approval timed out`", () =>
    Effect.gen(function*() {
      let signal: AbortSignal | undefined
      const promiseGate = Approval.makePromise((_call, _userId, options) => {
        signal = options.signal
        return new Promise<boolean>(() => {})
      })
      const released = yield* Deferred.make<void>()
      const effectGate = Approval.make(() => Effect.onInterrupt(Effect.never, () => Deferred.succeed(released, undefined)))
      for (const gate of [promiseGate, effectGate]) {
        const fiber = yield* Effect.fork(request(gate))
        yield* TestClock.adjust("4 minutes")
        yield* TestClock.adjust("59 seconds")
        assert.isNull(fiber.unsafePoll())
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* Fiber.join(fiber), denial(Approval.reasons.timedOut))
      }
      // Nothing keeps waiting for the late answer.
      assert.isTrue(signal?.aborted)
      yield* Deferred.await(released)
    }))

  it.effect("the timeout is configurable and holds even against a handler that ignores interruption", () =>
    Effect.gen(function*() {
      const gate = Approval.make(() => Effect.uninterruptible(Effect.as(Effect.sleep("1 hour"), true)), {
        timeout: "30 seconds"
      })
      const fiber = yield* Effect.fork(request(gate))
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(yield* Fiber.join(fiber), denial(Approval.reasons.timedOut))
    }))

  it.effect("a failing handler logs a warning with the arguments and the error redacted", () =>
    withLogs((lines) =>
      Effect.gen(function*() {
        const key = "sk-ant-api03-abcdefghijklmnop"
        const gate = Approval.makePromise(async (call) => {
          throw new Error(`cannot post ${JSON.stringify(call.args)}`)
        })
        const denied = yield* request(gate, "alice", { path: "/tmp/a", token: key })
        assert.deepStrictEqual(denied, denial(Approval.reasons.handlerFailed))
        const warnings = lines.filter((line) => line.level === "WARN")
        assert.strictEqual(warnings.length, 1)
        const warning = warnings[0]!
        assert.include(warning.text, "approval handler failed for tool delete_file")
        assert.include(warning.text, "cannot post")
        assert.strictEqual(warning.annotations.tool, "delete_file")
        assert.strictEqual(warning.annotations.call_id, "call_1")
        assert.include(String(warning.annotations.args), "/tmp/a")
        assert.notInclude(JSON.stringify(warnings), key)
        assert.include(JSON.stringify(warnings), "[REDACTED]")
      })
    ))

  it.effect("Approval.layer redacts with the Secrets service in its context, which knows handed-out values", () =>
    withLogs((lines) =>
      Effect.gen(function*() {
        const secrets = yield* Secrets.Secrets
        const gate = yield* Approval.ApprovalHandler
        yield* secrets.resolve("DB_PASSWORD")
        // A value with no well-known key shape: only the Secrets service can know to mask it.
        const denied = yield* request(gate, "alice", { password: "correct-horse-battery" })
        assert.deepStrictEqual(denied, denial(Approval.reasons.handlerFailed))
        const text = JSON.stringify(lines)
        assert.notInclude(text, "correct-horse-battery")
        assert.include(text, "[REDACTED]")
      }).pipe(
        Effect.provide(
          Approval.layer(() => Effect.die("broken")).pipe(
            Layer.provideMerge(Secrets.layerDict({ DB_PASSWORD: "correct-horse-battery" }))
          )
        )
      )
    ))

  it.effect("outcomeOf names the outcome of a denial", () =>
    Effect.sync(() => {
      assert.strictEqual(Approval.outcomeOf(denial(Approval.reasons.declined)), "declined")
      assert.strictEqual(Approval.outcomeOf(denial(Approval.reasons.noApprover)), "no_approver")
      assert.strictEqual(Approval.outcomeOf(denial(Approval.reasons.handlerFailed)), "failed")
      assert.strictEqual(Approval.outcomeOf(denial(Approval.reasons.timedOut)), "timed_out")
      assert.strictEqual(Approval.outcomeOf(denial("on-call said no")), "declined")
    }))
})
