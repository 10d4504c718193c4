/**
 * One process: build the shared agent, run every user, check, measure.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Context, Effect, Layer, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { AuditLog, Budget, Memory, RunContext } from "jeevesagent"
import { agentLayer, Probe, type Resources, wrongUserIndex } from "./agent.js"
import { checkAudit, checkState } from "./checks.js"
import type { BenchOptions } from "./options.js"
import * as plan from "./plan.js"
import { benchDatabase } from "./postgres.js"
import { type BenchReport, makeReport, type MemorySample } from "./report.js"
import { Violations } from "./violations.js"
import { bareLoop, makeObservations, type Observations, runUsers, writeBlocks } from "./workload.js"

const gc = (globalThis as { gc?: () => void }).gc

export const gcExposed = gc !== undefined

/** Heap and RSS after two full collections (when exposed). */
export const sampleMemory = (): MemorySample => {
  gc?.()
  gc?.()
  const usage = process.memoryUsage()
  return { heap: usage.heapUsed, rss: usage.rss }
}

export const range = (count: number): Array<number> => Array.from({ length: count }, (_, index) => index)

export const progress = (options: BenchOptions, message: string) => {
  if (options.verbose) process.stderr.write(`[bench] ${message}\n`)
}

/**
 * The deliberate violations applied after the workload: a foreign or erased
 * episode, an audit entry written as the wrong user. (The tool and budget
 * ones fire during the workload.)
 */
export const injectAfterRuns = (bench: plan.Plan, options: BenchOptions, observations: Observations) =>
  Effect.gen(function*() {
    const owner = { userId: plan.userId(0), sessionId: plan.sessionId(0) }
    const memory = yield* Memory.Memory
    if (options.inject === "leak-episode") {
      const other = wrongUserIndex(bench.users)
      yield* memory.remember({ input: plan.prompt(other, 1), output: plan.answer(other, 1) }).pipe(
        RunContext.withUser(owner.userId, { sessionId: owner.sessionId })
      )
    }
    if (options.inject === "lose-episode") {
      yield* memory.forget({ sessionId: owner.sessionId }).pipe(RunContext.withUser(owner.userId))
    }
    if (options.inject === "misattribute-audit") {
      const runId = [...observations.runs].find(([, slot]) => slot === 0)?.[0]
      if (runId !== undefined) {
        const audit = yield* AuditLog.AuditLog
        yield* audit.append({ actor: "system", action: "bench_injected", payload: {} }).pipe(
          RunContext.locally({ userId: plan.userId(wrongUserIndex(bench.users)), sessionId: owner.sessionId, runId, metadata: {} })
        )
      }
    }
  })

/** Flips one tool result's `ok` in the audit file: the signature no longer matches. */
const tamperAuditFile = (path: string) => {
  const lines = readFileSync(path, "utf8").split("\n")
  const at = lines.findIndex((line) => line.includes(`"action":"tool_result"`) && line.includes(`"ok":true`))
  if (at < 0) throw new Error("tamper-audit: no tool_result entry to edit")
  lines[at] = lines[at]!.replace(`"ok":true`, `"ok":false`)
  writeFileSync(path, lines.join("\n"))
}

/** A few runs on a throwaway agent (memory backend, no latency), so the measured run starts with compiled code. */
export const warmUp = async (options: BenchOptions, dir: string, violations: Violations) => {
  const bench = plan.makePlan(Math.min(options.users, 50), 2)
  const probe = new Probe(undefined)
  const resources: Resources = {
    auditPath: join(dir, "warm-up-audit.jsonl"),
    sqlitePath: join(dir, "warm-up.db"),
    databaseUrl: undefined,
    auditSecret: Redacted.make(randomBytes(32).toString("hex"))
  }
  const warmOptions: BenchOptions = { ...options, backend: "memory", latencyMs: 0, inject: undefined, processes: 1 }
  await Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const context = yield* Layer.build(agentLayer(warmOptions, "local", bench, probe, resources))
        const indices = range(bench.users)
        yield* writeBlocks(indices, 16).pipe(Effect.provide(context))
        yield* runUsers(bench, indices, probe, makeObservations(bench)).pipe(Effect.provide(context))
      })
    )
  )
  violations.merge(probe.violations.toJSON())
}

/** How many extra users measure the framework's memory per user. */
const MEMORY_PROBE_USERS = 2_000

