/**
 * Hostile and broken tool calls: arguments from the model that would
 * overflow the stack, poison a prototype or refer to themselves, a handler
 * that interrupts itself, and an audit log that loses a decision entry. Each
 * gives the call an error (or denied) result and the run goes on.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Redacted, Ref, Schema } from "effect"
import { Agent, Approval, AuditLog, Model, Permissions, Secrets, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"


/** `[[[...]]]`, `depth` levels. */
const nested = (depth: number): unknown => JSON.parse("[".repeat(depth) + "]".repeat(depth))

const counting = (name: string, parameters: Schema.Schema<any, any>) => {
  let calls = 0
  const tool = Tool.make(name, { description: name, parameters, handler: () => Effect.sync(() => `${name} ran ${++calls}`) })
  return { tool, calls: () => calls }
}

describe("hostile tool arguments from the model", () => {
  it.effect("nested 3 000 levels where a number belongs: an error result, not a stack overflow", () => {
    const add = counting("add", Schema.Struct({ a: Schema.Number }))
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.status, "error")
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: invalid arguments: nested deeper than 64 levels")
      assert.strictEqual(add.calls(), 0)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "add", args: { a: nested(3_000) } }]), [add.tool])))
  })

  it.effect("nested 20 000 levels under an Unknown parameter: an error result, the tool not run", () => {
    const store = counting("store", Schema.Struct({ a: Schema.Unknown }))
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: invalid arguments: nested deeper than 64 levels")
      assert.strictEqual(store.calls(), 0)
      assert.include(result.output, "nested deeper than 64 levels")
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "store", args: { a: nested(20_000) } }]), [store.tool])))
  })

  it.effect("a __proto__ key (kept by JSON.parse): refused, so no decoded object gets the model's prototype", () => {
    const setPrefs = counting("set_prefs", Schema.Record({ key: Schema.String, value: Schema.Unknown }))
    const args = JSON.parse(`{"theme":"dark","__proto__":{"isAdmin":true}}`)
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.output, `ERROR: invalid arguments: the key "__proto__" is not allowed`)
      assert.strictEqual(setPrefs.calls(), 0)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "set_prefs", args }]), [setPrefs.tool])))
  })

  it.effect("arguments that refer to themselves (a custom model's): an error result, and the run's episode is stored", () => {
    const store = counting("store", Schema.Struct({ a: Schema.Unknown }))
    const cyclic: Record<string, unknown> = { name: "loop" }
    cyclic.self = cyclic
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: invalid arguments: they refer to themselves (a cycle)")
      assert.strictEqual(store.calls(), 0)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "store", args: { a: cyclic } }]), [store.tool])))
  })

  it.effect("shared (not cyclic) arguments and ordinary ones still reach the tool, frozen", () => {
    let seen: unknown
    const echo = Tool.make("echo", {
      description: "echo",
      parameters: Schema.Struct({ a: Schema.Unknown, b: Schema.Unknown }),
      handler: (args) => Effect.sync(() => (seen = args)).pipe(Effect.as("ok"))
    })
    const shared = { x: [1, 2] }
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
      assert.deepStrictEqual(seen, { a: shared, b: shared })
      assert.isTrue(Object.isFrozen(result.toolCalls[0]!.args))
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "echo", args: { a: shared, b: shared } }]), [echo])))
  })

  it.effect("a huge argument echoed by a schema error is cut in the error result", () => {
    const add = counting("add", Schema.Struct({ a: Schema.Number }))
    return Effect.gen(function*() {
      const result = yield* run
      const output = result.toolCalls[0]!.output
      assert.isTrue(output.startsWith("ERROR: invalid arguments"))
      assert.isAtMost(output.length, 2_010)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "add", args: { a: "x".repeat(1_000_000) } }]), [add.tool])))
  })
})

describe("calls that will never run", () => {
  it.effect("a destructive call with refused arguments is not put to a human: no approval asked, an error result", () => {
    const purge = Tool.make("purge", {
      description: "purge",
      parameters: Schema.Struct({ a: Schema.Unknown }),
      destructive: true,
      handler: () => Effect.succeed("purged")
    })
    const asked: Array<string> = []
    const gate = Approval.layer((call) => Effect.sync(() => asked.push(call.name)).pipe(Effect.as(true)))
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: invalid arguments: nested deeper than 64 levels")
      assert.deepStrictEqual(asked, [])
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "purge", args: { a: nested(100) } }]),
      [purge],
      gate as Layer.Layer<never>,
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })
})

