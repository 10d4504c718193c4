/**
 * The workload of the multi-tenant bench, fixed in advance: who the users
 * are, what each turn asks, what the model answers and reports, and so what
 * every check must find afterwards. Everything here is a pure function of
 * (users, turns, user index, turn), so a parent process can compute the
 * expectations of runs its workers made.
 */
import { createHash } from "node:crypto"
import type { Agent, Budget, Memory, Model } from "jeevesagent"

/** The system prompt of the bench agent. */
export const INSTRUCTIONS = "You are the multi-tenant bench assistant. Answer in one line."

/** The working-memory block written for every user before the first turn. */
export const PROFILE_BLOCK = "profile"

export const WHOAMI_TOOL = "whoami"
export const PURGE_TOOL = "purge_cache"

/** Both model calls of a turn: the first asks for the tools, the second answers. */
export type Phase = 1 | 2

export interface Plan {
  readonly users: number
  readonly turns: number
  /**
   * Extra users (indices `users ..`) run after the checks, only to measure
   * the memory the framework keeps per additional user.
   */
  readonly memoryProbeUsers: number
  /** The one user whose calls report enough tokens to hit the per-user cap. */
  readonly overQuota: number
  /** `perUserMaxTokens` of the budget. */
  readonly perUserMaxTokens: number
}

export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly costUsd: number
}

export const makePlan = (users: number, turns: number, memoryProbeUsers = 0): Plan => ({
  users,
  turns,
  memoryProbeUsers,
  overQuota: users > 1 ? 1 : 0,
  // Far above what an honest user can spend (at most 2 x 400 tokens a turn).
  perUserMaxTokens: Math.max(1_000_000, turns * 2 * 400 * 4)
})

// ---- users -------------------------------------------------------------------------

/** Every user index the agent may see: the users, then the memory probe's. */
export const allUsers = (bench: Plan): number => bench.users + bench.memoryProbeUsers

/** `user_1` is a prefix of `user_10`, `user_100`, ...: the original bench's substring check missed such leaks. */
export const userId = (index: number): string => `user_${index}`

const USER_ID = /^user_(0|[1-9][0-9]*)$/

/** The index of a bench user id, or `undefined` for anything else. */
export const userIndex = (id: string | null): number | undefined => {
  if (id === null) return undefined
  const match = USER_ID.exec(id)
  return match === null ? undefined : Number(match[1])
}

export const sessionId = (index: number): string => `sess-${userId(index)}`

const markers = new Map<number, string>()

/**
 * The user's unique marker: a token that appears in everything stored or
 * shown for the user (working block, tool output, answers). Finding any other
 * user's marker anywhere in a user's data is a leak.
 */
export const marker = (index: number): string => {
  let value = markers.get(index)
  if (value === undefined) {
    value = `mk_${createHash("sha256").update(`jeeves-bench:${userId(index)}`).digest("hex").slice(0, 16)}`
    markers.set(index, value)
  }
  return value
}

/** Every marker in `text`, in order. Markers are whole tokens: this is exact extraction, not a substring test. */
export const markersIn = (text: string): Array<string> => text.match(/\bmk_[0-9a-f]{16}\b/g) ?? []

export const blockContent = (index: number): string => `Profile of ${userId(index)}; marker ${marker(index)}`

/** Users whose policy denies the destructive tool outright. */
export const isRestricted = (index: number): boolean => index % 10 === 7

// ---- turns -------------------------------------------------------------------------

export const prompt = (index: number, turn: number): string => `turn ${turn} for ${userId(index)}`

const PROMPT = /^turn ([1-9][0-9]*) for (\S+)$/

/** The user and turn a prompt was written for, or `undefined` for anything else. */
export const parsePrompt = (text: string): { readonly index: number; readonly turn: number } | undefined => {
  const match = PROMPT.exec(text)
  if (match === null) return undefined
  const index = userIndex(match[2]!)
  return index === undefined ? undefined : { index, turn: Number(match[1]) }
}

