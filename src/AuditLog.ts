/**
 * The audit log: who did what, attributed to a user, tamper-evident.
 *
 * The agent appends `run_started`, `tool_call`, `tool_result`, decision and
 * `run_completed` entries, each with the run's user, session and run id.
 * Entries form a hash chain: each carries a sequence number, the SHA-256 of
 * the previous entry and an HMAC-SHA256 signature over its RFC 8785
 * canonical form (see "Audit file format" in DESIGN.md), so edits, deleted,
 * reordered, duplicated and spliced entries are all detected by
 * {@link verifyEntries} / {@link verifyFile}. Payloads are redacted before
 * they are signed.
 *
 * @example
 * ```ts
 * import { NodeFileSystem } from "@effect/platform-node"
 * import { Effect, Layer, Redacted } from "effect"
 * import { Agent, AuditLog } from "jeevesagent"
 *
 * const secret = Redacted.make("a long random key from your secret store")
 *
 * // One JSON line per entry, fsynced before an append is acknowledged.
 * const AuditLive = AuditLog.layerFile({ path: "var/audit.jsonl", secret }).pipe(
 *   Layer.provide(NodeFileSystem.layer)
 * )
 * const Services = Layer.mergeAll(Agent.layerDefaults, AuditLive)
 *
 * // Later, anywhere (also `jeevesagent audit verify FILE --secret-env NAME`):
 * const report = AuditLog.verifyFile("var/audit.jsonl", secret).pipe(
 *   Effect.provide(NodeFileSystem.layer)
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { open } from "node:fs/promises"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as internal from "./internal/audit.js"
import * as chain from "./internal/auditChain.js"
import * as file from "./internal/auditFile.js"

/**
 * Who caused an entry.
 *
 * @since 0.1.0
 * @category models
 */
export type Actor = "user" | "model" | "system"

/**
 * One entry, exactly as it is stored (see "Audit file format" in DESIGN.md).
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
  /**
   * Converted as `JSON.stringify` would, redacted, and never throwing: a
   * value that cannot be read becomes `"[Unserializable]"`. A payload that
   * does not convert to an object (a parsed array, `null`) is stored as
   * `{ value: ... }`.
   */
  readonly payload: Readonly<Record<string, unknown>>
}

/**
 * Filters of {@link Service.query}; all given filters must match.
 *
 * @since 0.1.0
 * @category models
 */
export interface QueryFilter {
  /** A user's entries; `null` for the anonymous runs' only. */
  readonly userId?: string | null | undefined
  readonly sessionId?: string | undefined
  readonly action?: string | undefined
  readonly runId?: string | undefined
  /** Entries at or after this instant. */
  readonly since?: Date | undefined
  /** Entries strictly before this instant. */
  readonly until?: Date | undefined
}

/**
 * Why verification stopped: `signature` (an entry's contents do not match
 * its signature — edited, or signed with another key), `chain` (its
 * `prevHash` is not the hash of the entry before it, or it belongs to another
 * log), `seq_gap` (entries missing or out of order), `duplicate` (a seq seen
 * before), `bad_json` (not an entry in canonical form), `unknown_key` (its key
 * id is not in the keyring) and `torn_tail` (the last line was cut short by a
 * crash: never acknowledged, so the report stays valid). With
 * {@link VerifyOptions.checkpoints}: `checkpoint_missing` (a checkpoint says
 * the log reached a seq its entries do not: cut off, or rolled back to an
 * older copy) and `checkpoint_mismatch` (the entry at a checkpointed seq is
 * not the one checkpointed, or a checkpoint of the log does not verify).
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
  | "checkpoint_missing"
  | "checkpoint_mismatch"

/**
 * The result of verifying a log.
 *
 * @since 0.1.0
 * @category models
 */
export interface VerifyReport {
  /** True when every entry verifies; a torn tail (see {@link VerifyFailure}) leaves it true. */
  readonly valid: boolean
  /** Entries verified before the first problem (all of them when valid). */
  readonly validCount: number
  /** The seq of the first bad entry (for unreadable lines and torn tails: the seq expected there). */
  readonly firstBadSeq?: number | undefined
  readonly failure?: VerifyFailure | undefined
  /** A readable account of the problem. */
  readonly detail?: string | undefined
  /** The 1-based line (or position in the entries) of the problem. */
  readonly line?: number | undefined
  /** When valid: the last seq and the hash the next entry must carry as `prevHash`. */
  readonly lastSeq?: number | undefined
  readonly lastHash?: string | undefined
  /** When valid: the log the entries belong to (undefined when there are none). */
  readonly logId?: string | undefined
  /** The unterminated final line, by byte offset and length. */
  readonly tornTail?: { readonly offset: number; readonly bytes: number } | undefined
  /** With checkpoints, when valid: the newest checkpointed seq found in the log (0 when none). */
  readonly anchoredSeq?: number | undefined
  /**
   * With checkpoints, when valid: the entries after the newest checkpoint.
   * Their chain verifies, but no checkpoint vouches that the log did not
   * end later: entries after them could have been cut off.
   */
  readonly unanchoredTail?: { readonly fromSeq: number; readonly toSeq: number } | undefined
}

