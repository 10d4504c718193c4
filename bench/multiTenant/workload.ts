/**
 * Running the users: every user's turns one after another in one session,
 * all users at once; and the same work in a bare loop, for comparison.
 */
import { Effect } from "effect"
import { performance } from "node:perf_hooks"
import type { Model } from "jeevesagent"
import { Agent, Memory, RunContext } from "jeevesagent"
import { makeScript, Probe } from "./agent.js"
import * as plan from "./plan.js"

/** What the runner recorded: which user each run was for, and how long it took. */
export interface Observations {
  /** Run id → slot (`index * turns + turn - 1`). */
  readonly runs: Map<string, number>
  /** Turn latency in ms by slot; NaN where no run happened (another process's user, or a failed run). */
  readonly latencies: Float64Array
  /** `Date.now()` when the first run started and the last one ended. */
  startedAt: number
  finishedAt: number
  /** Time spent in the bench's own per-run checks, inside the timed window (ms). */
  checkMillis: number
}

export const slotOf = (bench: plan.Plan, index: number, turn: number): number => index * bench.turns + turn - 1

export const makeObservations = (bench: plan.Plan): Observations => ({
  runs: new Map(),
  latencies: new Float64Array(plan.allUsers(bench) * bench.turns).fill(Number.NaN),
  startedAt: 0,
  finishedAt: 0,
  checkMillis: 0
})

/** The per-user working block every user gets before the first turn. */
export const writeBlocks = (indices: ReadonlyArray<number>, concurrency: number) =>
  Effect.flatMap(Memory.Memory, (memory) =>
    Effect.forEach(
      indices,
      (index) =>
        memory.updateBlock(plan.PROFILE_BLOCK, plan.blockContent(index)).pipe(
          RunContext.withUser(plan.userId(index), { sessionId: plan.sessionId(index) })
        ),
      { concurrency, discard: true }
    ))

/**
 * Runs `indices`' turns through the shared agent and checks each run as it
 * ends: the RunResult against the plan (exactly), and the users the tools
 * saw against the run's user.
 */
export const runUsers = (bench: plan.Plan, indices: ReadonlyArray<number>, probe: Probe, observations: Observations) =>
  Effect.gen(function*() {
    const agent = yield* Agent.Agent
    const violations = probe.violations
    const runTurn = (index: number, turn: number) =>
      Effect.suspend(() => {
        const started = performance.now()
        return Effect.map(
          Effect.either(agent.run(plan.prompt(index, turn), { userId: plan.userId(index), sessionId: plan.sessionId(index) })),
          (outcome) => {
            const ended = performance.now()
            const elapsed = ended - started
            if (outcome._tag === "Left") {
              violations.add("run-error", `${plan.prompt(index, turn)} failed: ${outcome.left.message}`)
              return
            }
            const result = outcome.right
            const slot = slotOf(bench, index, turn)
            observations.latencies[slot] = elapsed
            observations.runs.set(result.runId, slot)
            const expected = plan.expectedRun(bench, index, turn)
            violations.expectEqual(
              index === bench.overQuota ? "over-quota" : "run-result",
              `run of ${plan.prompt(index, turn)}`,
              plan.viewRun(result),
              plan.viewExpectedRun(expected)
            )
            const seen = probe.toolUsers.get(result.runId) ?? []
            probe.toolUsers.delete(result.runId)
            violations.expectEqual("tool-user", `users the tools saw in ${plan.prompt(index, turn)}`, seen, expected.toolUsers)
            observations.checkMillis += performance.now() - ended
          }
        )
      })
    const runUser = (index: number) =>
      Effect.gen(function*() {
        for (let turn = 1; turn <= bench.turns; turn++) yield* runTurn(index, turn)
      })
    observations.startedAt = Date.now()
    yield* Effect.forEach(indices, runUser, { concurrency: "unbounded", discard: true })
    observations.finishedAt = Date.now()
  })

// ---- the bare loop ------------------------------------------------------------------

/**
 * The same turns with no framework: the same script (with its checks) and
 * the same tool and approval logic called directly, the history kept in an
 * array. What the agent costs on top of this is the framework's overhead.
 * Returns the elapsed ms.
 */
export const bareLoop = (bench: plan.Plan, indices: ReadonlyArray<number>): number => {
  const probe = new Probe(undefined)
  const script = makeScript(bench, probe)
  const started = performance.now()
  for (const index of indices) {
    const user = plan.userId(index)
    const context: RunContext.RunContext = { userId: user, sessionId: plan.sessionId(index), runId: "bare", metadata: {} }
    const history: Array<Model.Message> = []
    let spent = 0
    const block = `<${plan.PROFILE_BLOCK}>\n${plan.blockContent(index)}\n</${plan.PROFILE_BLOCK}>`
    for (let turn = 1; turn <= bench.turns; turn++) {
      const messages: Array<Model.Message> = [
        { role: "system", content: plan.INSTRUCTIONS },
        { role: "system", content: block },
        ...history.slice(-20),
        { role: "user", content: plan.prompt(index, turn) }
      ]
      let output = ""
      for (let call = 0; call < 4 && spent < bench.perUserMaxTokens; call++) {
        const response = script({ messages: [...messages], tools: [] }, context)
        spent += (response.usage?.inputTokens ?? 0) + (response.usage?.outputTokens ?? 0)
        output = response.text ?? ""
        const toolCalls = (response.toolCalls ?? []).map((c, i) => ({ id: `call_${i}`, name: c.name, args: c.args }))
        messages.push({ role: "assistant", content: output, toolCalls })
        if (toolCalls.length === 0) break
        for (const toolCall of toolCalls) {
          const ok = toolCall.name === plan.WHOAMI_TOOL ||
            (!plan.isRestricted(index) && plan.approves(toolCall.name, toolCall.args, user))
          const content = !ok ?
            "DENIED" :
            toolCall.name === plan.WHOAMI_TOOL ?
            plan.whoamiOutput(index) :
            plan.purgeOutput(index)
          messages.push({ role: "tool", toolCallId: toolCall.id, toolName: toolCall.name, content, isError: !ok })
        }
      }
      history.push({ role: "user", content: plan.prompt(index, turn) })
      if (output !== "") history.push({ role: "assistant", content: output, toolCalls: [] })
    }
  }
  const elapsed = performance.now() - started
  if (probe.violations.any) throw new Error(`the bare loop disagrees with the plan: ${JSON.stringify(probe.violations.toJSON())}`)
  return elapsed
}
