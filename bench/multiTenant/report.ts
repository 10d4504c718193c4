/**
 * The bench's figures and verdict, and how they are printed.
 */
import { loadavg } from "node:os"
import type { AuditLog } from "jeevesagent"
import type { BenchOptions } from "./options.js"
import { CHECKS, type Check, Violations, type ViolationsJson } from "./violations.js"

/** Heap and RSS in bytes, sampled after full garbage collections when `--expose-gc` is on. */
export interface MemorySample {
  readonly heap: number
  readonly rss: number
}

export interface MemoryFigures {
  readonly gcExposed: boolean
  /** Before the first run (layers built, nothing written yet). */
  readonly before: MemorySample
  /** After the last run: everything held, memory content and the bench's own records included. */
  readonly after: MemorySample
  /**
   * The framework's own memory per user: the heap grown by
   * `probeUsers` more users run through the same, already warm agent
   * after the checks, sampled before and after them once the bench dropped
   * its records and every user's memory content was erased with
   * `Memory.forget`. Constant costs (compiled code, buffers, pools) are in
   * both samples and cancel out. Absent when not measured.
   */
  readonly framework: { readonly probeUsers: number; readonly before: MemorySample; readonly after: MemorySample } | undefined
}

export interface Figures {
  readonly backend: string
  readonly processes: number
  readonly users: number
  readonly turns: number
  readonly runs: number
  readonly latencyMs: number
  readonly auditLog: string
  readonly telemetry: string
  readonly latency: { readonly p50: number; readonly p99: number; readonly min: number; readonly max: number }
  /** p99 of each turn number across users (turn 1 is when every user starts at once). */
  readonly p99ByTurn: ReadonlyArray<number>
  readonly wallMs: number
  readonly turnsPerSecond: number
  /** The bench's own per-run checks, inside the timed window, per turn (µs). */
  readonly checkMicrosPerTurn: number
  /** With zero latency: the same turns in a bare loop. */
  readonly bare: { readonly microsPerTurn: number } | undefined
  readonly memory: MemoryFigures
  readonly audit: { readonly entries: number; readonly valid: boolean; readonly lastSeq: number | undefined }
  readonly loadAverage: { readonly before: ReadonlyArray<number>; readonly after: ReadonlyArray<number> }
}

export interface BenchReport {
  readonly status: "PASS" | "FAIL"
  readonly violations: ViolationsJson
  readonly figures: Figures
}

export const telemetryDescription = (options: BenchOptions): string =>
  `${options.telemetry === "otel" ? "Telemetry.layerOtel (spans batched to a discarding exporter)" : "Telemetry.layer()"}` +
  (options.traceSampleRatio < 1 ? `, ${options.traceSampleRatio * 100}% of runs traced (parent-based ratio sampler)` : ", every run traced") +
  `, user ids ${options.userIdAttribute}`

export const auditDescription = (options: BenchOptions): string =>
  options.processes > 1 ?
    "PgAuditLog, one hash chain shared by every process (each append committed in a transaction)" :
    (options.auditDurability === "fsync" ?
      "file, durability fsync: an entry is acknowledged only once fsynced, so no acknowledged entry (and no " +
        "destructive call, which waits for its entry) is lost to a crash or power cut; concurrent appends share one fsync" :
      "file, durability none: acknowledged after the write only (a power cut can lose acknowledged entries)") +
      (options.auditSigning === "worker" ? "; batches signed, written and synced on the shared signing worker thread" : "; entries signed on the main thread")

/** What a run of the bench measured, for {@link makeReport}. */
export interface Measured {
  readonly backend: string
  readonly latencies: ArrayLike<number>
  readonly wallMs: number
  readonly checkMillis: number
  readonly bare: { readonly microsPerTurn: number } | undefined
  readonly memory: MemoryFigures
  readonly audit: { readonly entries: number; readonly report: AuditLog.VerifyReport }
  readonly loadBefore: ReadonlyArray<number>
}

/** The verdict (FAIL on any violation) and the figures. */
export const makeReport = (options: BenchOptions, violations: Violations, measured: Measured): BenchReport => {
  const runs = options.users * options.turns
  return {
    status: violations.any ? "FAIL" : "PASS",
    violations: violations.toJSON(),
    figures: {
      backend: measured.backend,
      processes: options.processes,
      users: options.users,
      turns: options.turns,
      runs,
      latencyMs: options.latencyMs,
      auditLog: auditDescription(options),
      telemetry: telemetryDescription(options),
      latency: latencySummary(measured.latencies),
      p99ByTurn: p99ByTurn(measured.latencies, options.turns),
      wallMs: measured.wallMs,
      turnsPerSecond: runs / (measured.wallMs / 1000),
      checkMicrosPerTurn: (measured.checkMillis * 1000) / runs,
      bare: measured.bare,
      memory: measured.memory,
      audit: { entries: measured.audit.entries, valid: measured.audit.report.valid, lastSeq: measured.audit.report.lastSeq },
      loadAverage: { before: measured.loadBefore, after: loadavg() }
    }
  }
}

