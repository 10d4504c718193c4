/**
 * The whole governance decision table, end to end through `Agent`: hooks →
 * permissions → approval, against a small reference model of the rules.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck, Fiber, Layer, Option, Runtime, Schema, TestClock } from "effect"
import { Agent, Approval, Hooks, Model, Permissions, Tool } from "jeevesagent"

const TOOL_NAMES = ["alpha", "beta", "gamma"] as const
const HANDLERS = ["approve", "decline", "fail", "throw", "die", "nonBoolean", "hang", "absent"] as const
const HOOKS = ["allow", "deny", "fail", "throw", "die", "hang"] as const

type HandlerBehaviour = (typeof HANDLERS)[number]
type HookBehaviour = (typeof HOOKS)[number]

interface Case {
  readonly api: "effect" | "promise"
  readonly routing: "direct" | "perUser"
  readonly userId: string | null
  readonly mode: Permissions.Mode
  readonly allowedTools: ReadonlyArray<string> | undefined
  readonly deniedTools: ReadonlyArray<string>
  readonly tool: "alpha" | "beta"
  readonly destructive: boolean
  readonly handler: HandlerBehaviour
  readonly before: ReadonlyArray<HookBehaviour>
  readonly after: boolean
}

interface Expected {
  /** `undefined` when the tool runs. */
  readonly reason: string | undefined
  readonly beforeHooksRun: number
  readonly handlerAsked: boolean
}

/** The rules, written out plainly: the reference the runtime is checked against. */
const reference = (c: Case): Expected => {
  for (let i = 0; i < c.before.length; i++) {
    const hookReason = {
      allow: undefined,
      deny: `hook ${i + 1} says no`,
      fail: "hook failed",
      throw: "hook failed",
      die: "hook failed",
      hang: "hook timed out"
    }[c.before[i]!]
    if (hookReason !== undefined) return { reason: hookReason, beforeHooksRun: i + 1, handlerAsked: false }
  }
  const hooksRun = c.before.length
  const policyDeny = (reason: string): Expected => ({ reason, beforeHooksRun: hooksRun, handlerAsked: false })
  if (c.deniedTools.includes(c.tool)) return policyDeny(`${c.tool}: denied by policy`)
  if (c.allowedTools !== undefined && !c.allowedTools.includes(c.tool)) return policyDeny(`${c.tool}: not in allow-list`)
  const allowed: Expected = { reason: undefined, beforeHooksRun: hooksRun, handlerAsked: false }
  if (c.mode === "bypassPermissions" || !c.destructive || c.mode === "acceptEdits") return allowed
  const policyReason = `${c.tool}: destructive call requires approval`
  const gate = {
    approve: undefined,
    decline: "approval declined",
    fail: "approval handler failed",
    throw: "approval handler failed",
    die: "approval handler failed",
    nonBoolean: "approval handler failed",
    hang: "approval timed out",
    absent: "approval required; no approver"
  }[c.handler]
  return {
    reason: gate === undefined ? undefined : `${gate} (${policyReason})`,
    beforeHooksRun: hooksRun,
    handlerAsked: c.handler !== "absent"
  }
}

const effectAnswer = (behaviour: Exclude<HandlerBehaviour, "absent">): Effect.Effect<boolean, unknown> => {
  switch (behaviour) {
    case "approve":
      return Effect.succeed(true)
    case "decline":
      return Effect.succeed(false)
    case "fail":
      return Effect.fail("approver offline")
    case "throw":
      throw new Error("approver crashed")
    case "die":
      return Effect.die(new Error("approver died"))
    case "nonBoolean":
      return Effect.succeed("yes" as unknown as boolean)
    case "hang":
      return Effect.never
  }
}

const promiseAnswer = (behaviour: Exclude<HandlerBehaviour, "absent">): Promise<boolean> | boolean => {
  switch (behaviour) {
    case "approve":
      return Promise.resolve(true)
    case "decline":
      return false
    case "fail":
      return Promise.reject(new Error("approver offline"))
    case "throw":
      throw new Error("approver crashed")
    case "die":
      return Promise.resolve().then(() => {
        throw new TypeError("approver died")
      })
    case "nonBoolean":
      return Promise.resolve("yes" as unknown as boolean)
    case "hang":
      return new Promise<boolean>(() => {})
  }
}

const effectHook = (behaviour: HookBehaviour, position: number) => {
  switch (behaviour) {
    case "allow":
      return Effect.void
    case "deny":
      return Effect.succeed({ deny: `hook ${position} says no` })
    case "fail":
      return Effect.fail("hook backend down")
    case "throw":
      throw new Error("hook crashed")
    case "die":
      return Effect.die("hook died")
    case "hang":
      return Effect.never
  }
}