/** Drops the bench's records and erases every user's memory content (in-process backend), leaving the framework's own state. */
const dropContent = (options: BenchOptions, indices: ReadonlyArray<number>, probe: Probe, observations: Observations) =>
  Effect.gen(function*() {
    observations.runs.clear()
    probe.modelTally.clear()
    if (options.backend !== "memory") return
    const memory = yield* Memory.Memory
    yield* Effect.forEach(indices, (index) => memory.forget().pipe(RunContext.withUser(plan.userId(index))), { discard: true })
  })

/**
 * The framework's memory per user: `memoryProbeUsers` more users (without
 * model latency) through the warm agent, with content and records dropped
 * before both samples. See `MemoryFigures.framework`.
 */
const memoryProbe = (bench: plan.Plan, options: BenchOptions, probe: Probe, observations: Observations) =>
  Effect.gen(function*() {
    if (bench.memoryProbeUsers === 0) return undefined
    const extra = range(bench.memoryProbeUsers).map((i) => bench.users + i)
    yield* dropContent(options, range(bench.users), probe, observations)
    const before = sampleMemory()
    probe.latency = undefined
    yield* writeBlocks(extra, 64)
    yield* runUsers(bench, extra, probe, observations)
    yield* dropContent(options, extra, probe, observations)
    return { probeUsers: extra.length, before, after: sampleMemory() }
  })

/** The bench in this process. */
export const runLocal = async (options: BenchOptions): Promise<BenchReport> => {
  const bench = plan.makePlan(options.users, options.turns, Math.min(options.users, MEMORY_PROBE_USERS))
  const indices = range(bench.users)
  const dir = mkdtempSync(join(tmpdir(), "jeeves-mt-bench-"))
  const scratch = options.backend === "postgres" ? await benchDatabase(options) : undefined
  const secret = Redacted.make(randomBytes(32).toString("hex"))
  const resources: Resources = {
    auditPath: join(dir, "audit.jsonl"),
    sqlitePath: join(dir, "memory.db"),
    databaseUrl: scratch?.url,
    auditSecret: secret
  }
  const loadBefore = loadavg()
  try {
    const warmViolations = new Violations()
    let bare: { microsPerTurn: number } | undefined
    if (options.latencyMs === 0 && options.bare) {
      progress(options, "bare loop")
      bareLoop(bench, indices.slice(0, 200))
      bare = { microsPerTurn: (bareLoop(bench, indices) * 1000) / (bench.users * bench.turns) }
    }
    progress(options, "warm-up")
    await warmUp(options, dir, warmViolations)

    const probe = new Probe(options.inject, options.latencyMs)
    probe.violations.merge(warmViolations.toJSON())
    const observations = makeObservations(bench)
    const concurrency = options.backend === "memory" ? 64 : 16
    const measured = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function*() {
          const context = yield* Layer.build(agentLayer(options, "local", bench, probe, resources))
          const memory = Context.get(context, Memory.Memory)
          const budget = Context.get(context, Budget.Budget)
          const before = sampleMemory()
          progress(options, "working blocks")
          yield* writeBlocks(indices, concurrency).pipe(Effect.provide(context))
          progress(options, `running ${bench.users} users x ${bench.turns} turns`)
          yield* runUsers(bench, indices, probe, observations).pipe(Effect.provide(context))
          const after = sampleMemory()
          const timing = { wallMs: observations.finishedAt - observations.startedAt, checkMillis: observations.checkMillis }
          yield* injectAfterRuns(bench, options, observations).pipe(Effect.provide(context))
          progress(options, "checking memory and budget")
          yield* checkState(bench, { memory, budget }, probe.modelTally, probe.violations, concurrency)
          progress(options, "verifying the audit file")
          if (options.inject === "tamper-audit") tamperAuditFile(resources.auditPath)
          const report = yield* AuditLog.verifyFile(resources.auditPath, secret)
          const audit = yield* checkAudit(
            bench,
            AuditLog.streamFile(resources.auditPath),
            report,
            observations.runs,
            probe.violations
          )
          progress(options, `memory probe: ${bench.memoryProbeUsers} more users`)
          const framework = yield* memoryProbe(bench, options, probe, observations).pipe(Effect.provide(context))
          return { before, after, framework, audit, timing }
        }).pipe(Effect.provide(NodeFileSystem.layer))
      )
    )
    return makeReport(options, probe.violations, {
      backend: options.backend,
      latencies: observations.latencies.subarray(0, bench.users * bench.turns),
      wallMs: measured.timing.wallMs,
      checkMillis: measured.timing.checkMillis,
      bare,
      memory: { gcExposed, before: measured.before, after: measured.after, framework: measured.framework },
      audit: measured.audit,
      loadBefore
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
    await scratch?.drop()
  }
}
