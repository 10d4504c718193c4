/**
 * Whole-agent isolation, model-based: one shared Agent (per-user budget caps,
 * per-user memory, a signed audit log, a destructive tool behind an approval
 * handler) driven by fast-check commands, checked after every command against
 * a small reference model of what each user should have.
 *
 * The model is a simplification, not a copy: it knows which blocks, episodes
 * and usage each user owns, which runs belong to whom, and which users are
 * least recently used (the order the last check visited them in). It does
 * not rank recalled episodes (it only bounds them) and it does not know the
 * order of episodes written by concurrent runs (only that they follow earlier
 * commands' episodes).
 *
 * How the steps of concurrent runs interleave is up to `World.step`: a few
 * `Effect.yieldNow`s, or a promise an `fc.scheduler` resolves when it likes.
 */
import { assert } from "@effect/vitest"
import { isDeepStrictEqual } from "node:util"
import {
  Clock,
  Duration,
  Effect,
  Exit,
  FastCheck as fc,
  Layer,
  Runtime,
  Schema,
  Scope,
  Stream,
  TestClock
} from "effect"
import {
  Agent,
  AgentEvent,
  Approval,
  AuditLog,
  Budget,
  Hooks,
  Memory,
  Model,
  Permissions,
  RunContext,
  Secrets,
  Telemetry,
  Tool
} from "jeevesagent"

// ---- constants ---------------------------------------------------------------

/** Ids that are prefixes of each other or differ only in case or separator, and anonymous. */
const USERS: ReadonlyArray<string | null> = ["user_1", "user_10", "user_100", "USER_1", "user 1", null]
/** Session ids shared by every user: user A's "s1" is not user B's "s1". `undefined` = a new session. */
const SESSIONS: ReadonlyArray<string | undefined> = ["s1", "s2", undefined]
const TOPICS = ["alpha", "beta"] as const
const BLOCK_NAMES = ["persona", "notes", "prefs"] as const

const PER_USER_MAX_TOKENS = 100_000
/** Two more than the pool (six buckets): only new users evict anybody. */
const MAX_USERS = 8
const USER_IDLE_TTL = Duration.hours(1)
const AUDIT_SECRET = "isolation-audit-secret"
const INSTRUCTIONS = "You are the isolation test agent."
const HISTORY_EPISODES = 10 // `sessionMessages(_, { limit: 20 })`: ten user/assistant pairs
const RECALL_LIMIT = 3
const BLOCKED_REASON = "budget:per_user_max_tokens"
/** What a heavy run's one model call reports: the whole per-user quota at once. */
const HEAVY_USAGE = { inputTokens: PER_USER_MAX_TOKENS, outputTokens: 1, costUsd: 1 / 1024 }
const ASK_REASON = "write_note: destructive call requires approval"
const DENY_REASON = "write_note: denied by policy"

/**
 * Per-user permissions, routed by exact id: `user_1` may write without
 * asking, `user 1` may not write at all, everybody else (`user_10`, `USER_1`,
 * anonymous, ...) asks their approver.
 */
const POLICIES: Permissions.PerUserOptions = {
  policies: { user_1: { mode: "bypassPermissions" }, "user 1": { deniedTools: ["write_note"] } },
  default: { mode: "default" }
}

type WritePolicy = "allow" | "deny" | "ask"

const writePolicyOf = (user: string | null): WritePolicy =>
  user === "user_1" ? "allow" : user === "user 1" ? "deny" : "ask"

const label = (user: string | null) => user ?? "anonymous"
const keyOf = (user: string | null) => RunContext.userKey(user)

/** A failed invariant. The "checks bite" tests assert that this is what fails. */
export class InvariantViolation extends Error {
  override readonly name = "InvariantViolation"
}

const fail = (message: string): never => {
  throw new InvariantViolation(message)
}

const show = (value: unknown) => JSON.stringify(value, null, 1)

const expectEqual = (actual: unknown, expected: unknown, what: string): void => {
  if (!isDeepStrictEqual(actual, expected)) fail(`${what}\nexpected: ${show(expected)}\nactual:   ${show(actual)}`)
}

const expectThat = (condition: boolean, what: string): void => {
  if (!condition) fail(what)
}

// ---- plans: what one run should do -----------------------------------------------

interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly costUsd: number
}

/**
 * One run of a command. Its prompt is `<topic> <nonce>`, so recall finds the
 * user's other episodes of the same topic and nothing else.
 */
interface Plan {
  readonly user: string | null
  readonly session: string | undefined
  readonly topic: (typeof TOPICS)[number]
  /** Also call the destructive `write_note` (whoami is always called). */
  readonly write: boolean
  /** One model answer reporting the whole per-user quota, no tools. */
  readonly heavy: boolean
  readonly via: "run" | "stream"
  /** What the model reports for its two calls. */
  readonly usage: readonly [Usage, Usage]
  /** Yields before the two model answers and the tool/approver answers, when no scheduler paces them. */
  readonly jitter: readonly [number, number, number]
}

interface LivePlan extends Plan {
  readonly nonce: string
  readonly prompt: string
}

// Costs are multiples of 1/1024 USD: exact in binary, so sums are exact in any order.
const arbUsage: fc.Arbitrary<Usage> = fc.record({
  inputTokens: fc.integer({ min: 1, max: 60 }),
  outputTokens: fc.integer({ min: 1, max: 20 }),
  costUsd: fc.integer({ min: 0, max: 8 }).map((k) => k / 1024)
})

const arbJitter = fc.tuple(fc.nat(3), fc.nat(3), fc.nat(3))

const arbUser: fc.Arbitrary<string | null> = fc.constantFrom(...USERS)

