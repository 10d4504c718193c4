/**
 * The bench's one shared Agent: real layers for every concern, a scripted
 * model that checks what it is shown, and two tools that record which user
 * they saw in the RunContext.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as PgClient from "@effect/sql-pg/PgClient"
import { ParentBasedSampler, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace-base"
import { Duration, Effect, Layer, Redacted, Schema } from "effect"
import { Agent, Approval, AuditLog, Budget, Memory, Model, Permissions, RunContext, Telemetry, Tool } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import * as PgBudget from "jeevesagent/PgBudget"
import * as PgMemory from "jeevesagent/PgMemory"
import * as SqliteMemory from "jeevesagent/SqliteMemory"
import type { Backend, BenchOptions, Injection } from "./options.js"
import * as plan from "./plan.js"
import { Violations } from "./violations.js"

/** What the model and the tools observe while the workload runs. */
export class Probe {
  readonly violations = new Violations()
  /** The user ids the tools saw in the RunContext, by run id; the runner takes each run's list when it ends. */
  readonly toolUsers = new Map<string, Array<string | null>>()
  /** The usage the model reported, by the user index of the prompt it answered. */
  readonly modelTally = new Map<number, plan.Usage>()
  /** The model's latency on every call; the memory probe turns it off. */
  latency: Duration.Duration | undefined
  /** Injections fire once. */
  private readonly fired = new Set<Injection>()

  constructor(readonly inject: Injection | undefined, latencyMs = 0) {
    this.latency = latencyMs > 0 ? Duration.millis(latencyMs) : undefined
  }

  /** True exactly once for `injection` when it is the one asked for. */
  fire(injection: Injection): boolean {
    if (this.inject !== injection || this.fired.has(injection)) return false
    this.fired.add(injection)
    return true
  }

  sawUser(context: RunContext.RunContext, reported: string | null): void {
    let users = this.toolUsers.get(context.runId)
    if (users === undefined) this.toolUsers.set(context.runId, (users = []))
    users.push(reported)
  }

  tally(index: number, reported: plan.Usage): void {
    this.modelTally.set(index, plan.addUsage(this.modelTally.get(index) ?? plan.zeroUsage, reported))
  }
}

/** The user the `tool-wrong-user` injection reports instead of user_0 (`user_10` when there is one). */
export const wrongUserIndex = (users: number): number => (users > 10 ? 10 : 1)

// ---- the model -----------------------------------------------------------------------

/** The agent replays the latest 10 episodes of the session (`sessionMessages` with its limit of 20). */
const HISTORY_EPISODES = 10

/** The first difference between the replayed history and what it must be, or `undefined`. */
const historyMismatch = (
  bench: plan.Plan,
  messages: ReadonlyArray<Model.Message>,
  promptAt: number,
  index: number,
  turn: number
): string | undefined => {
  let start = 0
  while (start < promptAt && messages[start]!.role === "system") start++
  const history = messages.slice(start, promptAt).map((m) => ({ role: m.role, content: m.content }))
  const episodes = plan.expectedEpisodes(bench, index).slice(0, turn - 1).slice(-HISTORY_EPISODES)
  const expected = plan.historyOf(episodes)
  if (history.length === expected.length && history.every((m, i) => m.role === expected[i]!.role && m.content === expected[i]!.content)) {
    return undefined
  }
  return `history shown to the model for ${plan.prompt(index, turn)}: expected ${JSON.stringify(expected)}, got ${
    JSON.stringify(history).slice(0, 400)
  }`
}

/**
 * The model's script. Every call checks, by exact comparison, that the run's
 * RunContext user is the prompt's user, that the only marker anywhere in the
 * request is that user's, and that the replayed history is exactly the
 * user's previous turns; then it reports the planned usage and waits the
 * latency. The first call asks for both tools, the second answers.
 */
