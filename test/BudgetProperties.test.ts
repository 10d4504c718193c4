import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FastCheck as fc, Layer, Schema } from "effect"
import { Agent, Budget, Model, RunContext, Tool } from "jeevesagent"

// Costs are multiples of 1/1024 USD: exact in binary floating point, so sums
// are exact whatever order they are added in.
const arbCost = fc.integer({ min: 0, max: 256 }).map((k) => k / 1024)
const arbUsage = (maxTokens: number) =>
  fc.record({
    inputTokens: fc.integer({ min: 0, max: maxTokens }),
    outputTokens: fc.integer({ min: 0, max: maxTokens }),
    costUsd: arbCost
  })

const USERS = ["u0", "u1", "u2", "u3", null] as const
type User = (typeof USERS)[number]

// ---------------------------------------------------------------------------
// Model-based: random interleavings of reserve / settle / release
// ---------------------------------------------------------------------------

type Command =
  | { readonly _tag: "reserve"; readonly user: number; readonly estimate: Model.Usage }
  | { readonly _tag: "settle"; readonly pick: number; readonly actual: Model.Usage }
  | { readonly _tag: "release"; readonly pick: number }

const arbCommand: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ _tag: fc.constant("reserve" as const), user: fc.nat(USERS.length - 1), estimate: arbUsage(300) }),
  fc.record({ _tag: fc.constant("settle" as const), pick: fc.nat(), actual: arbUsage(300) }),
  fc.record({ _tag: fc.constant("release" as const), pick: fc.nat() })
)

const arbTokenCap = fc.option(fc.integer({ min: 0, max: 2000 }), { nil: undefined })
const arbCostCap = fc.option(fc.integer({ min: 0, max: 1024 }).map((k) => k / 512), { nil: undefined })
const arbConfig = fc.record({
  maxTokens: fc.option(fc.integer({ min: 0, max: 6000 }), { nil: undefined }),
  maxInputTokens: arbTokenCap,
  maxOutputTokens: arbTokenCap,
  maxCostUsd: arbCostCap,
  perUserMaxTokens: arbTokenCap,
  perUserMaxInputTokens: arbTokenCap,
  perUserMaxOutputTokens: arbTokenCap,
  perUserMaxCostUsd: arbCostCap,
  softWarningAt: fc.constant(0.75)
})

interface Counters {
  tokensIn: number
  tokensOut: number
  costUsd: number
}
const zero = (): Counters => ({ tokensIn: 0, tokensOut: 0, costUsd: 0 })
const add = (into: Counters, usage: Model.Usage) => {
  into.tokensIn += usage.inputTokens
  into.tokensOut += usage.outputTokens
  into.costUsd += usage.costUsd
}

/** The documented rule, written out independently: blocked when committed + outstanding >= cap. */
const expectedReason = (
  caps: {
    readonly tokens: number | undefined
    readonly input: number | undefined
    readonly output: number | undefined
    readonly cost: number | undefined
  },
  prefix: string,
  load: Counters
): string | undefined => {
  if (caps.tokens !== undefined && load.tokensIn + load.tokensOut >= caps.tokens) return `${prefix}max_tokens`
  if (caps.input !== undefined && load.tokensIn >= caps.input) return `${prefix}max_input_tokens`
  if (caps.output !== undefined && load.tokensOut >= caps.output) return `${prefix}max_output_tokens`
  if (caps.cost !== undefined && load.costUsd >= caps.cost) return `${prefix}max_cost_usd`
  return undefined
}

const expectedWarningKind = (
  caps: { readonly tokens: number | undefined; readonly cost: number | undefined },
  label: string,
  load: Counters
): string | undefined => {
  if (caps.tokens !== undefined && load.tokensIn + load.tokensOut >= caps.tokens * 0.75) return `${label}tokens`
  if (caps.cost !== undefined && load.costUsd >= caps.cost * 0.75) return `${label}cost`
  return undefined
}