const arbPlan: fc.Arbitrary<Plan> = fc.record({
  user: arbUser,
  session: fc.constantFrom(...SESSIONS),
  topic: fc.constantFrom(...TOPICS),
  write: fc.boolean(),
  heavy: fc.constant(false),
  via: fc.constantFrom("run" as const, "stream" as const),
  usage: fc.tuple(arbUsage, arbUsage),
  jitter: arbJitter
})

/**
 * A batch of concurrent runs. A user runs at most once per named session in
 * a batch (so each session's history is well defined); a user may run in
 * several sessions, and several users in one session id, at once.
 */
const arbBatch = (maxRuns: number): fc.Arbitrary<ReadonlyArray<Plan>> =>
  fc.array(arbPlan, { minLength: 1, maxLength: maxRuns }).map((plans) => {
    const seen = new Set<string>()
    return plans.filter((plan) => {
      if (plan.session === undefined) return true
      const key = `${keyOf(plan.user)}\u0000${plan.session}`
      if (seen.has(key)) return false
      seen.add(key)
      return true
    })
  })

// ---- the reference model -----------------------------------------------------------

interface Totals {
  tokensIn: number
  tokensOut: number
  costUsd: number
}

interface ModelEpisode {
  readonly sessionId: string
  readonly input: string
  readonly output: string
  readonly toolCalls: ReadonlyArray<{ readonly name: string; readonly args: unknown }>
  readonly occurredAt: number
  /** The command that wrote it: episodes of one command may be stored in any order. */
  readonly command: number
}

interface UserModel {
  blocks: Array<{ readonly name: string; content: string; updatedAt: number }>
  episodes: Array<ModelEpisode>
  usage: Totals
}

interface RunRecord {
  readonly user: string | null
  readonly sessionId: string
  readonly actions: ReadonlyArray<string>
  /** `tool:decision` of its permission and approval entries, sorted. */
  readonly decisions: ReadonlyArray<string>
  readonly usage: Usage
}

/** What every user should have. */
interface IsolationModel {
  readonly users: Map<string, UserModel>
  readonly global: Totals
  /** The approval handler's answer per user key; absent = decline. */
  readonly approvals: Map<string, boolean>
  /** Every run so far, by run id. */
  readonly runs: Map<string, RunRecord>
  /**
   * The pool, least recently used first, in memory and in the budget: the
   * order the last check visited it in (every check touches every user).
   */
  lru: Array<string | null>
  /** TestClock millis. */
  now: number
  command: number
  nonces: number
  floods: number
  contents: number
}

const zeroTotals = (): Totals => ({ tokensIn: 0, tokensOut: 0, costUsd: 0 })

const emptyUser = (): UserModel => ({ blocks: [], episodes: [], usage: zeroTotals() })

const userModel = (model: IsolationModel, user: string | null): UserModel => {
  const key = keyOf(user)
  let found = model.users.get(key)
  if (found === undefined) {
    found = emptyUser()
    model.users.set(key, found)
  }
  return found
}

const addTo = (totals: Totals, usage: Usage) => {
  totals.tokensIn += usage.inputTokens
  totals.tokensOut += usage.outputTokens
  totals.costUsd += usage.costUsd
}

const isBlocked = (user: UserModel) => user.usage.tokensIn + user.usage.tokensOut >= PER_USER_MAX_TOKENS

// ---- the system under test -----------------------------------------------------------

/** A RunContext as a tool, the model or the approval handler saw it. */
interface Seen {
  readonly userId: string | null
  readonly sessionId: string
  readonly runId: string
}

interface ModelCall {
  readonly context: Seen
  readonly messages: ReadonlyArray<Model.Message>
}

interface Observations {
  modelCalls: Array<ModelCall>
  whoami: Array<Seen>
  notes: Array<{ readonly context: Seen; readonly note: string }>
  approvals: Array<{ readonly context: Seen; readonly userId: string | null; readonly args: unknown }>
}

const forget = (observations: Observations) => {
  observations.modelCalls.length = 0
  observations.whoami.length = 0
  observations.notes.length = 0
  observations.approvals.length = 0
}

const seen = (context: RunContext.RunContext): Seen => ({
  userId: context.userId,
  sessionId: context.sessionId,
  runId: context.runId
})

type Services = Agent.Agent | Memory.Memory | Budget.Budget | AuditLog.AuditLog

export interface WorldOptions {
  /** Paces one step of a run: the model's answer, a tool's result, the approver's answer. */
  readonly step?: ((label: string, jitter: number) => Effect.Effect<void>) | undefined
  /** Waits for a batch of concurrent runs (a scheduler drives it to completion). */
  readonly settle?: (<A>(batch: Promise<A>) => Promise<A>) | undefined
  /** Wraps the in-memory Memory: the "checks bite" tests plant a leak here. */
  readonly decorateMemory?: ((memory: Memory.Service) => Memory.Service) | undefined
}

export interface World {
  readonly run: <A, E>(effect: Effect.Effect<A, E, Services>) => Promise<A>
  readonly settle: <A>(batch: Promise<A>) => Promise<A>
  readonly plans: Map<string, LivePlan>
  readonly approvals: Map<string, boolean>
  /** What the model, the tools and the approver saw during the current batch. */
  readonly observations: Observations
  readonly close: () => Promise<void>
}

const yields = (_label: string, jitter: number): Effect.Effect<void> =>
  jitter === 0 ? Effect.void : Effect.repeatN(Effect.yieldNow(), jitter - 1)

/**
 * Builds one shared Agent with every governance layer on, inside `outer`
 * (which carries the TestClock), and the hooks the checks observe it by.
 */