/** The p99 of each turn: slot `index * turns + turn - 1` holds a user's turn. */
export const p99ByTurn = (latencies: ArrayLike<number>, turns: number): Array<number> =>
  Array.from({ length: turns }, (_, turn) => {
    const ofTurn: Array<number> = []
    for (let slot = turn; slot < latencies.length; slot += turns) ofTurn.push(latencies[slot]!)
    return latencySummary(ofTurn).p99
  })

/** p50 is the median; p99 the sorted value at index floor(0.99 n), as the original bench. */
export const latencySummary = (latencies: ArrayLike<number>) => {
  const sorted = Array.from(latencies).filter((ms) => !Number.isNaN(ms)).sort((a, b) => a - b)
  if (sorted.length === 0) return { p50: Number.NaN, p99: Number.NaN, min: Number.NaN, max: Number.NaN }
  const middle = Math.floor(sorted.length / 2)
  const p50 = sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
  return { p50, p99: sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))]!, min: sorted[0]!, max: sorted.at(-1)! }
}

const kb = (bytes: number) => `${Math.round(bytes / 1024)} KB`
const ms = (value: number) => `${value.toFixed(2)} ms`

const GROUPS: ReadonlyArray<readonly [string, ReadonlyArray<Check>]> = [
  ["isolation violations", CHECKS.isolation],
  ["budget mismatches   ", CHECKS.budget],
  ["audit failures      ", CHECKS.audit],
  ["lost episodes/errors", CHECKS.episodes]
]

export const format = (report: BenchReport): string => {
  const f = report.figures
  const violations = new Violations()
  violations.merge(report.violations)
  const rule = "=".repeat(64)
  const lines = [
    rule,
    "  Multi-tenant load bench",
    rule,
    `  backend          : ${f.backend}${f.processes > 1 ? ` (${f.processes} processes sharing one database)` : " (1 process)"}`,
    `  audit log        : ${f.auditLog}`,
    `  telemetry        : ${f.telemetry}`,
    `  users            : ${f.users}`,
    `  turns / user     : ${f.turns}`,
    `  total runs       : ${f.runs}`,
    `  model latency    : ${f.latencyMs} ms per call, 2 calls per turn`,
    "",
    `  p50 turn latency : ${ms(f.latency.p50)}`,
    `  p99 turn latency : ${ms(f.latency.p99)}`,
    `  min / max        : ${ms(f.latency.min)} / ${ms(f.latency.max)}`,
    ...(f.turns > 1 ? [`  p99 by turn      : ${f.p99ByTurn.map((p99, i) => `${i + 1}: ${p99.toFixed(0)}`).join(", ")} ms`] : []),
    `  turns per second : ${f.turnsPerSecond.toFixed(1)} (${f.runs} turns in ${(f.wallMs / 1000).toFixed(2)} s)`
  ]
  if (f.bare !== undefined) {
    const agentMicros = (f.wallMs * 1000) / f.runs
    lines.push(
      `  bare loop        : ${f.bare.microsPerTurn.toFixed(2)} µs/turn (same script and tool logic, no framework)`,
      `  agent            : ${agentMicros.toFixed(2)} µs/turn, of which the bench's own per-run checks ${f.checkMicrosPerTurn.toFixed(2)}`,
      `  overhead         : ${(agentMicros - f.checkMicrosPerTurn - f.bare.microsPerTurn).toFixed(2)} µs/turn over the bare loop`
    )
  }
  const m = f.memory
  const perUser = (bytes: number) => `${(bytes / f.users / 1024).toFixed(2)} KB/user`
  lines.push(
    "",
    `  RSS growth         : ${kb(m.after.rss - m.before.rss)}${m.gcExposed ? "" : " (no --expose-gc: figures include garbage)"}`,
    `  per-user growth    : ${perUser(m.after.heap - m.before.heap)} (heap after GC; memory content and bench records included)`,
    m.framework === undefined ?
      "  framework retained : not measured (several processes: measured per worker is the growth above)" :
      `  framework retained : ${((m.framework.after.heap - m.framework.before.heap) / m.framework.probeUsers).toFixed(0)} B/user` +
        ` (heap after GC grown by ${m.framework.probeUsers} more users; memory content erased, bench records dropped)`,
    `  load average       : ${f.loadAverage.before.map((n) => n.toFixed(2)).join(" ")} before, ${
      f.loadAverage.after.map((n) => n.toFixed(2)).join(" ")
    } after (${f.processes > 1 ? "whole machine" : "machine shared with other work"})`,
    "",
    `  audit entries        : ${f.audit.entries} (${f.audit.valid ? "chain verifies" : "VERIFICATION FAILED"})`
  )
  for (const [label, checks] of GROUPS) lines.push(`  ${label} : ${violations.total(checks)}`)
  for (const [check, count, samples] of violations.found()) {
    lines.push(`    ${check}: ${count}`)
    for (const sample of samples) lines.push(`      - ${sample}`)
  }
  lines.push(
    "",
    report.status === "PASS" ?
      "  PASS: isolation, budget accounting, audit chain and episodes hold under load" :
      "  FAIL: see the violations above"
  )
  return lines.join("\n")
}
