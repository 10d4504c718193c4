/**
 * The checks run after the workload, on the state the services hold (or, for
 * several processes, on the shared Postgres database). Every comparison is
 * exact equality of whole values against the plan.
 */
import { Effect, Stream } from "effect"
import type { AuditLog, Budget, Memory } from "jeevesagent"
import { RunContext } from "jeevesagent"
import * as plan from "./plan.js"
import type { Violations } from "./violations.js"

/** Users whose session ids each user tries to read: the next one, and the one whose id extends this one's (`user_1` → `user_10`). */
const neighbours = (bench: plan.Plan, index: number): Array<number> => {
  const others = new Set<number>()
  if (bench.users > 1) others.add((index + 1) % bench.users)
  if (index * 10 < bench.users && index !== 0) others.add(index * 10)
  others.delete(index)
  return [...others]
}

const byInput = (a: plan.EpisodeView, b: plan.EpisodeView) => (a.input < b.input ? -1 : a.input > b.input ? 1 : 0)

const messageViews = (messages: ReadonlyArray<{ readonly role: string; readonly content: string }>) =>
  messages.map((message) => ({ role: message.role, content: message.content }))

/** One user's memory, read as that user: working blocks, recall, session history, other sessions, the export. */
const checkMemory = (bench: plan.Plan, memory: Memory.Service, index: number, violations: Violations) =>
  Effect.gen(function*() {
    const user = plan.userId(index)
    const episodes = plan.expectedEpisodes(bench, index)
    const blocks = [{ name: plan.PROFILE_BLOCK, content: plan.blockContent(index), pinnedOrder: 0 }]
    const blockViews = (list: ReadonlyArray<Memory.MemoryBlock>) =>
      list.map((block) => ({ name: block.name, content: block.content, pinnedOrder: block.pinnedOrder }))

    violations.expectEqual("working-blocks", `working blocks of ${user}`, blockViews(yield* memory.working), blocks)

    // Every episode of every user holds the word "turn": recall must return exactly this user's, whatever the rank order.
    const recalled = (yield* memory.recall("turn", { limit: bench.turns + 5 })).map(plan.viewEpisode).sort(byInput)
    violations.expectEqual("recall", `recall of ${user}`, recalled, [...episodes].sort(byInput))

    const history = yield* memory.sessionMessages(plan.sessionId(index), { limit: 2 * bench.turns + 2 })
    violations.expectEqual("session-history", `session history of ${user}`, messageViews(history), plan.historyOf(episodes))

    for (const other of neighbours(bench, index)) {
      const foreign = yield* memory.sessionMessages(plan.sessionId(other), { limit: 2 * bench.turns + 2 })
      violations.expectEqual("cross-session", `${user} reading the session of ${plan.userId(other)}`, messageViews(foreign), [])
    }

    const exported = yield* memory.export
    violations.expectEqual("episodes", `episodes of ${user}, oldest first`, exported.episodes.map(plan.viewEpisode), episodes)
    violations.expectEqual("working-blocks", `exported blocks of ${user}`, blockViews(exported.blocks), blocks)
    violations.expectEqual("episodes", `exported facts of ${user}`, exported.facts.length, 0)
  }).pipe(RunContext.withUser(plan.userId(index), { sessionId: plan.sessionId(index) }))

/**
 * Memory and budget of every user, and the global budget.
 *
 * The budget must hold exactly what the model reported (`modelTally`, by
 * the user of the prompt it answered), and that must be what the plan says.
 */
export const checkState = (
  bench: plan.Plan,
  services: { readonly memory: Memory.Service; readonly budget: Budget.Service },
  modelTally: ReadonlyMap<number, plan.Usage>,
  violations: Violations,
  concurrency: number
) =>
  Effect.gen(function*() {
    const indices = Array.from({ length: bench.users }, (_, index) => index)
    let reported = plan.zeroUsage
    for (const index of indices) {
      const tally = plan.totalsOf(modelTally.get(index) ?? plan.zeroUsage)
      reported = plan.addUsage(reported, modelTally.get(index) ?? plan.zeroUsage)
      violations.expectEqual("budget-model-tally", `usage the model reported for ${plan.userId(index)}`, tally, plan.expectedTotals(bench, index))
    }
    yield* Effect.forEach(
      indices,
      (index) =>
        Effect.gen(function*() {
          yield* checkMemory(bench, services.memory, index, violations)
          const ledger = yield* services.budget.usageFor(plan.userId(index))
          const check = index === bench.overQuota ? "over-quota" : "budget-user"
          violations.expectEqual(check, `budget of ${plan.userId(index)} against the model's reports`, ledger, plan.totalsOf(modelTally.get(index) ?? plan.zeroUsage))
          violations.expectEqual(check, `budget of ${plan.userId(index)} against the plan`, ledger, plan.expectedTotals(bench, index))
        }),
      { concurrency, discard: true }
    )
    let planned = plan.zeroUsage
    for (const index of indices) {
      const totals = plan.expectedTotals(bench, index)
      planned = plan.addUsage(planned, { inputTokens: totals.tokensIn, outputTokens: totals.tokensOut, costUsd: totals.costUsd })
    }
    const global = yield* services.budget.globalUsage
    violations.expectEqual("budget-global", "global budget against the sum of the model's reports", global, plan.totalsOf(reported))
    violations.expectEqual("budget-global", "global budget against the plan", global, plan.totalsOf(planned))
  })