/** On every third turn the model asks to purge everybody's cache: the approval rule declines that. */
export const purgeScope = (turn: number): "own" | "all" => (turn % 3 === 0 ? "all" : "own")

export const purgeArgs = (index: number, turn: number) => ({ owner: userId(index), scope: purgeScope(turn) })

/** The approval rule: only a purge of the caller's own cache, asked for by the caller. */
export const approves = (toolName: string, args: unknown, caller: string | null): boolean => {
  if (toolName !== PURGE_TOOL || caller === null || typeof args !== "object" || args === null) return false
  const { owner, scope } = args as { owner?: unknown; scope?: unknown }
  return owner === caller && scope === "own"
}

export const whoamiOutput = (index: number): string => `${userId(index)} ${marker(index)}`
export const purgeOutput = (index: number): string => `purged the cache of ${userId(index)} ${marker(index)}`
export const answer = (index: number, turn: number): string => `answer ${turn} for ${userId(index)} ${marker(index)}`

/** 2^-20 USD: costs are whole multiples of it, so float sums are exact in any order. */
const COST_UNIT = 1 / 1_048_576

/** The usage the model reports for one call. Deterministic per user, turn and phase. */
export const usage = (plan: Plan, index: number, turn: number, phase: Phase): Usage => {
  const inputTokens = index === plan.overQuota && phase === 1 ?
    plan.perUserMaxTokens + 200_000 :
    200 + ((index * 31 + turn * 7 + phase * 3) % 97)
  const outputTokens = 20 + ((index * 17 + turn * 5 + phase) % 41)
  return { inputTokens, outputTokens, costUsd: (inputTokens * 3 + outputTokens * 15) * COST_UNIT }
}

export const addUsage = (a: Usage, b: Usage): Usage => ({
  inputTokens: a.inputTokens + b.inputTokens,
  outputTokens: a.outputTokens + b.outputTokens,
  costUsd: a.costUsd + b.costUsd
})

export const zeroUsage: Usage = { inputTokens: 0, outputTokens: 0, costUsd: 0 }

// ---- expected outcomes -------------------------------------------------------------

export const BLOCKED_REASON = "budget:per_user_max_tokens"

export interface ExpectedToolCall {
  readonly name: string
  readonly status: "ok" | "denied"
  /** The exact output of an `ok` call. */
  readonly output: string | undefined
  readonly destructive: boolean
}

/** What `Agent.run` must return, reduced to the fields the bench compares exactly. */
export interface ExpectedRun {
  readonly userId: string
  readonly sessionId: string
  readonly turns: number
  readonly output: string
  readonly interrupted: boolean
  readonly interruptionReason: string | undefined
  readonly usage: Usage
  readonly toolCalls: ReadonlyArray<ExpectedToolCall>
  /** How many times the destructive tool went to the approval handler. */
  readonly approvalsAsked: number
  /** The user ids the tools must have seen in the RunContext, one per tool execution. */
  readonly toolUsers: ReadonlyArray<string>
}

const toolCallsOf = (index: number, turn: number): Array<ExpectedToolCall> => {
  const purgeRuns = !isRestricted(index) && purgeScope(turn) === "own"
  return [
    { name: WHOAMI_TOOL, status: "ok", output: whoamiOutput(index), destructive: false },
    { name: PURGE_TOOL, status: purgeRuns ? "ok" : "denied", output: purgeRuns ? purgeOutput(index) : undefined, destructive: true }
  ]
}

/** The calls the model makes in a turn: `[phase 1]` when the cap stops the second, else both. */
export const modelCalls = (plan: Plan, index: number, turn: number): ReadonlyArray<Phase> => {
  if (index !== plan.overQuota) return [1, 2]
  // The over-quota user's first call reports more tokens than the cap: allowed (nothing was
  // spent before it), it is charged; every later call is blocked.
  return turn === 1 ? [1] : []
}