describe("what the approver sees is what runs", () => {
  it.effect("arguments a schema fills in or transforms are shown as the tool will get them", () => {
    const seen: Array<unknown> = []
    const wipe = Tool.make("wipe", {
      description: "wipe a directory",
      parameters: Schema.Struct({
        path: Schema.optionalWith(Schema.String, { default: () => "/" }),
        depth: Schema.optionalWith(Schema.NumberFromString, { default: () => 99 })
      }),
      destructive: true,
      handler: ({ depth, path }) => Effect.succeed(`wiped ${path} to depth ${depth}`)
    })
    const gate = Approval.layer((call) => Effect.sync(() => seen.push(call.args)).pipe(Effect.as(true)))
    return Effect.gen(function*() {
      const result = yield* run
      assert.deepStrictEqual(seen, [{ path: "/", depth: "99" }, { path: "/tmp", depth: "2" }])
      assert.deepStrictEqual(result.toolCalls.map((c) => [c.output, c.args]), [
        ["wiped / to depth 99", { path: "/", depth: "99" }],
        ["wiped /tmp to depth 2", { path: "/tmp", depth: "2" }]
      ])
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "wipe", args: {} }, { name: "wipe", args: { path: "/tmp", depth: "2" } }]),
      [wipe],
      gate as Layer.Layer<never>,
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })

  it.effect("arguments that do not decode are not put to the approver: an error result at once", () => {
    const asked: Array<unknown> = []
    const wipe = Tool.make("wipe", {
      description: "wipe",
      parameters: Schema.Struct({ path: Schema.String }),
      destructive: true,
      handler: () => Effect.succeed("wiped")
    })
    const gate = Approval.layer((call) => Effect.sync(() => asked.push(call.args)).pipe(Effect.as(true)))
    return Effect.gen(function*() {
      const result = yield* run
      assert.deepStrictEqual(asked, [])
      assert.strictEqual(result.toolCalls[0]!.status, "error")
      assert.match(result.toolCalls[0]!.output, /^ERROR: invalid arguments/)
    }).pipe(Effect.provide(agentWith(
      callThenSummarize([{ name: "wipe", args: { path: 42 } }]),
      [wipe],
      gate as Layer.Layer<never>,
      Permissions.standard({ mode: "default" }) as Layer.Layer<never>
    )))
  })
})

describe("an answer cut off at max_tokens", () => {
  it.effect("its tool calls are not run: each gets an error result, and the model is asked again", () => {
    const send = counting("send_email", Schema.Struct({ to: Schema.String, body: Schema.optional(Schema.String) }))
    let calls = 0
    const cutting = Model.make({
      name: "cuts-off",
      complete: () =>
        Effect.sync(() => {
          calls++
          return calls === 1 ?
            {
              text: "Sending.",
              toolCalls: [{ id: "toolu_1", name: "send_email", args: { to: "bob@example.com" } }],
              usage: { inputTokens: 10, outputTokens: 512, costUsd: 0 },
              stopReason: "max_tokens"
            } :
            { text: "I will keep it shorter.", toolCalls: [], usage: { inputTokens: 10, outputTokens: 5, costUsd: 0 }, stopReason: "end_turn" }
        })
    })
    const layer = Agent.layer({ tools: [send.tool] }).pipe(
      Layer.provide(Layer.succeed(Model.Model, cutting)),
      Layer.provide(Agent.layerDefaults),
      Layer.orDie
    )
    return Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(send.calls(), 0)
      assert.strictEqual(result.toolCalls[0]!.status, "error")
      assert.include(result.toolCalls[0]!.output, "max_tokens")
      assert.deepStrictEqual(result.toolCalls[0]!.args, { to: "bob@example.com" }, "the audit trail keeps what the model asked")
      assert.strictEqual(result.output, "I will keep it shorter.")
    }).pipe(Effect.provide(layer))
  })
})

