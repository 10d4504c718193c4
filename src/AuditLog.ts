/**
 * The audit log: who did what, attributed to a user, tamper-evident.
 *
 * The agent appends `run_started`, `tool_call`, `tool_result`, decision and
 * `run_completed` entries, each with the run's user, session and run id.
 *
 * @example
 * ```ts
 * import { AuditLog } from "jeevesagent"
 *
 * const NoAudit = AuditLog.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"

/**
 * Who caused an entry.
 *
 * @since 0.1.0
 * @category models
 */
export type Actor = "user" | "model" | "system"

/**
 * One entry, exactly as it is stored (see "Audit file format" in the README).
 *
 * @since 0.1.0
 * @category models
 */
export interface AuditEntry {
  readonly seq: number
  readonly timestamp: string
  readonly logId: string
  readonly keyId: string
  readonly sessionId: string
  readonly userId: string | null
  readonly runId: string
  readonly actor: Actor
  readonly action: string
  readonly payload: unknown
  readonly prevHash: string
  readonly signature: string
}

/**
 * What the caller appends; user, session and run come from the current
 * `RunContext`.
 *
 * @since 0.1.0
 * @category models
 */
export interface AppendInput {
  readonly actor: Actor
  readonly action: string
  readonly payload: Readonly<Record<string, unknown>>
}

/**
 * Filters of {@link Service.query}; all given filters must match.
 *
 * @since 0.1.0
 * @category models
 */
export interface QueryFilter {
  readonly userId?: string | null | undefined
  readonly sessionId?: string | undefined
  readonly action?: string | undefined
  readonly runId?: string | undefined
  readonly since?: Date | undefined
  readonly until?: Date | undefined
}

/**
 * Why verification stopped.
 *
 * @since 0.1.0
 * @category models
 */
export type VerifyFailure =
  | "signature"
  | "chain"
  | "seq_gap"
  | "duplicate"
  | "bad_json"
  | "torn_tail"
  | "unknown_key"

/**
 * The result of verifying a log.
 *
 * @since 0.1.0
 * @category models
 */
export interface VerifyReport {
  readonly valid: boolean
  /** Entries verified before the first problem (all of them when valid). */
  readonly validCount: number
  readonly firstBadSeq?: number | undefined
  readonly failure?: VerifyFailure | undefined
  readonly detail?: string | undefined
}

/**
 * The audit log cannot be written or read.
 *
 * @since 0.1.0
 * @category errors
 */
export class AuditUnavailable extends Schema.TaggedError<AuditUnavailable>("jeevesagent/AuditUnavailable")(
  "AuditUnavailable",
  { description: Schema.String, cause: Schema.optional(Schema.Defect) }
) {
  override get message(): string {
    return `Audit log unavailable: ${this.description}`
  }
}

/**
 * The audit log service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** False for {@link layerNone}: the agent then skips auditing entirely. */
  readonly enabled: boolean
  /** Appends an entry; succeeds only once it is durably written. */
  readonly append: (input: AppendInput) => Effect.Effect<AuditEntry, AuditUnavailable>
  readonly query: (filter?: QueryFilter) => Effect.Effect<ReadonlyArray<AuditEntry>, AuditUnavailable>
  readonly verify: Effect.Effect<VerifyReport, AuditUnavailable>
}

/**
 * The audit log service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class AuditLog extends Context.Tag("jeevesagent/AuditLog")<AuditLog, Service>() {}

/**
 * No audit log. `append` fails (nothing is recorded), so callers that need
 * an audit trail notice; the agent never calls it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({
  enabled: false,
  append: () => Effect.fail(new AuditUnavailable({ description: "no audit log is configured" })),
  query: () => Effect.succeed([]),
  verify: Effect.succeed({ valid: true, validCount: 0 })
})

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<AuditLog> = Layer.succeed(AuditLog, none)