describe("Budget properties (model-based)", () => {
  it.effect.prop(
    "every decision and every total matches the model, under any interleaving",
    { config: arbConfig, commands: fc.array(arbCommand, { maxLength: 60 }), withinEstimates: fc.boolean() },
    ({ commands, config, withinEstimates }) =>
      Effect.gen(function*() {
        const budget = yield* Effect.orDie(Budget.make(config))
        const globalCaps = {
          tokens: config.maxTokens,
          input: config.maxInputTokens,
          output: config.maxOutputTokens,
          cost: config.maxCostUsd
        }
        const userCaps = {
          tokens: config.perUserMaxTokens,
          input: config.perUserMaxInputTokens,
          output: config.perUserMaxOutputTokens,
          cost: config.perUserMaxCostUsd
        }
        const committed = new Map<User, Counters>(USERS.map((user) => [user, zero()]))
        const globalCommitted = zero()
        const largestCall = new Map<User, number>(USERS.map((user) => [user, 0]))
        let largestGlobalCall = 0
        const outstanding: Array<{
          user: User
          estimate: Model.Usage
          reservation: Budget.Reservation & { _tag: "Granted" }
        }> = []

        const load = (base: Counters, user: User | undefined): Counters => {
          const total = { ...base }
          for (const hold of outstanding) if (user === undefined || hold.user === user) add(total, hold.estimate)
          return total
        }

        for (const command of commands) {
          if (command._tag === "reserve") {
            const user = USERS[command.user]!
            const globalLoad = load(globalCommitted, undefined)
            const userLoad = load(committed.get(user)!, user)
            const reason = expectedReason(globalCaps, "", globalLoad) ?? expectedReason(userCaps, "per_user_", userLoad)
            const reservation = yield* budget.reserve(command.estimate).pipe(RunContext.withUser(user), Effect.orDie)
            if (reason !== undefined) {
              assert.deepStrictEqual(reservation, { _tag: "Blocked", reason })
              continue
            }
            if (reservation._tag !== "Granted") return assert.fail(`blocked by ${reservation.reason}, expected a grant`)
            const warning = expectedWarningKind(globalCaps, "", globalLoad) ??
              expectedWarningKind(userCaps, "per-user ", userLoad)
            assert.strictEqual(reservation.warning?.replace(/ at \d+%$/, ""), warning)
            outstanding.push({ user, estimate: command.estimate, reservation })
          } else if (outstanding.length > 0) {
            const [hold] = outstanding.splice(command.pick % outstanding.length, 1)
            if (command._tag === "release") {
              yield* hold!.reservation.release
            } else {
              const actual: Model.Usage = withinEstimates ?
                {
                  inputTokens: Math.min(command.actual.inputTokens, hold!.estimate.inputTokens),
                  outputTokens: Math.min(command.actual.outputTokens, hold!.estimate.outputTokens),
                  costUsd: Math.min(command.actual.costUsd, hold!.estimate.costUsd)
                } :
                command.actual
              yield* hold!.reservation.settle(actual)
              // Settling twice, or releasing after settling, changes nothing.
              yield* hold!.reservation.settle(actual)
              yield* hold!.reservation.release
              add(committed.get(hold!.user)!, actual)
              add(globalCommitted, actual)
              const size = actual.inputTokens + actual.outputTokens
              largestCall.set(hold!.user, Math.max(largestCall.get(hold!.user)!, size))
              largestGlobalCall = Math.max(largestGlobalCall, size)
            }
          }
          for (const user of USERS) {
            const expected = committed.get(user)!
            assert.deepStrictEqual(yield* budget.usageFor(user), {
              ...expected,
              tokensTotal: expected.tokensIn + expected.tokensOut
            })
          }
          assert.deepStrictEqual(yield* budget.globalUsage, {
            ...globalCommitted,
            tokensTotal: globalCommitted.tokensIn + globalCommitted.tokensOut
          })
        }

        if (withinEstimates) {
          // Overshoot of a token cap is less than one call's usage.
          for (const user of USERS) {
            const used = committed.get(user)!
            if (userCaps.tokens !== undefined && largestCall.get(user)! > 0) {
              assert.isBelow(used.tokensIn + used.tokensOut, userCaps.tokens + largestCall.get(user)! + 1)
            }
          }
          if (globalCaps.tokens !== undefined && largestGlobalCall > 0) {
            assert.isBelow(globalCommitted.tokensIn + globalCommitted.tokensOut, globalCaps.tokens + largestGlobalCall + 1)
          }
        }
      }),
    { fastCheck: { numRuns: 100 } }
  )
})