describe("broken handlers and logs", () => {
  it.effect("a tool that interrupts itself gives an error result; the other calls and the run go on", () => {
    const cancelled = Tool.make("cancelled", { description: "", parameters: Schema.Struct({}), handler: () => Effect.interrupt })
    const ok = counting("ok", Schema.Struct({}))
    return Effect.gen(function*() {
      const result = yield* run
      assert.deepStrictEqual(result.toolCalls.map((call) => [call.name, call.status]), [["cancelled", "error"], ["ok", "ok"]])
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: the tool was interrupted")
      assert.isFalse(result.interrupted)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "cancelled", args: {} }, { name: "ok", args: {} }]), [cancelled, ok.tool])))
  })

  it.effect("a permissions service of the user's that answers no known decision: the call is denied, the run goes on", () => {
    const ok = counting("ok", Schema.Struct({}))
    const confused = Layer.succeed(Permissions.Permissions, {
      check: () => Effect.succeed({ _tag: "Maybe" } as unknown as Permissions.Decision)
    })
    return Effect.gen(function*() {
      const result = yield* run
      assert.deepStrictEqual(result.toolCalls.map((call) => [call.status, call.reason]), [["denied", "permission check failed"]])
      assert.strictEqual(ok.calls(), 0)
    }).pipe(Effect.provide(agentWith(callThenSummarize([{ name: "ok", args: {} }]), [ok.tool], confused)))
  })

  it.effect("an audit log (awaited, not the built-in) that loses the permission decision: the destructive call does not run", () =>
    Effect.gen(function*() {
      const executed = yield* Ref.make<Array<string>>([])
      const deleteFile = Tool.make("delete_file", {
        description: "",
        parameters: Schema.Struct({ path: Schema.String }),
        destructive: true,
        handler: ({ path }) => Effect.as(Ref.update(executed, (paths) => [...paths, path]), "deleted")
      })
      const losesDecisions = Layer.succeed(AuditLog.AuditLog, {
        enabled: true,
        append: (input: AuditLog.AppendInput) =>
          input.action === "permission_decision" ?
            Effect.fail(new AuditLog.AuditUnavailable({ description: "SIEM timeout" })) :
            Effect.succeed(undefined as unknown as AuditLog.AuditEntry),
        query: () => Effect.succeed([]),
        verify: Effect.succeed({ valid: true, validCount: 0 })
      } as AuditLog.Service)
      const result = yield* run.pipe(
        Effect.provide(
          agentWith(
            callThenSummarize([{ name: "delete_file", args: { path: "/etc/x" } }]),
            [deleteFile],
            losesDecisions,
            Permissions.standard({ mode: "acceptEdits" })
          )
        )
      )
      assert.strictEqual(result.auditFailures, 1)
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.deepStrictEqual(yield* Ref.get(executed), [])
    }))
})

describe("what a failing tool tells the model", () => {
  it.effect("a short error message holding a secret the agent's Secrets handed out reaches the model masked", () =>
    Effect.gen(function*() {
      const secrets = Secrets.make({ resolve: () => Effect.succeed("pg-pass-9f2e81") })
      const connect = Tool.make("connect", {
        description: "",
        parameters: Schema.Struct({}),
        handler: () =>
          Effect.flatMap(secrets.resolve("DB_PASSWORD"), (password) =>
            Effect.fail(`login failed for postgres://app:${Redacted.value(password)}@db`))
      })
      const result = yield* run.pipe(
        Effect.provide(agentWith(callThenSummarize([{ name: "connect", args: {} }]), [connect], Layer.succeed(Secrets.Secrets, secrets)))
      )
      assert.strictEqual(result.toolCalls[0]!.output, `ERROR: login failed for postgres://app:${Secrets.REDACTED}@db`)
      assert.notInclude(result.output, "pg-pass-9f2e81")
    }))
})

describe("a tool's timeout bounds the call", () => {
  it.live("a handler stuck where it cannot be interrupted gets its timeout result at its timeout; it is interrupted in the background", () =>
    Effect.gen(function*() {
      // A pool that hands out a connection only when the test says so (after the run has ended).
      const pool = yield* Deferred.make<void>()
      const released = yield* Deferred.make<void>()
      const checkout = Tool.make("checkout", {
        description: "",
        parameters: Schema.Struct({}),
        timeout: "50 millis",
        handler: () => Effect.acquireUseRelease(Deferred.await(pool), () => Effect.succeed("queried"), () => Deferred.succeed(released, undefined))
      })
      const result = yield* run.pipe(Effect.provide(agentWith(callThenSummarize([{ name: "checkout", args: {} }]), [checkout])))
      assert.strictEqual(result.toolCalls[0]!.output, "ERROR: timed out after 50ms")
      // Once the acquire ends, the interruption the timeout asked for takes effect: released, never used.
      yield* Deferred.succeed(pool, undefined)
      yield* Deferred.await(released)
    }), 5_000)
})