export const makeWorld = async (outer: Runtime.Runtime<never>, options: WorldOptions = {}): Promise<World> => {
  const step = options.step ?? yields
  const plans = new Map<string, LivePlan>()
  const planOfRun = new Map<string, LivePlan>()
  const approvals = new Map<string, boolean>()
  const observations: Observations = { modelCalls: [], whoami: [], notes: [], approvals: [] }

  const lastUserPrompt = (messages: ReadonlyArray<Model.Message>) => {
    for (let i = messages.length - 1; i >= 0; i--) {
      const message = messages[i]!
      if (message.role === "user") return message.content
    }
    return undefined
  }

  const script: Model.Script = (request, context) => {
    observations.modelCalls.push({ context: seen(context), messages: request.messages })
    const prompt = lastUserPrompt(request.messages)
    const plan = prompt === undefined ? undefined : plans.get(prompt)
    if (plan === undefined) return { text: "no plan for this prompt" }
    planOfRun.set(context.runId, plan)
    const turn = request.messages.at(-1)?.role === "tool" ? 2 : 1
    const [first, second] = plan.usage
    const answer: Model.ScriptedTurn = plan.heavy ?
      { text: `heavy ${plan.nonce}`, usage: HEAVY_USAGE } :
      turn === 1 ?
      {
        toolCalls: [
          { id: `${plan.nonce}_whoami`, name: "whoami", args: {} },
          ...(plan.write ? [{ id: `${plan.nonce}_note`, name: "write_note", args: { note: plan.nonce } }] : [])
        ],
        usage: first
      } :
      { text: `done ${plan.nonce}`, usage: second }
    return Effect.as(step(`model ${plan.nonce} turn ${turn}`, plan.jitter[turn - 1]!), answer)
  }

  const whoami = Tool.make("whoami", {
    description: "The run context as the tool sees it",
    parameters: Schema.Struct({}),
    handler: () =>
      Effect.flatMap(RunContext.current, (context) => {
        observations.whoami.push(seen(context))
        const jitter = planOfRun.get(context.runId)?.jitter[2] ?? 0
        return Effect.as(step(`whoami ${context.runId}`, jitter), seen(context))
      })
  })

  const writeNote = Tool.make("write_note", {
    description: "Writes a note (destructive: needs approval)",
    parameters: Schema.Struct({ note: Schema.String }),
    destructive: true,
    handler: ({ note }) =>
      Effect.map(RunContext.current, (context) => {
        observations.notes.push({ context: seen(context), note })
        return `noted ${note}`
      })
  })

  const approver = Approval.layer((call, userId) =>
    Effect.flatMap(RunContext.current, (context) => {
      observations.approvals.push({ context: seen(context), userId, args: call.args })
      const jitter = planOfRun.get(context.runId)?.jitter[2] ?? 0
      return Effect.as(step(`approve ${context.runId}`, jitter), approvals.get(keyOf(userId)) ?? false)
    })
  )

  const memory = Layer.effect(
    Memory.Memory,
    Effect.map(
      Memory.makeInMemory({ maxUsers: MAX_USERS, userIdleTtl: USER_IDLE_TTL }),
      options.decorateMemory ?? ((service) => service)
    )
  )

  const services = Layer.mergeAll(
    Model.layerScripted(script),
    Budget.layer({ perUserMaxTokens: PER_USER_MAX_TOKENS }, { maxUsers: MAX_USERS, userIdleTtl: USER_IDLE_TTL }),
    Permissions.perUser(POLICIES),
    approver,
    Hooks.layerNone,
    memory,
    AuditLog.layerMemory({ secret: AUDIT_SECRET }),
    Secrets.layerEnv,
    Telemetry.layerNone
  ).pipe(Layer.orDie)
  const config: Agent.Config = { instructions: INSTRUCTIONS, tools: [whoami, writeNote], maxTokens: 64, maxTurns: 4 }
  const layer = Agent.layer(config).pipe(Layer.provideMerge(services))

  const scope = await Runtime.runPromise(outer)(Scope.make())
  const runtime = await Runtime.runPromise(outer)(Scope.extend(Layer.toRuntime(layer), scope))
  return {
    run: (effect) => Runtime.runPromise(runtime)(effect),
    settle: options.settle ?? ((batch) => batch),
    plans,
    approvals,
    observations,
    close: () => Runtime.runPromise(outer)(Scope.close(scope, Exit.void))
  }
}

const initialModel = async (world: World): Promise<IsolationModel> => ({
  users: new Map(),
  global: zeroTotals(),
  approvals: new Map(),
  runs: new Map(),
  lru: [...USERS],
  now: await world.run(Clock.currentTimeMillis),
  command: 0,
  nonces: 0,
  floods: 0,
  contents: 0
})

// ---- reading the messages a model call received ----------------------------------

const BLOCK = /^<([^<>\n]+)>\n([^\n]*)\n<\/\1>$/

/** The working-blocks system message back to `[name, content]` pairs; `undefined` when it is not one. */
const parseBlocks = (content: string): Array<{ name: string; content: string }> | undefined => {
  const blocks: Array<{ name: string; content: string }> = []
  for (const part of content.split("\n\n")) {
    const match = BLOCK.exec(part)
    if (match === null) return undefined
    blocks.push({ name: match[1]!, content: match[2]! })
  }
  return blocks
}

const RECALL_HEADER = "Relevant past episodes:"

/** The recall system message back to `{ input, output }` pairs; `undefined` when it is not one. */
const parseRecall = (content: string): Array<{ input: string; output: string }> | undefined => {
  const lines = content.split("\n")
  if (lines[0] !== RECALL_HEADER || lines.length % 2 !== 1) return undefined
  const episodes: Array<{ input: string; output: string }> = []
  for (let i = 1; i < lines.length; i += 2) {
    const user = lines[i]!
    const assistant = lines[i + 1]!
    if (!user.startsWith("- user: ") || !assistant.startsWith("  assistant: ")) return undefined
    episodes.push({ input: user.slice("- user: ".length), output: assistant.slice("  assistant: ".length) })
  }
  return episodes
}