// ---------------------------------------------------------------------------
// Through the agent: concurrent runs, a scripted model with random usage
// ---------------------------------------------------------------------------

interface PlannedCall {
  readonly usage: Model.Usage
  readonly yields: number
  readonly outcome: "ok" | "fail" | "hang"
}

interface PlannedRun {
  readonly user: number
  readonly calls: ReadonlyArray<PlannedCall>
}

const noop = Tool.make("noop", {
  description: "Does nothing",
  parameters: Schema.Struct({}),
  handler: () => Effect.succeed("done")
})

const arbCall = (maxTokens: number, outcomes: ReadonlyArray<PlannedCall["outcome"]>): fc.Arbitrary<PlannedCall> =>
  fc.record({
    usage: arbUsage(maxTokens),
    yields: fc.nat(6),
    outcome: fc.constantFrom(...outcomes)
  })

const arbRuns = (users: number, maxTokens: number, outcomes: ReadonlyArray<PlannedCall["outcome"]>) =>
  fc.array(
    fc.record({
      user: fc.nat(users - 1),
      calls: fc.array(arbCall(maxTokens, outcomes), { minLength: 1, maxLength: 3 })
    }),
    { minLength: 1, maxLength: 12 }
  )

/**
 * A scripted model playing each run's plan: call `n` of a run is the run's
 * `n`-th planned call; `reported` collects what the model said it used.
 */
const plannedModel = (hanging: ReadonlyArray<Deferred.Deferred<void>>) => {
  const reported: Array<{ readonly user: string | null; readonly usage: Model.Usage }> = []
  const script: Model.Script = (request, context) =>
    Effect.gen(function*() {
      const index = context.metadata.index as number
      const plan = context.metadata.plan as ReadonlyArray<PlannedCall>
      const turn = request.messages.filter((message) => message.role === "assistant").length
      const call = plan[turn]!
      for (let i = 0; i < call.yields; i++) yield* Effect.yieldNow()
      if (call.outcome === "fail") {
        return yield* new Model.ModelError({ reason: "bad_request", retryable: false, description: "planned failure" })
      }
      if (call.outcome === "hang") {
        yield* Deferred.succeed(hanging[index]!, undefined)
        return yield* Effect.never
      }
      reported.push({ user: context.userId, usage: call.usage })
      return turn === plan.length - 1 ?
        { text: "done", usage: call.usage } :
        { toolCalls: [{ name: "noop", args: {} }], usage: call.usage }
    })
  return { reported, script }
}

const userName = (index: number) => `user-${index}`

/** Runs every planned run concurrently; hanging runs are interrupted once they hang. */
const runAll = (runs: ReadonlyArray<PlannedRun>, budgetConfig: Budget.Config, maxTokens?: number) =>
  Effect.gen(function*() {
    const hanging = yield* Effect.forEach(runs, () => Deferred.make<void>())
    const { reported, script } = plannedModel(hanging)
    const layer = Agent.layer({ tools: [noop], ...(maxTokens === undefined ? {} : { maxTokens }) }).pipe(
      Layer.provideMerge(Layer.mergeAll(Agent.layerDefaults, Budget.layer(budgetConfig))),
      Layer.provide(Model.layerScripted(script)),
      Layer.orDie
    )
    return yield* Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const budget = yield* Budget.Budget
      const fibers = yield* Effect.forEach(runs, (run, index) =>
        Effect.fork(
          Effect.either(agent.run("go", { userId: userName(run.user), metadata: { index, plan: run.calls } }))
        ))
      const results = yield* Effect.forEach(runs, (run, index) => {
        const fiber = fibers[index]!
        if (!run.calls.some((call) => call.outcome === "hang")) return Fiber.join(fiber)
        // Either it reaches its hanging call (then it is interrupted), or it ends before (blocked, failed).
        return Effect.raceFirst(Deferred.await(hanging[index]!), Effect.asVoid(Fiber.await(fiber))).pipe(
          Effect.zipRight(Fiber.interrupt(fiber)),
          Effect.as(undefined)
        )
      })
      return { budget, reported, results }
    }).pipe(Effect.provide(layer))
  })