/**
 * A checkpoint: a signed statement, made by the writer and kept outside the
 * log, that log `logId` had reached entry `seq`, whose hash (the `prevHash`
 * of the entry after it) is `hash`. The chain alone cannot show that entries
 * were cut off the end of a file, or that the file was replaced by an older
 * copy of itself; checkpoints kept where the writer of the file cannot
 * rewrite them can ({@link VerifyOptions.checkpoints}). `signature` is the
 * hex HMAC-SHA256, with the key of `keyId`, of the JCS of the other fields
 * plus `"type": "jeevesagent/audit-checkpoint/1"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Checkpoint {
  readonly logId: string
  readonly seq: number
  readonly hash: string
  /** When it was made (ISO-8601 UTC). */
  readonly timestamp: string
  readonly keyId: string
  readonly signature: string
}

/**
 * Where a file log publishes its checkpoints ({@link FileOptions.checkpoints}).
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointOptions {
  /**
   * Stores one checkpoint somewhere the process writing the log cannot
   * rewrite it: a database table without UPDATE or DELETE grants, object
   * storage with a retention lock, a SIEM, another machine
   * ({@link checkpointFile} appends them to a file). Called one at a time:
   * a call still running (past the 30 s wait, say) is waited for before the
   * next, and the log's close waits for it too.
   * A failure, a defect or a rejected promise is logged as a warning and
   * never fails an append; the next checkpoint covers everything before it.
   * After a failure the sink rests 1 s before it is tried again, twice as
   * long after each failure in a row (at most `interval`), so a sink that is
   * down is not called, nor a warning logged, for every batch.
   */
  readonly sink: (checkpoint: Checkpoint) => Effect.Effect<unknown, unknown> | PromiseLike<unknown>
  /** A checkpoint once this many entries were written since the last one (default 100). */
  readonly everyEntries?: number | undefined
  /** ... and at least this often while new entries come in (default 1 minute); one more when the log closes. */
  readonly interval?: Duration.DurationInput | undefined
}

/**
 * An HMAC key: the UTF-8 bytes of the string are the key.
 *
 * @since 0.1.0
 * @category models
 */
export type Secret = string | Redacted.Redacted<string>

/**
 * Keys by id, for rotation: new entries are signed with `current`, every
 * entry is verified with the key its `keyId` names.
 *
 * @since 0.1.0
 * @category models
 */
export interface Keyring {
  readonly current: string
  readonly keys: Readonly<Record<string, Secret>>
}

/**
 * How a log signs: one `secret` (key id `"default"`, or `keyId`), or a
 * `keyring`. An empty key is refused.
 *
 * @since 0.1.0
 * @category models
 */
export type KeyOptions =
  | { readonly secret: Secret; readonly keyId?: string | undefined; readonly keyring?: undefined }
  | { readonly keyring: Keyring; readonly secret?: undefined; readonly keyId?: undefined }

/**
 * Options of {@link layerMemory}.
 *
 * @since 0.1.0
 * @category models
 */
export type MemoryOptions = KeyOptions & {
  /** The log's id, written in every entry; a new `log_...` id by default. */
  readonly logId?: string | undefined
}

/**
 * Options of {@link layerFile}.
 *
 * @since 0.1.0
 * @category models
 */
