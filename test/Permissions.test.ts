import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Agent, Approval, Hooks, Model, Permissions, RunContext, Tool } from "jeevesagent"

const callOf = (name: string, destructive = false): Tool.Call => ({ id: `call_${name}`, name, args: {}, destructive })

const check = (service: Permissions.Service, call: Tool.Call, userId: string | null = "alice") =>
  service.check(call).pipe(RunContext.withUser(userId), Effect.orDie)

const { Allow, Ask, Deny } = Permissions.Decision

describe("Permissions.standard", () => {
  it.effect("decides deny-list → allow-list → bypass → destructive asks → allow", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Permissions.StandardOptions, Tool.Call, Permissions.Decision]> = [
        // the deny-list beats everything, even an allow-list naming the tool and bypass
        [
          { mode: "bypassPermissions", allowedTools: ["bash"], deniedTools: ["bash"] },
          callOf("bash"),
          Deny({ reason: "bash: denied by policy" })
        ],
        // the allow-list applies in every mode, bypass included
        [
          { mode: "bypassPermissions", allowedTools: ["read"] },
          callOf("bash", true),
          Deny({ reason: "bash: not in allow-list" })
        ],
        [{ mode: "acceptEdits", allowedTools: ["read"] }, callOf("bash"), Deny({ reason: "bash: not in allow-list" })],
        // an empty allow-list denies everything; `null` means no list
        [{ allowedTools: [] }, callOf("read"), Deny({ reason: "read: not in allow-list" })],
        [{ allowedTools: null }, callOf("read"), Allow()],
        // bypass allows destructive calls
        [{ mode: "bypassPermissions" }, callOf("rm", true), Allow()],
        // destructive calls ask, unless acceptEdits
        [{ mode: "default" }, callOf("rm", true), Ask({ reason: "rm: destructive call requires approval" })],
        [{}, callOf("rm", true), Ask({ reason: "rm: destructive call requires approval" })],
        [{ allowedTools: ["rm"] }, callOf("rm", true), Ask({ reason: "rm: destructive call requires approval" })],
        [{ mode: "acceptEdits" }, callOf("rm", true), Allow()],
        // everything else is allowed; names match exactly
        [{ deniedTools: ["Read"] }, callOf("read"), Allow()],
        [{}, callOf("read"), Allow()]
      ]
      for (const [options, call, expected] of cases) {
        assert.deepStrictEqual(yield* check(Permissions.makeStandard(options), call), expected, JSON.stringify(options))
      }
    }))

  it("rejects an unknown mode when it is built", () => {
    assert.throws(() => Permissions.standard({ mode: "bypass" as Permissions.Mode }), TypeError, /unknown mode "bypass"/)
  })

  // test_standard_permissions_accepts_user_id_kwarg
  it.effect("a non-destructive call is allowed whoever the user is", () =>
    Effect.gen(function*() {
      const strict = Permissions.makeStandard({ mode: "default" })
      assert.deepStrictEqual(yield* check(strict, callOf("search"), "alice"), Allow())
      assert.deepStrictEqual(yield* check(strict, callOf("search"), null), Allow())
    }))
})

describe("Permissions.perUser", () => {
  // test_per_user_permissions_routes_to_user_policy / _default_for_unknown_user
  const perms = Permissions.makePerUser({
    policies: {
      admin_alice: { mode: "bypassPermissions" },
      service_account: { allowedTools: ["read", "search"] }
    },
    default: { mode: "default", deniedTools: ["bash", "delete_account"] }
  })

  it.effect("routes each user to their own policy; unknown users and anonymous runs go to the default", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* check(perms, callOf("bash", true), "admin_alice"), Allow())
      assert.deepStrictEqual(yield* check(perms, callOf("bash", true), "bob"), Deny({ reason: "bash: denied by policy" }))
      assert.deepStrictEqual(yield* check(perms, callOf("bash"), "service_account"), Deny({ reason: "bash: not in allow-list" }))
      assert.deepStrictEqual(yield* check(perms, callOf("search"), "service_account"), Allow())
      assert.deepStrictEqual(yield* check(perms, callOf("bash"), "someone_new"), Deny({ reason: "bash: denied by policy" }))
      assert.deepStrictEqual(yield* check(perms, callOf("bash"), null), Deny({ reason: "bash: denied by policy" }))
    }))

  it.effect("user ids that are Object.prototype keys get the default, not a prototype member", () =>
    Effect.gen(function*() {
      for (const userId of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
        assert.deepStrictEqual(yield* check(perms, callOf("bash"), userId), Deny({ reason: "bash: denied by policy" }))
      }
    }))

  it.effect("anonymous runs can be mapped, by `anonymous` or by the ANONYMOUS_USER key", () =>
    Effect.gen(function*() {
      const byOption = Permissions.makePerUser({
        policies: { alice: { mode: "bypassPermissions" } },
        anonymous: { allowedTools: [] },
        default: {}
      })
      const byKey = Permissions.makePerUser({
        policies: { [RunContext.ANONYMOUS_USER]: { allowedTools: [] } },
        default: {}
      })
      for (const service of [byOption, byKey]) {
        assert.deepStrictEqual(yield* check(service, callOf("read"), null), Deny({ reason: "read: not in allow-list" }))
        assert.deepStrictEqual(yield* check(service, callOf("read"), "carol"), Allow())
      }
    }))

  it("rejects policy keys no user can have, and an anonymous policy given twice", () => {
    assert.throws(() => Permissions.perUser({ policies: { "": {} }, default: {} }), TypeError, /not a valid user id \(empty\)/)
    assert.throws(() => Permissions.perUser({ policies: { "a\nb": {} }, default: {} }), TypeError, /control_characters/)
    assert.throws(
      () => Permissions.perUser({ policies: { [RunContext.ANONYMOUS_USER]: {} }, anonymous: {}, default: {} }),
      TypeError,
      /anonymous policy is given twice/
    )
  })

  it.effect("a policy can be any service; it is asked inside the user's run context", () =>
    Effect.gen(function*() {
      const seen: Array<string | null> = []
      const auditing: Permissions.Service = {
        check: () => Effect.map(RunContext.currentUserId, (userId) => (seen.push(userId), Permissions.allow))
      }
      const service = Permissions.makePerUser({ policies: { alice: auditing }, default: Permissions.allowAllService })
      yield* check(service, callOf("x"), "alice")
      yield* check(service, callOf("x"), "bob")
      assert.deepStrictEqual(seen, ["alice"])
    }))
})