const sumFor = (reported: ReadonlyArray<{ user: string | null; usage: Model.Usage }>, user: string | null) => {
  const total = { tokensIn: 0, tokensOut: 0, costUsd: 0 }
  for (const entry of reported) if (entry.user === user) add(total, entry.usage)
  return { ...total, tokensTotal: total.tokensIn + total.tokensOut }
}

describe("Budget properties (through the agent)", () => {
  it.effect.prop(
    "usageFor equals the usage the model reported for that user; global is the sum over users",
    { runs: arbRuns(5, 500, ["ok"]) },
    ({ runs }) =>
      Effect.gen(function*() {
        const { budget, reported } = yield* runAll(runs, {})
        assert.strictEqual(reported.length, runs.reduce((n, run) => n + run.calls.length, 0))
        const global = { tokensIn: 0, tokensOut: 0, costUsd: 0 }
        for (let user = 0; user < 5; user++) {
          const usage = yield* budget.usageFor(userName(user))
          assert.deepStrictEqual(usage, sumFor(reported, userName(user)))
          add(global, { inputTokens: usage.tokensIn, outputTokens: usage.tokensOut, costUsd: usage.costUsd })
        }
        assert.deepStrictEqual(yield* budget.globalUsage, { ...global, tokensTotal: global.tokensIn + global.tokensOut })
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect.prop(
    "concurrent runs of one user never overshoot the cap by more than one call",
    {
      cap: fc.integer({ min: 1, max: 400 }),
      runs: fc.array(fc.array(arbCall(32, ["ok"]), { minLength: 1, maxLength: 4 }), { minLength: 2, maxLength: 8 })
    },
    ({ cap, runs }) =>
      Effect.gen(function*() {
        // maxTokens 64 bounds each call's reported 0..32 + 0..32 tokens, so estimates cover usage.
        const planned = runs.map((calls) => ({ user: 0, calls }))
        const { budget, reported, results } = yield* runAll(planned, { perUserMaxTokens: cap }, 64)
        const used = (yield* budget.usageFor(userName(0))).tokensTotal
        assert.strictEqual(used, sumFor(reported, userName(0)).tokensTotal)
        const largest = Math.max(0, ...reported.map((entry) => entry.usage.inputTokens + entry.usage.outputTokens))
        assert.isBelow(used, cap + largest + 1)
        if (used >= cap) {
          // Somebody must have been stopped by the cap (unless every run finished its plan in time).
          const stopped = results.some((result) =>
            result !== undefined && result._tag === "Right" && result.right.interruptionReason === "budget:per_user_max_tokens"
          )
          const allDone = reported.length === runs.reduce((n, calls) => n + calls.length, 0)
          assert.isTrue(stopped || allDone)
        }
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect.prop(
    "failed and interrupted model calls leak no reservation",
    { runs: arbRuns(3, 50, ["ok", "ok", "fail", "hang"]) },
    ({ runs }) =>
      Effect.gen(function*() {
        // Cap 4097: committed usage stays far below it, but one leaked estimate
        // (input estimate + 4096 output tokens) reaches it.
        const { budget, reported } = yield* runAll(runs, { perUserMaxTokens: 4097 })
        for (let user = 0; user < 3; user++) {
          assert.deepStrictEqual(yield* budget.usageFor(userName(user)), sumFor(reported, userName(user)))
          const status = yield* budget.allowsStep.pipe(RunContext.withUser(userName(user)), Effect.orDie)
          assert.notStrictEqual(status.state, "blocked")
        }
      }),
    { fastCheck: { numRuns: 40 } }
  )
})