/** A session's history as `Memory.sessionMessages` replays it. */
const historyMessages = (episodes: ReadonlyArray<ModelEpisode>): Array<Model.Message> =>
  episodes.slice(-HISTORY_EPISODES).flatMap((episode): Array<Model.Message> => [
    ...(episode.input === "" ? [] : [{ role: "user" as const, content: episode.input }]),
    ...(episode.output === "" ? [] : [{ role: "assistant" as const, content: episode.output, toolCalls: [] }])
  ])

const topicOf = (prompt: string) => prompt.split(" ")[0]

// ---- one batch of concurrent runs ---------------------------------------------------

/** What the model knows before the batch starts, for one run. */
interface Expected {
  readonly blocked: boolean
  readonly approved: boolean
  readonly policy: WritePolicy
  readonly blocks: ReadonlyArray<{ name: string; content: string }>
  readonly history: ReadonlyArray<Model.Message>
  /** Same-topic episodes of this user in other sessions, written before the batch. */
  readonly recallCertain: ReadonlyArray<ModelEpisode>
  /** ...and those that concurrent runs of the batch may have written by the time this run seeds. */
  readonly recallPossible: ReadonlyArray<{ input: string; output: string }>
}

interface Outcome {
  readonly result: Agent.RunResult
  readonly started: Seen | undefined
}

const outputOf = (plan: LivePlan, blocked: boolean) =>
  blocked ? "" : plan.heavy ? `heavy ${plan.nonce}` : `done ${plan.nonce}`

const usageOf = (plan: LivePlan, blocked: boolean): Usage => {
  if (blocked) return { inputTokens: 0, outputTokens: 0, costUsd: 0 }
  if (plan.heavy) return HEAVY_USAGE
  const [a, b] = plan.usage
  return {
    inputTokens: a.inputTokens + b.inputTokens,
    outputTokens: a.outputTokens + b.outputTokens,
    costUsd: a.costUsd + b.costUsd
  }
}

const toolCallsOf = (plan: LivePlan, blocked: boolean) =>
  blocked || plan.heavy ? [] : [
    { name: "whoami", args: {} },
    ...(plan.write ? [{ name: "write_note", args: { note: plan.nonce } }] : [])
  ]

const actionsOf = (plan: LivePlan, blocked: boolean): Array<string> => {
  if (blocked) return ["run_started", "budget_blocked", "run_completed"]
  if (plan.heavy) return ["run_started", "run_completed"]
  const tool = ["tool_call", "permission_decision", "tool_result"]
  const asked = writePolicyOf(plan.user) === "ask" ? ["approval_decision"] : []
  return ["run_started", ...tool, ...(plan.write ? [...tool, ...asked] : []), "run_completed"]
}

const expectationsOf = (model: IsolationModel, batch: ReadonlyArray<LivePlan>, plan: LivePlan): Expected => {
  const user = model.users.get(keyOf(plan.user)) ?? emptyUser()
  const blocked = isBlocked(user)
  const otherSession = (sessionId: string | undefined) => plan.session === undefined || sessionId !== plan.session
  return {
    blocked,
    approved: model.approvals.get(keyOf(plan.user)) ?? false,
    policy: writePolicyOf(plan.user),
    blocks: user.blocks.map(({ content, name }) => ({ name, content })),
    history: plan.session === undefined ?
      [] :
      historyMessages(user.episodes.filter((e) => e.sessionId === plan.session)),
    recallCertain: user.episodes.filter((e) => topicOf(e.input) === plan.topic && otherSession(e.sessionId)),
    recallPossible: batch
      .filter((other) =>
        other !== plan && keyOf(other.user) === keyOf(plan.user) && other.topic === plan.topic &&
        otherSession(other.session)
      )
      .map((other) => ({ input: other.prompt, output: outputOf(other, blocked) }))
  }
}

const runOne = (plan: LivePlan): Effect.Effect<Outcome, Agent.AgentError, Agent.Agent> =>
  Effect.flatMap(Agent.Agent, (agent): Effect.Effect<Outcome, Agent.AgentError> => {
    const options: Agent.RunOptions = {
      ...(plan.user === null ? {} : { userId: plan.user }),
      ...(plan.session === undefined ? {} : { sessionId: plan.session })
    }
    if (plan.via === "run") {
      return Effect.map(agent.run(plan.prompt, options), (result) => ({ result, started: undefined }))
    }
    return Effect.map(Stream.runCollect(agent.stream(plan.prompt, options)), (chunk) => {
      const events = Array.from(chunk)
      const first = events[0]
      const last = events.at(-1)
      if (first === undefined || !AgentEvent.AgentEvent.$is("started")(first)) {
        return fail("a stream did not start with `started`")
      }
      if (last === undefined || !AgentEvent.AgentEvent.$is("completed")(last)) {
        return fail("a stream did not end with `completed`")
      }
      return { result: last.result, started: { userId: first.userId, sessionId: first.sessionId, runId: first.runId } }
    })
  })