const promiseHook = (behaviour: HookBehaviour, position: number) => {
  switch (behaviour) {
    case "allow":
      return undefined
    case "deny":
      return Promise.resolve({ deny: `hook ${position} says no` })
    case "fail":
      return Promise.reject(new Error("hook backend down"))
    case "throw":
      throw new Error("hook crashed")
    case "die":
      return Promise.resolve().then(() => {
        throw new TypeError("hook died")
      })
    case "hang":
      return new Promise<undefined>(() => {})
  }
}

interface Spies {
  bodyRuns: number
  beforeHooksRun: number
  afterHooksRun: number
  readonly approvals: Array<{ readonly call: Tool.Call; readonly userId: string | null }>
}

const layersFor = (c: Case, spies: Spies) => {
  const tool = Tool.make(c.tool, {
    description: "the tool under test",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: c.destructive,
    handler: () => Effect.sync(() => ++spies.bodyRuns).pipe(Effect.as("done"))
  })
  const bystander = Tool.make("gamma", {
    description: "never called",
    parameters: Schema.Struct({}),
    handler: () => Effect.succeed("unused")
  })
  const model = Model.layerScripted((request) => {
    const last = request.messages.at(-1)!
    return last.role === "tool" ? { text: last.content } : { toolCalls: [{ name: c.tool, args: { path: "/srv/data" } }] }
  })

  const policy: Permissions.StandardOptions = { mode: c.mode, allowedTools: c.allowedTools, deniedTools: c.deniedTools }
  // The per-user variant routes this user to the policy and everyone else to "deny everything".
  const permissions = c.routing === "direct" ?
    Permissions.standard(policy) :
    Permissions.perUser({
      policies: { ...(c.userId === null ? {} : { [c.userId]: policy }), mallory: { mode: "bypassPermissions" } },
      anonymous: c.userId === null ? policy : undefined,
      default: { allowedTools: [] }
    })

  const handler = c.handler
  const approval = handler === "absent" ?
    Approval.layerNone :
    c.api === "effect" ?
    Approval.layer((call, userId) => {
      spies.approvals.push({ call, userId })
      return effectAnswer(handler)
    }) :
    Approval.layerPromise((call, userId) => {
      spies.approvals.push({ call, userId })
      return promiseAnswer(handler)
    })

  const after = c.after ? [() => void spies.afterHooksRun++] : []
  const hooks = c.before.length === 0 && !c.after ?
    Hooks.layerNone :
    c.api === "effect" ?
    Hooks.layer({
      beforeTool: c.before.map((behaviour, i) => () => {
        spies.beforeHooksRun++
        return effectHook(behaviour, i + 1)
      }),
      afterTool: after.map((hook) => () => Effect.sync(hook))
    }) :
    Hooks.layerPromise({
      beforeTool: c.before.map((behaviour, i) => () => {
        spies.beforeHooksRun++
        return promiseHook(behaviour, i + 1)
      }),
      afterTool: after
    })

  return Agent.layer({ tools: [tool, bystander] }).pipe(
    Layer.provide(model),
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, permissions, approval, hooks))
  )
}

/**
 * Runs to completion, advancing the TestClock only while the run waits on a
 * timeout (most cases finish within a few scheduler yields; an adjust costs
 * a real timer tick).
 */
const runDriven = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    for (let step = 0; step < 200 && Option.isNone(yield* Fiber.poll(fiber)); step++) {
      yield* step < 150 ? Effect.yieldNow() : TestClock.adjust("1 minute")
    }
    return yield* Fiber.join(fiber)
  })

const toolList = FastCheck.uniqueArray(FastCheck.constantFrom(...TOOL_NAMES), { maxLength: 3 })

/** `weighted([a, 3], [b, 1])`: `a` three times as often as `b`. */
const weighted = <A>(...choices: ReadonlyArray<readonly [A, number]>): FastCheck.Arbitrary<A> =>
  FastCheck.oneof(...choices.map(([value, weight]) => ({ arbitrary: FastCheck.constant(value), weight })))

