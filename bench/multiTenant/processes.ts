/**
 * Several processes sharing one Postgres database: the parent creates the
 * database, starts N workers (each runs its share of the users through its
 * own shared Agent over PgBudget, PgMemory and PgAuditLog), releases them at
 * once, and then checks the shared state itself — the same checks as one
 * process, reading the ledger, the memory and the single audit chain back
 * from Postgres.
 */
import { Context, Effect, Layer, Redacted, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { AuditLog, Budget, Memory } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import * as PgBudget from "jeevesagent/PgBudget"
import * as PgMemory from "jeevesagent/PgMemory"
import { agentLayer, budgetConfig, pgClientLayer, Probe, type Resources } from "./agent.js"
import { checkAudit, checkState } from "./checks.js"
import type { BenchOptions } from "./options.js"
import * as plan from "./plan.js"
import { benchDatabase } from "./postgres.js"
import { type BenchReport, makeReport, type MemorySample } from "./report.js"
import { gcExposed, injectAfterRuns, progress, range, sampleMemory, warmUp } from "./run.js"
import { Violations, type ViolationsJson } from "./violations.js"
import { makeObservations, runUsers, writeBlocks } from "./workload.js"

/** Lines of the parent-worker protocol start with this; anything else a worker prints is passed through. */
const PREFIX = "@@bench "
const WORKER_ENV = "JEEVES_BENCH_WORKER"
const SECRET_ENV = "JEEVES_BENCH_AUDIT_SECRET"

interface WorkerInput {
  readonly options: BenchOptions
  readonly worker: number
  readonly databaseUrl: string
}

interface WorkerResult {
  readonly violations: ViolationsJson
  /** `[run id, slot]` of every run. */
  readonly runs: ReadonlyArray<readonly [string, number]>
  /** `[slot, ms]`. */
  readonly latencies: ReadonlyArray<readonly [number, number]>
  /** `[user index, usage the model reported]`. */
  readonly tally: ReadonlyArray<readonly [number, plan.Usage]>
  readonly startedAt: number
  readonly finishedAt: number
  readonly checkMillis: number
  readonly memory: { readonly before: MemorySample; readonly after: MemorySample }
}

/** Resolves once the line is handed to the pipe, so the process may exit after it. */
const send = (message: unknown): Promise<void> =>
  new Promise((resolve) => process.stdout.write(`${PREFIX}${JSON.stringify(message)}\n`, () => resolve()))

/** Whether this process was started as a worker. */
export const isWorker = (): boolean => process.env[WORKER_ENV] !== undefined

/** The worker: its users are those whose index is its number modulo the process count. */
export const runWorker = async (): Promise<void> => {
  const input = JSON.parse(process.env[WORKER_ENV]!) as WorkerInput
  const { options, worker } = input
  const bench = plan.makePlan(options.users, options.turns)
  const indices = range(bench.users).filter((index) => index % options.processes === worker)
  const probe = new Probe(options.inject, options.latencyMs)
  const observations = makeObservations(bench)
  const resources: Resources = {
    auditPath: "",
    sqlitePath: "",
    databaseUrl: input.databaseUrl,
    auditSecret: Redacted.make(process.env[SECRET_ENV]!)
  }
  const dir = mkdtempSync(join(tmpdir(), "jeeves-mt-worker-"))
  try {
    await warmUp(options, dir, probe.violations)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const go = new Promise<void>((resolve) => {
    const lines = createInterface({ input: process.stdin })
    lines.once("line", () => {
      lines.close()
      resolve()
    })
  })
  const result = await Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const context = yield* Layer.build(agentLayer(options, "shared", bench, probe, resources))
        yield* writeBlocks(indices, 8).pipe(Effect.provide(context))
        const before = sampleMemory()
        yield* Effect.promise(() => send({ type: "ready" }))
        yield* Effect.promise(() => go)
        yield* runUsers(bench, indices, probe, observations).pipe(Effect.provide(context))
        const after = sampleMemory()
        yield* injectAfterRuns(bench, options, observations).pipe(Effect.provide(context))
        return {
          violations: probe.violations.toJSON(),
          runs: [...observations.runs],
          latencies: indices.flatMap((index) =>
            range(bench.turns).map((t) => {
              const slot = index * bench.turns + t
              return [slot, observations.latencies[slot]!] as const
            })
          ),
          tally: [...probe.modelTally],
          startedAt: observations.startedAt,
          finishedAt: observations.finishedAt,
          checkMillis: observations.checkMillis,
          memory: { before, after }
        } satisfies WorkerResult
      })
    )
  )
  await send({ type: "result", result })
}

// ---- the parent ---------------------------------------------------------------------

const root = fileURLToPath(new URL("../../", import.meta.url))
const entry = fileURLToPath(new URL("../multi-tenant.ts", import.meta.url))

interface Worker {
  readonly child: ChildProcess
  readonly ready: Promise<void>
  readonly result: Promise<WorkerResult>
}