/** The first model call of a run: instructions, the user's blocks, recall, the session's history, the prompt. */
const checkSeed = (messages: ReadonlyArray<Model.Message>, plan: LivePlan, expected: Expected, who: string) => {
  let at = 0
  expectEqual(messages[at++], { role: "system", content: INSTRUCTIONS }, `${who}: the instructions come first`)
  const next = messages[at]
  const blocks = next?.role === "system" ? parseBlocks(next.content) : undefined
  if (blocks !== undefined) at++
  expectEqual(blocks ?? [], expected.blocks, `${who}: the working blocks the model received are the user's own`)
  const recallMessage = messages[at]
  let recalled: Array<{ input: string; output: string }> = []
  if (recallMessage?.role === "system") {
    recalled = parseRecall(recallMessage.content) ?? fail(`${who}: an unexpected system message ${show(recallMessage)}`)
    at++
  }
  const candidates = [
    ...expected.recallCertain.map(({ input, output }) => ({ input, output })),
    ...expected.recallPossible
  ]
  for (const episode of recalled) {
    expectThat(
      candidates.some((candidate) => isDeepStrictEqual(candidate, episode)),
      `${who}: recalled an episode that is not one of this user's (other sessions, topic ${plan.topic}): ` +
        `${show(episode)}\ncandidates: ${show(candidates)}`
    )
  }
  expectThat(new Set(recalled.map((e) => e.input)).size === recalled.length, `${who}: recalled one episode twice`)
  const least = Math.min(RECALL_LIMIT, expected.recallCertain.length)
  const most = Math.min(RECALL_LIMIT, candidates.length)
  expectThat(
    recalled.length >= least && recalled.length <= most,
    `${who}: recalled ${recalled.length} episodes, expected ${least}..${most}: ${show(recalled)}`
  )
  expectEqual(messages.slice(at, -1), expected.history, `${who}: the history replayed is this user's session only`)
  expectEqual(messages.at(-1), { role: "user", content: plan.prompt }, `${who}: the prompt comes last`)
}

/** One run: its result, what its model calls received, what its tools and approver saw. */
const checkRun = ({ result, started }: Outcome, plan: LivePlan, expected: Expected, observed: Observations) => {
  const who = `run ${plan.nonce} of ${label(plan.user)} in ${plan.session ?? "a new session"}`
  const blocked = expected.blocked
  const context: Seen = { userId: plan.user, sessionId: result.sessionId, runId: result.runId }

  // The result.
  expectEqual(result.userId, plan.user, `${who}: RunResult.userId`)
  if (plan.session !== undefined) expectEqual(result.sessionId, plan.session, `${who}: RunResult.sessionId`)
  else expectThat(/^sess_/.test(result.sessionId), `${who}: a new session id, got ${result.sessionId}`)
  if (started !== undefined) expectEqual(started, context, `${who}: the started event`)
  const usage = usageOf(plan, blocked)
  expectEqual(
    {
      output: result.output,
      turns: result.turns,
      interrupted: result.interrupted,
      interruptionReason: result.interruptionReason,
      tokensIn: result.tokensIn,
      tokensOut: result.tokensOut,
      costUsd: result.costUsd,
      auditFailures: result.auditFailures
    },
    {
      output: outputOf(plan, blocked),
      turns: blocked ? 0 : plan.heavy ? 1 : 2,
      interrupted: blocked,
      interruptionReason: blocked ? BLOCKED_REASON : undefined,
      tokensIn: usage.inputTokens,
      tokensOut: usage.outputTokens,
      costUsd: usage.costUsd,
      auditFailures: 0
    },
    `${who}: the run's outcome`
  )
  const whoamiOutput = JSON.stringify(context)
  const mayWrite = expected.policy === "allow" || (expected.policy === "ask" && expected.approved)
  const noteResult = mayWrite ?
    { name: "write_note", status: "ok", output: `noted ${plan.nonce}` } :
    {
      name: "write_note",
      status: "denied",
      output: expected.policy === "deny" ?
        `DENIED: ${DENY_REASON}` :
        `DENIED: ${Approval.reasons.declined} (${ASK_REASON})`
    }
  const toolResults = blocked || plan.heavy ? [] : [
    { name: "whoami", status: "ok", output: whoamiOutput },
    ...(plan.write ? [noteResult] : [])
  ]
  expectEqual(
    result.toolCalls.map(({ name, output, status }) => ({ name, status, output })),
    toolResults,
    `${who}: the tool calls (whoami reads the run's own context)`
  )

  // What the model received, under which context.
  const calls = observed.modelCalls.filter((call) => call.context.runId === result.runId)
  expectEqual(calls.map((call) => call.context), calls.map(() => context), `${who}: the RunContext the model saw`)
  expectEqual(calls.length, result.turns, `${who}: model calls`)
  if (calls.length > 0) checkSeed(calls[0]!.messages, plan, expected, who)
  if (calls.length === 2) {
    const seed = calls[0]!.messages
    const assistant: Model.Message = {
      role: "assistant",
      content: "",
      toolCalls: [
        { id: `${plan.nonce}_whoami`, name: "whoami", args: {} },
        ...(plan.write ? [{ id: `${plan.nonce}_note`, name: "write_note", args: { note: plan.nonce } }] : [])
      ]
    }
    const toolMessages = toolResults.map((tool): Model.Message => ({
      role: "tool",
      toolCallId: `${plan.nonce}_${tool.name === "whoami" ? "whoami" : "note"}`,
      toolName: tool.name,
      content: tool.output,
      isError: tool.status !== "ok"
    }))
    expectEqual(calls[1]!.messages, [...seed, assistant, ...toolMessages], `${who}: the second model call`)
  }

  // The tool, the approver and the destructive tool saw this run's user.
  const ranTools = !blocked && !plan.heavy
  const whoamis = observed.whoami.filter((c) => c.runId === result.runId)
  expectEqual(whoamis, ranTools ? [context] : [], `${who}: the context whoami saw`)
  const asked = observed.approvals.filter((a) => a.context.runId === result.runId)
  const askedFor = ranTools && plan.write && expected.policy === "ask"
  expectEqual(
    asked,
    askedFor ? [{ context, userId: plan.user, args: { note: plan.nonce } }] : [],
    `${who}: the approval request (its user, its arguments)`
  )
  const notes = observed.notes.filter((n) => n.context.runId === result.runId)
  expectEqual(
    notes,
    ranTools && plan.write && mayWrite ? [{ context, note: plan.nonce }] : [],
    `${who}: the destructive tool ran only when this user's policy allowed it or their approver said yes`
  )
}