describe("Permissions, end to end", () => {
  const tools = (bodies: Array<string>) => [
    Tool.make("read", {
      description: "Reads",
      parameters: Schema.Struct({}),
      handler: () => Effect.map(RunContext.currentUserId, (userId) => (bodies.push(`read:${userId}`), "read ok"))
    }),
    Tool.make("write", {
      description: "Writes",
      parameters: Schema.Struct({}),
      destructive: true,
      handler: () => Effect.map(RunContext.currentUserId, (userId) => (bodies.push(`write:${userId}`), "write ok"))
    })
  ]
  // Both tools in one turn, then the tool messages as the answer; a yield between steps interleaves the runs.
  const model = Model.layerScripted((request) => {
    const results = request.messages.filter((m) => m.role === "tool")
    const turn = results.length === 0 ?
      { toolCalls: [{ name: "read", args: {} }, { name: "write", args: {} }] } :
      { text: results.map((m) => m.content).join(" | ") }
    return Effect.as(Effect.yieldNow(), turn)
  })

  it.effect("per-user routing and approvals hold with many users running at once", () => {
    const bodies: Array<string> = []
    const users = Array.from({ length: 60 }, (_, i) => `user_${i}`)
    const POLICIES = [{ allowedTools: ["read"] }, { mode: "bypassPermissions" as const }, { mode: "default" as const }]
    // users 0-49 cycle through the three policies; users 50+ have no entry and get the default (nothing runs)
    const policies = Object.fromEntries(users.slice(0, 50).map((userId, i) => [userId, POLICIES[i % 3]!]))
    // the approver says yes to even-numbered users only, and answers after a yield so requests overlap
    const approvals: Array<string | null> = []
    const approver = Approval.layer((_call, userId) =>
      Effect.sync(() => approvals.push(userId)).pipe(
        Effect.zipRight(Effect.yieldNow()),
        Effect.as(Number(userId?.slice(5)) % 2 === 0)
      )
    )
    const ASK = "write: destructive call requires approval"
    const expected = (i: number): string => {
      if (i >= 50) return "DENIED: read: denied by policy | DENIED: write: denied by policy"
      if (i % 3 === 0) return "read ok | DENIED: write: not in allow-list"
      if (i % 3 === 1 || i % 2 === 0) return "read ok | write ok"
      return `read ok | DENIED: approval declined (${ASK})`
    }
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const outputs = yield* Effect.forEach(
        users,
        (userId) => Effect.map(agent.run("work", { userId }), (result) => result.output),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(outputs, users.map((_, i) => expected(i)))
      const ran = users.flatMap((userId, i) =>
        i >= 50 ? [] : [`read:${userId}`, ...(expected(i).endsWith("write ok") ? [`write:${userId}`] : [])]
      )
      assert.deepStrictEqual([...bodies].sort(), ran.sort())
      assert.deepStrictEqual([...approvals].sort(), users.filter((_, i) => i < 50 && i % 3 === 2).sort())
    }).pipe(
      Effect.provide(
        Agent.layer({ tools: tools(bodies) }).pipe(
          Layer.provide(model),
          Layer.provide(Layer.mergeAll(
            Agent.layerDefaults,
            approver,
            Permissions.perUser({ policies, default: { deniedTools: ["read", "write"] } })
          ))
        )
      )
    )
  })

  // test_destructive_flag_stamping (upstream e17af15)
  it.effect("`destructive` is stamped from the tool definition before hooks and permissions see the call", () => {
    const seenByPolicy: Array<[string, boolean]> = []
    const seenByHook: Array<[string, boolean]> = []
    const recording: Permissions.Service = {
      check: (call) => Effect.sync(() => (seenByPolicy.push([call.name, call.destructive]), Permissions.allow))
    }
    return Effect.gen(function*() {
      const result = yield* Effect.flatMap(Agent.Agent, (agent) => agent.run("work"))
      assert.deepStrictEqual(seenByPolicy.sort(), [["read", false], ["write", true]])
      assert.deepStrictEqual(seenByHook.sort(), [["read", false], ["write", true]])
      assert.deepStrictEqual(result.toolCalls.map((c) => [c.name, c.destructive]).sort(), [["read", false], ["write", true]])
    }).pipe(
      Effect.provide(
        Agent.layer({ tools: tools([]) }).pipe(
          Layer.provide(model),
          Layer.provide(Layer.mergeAll(
            Agent.layerDefaults,
            Layer.succeed(Permissions.Permissions, recording),
            Hooks.layer({ beforeTool: [(call) => Effect.sync(() => void seenByHook.push([call.name, call.destructive]))] })
          ))
        )
      )
    )
  })
})