// Biased towards calls that reach the approval gate, so every handler behaviour is exercised often.
const caseArbitrary: FastCheck.Arbitrary<Case> = FastCheck.record({
  api: FastCheck.constantFrom("effect", "promise"),
  routing: FastCheck.constantFrom("direct", "perUser"),
  userId: FastCheck.constantFrom("alice", null),
  mode: weighted<Permissions.Mode>(["default", 2], ["acceptEdits", 1], ["bypassPermissions", 1]),
  allowedTools: FastCheck.option(toolList, { nil: undefined, freq: 2 }),
  deniedTools: FastCheck.oneof({ arbitrary: FastCheck.constant([]), weight: 3 }, { arbitrary: toolList, weight: 1 }),
  tool: FastCheck.constantFrom("alpha", "beta"),
  destructive: weighted([true, 3], [false, 1]),
  handler: FastCheck.constantFrom(...HANDLERS),
  before: FastCheck.array(weighted<HookBehaviour>(["allow", 6], ...HOOKS.slice(1).map((h) => [h, 1] as const)), {
    maxLength: 3
  }),
  after: FastCheck.boolean()
})

/** One case: run it through the agent and hold the outcome against the reference. */
const check = (c: Case) =>
  Effect.gen(function*() {
    const spies: Spies = { bodyRuns: 0, beforeHooksRun: 0, afterHooksRun: 0, approvals: [] }
    const expected = reference(c)
    const result = yield* runDriven(
      Effect.flatMap(Agent.Agent, (agent) => agent.run("go", { userId: c.userId })).pipe(
        Effect.provide(layersFor(c, spies))
      )
    )

    const record = result.toolCalls[0]!
    assert.strictEqual(result.toolCalls.length, 1)
    assert.strictEqual(record.destructive, c.destructive)
    if (expected.reason === undefined) {
      assert.strictEqual(record.status, "ok")
      assert.strictEqual(record.output, "done")
      assert.strictEqual(spies.bodyRuns, 1)
    } else {
      assert.strictEqual(record.status, "denied")
      assert.strictEqual(record.reason, expected.reason)
      assert.strictEqual(record.output, `DENIED: ${expected.reason}`)
      assert.strictEqual(spies.bodyRuns, 0, "a denied call's body ran")
    }
    // The model read exactly what the table says.
    assert.strictEqual(result.output, record.output)
    assert.strictEqual(spies.beforeHooksRun, expected.beforeHooksRun)
    assert.strictEqual(spies.afterHooksRun, c.after && expected.reason === undefined ? 1 : 0)
    assert.strictEqual(spies.approvals.length, expected.handlerAsked ? 1 : 0)
    for (const { call, userId } of spies.approvals) {
      assert.strictEqual(userId, c.userId)
      assert.strictEqual(call.name, c.tool)
      assert.strictEqual(call.destructive, true)
      assert.deepStrictEqual(call.args, { path: "/srv/data" })
    }
  })

describe("the decision table", () => {
  // One test environment for all runs (`it.effect.prop` builds one per run, about 12 ms each);
  // every case builds its own agent, so nothing but the TestClock is shared.
  it.effect("hooks → permissions → approval match the reference, and a denied body never runs", () =>
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      yield* Effect.promise(() =>
        FastCheck.assert(
          FastCheck.asyncProperty(caseArbitrary, (c) => Runtime.runPromise(runtime, check(c))),
          { numRuns: 200 }
        )
      )
    }))

  it.effect("every approval outcome, for both handler kinds, with and without hooks attached", () =>
    Effect.forEach(
      (["effect", "promise"] as const).flatMap((api) =>
        HANDLERS.flatMap((handler) =>
          [{ before: [], after: false }, { before: ["allow" as const], after: false }, { before: [], after: true }].map(
            (hooks): Case => ({
              api,
              routing: "direct",
              userId: "alice",
              mode: "default",
              allowedTools: undefined,
              deniedTools: [],
              tool: "alpha",
              destructive: true,
              handler,
              ...hooks
            })
          )
        )
      ),
      check,
      { discard: true }
    ))

  it.effect("the property's cases reach every outcome", () =>
    Effect.sync(() => {
      const reasons = new Set(FastCheck.sample(caseArbitrary, { numRuns: 2000, seed: 42 }).map((c) => {
        const reason = reference(c).reason
        return reason === undefined ? "ok" : reason.replace(/ \(.*\)$/, "").replace(/^(alpha|beta): /, "").replace(/\d/, "N")
      }))
      assert.deepStrictEqual([...reasons].sort(), [
        "approval declined",
        "approval handler failed",
        "approval required; no approver",
        "approval timed out",
        "denied by policy",
        "hook N says no",
        "hook failed",
        "hook timed out",
        "not in allow-list",
        "ok"
      ])
    }))
})