export type FileOptions = KeyOptions & {
  /** The JSONL file; its parent directories are created. */
  readonly path: string
  /**
   * `"fsync"` (default): an append is acknowledged after its line is written
   * and fsynced (appends waiting meanwhile share the next fsync).
   * `"none"`: after the write only — fast, but a power loss can lose
   * acknowledged entries.
   */
  readonly durability?: "fsync" | "none" | undefined
  /** The log's id: taken from the file when it has entries (they must match), else a new `log_...` id. */
  readonly logId?: string | undefined
  /**
   * Where entries are signed (canonical JSON, HMAC, chain hash: about 4 µs
   * each). `"worker"` (default): batches of 8 entries or more are signed on
   * one worker thread the process shares among its audit files, which moves
   * most of that cost off the event loop; smaller batches, and every batch
   * while the worker is starting or cannot sign (it cannot start, died,
   * failed the batch or did not answer within 10 s), are signed on the main
   * thread, with a warning logged once per failure; the worker is ended and
   * tried again 30 seconds later. The worker also appends and syncs the
   * batches it signs (one event-loop turn per batch instead of three); if
   * it may have written part of a batch it then failed, the file is cut
   * back before the batch is written on the main thread, and if it reports
   * that writing failed, the batch fails as a failed write does. An append
   * is acknowledged only once its batch is written (and synced), either
   * way; no append waits for the worker to start, and the worker never
   * keeps the process alive when it has no batch to sign. `"inline"`:
   * always on the main thread.
   */
  readonly signing?: "worker" | "inline" | undefined
  /**
   * Publishes checkpoints of the chain's head, so that cutting entries off
   * the end of the file, or rolling it back to an older copy, is detected
   * by verifying it with them ({@link VerifyOptions.checkpoints}). Off by
   * default. Needs a fixed `logId` (else the layer fails with
   * `AuditUnavailable`): a file emptied or deleted and written again must
   * still be the log its checkpoints name.
   */
  readonly checkpoints?: CheckpointOptions | undefined
}

/**
 * Options of {@link verifyEntries} and {@link verifyFile}.
 *
 * @since 0.1.0
 * @category models
 */
export interface VerifyOptions {
  /** Require the entries to belong to this log (catches a whole file copied from another log). */
  readonly logId?: string | undefined
  /**
   * Checkpoints of the log, from wherever its writer published them
   * ({@link readCheckpoints} reads a {@link checkpointFile}); those of other
   * logs are ignored, but at least one must be of this log. The log must
   * hold every checkpointed entry, unchanged: otherwise the report fails
   * with `checkpoint_missing` or `checkpoint_mismatch`. A valid report then gives `anchoredSeq` and
   * the `unanchoredTail`.
   */
  readonly checkpoints?: Iterable<Checkpoint> | undefined
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
 * The audit file is damaged somewhere other than a torn final line, so it is
 * not opened for writing (appending after damage would bury the evidence).
 * `report` says where and why; the file is left untouched.
 *
 * @since 0.1.0
 * @category errors
 */
export class AuditCorrupted extends Schema.TaggedError<AuditCorrupted>("jeevesagent/AuditCorrupted")(
  "AuditCorrupted",
  { path: Schema.String, report: Schema.Any }
) {
  override get message(): string {
    const report = this.report as VerifyReport
    return `Audit log ${this.path} is damaged (${report.failure} at seq ${report.firstBadSeq}, line ${report.line}): ` +
      `${report.detail}. It was not opened; investigate before moving it aside.`
  }
}

/**
 * The errors of the audit log's constructors and methods.
 *
 * @since 0.1.0
 * @category errors
 */
export type AuditLogError = AuditUnavailable | AuditCorrupted

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
  /** Entries matching every given filter, oldest first. */
  readonly query: (filter?: QueryFilter) => Effect.Effect<ReadonlyArray<AuditEntry>, AuditUnavailable>
  /** Verifies the whole log with the layer's keys. */
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

/**
 * An audit log held in memory (lost with the process): for tests and
 * short-lived programs. Payloads are redacted with the `Secrets` service's
 * `redact` when one is provided to this layer, else with
 * `Secrets.redactPatterns`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options: MemoryOptions): Effect.Effect<Service, AuditUnavailable> =>
  Effect.gen(function*() {
    const signing = yield* internal.requireSigningKey(options)
    const redact = yield* internal.currentRedact
    return internal.makeService(internal.makeMemoryStore(signing, options.logId), redact)
  })

/**
 * The layer of {@link makeMemory}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MemoryOptions): Layer.Layer<AuditLog, AuditUnavailable> =>
  Layer.effect(AuditLog, makeMemory(options))

/**
 * An append-only JSONL file with one writer fiber. Appends are acknowledged
 * once written (and fsynced, by default); concurrent appends share fsyncs.
 * Opening verifies the whole file and recovers the chain: a torn final line
 * (a crash mid-write) is moved to `<path>.broken`, logged and recorded as a
 * `log_recovered` entry; any other damage fails with {@link AuditCorrupted}.
 * After a failed write or fsync every later append fails (the file's state
 * is unknown), so the agent denies destructive tools. One process writes a
 * file (a `<path>.lock` file enforces it); for several, use `PgAuditLog`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeFile = (
  options: FileOptions
): Effect.Effect<Service, AuditLogError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function*() {
    const signing = yield* internal.requireSigningKey(options)
    const redact = yield* internal.currentRedact
    const store = yield* file.makeFileStore(options, signing)
    return internal.makeService(store, redact)
  })

/**
 * The layer of {@link makeFile}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFile = (options: FileOptions): Layer.Layer<AuditLog, AuditLogError, FileSystem.FileSystem> =>
  Layer.scoped(AuditLog, makeFile(options))

/**
 * Verifies entries (in chain order) with a secret or keyring. A bare secret
 * verifies entries of any key id; a keyring reports `unknown_key` for ids it
 * lacks.
 *
 * @since 0.1.0
 * @category verification
 */
export const verifyEntries = (
  entries: Iterable<unknown>,
  keys: Secret | Keyring,
  options?: VerifyOptions
): Effect.Effect<VerifyReport> => Effect.sync(() => chain.verifyAll(entries, chain.verifyKeys(keys), options))

/**
 * Verifies an audit file line by line (large files stream). Fails only when
 * the file cannot be read; every kind of damage is in the report.
 *
 * @since 0.1.0
 * @category verification
 */
export const verifyFile = (
  path: string,
  keys: Secret | Keyring,
  options?: VerifyOptions
): Effect.Effect<VerifyReport, AuditUnavailable, FileSystem.FileSystem> =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    Effect.map(file.scanFile(fs, path, chain.verifyKeys(keys), options), ({ verifier }) => verifier.report()))