export const makeScript = (bench: plan.Plan, probe: Probe) => {
  return (request: Model.ModelRequest, context: RunContext.RunContext): Model.ScriptedTurn => {
    const messages = request.messages
    let promptAt = messages.length - 1
    while (promptAt >= 0 && messages[promptAt]!.role !== "user") promptAt--
    const parsed = promptAt >= 0 ? plan.parsePrompt(messages[promptAt]!.content) : undefined
    if (parsed === undefined) {
      probe.violations.add("model-context", `the model got a request without a bench prompt (user ${context.userId})`)
      return { text: "unexpected request" }
    }
    const { index, turn } = parsed
    const user = plan.userId(index)
    if (context.userId !== user) {
      probe.violations.add("model-context", `the model answered ${JSON.stringify(messages[promptAt]!.content)} in a run of ${context.userId}`)
    }
    const seen = new Set<string>()
    for (const message of messages) for (const found of plan.markersIn(message.content)) seen.add(found)
    if (seen.size !== 1 || !seen.has(plan.marker(index))) {
      probe.violations.add("model-context", `markers in the request of ${user} turn ${turn}: ${JSON.stringify([...seen])}, expected only ${plan.marker(index)}`)
    }
    const phase: plan.Phase = messages[messages.length - 1]!.role === "tool" ? 2 : 1
    if (phase === 1) {
      const mismatch = historyMismatch(bench, messages, promptAt, index, turn)
      if (mismatch !== undefined) probe.violations.add("session-history", mismatch)
    }
    const usage = plan.usage(bench, index, turn, phase)
    probe.tally(index, usage)
    return phase === 1 ?
      {
        toolCalls: [{ name: plan.WHOAMI_TOOL, args: {} }, { name: plan.PURGE_TOOL, args: plan.purgeArgs(index, turn) }],
        usage,
        latency: probe.latency
      } :
      { text: plan.answer(index, turn), usage, latency: probe.latency }
  }
}

// ---- the tools -----------------------------------------------------------------------

export const makeTools = (bench: plan.Plan, probe: Probe): ReadonlyArray<Tool.Any> => {
  const whoami = Tool.make(plan.WHOAMI_TOOL, {
    description: "The current user's id and profile marker",
    parameters: Schema.Struct({}),
    handler: () =>
      Effect.map(RunContext.current, (context) => {
        let index = plan.userIndex(context.userId)
        if (index === 0 && probe.fire("tool-wrong-user")) index = wrongUserIndex(bench.users)
        probe.sawUser(context, index === undefined ? context.userId : plan.userId(index))
        return index === undefined ? `unknown user ${context.userId}` : plan.whoamiOutput(index)
      })
  })
  const purge = Tool.make(plan.PURGE_TOOL, {
    description: "Purges a cache (destructive: needs approval)",
    parameters: Schema.Struct({ owner: Schema.String, scope: Schema.Literal("own", "all") }),
    destructive: true,
    handler: () =>
      Effect.map(RunContext.current, (context) => {
        probe.sawUser(context, context.userId)
        const index = plan.userIndex(context.userId)
        return index === undefined ? `unknown user ${context.userId}` : plan.purgeOutput(index)
      })
  })
  return [whoami, purge]
}

// ---- the layers ----------------------------------------------------------------------

/** Where the bench keeps its state. */
export interface Resources {
  /** The audit file (local mode). */
  readonly auditPath: string
  /** The SQLite database file (backend sqlite). */
  readonly sqlitePath: string
  /** The scratch database (backend postgres). */
  readonly databaseUrl: string | undefined
  readonly auditSecret: Redacted.Redacted<string>
}

/**
 * `local`: one process; the budget is in memory and the audit log a file.
 * `shared`: one of several processes sharing one Postgres database — budget
 * ledger, memory and audit chain.
 */
export type Mode = "local" | "shared"

export const budgetConfig = (bench: plan.Plan): Budget.Config => ({
  maxTokens: 1e12,
  maxCostUsd: 1e9,
  perUserMaxTokens: bench.perUserMaxTokens,
  perUserMaxCostUsd: 1e6
})

export const pgClientLayer = (url: string) => PgClient.layer({ url: Redacted.make(url), maxConnections: 16 })

const requireUrl = (resources: Resources): string => {
  if (resources.databaseUrl === undefined) throw new Error("the postgres backend needs a database url")
  return resources.databaseUrl
}

const memoryLayer = (backend: Backend, bench: plan.Plan, resources: Resources) => {
  switch (backend) {
    case "memory":
      return Memory.layerInMemory({ maxUsers: Math.max(1_000, plan.allUsers(bench) * 2) })
    case "sqlite":
      return SqliteMemory.layer({ filename: resources.sqlitePath })
    case "postgres":
      return PgMemory.layer().pipe(Layer.provide(pgClientLayer(requireUrl(resources))))
  }
}