export const expectedRun = (plan: Plan, index: number, turn: number): ExpectedRun => {
  const calls = modelCalls(plan, index, turn)
  const toolCalls = calls.length >= 1 ? toolCallsOf(index, turn) : []
  const blocked = calls.length < 2
  return {
    userId: userId(index),
    sessionId: sessionId(index),
    turns: calls.length,
    output: blocked ? "" : answer(index, turn),
    interrupted: blocked,
    interruptionReason: blocked ? BLOCKED_REASON : undefined,
    usage: calls.reduce((sum, phase) => addUsage(sum, usage(plan, index, turn, phase)), zeroUsage),
    toolCalls,
    approvalsAsked: toolCalls.length > 0 && !isRestricted(index) ? 1 : 0,
    toolUsers: toolCalls.filter((call) => call.status === "ok").map(() => userId(index))
  }
}

/** What the budget must hold for a user: exactly what the model reported for the user's calls. */
export const expectedTotals = (plan: Plan, index: number): Budget.UsageTotals => {
  let sum = zeroUsage
  for (let turn = 1; turn <= plan.turns; turn++) sum = addUsage(sum, expectedRun(plan, index, turn).usage)
  return totalsOf(sum)
}

export const totalsOf = (sum: Usage): Budget.UsageTotals => ({
  tokensIn: sum.inputTokens,
  tokensOut: sum.outputTokens,
  tokensTotal: sum.inputTokens + sum.outputTokens,
  costUsd: sum.costUsd
})

/** An episode reduced to the fields compared exactly. */
export interface EpisodeView {
  readonly userId: string | null
  readonly sessionId: string
  readonly input: string
  readonly output: string
  readonly toolCalls: ReadonlyArray<{ readonly name: string; readonly args: unknown }>
}

export const viewEpisode = (episode: Memory.Episode): EpisodeView => ({
  userId: episode.userId,
  sessionId: episode.sessionId,
  input: episode.input,
  output: episode.output,
  toolCalls: episode.toolCalls.map((call) => ({ name: call.name, args: call.args }))
})

/** The user's episodes, oldest first. */
export const expectedEpisodes = (plan: Plan, index: number): Array<EpisodeView> =>
  Array.from({ length: plan.turns }, (_, i) => {
    const turn = i + 1
    const run = expectedRun(plan, index, turn)
    return {
      userId: userId(index),
      sessionId: sessionId(index),
      input: prompt(index, turn),
      output: run.output,
      toolCalls: run.toolCalls.map((call) => ({
        name: call.name,
        args: call.name === PURGE_TOOL ? purgeArgs(index, turn) : {}
      }))
    }
  })

export interface MessageView {
  readonly role: Model.Message["role"]
  readonly content: string
}

/** A session's history as `Memory.sessionMessages` gives it: a user / assistant pair per episode, empty text skipped. */
export const historyOf = (episodes: ReadonlyArray<EpisodeView>): Array<MessageView> => {
  const messages: Array<MessageView> = []
  for (const episode of episodes) {
    if (episode.input !== "") messages.push({ role: "user", content: episode.input })
    if (episode.output !== "") messages.push({ role: "assistant", content: episode.output })
  }
  return messages
}

/** `RunResult` reduced to the fields compared exactly against {@link ExpectedRun}. */
export const viewRun = (result: Agent.RunResult) => ({
  userId: result.userId,
  sessionId: result.sessionId,
  turns: result.turns,
  output: result.output,
  interrupted: result.interrupted,
  interruptionReason: result.interruptionReason,
  usage: { inputTokens: result.tokensIn, outputTokens: result.tokensOut, costUsd: result.costUsd },
  toolCalls: result.toolCalls.map((call) => ({
    name: call.name,
    status: call.status,
    output: call.status === "ok" ? call.output : undefined,
    destructive: call.destructive
  }))
})

export const viewExpectedRun = (run: ExpectedRun) => ({
  userId: run.userId,
  sessionId: run.sessionId,
  turns: run.turns,
  output: run.output,
  interrupted: run.interrupted,
  interruptionReason: run.interruptionReason,
  usage: run.usage,
  toolCalls: run.toolCalls
})