/**
 * A checkpoint sink ({@link CheckpointOptions.sink}) that appends each
 * checkpoint as a JSON line to `path` and syncs it. Put the file where the
 * process writing the log cannot rewrite it (another volume, an append-only
 * mount, a directory shipped off the machine); {@link readCheckpoints} reads
 * it back for {@link verifyFile}. A line a crash cut short is cut off before
 * the next checkpoint is written (or, where the file cannot be cut, ended).
 *
 * @since 0.1.0
 * @category checkpoints
 */
export const checkpointFile = (path: string): CheckpointOptions["sink"] => async (checkpoint) => {
  const handle = await open(path, "a+")
  try {
    // A write cut short by a crash left a line without its newline: cut it off (it was never
    // acknowledged), or where the file cannot be cut (an append-only mount), end it.
    const { size } = await handle.stat()
    let prefix = ""
    if (size > 0) {
      const tail = Buffer.alloc(Math.min(size, 64 * 1024))
      await handle.read(tail, 0, tail.length, size - tail.length)
      if (tail[tail.length - 1] !== 0x0a) {
        const newline = tail.lastIndexOf(0x0a)
        const keep = newline >= 0 ? size - tail.length + newline + 1 : tail.length === size ? 0 : -1
        const cut = keep < 0 ? false : await handle.truncate(keep).then(() => true, () => false)
        if (!cut) prefix = "\n"
      }
    }
    await handle.writeFile(`${prefix}${JSON.stringify(checkpoint)}\n`)
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * The checkpoints of a {@link checkpointFile}, for
 * {@link VerifyOptions.checkpoints}. A missing file holds none. A line that is
 * not JSON is skipped: a write cut short by a crash (ended with a newline
 * where the file could not be cut, an append-only mount), and anything else
 * no checkpoint either — each checkpoint is signed, and the verifier checks
 * every one's fields and signature. An unreadable file fails with
 * `AuditUnavailable`.
 *
 * @since 0.1.0
 * @category checkpoints
 */
export const readCheckpoints = (path: string): Effect.Effect<ReadonlyArray<Checkpoint>, AuditUnavailable, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const unreadable = (cause: unknown) =>
      new AuditUnavailable({ description: `cannot read the checkpoints in ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
    if (!(yield* Effect.mapError(fs.exists(path), unreadable))) return []
    const text = yield* Effect.mapError(fs.readFileString(path), unreadable)
    const checkpoints: Array<Checkpoint> = []
    const lines = text.split("\n")
    for (const line of lines) {
      if (line.trim() === "") continue
      try {
        checkpoints.push(JSON.parse(line) as Checkpoint)
      } catch {
        // A write cut short by a crash: no checkpoint.
      }
    }
    return checkpoints
  })

/**
 * The entries of an audit file that match `filter`, read line by line
 * (without verifying them; see {@link verifyFile}). A torn final line is
 * skipped; any other unreadable line fails the stream.
 *
 * @since 0.1.0
 * @category queries
 */
export const streamFile = (
  path: string,
  filter?: QueryFilter
): Stream.Stream<AuditEntry, AuditUnavailable, FileSystem.FileSystem> =>
  Stream.unwrap(Effect.map(FileSystem.FileSystem, (fs) => file.streamEntries(fs, path, filter)))