const runBatch = async (model: IsolationModel, world: World, plans: ReadonlyArray<Plan>): Promise<void> => {
  const command = model.command
  const batch: Array<LivePlan> = plans.map((plan) => {
    const nonce = `n${++model.nonces}`
    return { ...plan, nonce, prompt: `${plan.topic} ${nonce}` }
  })
  for (const plan of batch) world.plans.set(plan.prompt, plan)
  const expectations = batch.map((plan) => expectationsOf(model, batch, plan))
  forget(world.observations)
  const outcomes = await world.settle(world.run(Effect.forEach(batch, runOne, { concurrency: "unbounded" })))
  const observed = world.observations

  const runIds = new Set(outcomes.map((outcome) => outcome.result.runId))
  expectThat(runIds.size === outcomes.length, "two runs got the same run id")
  const strays = [
    ...observed.modelCalls.map((call) => call.context),
    ...observed.whoami,
    ...observed.notes.map((note) => note.context),
    ...observed.approvals.map((approval) => approval.context)
  ].filter((context) => !runIds.has(context.runId))
  expectThat(strays.length === 0, `something ran outside of every run: ${show(strays)}`)

  outcomes.forEach((outcome, i) => checkRun(outcome, batch[i]!, expectations[i]!, observed))

  // The model catches up.
  outcomes.forEach(({ result }, i) => {
    const plan = batch[i]!
    const { approved, blocked, policy } = expectations[i]!
    const user = userModel(model, plan.user)
    const usage = usageOf(plan, blocked)
    user.episodes.push({
      sessionId: result.sessionId,
      input: plan.prompt,
      output: outputOf(plan, blocked),
      toolCalls: toolCallsOf(plan, blocked),
      occurredAt: model.now,
      command
    })
    addTo(user.usage, usage)
    addTo(model.global, usage)
    const ranTools = !blocked && !plan.heavy
    const decisions = !ranTools ? [] : [
      "whoami:allow",
      ...(!plan.write ? [] : policy === "ask" ?
        ["write_note:ask", `write_note:${approved ? "approved" : "declined"}`] :
        [`write_note:${policy}`])
    ]
    model.runs.set(result.runId, {
      user: plan.user,
      sessionId: result.sessionId,
      actions: actionsOf(plan, blocked),
      decisions: decisions.sort(),
      usage
    })
  })
}

// ---- invariants after every command ------------------------------------------------------

const asUser = (user: string | null) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.orDie(RunContext.withUser(user)(effect))

const checkMemory = async (model: IsolationModel, world: World, user: string | null) => {
  const expected = model.users.get(keyOf(user)) ?? emptyUser()
  const who = label(user)
  const [exported, s1, s2] = await world.run(
    Effect.flatMap(Memory.Memory, (memory) =>
      Effect.all([memory.export, memory.sessionMessages("s1"), memory.sessionMessages("s2")]).pipe(asUser(user)))
  )
  expectEqual(exported.userId, user, `${who}: export's userId`)
  expectEqual(
    exported.blocks.map(({ content, name, pinnedOrder, updatedAt }) => ({
      name,
      content,
      pinnedOrder,
      updatedAt: updatedAt.getTime()
    })),
    expected.blocks.map(({ content, name, updatedAt }, pinnedOrder) => ({ name, content, pinnedOrder, updatedAt })),
    `${who}: exported working blocks`
  )
  expectEqual(exported.facts, [], `${who}: exported facts`)
  const byInput = new Map(expected.episodes.map((episode) => [episode.input, episode]))
  let lastCommand = -1
  for (const episode of exported.episodes) {
    const mine = byInput.get(episode.input) ??
      fail(`${who}: exported an episode the model does not have for them ` +
        `(another user's, or one that should be forgotten): ${show(episode)}`)
    expectEqual(
      {
        userId: episode.userId,
        sessionId: episode.sessionId,
        output: episode.output,
        toolCalls: episode.toolCalls,
        occurredAt: episode.occurredAt.getTime()
      },
      {
        userId: user,
        sessionId: mine.sessionId,
        output: mine.output,
        toolCalls: mine.toolCalls,
        occurredAt: mine.occurredAt
      },
      `${who}: exported episode ${episode.input}`
    )
    expectThat(mine.command >= lastCommand, `${who}: exported episodes out of order at ${episode.input}`)
    lastCommand = mine.command
  }
  expectEqual(
    exported.episodes.map((e) => e.input).sort(),
    expected.episodes.map((e) => e.input).sort(),
    `${who}: exported episodes (all theirs, each once)`
  )
  for (const [session, messages] of [["s1", s1], ["s2", s2]] as const) {
    expectEqual(
      messages,
      historyMessages(expected.episodes.filter((e) => e.sessionId === session)),
      `${who}: sessionMessages(${session})`
    )
  }
}

const checkBudget = async (model: IsolationModel, world: World) => {
  const users = model.lru
  const totals = (t: Totals): Budget.UsageTotals => ({
    tokensIn: t.tokensIn,
    tokensOut: t.tokensOut,
    tokensTotal: t.tokensIn + t.tokensOut,
    costUsd: t.costUsd
  })
  const [perUser, global] = await world.run(
    Effect.flatMap(Budget.Budget, (budget) =>
      Effect.all([Effect.forEach(users, (user) => budget.usageFor(user)), budget.globalUsage])).pipe(Effect.orDie)
  )
  users.forEach((user, i) => {
    expectEqual(perUser[i], totals(model.users.get(keyOf(user))?.usage ?? zeroTotals()), `${label(user)}: usageFor`)
  })
  expectEqual(global, totals(model.global), "globalUsage is the sum of every run's reported usage")
}

