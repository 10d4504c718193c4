/**
 * Options of the multi-tenant bench and their command line.
 */

export type Backend = "memory" | "sqlite" | "postgres"

export type AuditDurability = "fsync" | "none"

/** Where the file audit log signs its entries (`AuditLog.FileOptions.signing`). */
export type AuditSigning = "worker" | "inline"

/** `otel`: `Telemetry.layerOtel` through the OpenTelemetry SDK (spans batched to an exporter that discards them); `effect`: `Telemetry.layer()` (effect's own tracer and metrics). */
export type TelemetryKind = "otel" | "effect"

/**
 * Deliberate violations, to prove each check can fail:
 * - `tool-wrong-user`: the whoami tool reports (and records) another user for one call;
 * - `skip-charge`: the budget releases instead of settling one model call of user_0;
 * - `leak-episode`: an episode of another user is written into user_0's memory;
 * - `lose-episode`: user_0's episodes are erased after the run;
 * - `misattribute-audit`: an audit entry of one of user_0's runs is written as another user;
 * - `tamper-audit`: one line of the audit file is edited after the run (file audit log only).
 */
export const INJECTIONS = [
  "tool-wrong-user",
  "skip-charge",
  "leak-episode",
  "lose-episode",
  "misattribute-audit",
  "tamper-audit"
] as const

export type Injection = (typeof INJECTIONS)[number]

export interface BenchOptions {
  readonly users: number
  readonly turns: number
  /** Latency of every model call, in ms. */
  readonly latencyMs: number
  readonly backend: Backend
  /** More than 1: worker processes sharing one Postgres database (backend postgres only). */
  readonly processes: number
  readonly auditDurability: AuditDurability
  readonly auditSigning: AuditSigning
  readonly telemetry: TelemetryKind
  /**
   * The share of runs traced (otel only): below 1, a parent-based sampler
   * over a trace-id ratio, as production deployments sample. Default 1:
   * every span of every run.
   */
  readonly traceSampleRatio: number
  /** How user ids appear in span and metric attributes (the library's default is `hashed`). */
  readonly userIdAttribute: "raw" | "hashed" | "omit"
  /** With zero latency: also time the same workload in a bare loop (no framework). */
  readonly bare: boolean
  /** The Postgres server the bench creates its scratch database on. */
  readonly postgresUrl: string
  /** An existing, empty database to use as is (not created nor dropped) instead of a scratch one. */
  readonly database?: string | undefined
  readonly inject?: Injection | undefined
  /** With several processes: each worker writes a CPU profile (`node --cpu-prof`) into this directory. */
  readonly workerCpuProfileDir?: string | undefined
  /** Progress lines on stderr. */
  readonly verbose: boolean
}

/** A bad command line or combination of options. */
export class UsageError extends Error {}

export const DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"

export const defaults = (overrides: Partial<BenchOptions> = {}): BenchOptions => ({
  users: 500,
  turns: 5,
  latencyMs: 1000,
  backend: "memory",
  processes: 1,
  auditDurability: "fsync",
  auditSigning: "worker",
  telemetry: "otel",
  traceSampleRatio: 1,
  userIdAttribute: "hashed",
  bare: true,
  postgresUrl: process.env.JEEVES_BENCH_PG_URL ?? DEFAULT_POSTGRES_URL,
  verbose: false,
  ...overrides
})

const positiveInteger = (name: string, text: string | undefined, allowZero = false): number => {
  const value = Number(text)
  if (text === undefined || !Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new UsageError(`--${name} needs a ${allowZero ? "non-negative" : "positive"} integer, got ${JSON.stringify(text)}`)
  }
  return value
}

const oneOf = <A extends string>(name: string, text: string | undefined, values: ReadonlyArray<A>): A => {
  if (text === undefined || !(values as ReadonlyArray<string>).includes(text)) {
    throw new UsageError(`--${name} is one of ${values.join(", ")}, got ${JSON.stringify(text)}`)
  }
  return text as A
}

/** Parses the command line (without the worker flags); throws an Error naming a bad flag. */
export const parseArgs = (argv: ReadonlyArray<string>): BenchOptions => {
  const options: { -readonly [K in keyof BenchOptions]: BenchOptions[K] } = { ...defaults() }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    const value = () => argv[++i]
    switch (flag) {
      case "--users":
        options.users = positiveInteger("users", value())
        break
      case "--turns":
        options.turns = positiveInteger("turns", value())
        break
      case "--latency-ms":
        options.latencyMs = positiveInteger("latency-ms", value(), true)
        break
      case "--backend":
        options.backend = oneOf("backend", value(), ["memory", "sqlite", "postgres"] as const)
        break
      case "--processes":
        options.processes = positiveInteger("processes", value())
        break
      case "--audit-durability":
        options.auditDurability = oneOf("audit-durability", value(), ["fsync", "none"] as const)
        break
      case "--audit-signing":
        options.auditSigning = oneOf("audit-signing", value(), ["worker", "inline"] as const)
        break
      case "--telemetry":
        options.telemetry = oneOf("telemetry", value(), ["otel", "effect"] as const)
        break
      case "--trace-sample-ratio": {
        const text = value()
        const ratio = Number(text)
        if (text === undefined || text.trim() === "" || !(ratio >= 0 && ratio <= 1)) {
          throw new UsageError(`--trace-sample-ratio needs a number from 0 to 1, got ${JSON.stringify(text)}`)
        }
        options.traceSampleRatio = ratio
        break
      }
      case "--user-id-attribute":
        options.userIdAttribute = oneOf("user-id-attribute", value(), ["raw", "hashed", "omit"] as const)
        break
      case "--no-bare":
        options.bare = false
        break
      case "--inject":
        options.inject = oneOf("inject", value(), INJECTIONS)
        break
      case "--worker-cpu-prof": {
        const dir = value()
        if (dir === undefined) throw new UsageError("--worker-cpu-prof needs a directory")
        options.workerCpuProfileDir = dir
        break
      }
      case "--verbose":
        options.verbose = true
        break
      default:
        throw new UsageError(`unknown option ${JSON.stringify(flag)} (see the comment at the top of bench/multi-tenant.ts)`)
    }
  }
  validate(options)
  return options
}

export const validate = (options: BenchOptions): void => {
  if (options.processes > 1 && options.backend !== "postgres") {
    throw new UsageError("--processes above 1 needs --backend postgres (the workers share one database)")
  }
  if (options.processes > options.users) throw new UsageError("--processes cannot exceed --users")
  if (options.traceSampleRatio < 1 && options.telemetry !== "otel") {
    throw new UsageError("--trace-sample-ratio needs --telemetry otel (effect's own tracer has no sampler)")
  }
  if (options.inject === "tamper-audit" && options.processes > 1) {
    throw new UsageError("--inject tamper-audit edits the audit file; with --processes the audit log is in Postgres")
  }
}
