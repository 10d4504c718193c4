/**
 * What each layer of the multi-tenant bench's agent costs per turn: the
 * same zero-latency workload through the agent with every layer on, then
 * with one layer at a time replaced by its no-op, then with all of them
 * off (the agent core). `bench/layers.ts` is the command line.
 */
import { Effect, Layer, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { Agent, AuditLog, Budget, Memory, Permissions, Telemetry } from "jeevesagent"
import { makeTools, Probe, type Resources, servicesLayer } from "./agent.js"
import { defaults } from "./options.js"
import * as plan from "./plan.js"
import { range, warmUp } from "./run.js"
import { Violations } from "./violations.js"
import { bareLoop, writeBlocks } from "./workload.js"

/** The layers a variant turns off. */
export type Layerable = "telemetry" | "audit" | "budget" | "permissions" | "memory"

export interface Variant {
  readonly name: string
  readonly off: ReadonlyArray<Layerable>
}

export const LAYERABLE: ReadonlyArray<Layerable> = ["telemetry", "audit", "budget", "permissions", "memory"]

/** Every layer on, each one off in turn, then all of them off. */
export const VARIANTS: ReadonlyArray<Variant> = [
  { name: "every layer on", off: [] },
  { name: "without telemetry", off: ["telemetry"] },
  { name: "without the audit log", off: ["audit"] },
  { name: "without the budget", off: ["budget"] },
  { name: "permissions allow all", off: ["permissions"] },
  { name: "without memory", off: ["memory"] },
  { name: "agent core (all five off)", off: LAYERABLE }
]

/** The no-op that replaces each layer (the approval gate stays: the workload's destructive tool needs it). */
const noOp: Record<Layerable, Layer.Layer<never>> = {
  telemetry: Telemetry.layerNone as Layer.Layer<never>,
  audit: AuditLog.layerNone as Layer.Layer<never>,
  budget: Budget.layerNone as Layer.Layer<never>,
  permissions: Permissions.allowAll as Layer.Layer<never>,
  memory: Memory.layerNone as Layer.Layer<never>
}

export interface LayerOptions {
  readonly users: number
  readonly rounds: number
  /** How many runs are in flight at once; `unbounded`, as `bench:multi-tenant`, starts every user together. */
  readonly concurrency: number | "unbounded"
}

export interface VariantFigures {
  readonly variant: Variant
  /** Wall µs per turn, one per round. */
  readonly microsPerTurn: ReadonlyArray<number>
  /** Runs that failed (the workload expects none). */
  readonly failures: number
}

export interface LayerReport {
  readonly options: LayerOptions
  readonly bareMicrosPerTurn: number
  readonly variants: ReadonlyArray<VariantFigures>
}

/** The bench's shared agent, with the layers of `off` replaced by their no-ops. */
export const variantLayer = (off: ReadonlyArray<Layerable>, bench: plan.Plan, probe: Probe, resources: Resources) => {
  const options = defaults({ users: bench.users, turns: 1, latencyMs: 0 })
  const services = off.reduce<Layer.Layer<any, any>>(
    (layer, name) => Layer.merge(layer, noOp[name]),
    servicesLayer(options, "local", bench, probe, resources)
  )
  return Agent.layer({ instructions: plan.INSTRUCTIONS, tools: makeTools(bench, probe), maxTurns: 4 }).pipe(
    Layer.provideMerge(services)
  )
}

/** One timed pass of `users` single-turn runs through a fresh agent of `variant`; µs per turn and failures. */
const timeVariant = (variant: Variant, options: LayerOptions, dir: string, tag: string) => {
  const bench = plan.makePlan(options.users, 1, 0)
  const probe = new Probe(undefined)
  const resources: Resources = {
    auditPath: join(dir, `audit-${tag}.jsonl`),
    sqlitePath: join(dir, `memory-${tag}.db`),
    databaseUrl: undefined,
    auditSecret: Redacted.make(randomBytes(32).toString("hex"))
  }
  const indices = range(options.users)
  return Effect.scoped(
    Effect.gen(function*() {
      const context = yield* Layer.build(variantLayer(variant.off, bench, probe, resources))
      yield* writeBlocks(indices, 64).pipe(Effect.provide(context))
      const agent = yield* Effect.provide(Agent.Agent, context)
      let failures = 0
      const started = performance.now()
      yield* Effect.forEach(
        indices,
        (index) =>
          Effect.catchAll(
            agent.run(plan.prompt(index, 1), { userId: plan.userId(index), sessionId: plan.sessionId(index) }),
            () => Effect.sync(() => void failures++)
          ),
        { concurrency: options.concurrency, discard: true }
      )
      const elapsed = performance.now() - started
      return { micros: (elapsed * 1000) / options.users, failures }
    })
  )
}

/**
 * Runs every variant `rounds` times, alternating (the order rotates each
 * round, so drift on a shared machine spreads over all of them), after an
 * untimed pass of each; a fresh agent, fresh users, for every pass.
 */
export const measureLayers = async (options: LayerOptions): Promise<LayerReport> => {
  const dir = mkdtempSync(join(tmpdir(), "jeeves-layers-bench-"))
  try {
    const bench = plan.makePlan(options.users, 1, 0)
    const indices = range(options.users)
    bareLoop(bench, indices.slice(0, 200))
    const bareMicrosPerTurn = (bareLoop(bench, indices) * 1000) / options.users
    await warmUp(defaults({ users: options.users, turns: 1, latencyMs: 0 }), dir, new Violations())
    const warm: LayerOptions = { ...options, users: Math.min(options.users, 500) }
    for (const variant of VARIANTS) await Effect.runPromise(timeVariant(variant, warm, dir, `warm-${VARIANTS.indexOf(variant)}`))
    const micros = VARIANTS.map(() => [] as Array<number>)
    const failures = VARIANTS.map(() => 0)
    for (let round = 0; round < options.rounds; round++) {
      for (let step = 0; step < VARIANTS.length; step++) {
        const at = (step + round) % VARIANTS.length
        const timed = await Effect.runPromise(timeVariant(VARIANTS[at]!, options, dir, `${round}-${at}`))
        micros[at]!.push(timed.micros)
        failures[at]! += timed.failures
      }
    }
    return {
      options,
      bareMicrosPerTurn,
      variants: VARIANTS.map((variant, at) => ({ variant, microsPerTurn: micros[at]!, failures: failures[at]! }))
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const fixed = (value: number, width: number, digits = 1) => value.toFixed(digits).padStart(width)

/** The report as a table: µs per turn (median of the rounds, and their range), and what turning the layer off saves. */
export const formatLayers = (report: LayerReport): string => {
  const all = median(report.variants[0]!.microsPerTurn)
  const concurrency = report.options.concurrency === "unbounded" ? "all users at once" : `${report.options.concurrency} in flight`
  const lines = [
    `Cost per turn by layer (${report.options.users} users x 1 turn, zero-latency model, ${concurrency}; median of ${report.options.rounds} rounds)`,
    `  ${"".padEnd(28)} ${"µs/turn".padStart(9)} ${"range".padStart(15)} ${"saves".padStart(8)} ${"turns/s".padStart(9)}`
  ]
  for (const { variant, microsPerTurn, failures } of report.variants) {
    const mid = median(microsPerTurn)
    const range = `${Math.min(...microsPerTurn).toFixed(0)}-${Math.max(...microsPerTurn).toFixed(0)}`
    const saves = variant.off.length === 0 ? "" : fixed(all - mid, 8)
    lines.push(
      `  ${variant.name.padEnd(28)} ${fixed(mid, 9)} ${range.padStart(15)} ${saves.padStart(8)} ${fixed(1e6 / mid, 9, 0)}` +
        (failures > 0 ? `   ${failures} runs failed` : "")
    )
  }
  lines.push(`  ${"bare loop (no framework)".padEnd(28)} ${fixed(report.bareMicrosPerTurn, 9)}`)
  lines.push(
    "  saves: every layer on minus the row (medians). The savings overlap (layers share spans and audit",
    "  entries), so they need not add up to every layer on minus the agent core."
  )
  return lines.join("\n")
}