// ---- audit -----------------------------------------------------------------------------

const COUNTED = ["run_started", "run_completed", "tool_call", "tool_result", "approval_decision", "budget_blocked"] as const

export interface AuditSummary {
  readonly entries: number
  readonly report: AuditLog.VerifyReport
}

/**
 * Verifies the chain, then attributes every entry: its run id must be one
 * the bench recorded, and its user and session exactly that run's. Each run
 * must have exactly one start and one completion, a `tool_call` and a
 * `tool_result` per tool call, an `approval_decision` per approval asked and
 * a `budget_blocked` when the budget stopped it; the completion's tokens
 * must be the run's.
 */
export const checkAudit = <E, R>(
  bench: plan.Plan,
  entries: Stream.Stream<AuditLog.AuditEntry, E, R>,
  report: AuditLog.VerifyReport,
  runs: ReadonlyMap<string, number>,
  violations: Violations
): Effect.Effect<AuditSummary, E, R> =>
  Effect.gen(function*() {
    if (!report.valid) {
      violations.add("audit-verify", `verification failed: ${report.failure} at seq ${report.firstBadSeq}: ${report.detail}`)
    }
    const counts = new Uint32Array(bench.users * bench.turns * COUNTED.length)
    let seen = 0
    yield* Stream.runForEach(entries, (entry) =>
      Effect.sync(() => {
        seen++
        const slot = runs.get(entry.runId)
        if (slot === undefined) {
          violations.add("audit-attribution", `seq ${entry.seq} (${entry.action}, user ${entry.userId}) belongs to no recorded run`)
          return
        }
        const index = Math.floor(slot / bench.turns)
        const turn = (slot % bench.turns) + 1
        const user = plan.userId(index)
        violations.expectEqual(
          "audit-attribution",
          `user and session of seq ${entry.seq} (${entry.action}) of a run of ${user}`,
          { userId: entry.userId, sessionId: entry.sessionId },
          { userId: user, sessionId: plan.sessionId(index) }
        )
        const payload = entry.payload as Record<string, unknown>
        if (entry.action === "tool_call" && payload.tool === plan.PURGE_TOOL) {
          violations.expectEqual("audit-attribution", `owner in the purge call of seq ${entry.seq}`, (payload.args as { owner?: unknown }).owner, entry.userId)
        }
        if (entry.action === "run_completed") {
          const expected = plan.expectedRun(bench, index, turn)
          violations.expectEqual(
            "audit-runs",
            `tokens in the run_completed entry of ${plan.prompt(index, turn)}`,
            { in: payload.tokens_in, out: payload.tokens_out },
            { in: expected.usage.inputTokens, out: expected.usage.outputTokens }
          )
        }
        const counted = (COUNTED as ReadonlyArray<string>).indexOf(entry.action)
        if (counted >= 0) counts[slot * COUNTED.length + counted]!++
      }))
    if (report.valid) violations.expectEqual("audit-verify", "entries verified against entries read", report.validCount, seen)
    for (const slot of runs.values()) {
      const index = Math.floor(slot / bench.turns)
      const turn = (slot % bench.turns) + 1
      const expected = plan.expectedRun(bench, index, turn)
      const actual = Object.fromEntries(COUNTED.map((action, i) => [action, counts[slot * COUNTED.length + i]]))
      violations.expectEqual("audit-runs", `audit entries of ${plan.prompt(index, turn)}`, actual, {
        run_started: 1,
        run_completed: 1,
        tool_call: expected.toolCalls.length,
        tool_result: expected.toolCalls.length,
        approval_decision: expected.approvalsAsked,
        budget_blocked: expected.interrupted ? 1 : 0
      })
    }
    return { entries: seen, report }
  })