/** The chain verifies, by the service and independently. Run once at the end: it re-reads every entry. */
const checkChain = async (world: World) => {
  const [entries, report] = await world.run(
    Effect.flatMap(AuditLog.AuditLog, (audit) => Effect.all([audit.query(), audit.verify])).pipe(Effect.orDie)
  )
  expectThat(report.valid && report.validCount === entries.length, `audit verify(): ${show(report)}`)
  const independent = await world.run(AuditLog.verifyEntries(entries, AUDIT_SECRET))
  expectThat(
    independent.valid && independent.validCount === entries.length,
    `AuditLog.verifyEntries: ${show(independent)}`
  )
}

/** Every audit entry belongs to a run and carries its user; each run has exactly its entries. */
const checkAudit = async (model: IsolationModel, world: World) => {
  const [entries, perUser] = await world.run(
    Effect.flatMap(AuditLog.AuditLog, (audit) =>
      Effect.all([audit.query(), Effect.forEach(USERS, (userId) => audit.query({ userId }))])).pipe(Effect.orDie)
  )
  const byRun = new Map<string, Array<AuditLog.AuditEntry>>()
  for (const entry of entries) {
    const run = model.runs.get(entry.runId) ?? fail(`an audit entry of no run: ${show(entry)}`)
    expectEqual(
      { userId: entry.userId, sessionId: entry.sessionId },
      { userId: run.user, sessionId: run.sessionId },
      `audit entry ${entry.seq} (${entry.action}) is attributed to its run's user`
    )
    const list = byRun.get(entry.runId) ?? []
    list.push(entry)
    byRun.set(entry.runId, list)
  }
  for (const [runId, run] of model.runs) {
    const list = byRun.get(runId) ?? []
    const actions = list.map((entry) => entry.action)
    expectEqual([...actions].sort(), [...run.actions].sort(), `the audit entries of ${runId} (${label(run.user)})`)
    expectEqual(actions[0], "run_started", `${runId}: run_started comes first`)
    expectEqual(actions.at(-1), "run_completed", `${runId}: run_completed comes last`)
    const decisions = list.flatMap((entry) => {
      const payload = entry.payload as Record<string, unknown>
      if (entry.action === "permission_decision") return [`${payload.tool}:${payload.decision}`]
      if (entry.action === "approval_decision") return [`${payload.tool}:${payload.outcome}`]
      return []
    })
    expectEqual(
      decisions.sort(),
      run.decisions,
      `${runId} (${label(run.user)}): the audited decisions follow this user's policy`
    )
    const payload = list.at(-1)!.payload as Record<string, unknown>
    expectEqual(
      { tokensIn: payload.tokens_in, tokensOut: payload.tokens_out, costUsd: payload.cost_usd },
      { tokensIn: run.usage.inputTokens, tokensOut: run.usage.outputTokens, costUsd: run.usage.costUsd },
      `${runId}: the run_completed summary`
    )
  }
  USERS.forEach((user, i) => {
    expectEqual(
      perUser[i]!.map((entry) => entry.seq),
      entries.filter((entry) => entry.userId === user).map((entry) => entry.seq),
      `audit query({ userId: ${show(user)} }) returns exactly that user's entries`
    )
  })
}

/** Every invariant, for every user of the pool, visited in `model.lru` order. */
const checkInvariants = async (model: IsolationModel, world: World): Promise<void> => {
  for (const user of model.lru) await checkMemory(model, world, user)
  await checkBudget(model, world)
  await checkAudit(model, world)
}

// ---- commands ------------------------------------------------------------------------

type Command = fc.AsyncCommand<IsolationModel, World>

const describePlan = (plan: Plan) =>
  `${label(plan.user)}@${plan.session ?? "new"}:${plan.topic}${plan.write ? "+write" : ""}${
    plan.via === "stream" ? "~stream" : ""
  }`

/** Runs several users' runs at once. */
class RunBatch implements Command {
  constructor(readonly plans: ReadonlyArray<Plan>) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    await runBatch(model, world, this.plans)
    await checkInvariants(model, world)
  }
  toString = () => `Run(${this.plans.map(describePlan).join(", ")})`
}

/** `Memory.updateBlock` as `user`, outside of any run. */
class SetBlock implements Command {
  constructor(readonly user: string | null, readonly name: string) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    const content = `${label(this.user)} ${this.name} v${++model.contents}`
    await world.run(
      Effect.flatMap(Memory.Memory, (memory) => memory.updateBlock(this.name, content)).pipe(asUser(this.user))
    )
    const blocks = userModel(model, this.user).blocks
    const block = blocks.find((b) => b.name === this.name)
    if (block === undefined) blocks.push({ name: this.name, content, updatedAt: model.now })
    else Object.assign(block, { content, updatedAt: model.now })
    await checkInvariants(model, world)
  }
  toString = () => `SetBlock(${label(this.user)}, ${this.name})`
}

/** What `user`'s approver answers from now on. */
class SetApproval implements Command {
  constructor(readonly user: string | null, readonly answer: boolean) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    world.approvals.set(keyOf(this.user), this.answer)
    model.approvals.set(keyOf(this.user), this.answer)
  }
  toString = () => `${this.answer ? "Approve" : "Decline"}(${label(this.user)})`
}