/**
 * Telemetry as a production deployment runs it: through the OpenTelemetry
 * SDK, spans batched to an exporter and metrics read by a periodic reader —
 * here exporters that drop what they get, so nothing leaves the machine.
 */
const telemetryLayer = (options: BenchOptions) =>
  options.telemetry === "effect" ?
    Telemetry.layer({ userIdAttribute: options.userIdAttribute }) :
    Telemetry.layerOtel({
      serviceName: "jeeves-multi-tenant-bench",
      userIdAttribute: options.userIdAttribute,
      ...(options.traceSampleRatio < 1 ?
        { tracerConfig: { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.traceSampleRatio) }) } } :
        {}),
      traceExporter: {
        export: (_spans, done) => done({ code: 0 }),
        shutdown: () => Promise.resolve(),
        forceFlush: () => Promise.resolve()
      },
      metricExporter: {
        export: (_metrics, done) => done({ code: 0 }),
        shutdown: () => Promise.resolve(),
        forceFlush: () => Promise.resolve()
      }
    })

/** `skip-charge`: one model call of user_0 is released instead of settled, so it is never charged. */
const skippingOneCharge = (probe: Probe) =>
  Layer.effect(
    Budget.Budget,
    Effect.map(Budget.Budget, (inner): Budget.Service => ({
      ...inner,
      reserve: (estimate) =>
        Effect.flatMap(Effect.zip(inner.reserve(estimate), RunContext.currentUserId), ([reservation, user]) =>
          Effect.succeed(
            reservation._tag === "Granted" && user === plan.userId(0) && probe.fire("skip-charge") ?
              { ...reservation, settle: () => reservation.release } :
              reservation
          ))
    }))
  )

/** The governed services, each a real layer (the model is the only scripted piece). */
export const servicesLayer = (options: BenchOptions, mode: Mode, bench: plan.Plan, probe: Probe, resources: Resources) => {
  const config = budgetConfig(bench)
  const pg = mode === "shared" ? pgClientLayer(requireUrl(resources)) : undefined
  const budgetBase = pg !== undefined ?
    PgBudget.layer(config).pipe(Layer.provide(pg)) :
    Budget.layer(config, { maxUsers: Math.max(1_000, plan.allUsers(bench) * 2) })
  const budget = options.inject === "skip-charge" ? skippingOneCharge(probe).pipe(Layer.provide(budgetBase)) : budgetBase
  const restricted: Record<string, Permissions.Policy> = {}
  for (let index = 0; index < plan.allUsers(bench); index++) {
    if (plan.isRestricted(index)) restricted[plan.userId(index)] = { mode: "default", deniedTools: [plan.PURGE_TOOL] }
  }
  const permissions = Permissions.perUser({ policies: restricted, default: { mode: "default" } })
  const approval = Approval.layer((call, caller) => Effect.succeed(plan.approves(call.name, call.args, caller)))
  const audit = pg !== undefined ?
    PgAuditLog.layer({ secret: resources.auditSecret }).pipe(Layer.provide(pg)) :
    AuditLog.layerFile({ path: resources.auditPath, secret: resources.auditSecret, durability: options.auditDurability,
      signing: options.auditSigning
    })
      .pipe(Layer.provide(NodeFileSystem.layer))
  const memory = pg !== undefined ? PgMemory.layer().pipe(Layer.provide(pg)) : memoryLayer(options.backend, bench, resources)
  const model = Model.layerScripted(makeScript(bench, probe), { name: "bench-scripted" })
  return Layer.mergeAll(Agent.layerDefaults, budget, permissions, approval, audit, memory, telemetryLayer(options), model)
}

/** The shared Agent, with the services the checks read kept in the output. */
export const agentLayer = (options: BenchOptions, mode: Mode, bench: plan.Plan, probe: Probe, resources: Resources) =>
  Agent.layer({ instructions: plan.INSTRUCTIONS, tools: makeTools(bench, probe), maxTurns: 4 }).pipe(
    Layer.provideMerge(servicesLayer(options, mode, bench, probe, resources))
  )