const startWorker = (options: BenchOptions, worker: number, databaseUrl: string, secret: string): Worker => {
  const input: WorkerInput = { options, worker, databaseUrl }
  const nodeArgs = [
    ...(gcExposed ? ["--expose-gc"] : []),
    ...(options.workerCpuProfileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", options.workerCpuProfileDir])
  ]
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", entry], {
    cwd: root,
    env: { ...process.env, [WORKER_ENV]: JSON.stringify(input), [SECRET_ENV]: secret },
    stdio: ["pipe", "pipe", "inherit"]
  })
  let markReady: () => void = () => undefined
  const ready = new Promise<void>((resolve) => (markReady = resolve))
  const result = new Promise<WorkerResult>((resolve, reject) => {
    let received: WorkerResult | undefined
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (!line.startsWith(PREFIX)) {
        process.stderr.write(`[worker ${worker}] ${line}\n`)
        return
      }
      const message = JSON.parse(line.slice(PREFIX.length)) as { type: "ready" } | { type: "result"; result: WorkerResult }
      if (message.type === "ready") markReady()
      else received = message.result
    })
    child.on("error", reject)
    child.on("exit", (code) => {
      if (code === 0 && received !== undefined) resolve(received)
      else reject(new Error(`worker ${worker} exited with code ${code} before reporting`))
    })
  })
  // A worker that dies before it is ready must not leave the parent waiting for it.
  return { child, ready: Promise.race([ready, result.then(() => undefined)]), result }
}

/** What the parent reads the shared state through; building it also runs every migration before the workers start. */
const readersLayer = (bench: plan.Plan, url: string, secret: string) =>
  Layer.mergeAll(
    PgBudget.layer(budgetConfig(bench)),
    PgMemory.layer(),
    PgAuditLog.layer({ secret: Redacted.make(secret) })
  ).pipe(Layer.provide(pgClientLayer(url)))

export const runParent = async (options: BenchOptions): Promise<BenchReport> => {
  const bench = plan.makePlan(options.users, options.turns)
  const scratch = await benchDatabase(options)
  const secret = randomBytes(32).toString("hex")
  const loadBefore = loadavg()
  const workers: Array<Worker> = []
  try {
    return await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function*() {
          const readers = yield* Layer.build(readersLayer(bench, scratch.url, secret))
          progress(options, `starting ${options.processes} workers`)
          for (let worker = 0; worker < options.processes; worker++) {
            workers.push(startWorker(options, worker, scratch.url, secret))
          }
          yield* Effect.promise(() => Promise.all(workers.map((w) => w.ready)))
          progress(options, "all workers ready: go")
          for (const w of workers) w.child.stdin!.end("go\n")
          const results = yield* Effect.promise(() => Promise.all(workers.map((w) => w.result)))

          const violations = new Violations()
          const runs = new Map<string, number>()
          const latencies = new Float64Array(bench.users * bench.turns).fill(Number.NaN)
          const tally = new Map<number, plan.Usage>()
          for (const result of results) {
            violations.merge(result.violations)
            for (const [runId, slot] of result.runs) runs.set(runId, slot)
            for (const [slot, ms] of result.latencies) latencies[slot] = ms ?? Number.NaN
            for (const [index, usage] of result.tally) tally.set(index, plan.addUsage(tally.get(index) ?? plan.zeroUsage, usage))
          }
          progress(options, "checking the shared memory and budget ledger")
          const memory = Context.get(readers, Memory.Memory)
          const budget = Context.get(readers, Budget.Budget)
          yield* checkState(bench, { memory, budget }, tally, violations, 16)
          progress(options, "verifying the shared audit chain")
          const audit = Context.get(readers, AuditLog.AuditLog)
          const entries = yield* audit.query()
          const report = yield* audit.verify
          // The standalone verifier too, over the entries as read: it shares nothing with the log's writer.
          const standalone = yield* AuditLog.verifyEntries(entries, secret)
          violations.expectEqual("audit-verify", "standalone verification of the shared chain", standalone.valid, true)
          const summary = yield* checkAudit(bench, Stream.fromIterable(entries), report, runs, violations)

          const startedAt = Math.min(...results.map((r) => r.startedAt))
          const finishedAt = Math.max(...results.map((r) => r.finishedAt))
          const sum = (pick: (r: WorkerResult) => MemorySample): MemorySample => ({
            heap: results.reduce((total, r) => total + pick(r).heap, 0),
            rss: results.reduce((total, r) => total + pick(r).rss, 0)
          })
          return makeReport(options, violations, {
            backend: "postgres (PgBudget, PgMemory, PgAuditLog)",
            latencies,
            wallMs: finishedAt - startedAt,
            checkMillis: results.reduce((total, r) => total + r.checkMillis, 0),
            bare: undefined,
            memory: { gcExposed, before: sum((r) => r.memory.before), after: sum((r) => r.memory.after), framework: undefined },
            audit: summary,
            loadBefore
          })
        })
      )
    )
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill()
    await scratch.drop()
  }
}