/** One run whose model reports the user's whole quota: the user is blocked afterwards. */
class OverQuota implements Command {
  constructor(readonly user: string | null) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    const none = { inputTokens: 0, outputTokens: 0, costUsd: 0 }
    await runBatch(model, world, [{
      user: this.user,
      session: undefined,
      topic: "alpha",
      write: false,
      heavy: true,
      via: "run",
      usage: [none, none],
      jitter: [0, 0, 0]
    }])
    await checkInvariants(model, world)
  }
  toString = () => `OverQuota(${label(this.user)})`
}

/** Every user goes idle past `userIdleTtl`: budgets and memory start from zero. */
class EvictIdle implements Command {
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    const step = Duration.sum(USER_IDLE_TTL, Duration.seconds(1))
    await world.run(TestClock.adjust(step))
    model.now += Duration.toMillis(step)
    model.users.clear()
    await checkInvariants(model, world)
  }
  toString = () => "EvictIdle"
}

/**
 * `count` new users run at once, and the least recently used users are
 * forgotten to make room. Every check touches the whole pool, so memory holds
 * the pool plus at most `MAX_USERS - USERS.length` others, all older, and the
 * budget holds the pool users who have been charged, after any others.
 */
class NewUsers implements Command {
  constructor(readonly count: number) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    const flood = ++model.floods
    const plans = Array.from({ length: this.count }, (_, i): Plan => ({
      user: `flood_${flood}_${i}`,
      session: "s1",
      topic: "alpha",
      write: false,
      heavy: false,
      via: "run",
      usage: [{ inputTokens: 3, outputTokens: 2, costUsd: 1 / 1024 }, { inputTokens: 4, outputTokens: 1, costUsd: 0 }],
      jitter: [i % 3, (i + 1) % 3, i % 2]
    }))
    const charged = model.lru.filter((user) => {
      const usage = model.users.get(keyOf(user))?.usage
      return usage !== undefined && usage.tokensIn + usage.tokensOut > 0
    })
    await runBatch(model, world, plans)
    const forgotten = model.lru.slice(0, Math.max(0, this.count - (MAX_USERS - USERS.length)))
    for (const user of forgotten) Object.assign(userModel(model, user), { blocks: [], episodes: [] })
    for (const user of charged.slice(0, Math.max(0, charged.length + this.count - MAX_USERS))) {
      userModel(model, user).usage = zeroTotals()
    }
    // The check visits the survivors first: coming back, a forgotten user pushes out a new one, not a survivor.
    model.lru = [...model.lru.slice(forgotten.length), ...forgotten]
    await checkInvariants(model, world)
  }
  toString = () => `NewUsers(${this.count})`
}

/** Time passes, less than the idle TTL: nothing is forgotten. */
class Tick implements Command {
  constructor(readonly minutes: number) {}
  check = () => true
  async run(model: IsolationModel, world: World) {
    model.command++
    await world.run(TestClock.adjust(Duration.minutes(this.minutes)))
    model.now += this.minutes * 60_000
    await checkInvariants(model, world)
  }
  toString = () => `Tick(${this.minutes}m)`
}

interface CommandOptions {
  /** Runs per batch. */
  readonly maxRuns: number
  readonly maxCommands: number
}

export const arbCommands = (options: CommandOptions): fc.Arbitrary<Iterable<Command>> => {
  const batch = arbBatch(options.maxRuns).map((plans): Command => new RunBatch(plans))
  const block = fc.tuple(arbUser, fc.constantFrom(...BLOCK_NAMES))
    .map(([user, name]): Command => new SetBlock(user, name))
  const approval = fc.tuple(arbUser, fc.boolean()).map(([user, answer]): Command => new SetApproval(user, answer))
  // Repeated entries weigh more: runs, blocks and approvals build up state; evictions wipe it.
  return fc.commands([
    batch,
    batch,
    batch,
    batch,
    block,
    block,
    approval,
    approval,
    arbUser.map((user): Command => new OverQuota(user)),
    fc.constant<Command>(new EvictIdle()),
    fc.integer({ min: 1, max: MAX_USERS }).map((count): Command => new NewUsers(count)),
    fc.integer({ min: 1, max: 29 }).map((minutes): Command => new Tick(minutes))
  ], { maxCommands: options.maxCommands, size: "medium" })
}

/** Runs `commands` against a fresh World built by `build`, verifies the audit chain, closes the World. */
export const runCommands = async (build: () => Promise<World>, commands: Iterable<Command>): Promise<void> => {
  const world = await build()
  try {
    await fc.asyncModelRun(async () => ({ model: await initialModel(world), real: world }), commands)
    await checkChain(world)
  } finally {
    await world.close()
  }
}

// ---- running the properties ------------------------------------------------------------

/** A property over a World built inside `outer`, the test's runtime (with its TestClock). */
export type PropertyIn<Ts> = (outer: Runtime.Runtime<never>) => fc.IAsyncPropertyWithHooks<Ts>

/** Asserts `property` over `numRuns` random command sequences. */
export const assertHolds = <Ts>(property: PropertyIn<Ts>, numRuns: number): Effect.Effect<void> =>
  Effect.flatMap(Effect.runtime<never>(), (outer) => Effect.promise(() => fc.assert(property(outer), { numRuns })))

/**
 * Asserts that `property` fails (for `seed`, within 200 runs, unshrunk) with
 * an {@link InvariantViolation} that says `what`: the checks bite.
 */
export const assertCaught = <Ts>(property: PropertyIn<Ts>, seed: number, what: string): Effect.Effect<void> =>
  Effect.flatMap(Effect.runtime<never>(), (outer) =>
    Effect.promise(async () => {
      const details = await fc.check(property(outer), { numRuns: 200, seed, endOnFailure: true })
      assert.isTrue(details.failed, "the planted bug went unnoticed")
      assert.instanceOf(details.errorInstance, InvariantViolation)
      assert.include(String(details.errorInstance), what)
    }))
