/**
 * The audit chain: keys, signing, hashing and verification of entries in the
 * "Audit file format" (see DESIGN).
 *
 * @internal
 */
import * as crypto from "node:crypto"
import * as Redacted from "effect/Redacted"
import type * as AuditLog from "../AuditLog.js"
import { canonicalize, type Json, quote } from "./auditJcs.js"

/** The `prevHash` of the first entry. @internal */
export const GENESIS_HASH = "0".repeat(64)

/** The key id of a bare `secret`. @internal */
export const DEFAULT_KEY_ID = "default"

// ---- keys -------------------------------------------------------------------

const reveal = (key: AuditLog.Secret): string => (Redacted.isRedacted(key) ? Redacted.value(key) : key)

const isKeyring = (keys: AuditLog.Secret | AuditLog.Keyring): keys is AuditLog.Keyring =>
  typeof keys === "object" && !Redacted.isRedacted(keys)

/**
 * The keys a verifier knows. A bare secret (`any`) verifies entries of every
 * key id: whoever holds it can only produce signatures with it anyway.
 *
 * @internal
 */
export interface VerifyKeys {
  readonly byId: ReadonlyMap<string, HmacKey>
  readonly any: HmacKey | undefined
}

/**
 * An HMAC-SHA256 key, prepared once: its bytes and, for the one-shot path
 * (see {@link hmacHex}), the inner pad and a buffer that starts with the
 * outer pad and ends with room for the inner digest.
 *
 * @internal
 */
export interface HmacKey {
  readonly bytes: Buffer
  readonly innerPad: Buffer
  readonly outer: Buffer
}

const SHA256_BLOCK = 64
const SHA256_BYTES = 32

// An empty key is well defined for HMAC (verifiers must be able to check such a log).
const hmacKey = (secret: string): HmacKey => hmacKeyOfBytes(Buffer.from(secret, "utf8"))

/** The key of these bytes (a copy is kept). @internal */
export const hmacKeyOfBytes = (keyBytes: Uint8Array): HmacKey => {
  const bytes = Buffer.from(keyBytes)
  // RFC 2104: a key longer than the block is hashed first; a shorter one is padded with zeros.
  const block = Buffer.alloc(SHA256_BLOCK)
  ;(bytes.length > SHA256_BLOCK ? crypto.createHash("sha256").update(bytes).digest() : bytes).copy(block)
  const innerPad = Buffer.alloc(SHA256_BLOCK)
  const outer = Buffer.alloc(SHA256_BLOCK + SHA256_BYTES)
  for (let i = 0; i < SHA256_BLOCK; i++) {
    innerPad[i] = block[i]! ^ 0x36
    outer[i] = block[i]! ^ 0x5c
  }
  return { bytes, innerPad, outer }
}

/** @internal */
export const verifyKeys = (keys: AuditLog.Secret | AuditLog.Keyring): VerifyKeys => {
  if (!isKeyring(keys)) return { byId: new Map(), any: hmacKey(reveal(keys)) }
  const byId = new Map<string, HmacKey>()
  for (const [id, key] of Object.entries(keys.keys)) byId.set(id, hmacKey(reveal(key)))
  return { byId, any: undefined }
}

/** The key new entries are signed with. @internal */
export interface SigningKey {
  readonly keyId: string
  readonly key: HmacKey
  readonly verify: VerifyKeys
}

/**
 * The signing key of the layer options, or a description of what is wrong
 * with them. An empty key is refused: an HMAC with an empty key proves
 * nothing.
 *
 * @internal
 */
export const signingKey = (options: AuditLog.KeyOptions): SigningKey | string => {
  if (options.keyring !== undefined) {
    const { current, keys } = options.keyring
    // Own keys only: "constructor" or "toString" must not find Object.prototype's members.
    const key = typeof current === "string" && Object.hasOwn(keys, current) ? keys[current] : undefined
    if (key === undefined) {
      const known = Object.keys(keys)
      return `the keyring's current key ${JSON.stringify(current)} is not one of its keys (${known.length === 0 ? "none" : known.join(", ")})`
    }
    for (const [id, value] of Object.entries(keys)) {
      if (reveal(value).length === 0) return `the keyring's key ${JSON.stringify(id)} is empty`
    }
    const verify = verifyKeys(options.keyring)
    return { keyId: current, key: verify.byId.get(current)!, verify }
  }
  if (options.secret === undefined) return "neither `secret` nor `keyring` is given"
  const secret = reveal(options.secret)
  if (secret.length === 0) return "the audit secret is empty"
  const keyId = options.keyId ?? DEFAULT_KEY_ID
  const key = hmacKey(secret)
  return { keyId, key, verify: { byId: new Map([[keyId, key]]), any: key } }
}

// ---- signing ------------------------------------------------------------------

/**
 * `crypto.hash` (Node 20.12 and later): a digest without a `Hash` object,
 * about a microsecond cheaper per call than `createHash`/`createHmac` on an
 * entry-sized text.
 */
type OneShotHash = (algorithm: string, data: string | Uint8Array, outputEncoding: "hex" | "latin1") => string
const oneShot = (crypto as { readonly hash?: OneShotHash | undefined }).hash

/** Texts longer than this are signed with `createHmac`, so the scratch buffer stays small. */
const SCRATCH_MAX_CHARS = 64 * 1024
/** The inner pad followed by the text's UTF-8 bytes. Used synchronously only, so one is enough. */
let scratch = Buffer.alloc(SHA256_BLOCK + 4 * 1024)

/**
 * Hex HMAC-SHA256 of the UTF-8 bytes of `text` (lone surrogates as U+FFFD,
 * as `createHmac(...).update(text, "utf8")` reads them). With `crypto.hash`:
 * H(outer pad ‖ H(inner pad ‖ text)) from the prepared pads, RFC 2104.
 *
 * @internal
 */
export const hmacHex = (key: HmacKey, text: string): string => {
  if (oneShot === undefined || text.length > SCRATCH_MAX_CHARS) {
    return crypto.createHmac("sha256", key.bytes).update(text, "utf8").digest("hex")
  }
  // A UTF-16 code unit takes at most 3 UTF-8 bytes.
  const needed = SHA256_BLOCK + 3 * text.length
  if (scratch.length < needed) scratch = Buffer.alloc(Math.max(needed, 2 * scratch.length))
  scratch.set(key.innerPad)
  const length = scratch.write(text, SHA256_BLOCK, "utf8")
  // "latin1": one character per digest byte, written back byte for byte.
  key.outer.write(oneShot("sha256", scratch.subarray(0, SHA256_BLOCK + length), "latin1"), SHA256_BLOCK, "latin1")
  return oneShot("sha256", key.outer, "hex")
}

/** @internal */
export const sha256Hex = (data: string | Uint8Array): string =>
  oneShot !== undefined ?
    oneShot("sha256", data, "hex") :
    typeof data === "string" ?
    crypto.createHash("sha256").update(data, "utf8").digest("hex") :
    crypto.createHash("sha256").update(data).digest("hex")

const DAY_MILLIS = 86_400_000
/** Years 1970 to 9999: `toISOString` writes four-digit years there. */
const LAST_FOUR_DIGIT_MILLIS = 253_402_300_800_000
let cachedDayStart = -1
let cachedDayPrefix = ""

const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`)

/**
 * `new Date(millis).toISOString()`, with the date part (`YYYY-MM-DDT`)
 * computed once per day: a `Date` costs more than the rest of an entry's
 * fields together.
 *
 * @internal
 */
export const isoTimestamp = (millis: number): string => {
  if (!Number.isInteger(millis) || millis < 0 || millis >= LAST_FOUR_DIGIT_MILLIS) return new Date(millis).toISOString()
  let time = millis - cachedDayStart
  if (cachedDayStart < 0 || time < 0 || time >= DAY_MILLIS) {
    cachedDayStart = millis - (millis % DAY_MILLIS)
    cachedDayPrefix = new Date(cachedDayStart).toISOString().slice(0, 11)
    time = millis - cachedDayStart
  }
  const ms = time % 1000
  const seconds = Math.floor(time / 1000)
  return `${cachedDayPrefix}${pad2(Math.floor(seconds / 3600))}:${pad2(Math.floor(seconds / 60) % 60)}:${
    pad2(seconds % 60)
  }.${ms < 10 ? "00" : ms < 100 ? "0" : ""}${ms}Z`
}

/** The fields of an entry that come from the caller and the run context. @internal */
export interface Draft {
  readonly sessionId: string
  readonly userId: string | null
  readonly runId: string
  readonly actor: AuditLog.Actor
  readonly action: string
  readonly payload: Json
}

/** Where the chain stands: the last entry's seq, hash and time (0 / genesis / 0 when empty). @internal */
export interface Head {
  readonly seq: number
  readonly hash: string
  readonly timestampMillis: number
}

/** @internal */
export const emptyHead: Head = { seq: 0, hash: GENESIS_HASH, timestampMillis: 0 }

/** An entry signed after a head: its line and signature, the chain's new head. @internal */
export interface SignedLine {
  /** JCS of the whole entry: the stored line (without the newline). */
  readonly line: string
  readonly signature: string
  readonly head: Head
}

/** @internal */
export interface Built extends SignedLine {
  readonly entry: AuditLog.AuditEntry
}

/**
 * Signs the next entry after `head`, without building its entry object.
 * Timestamps never go backwards along the chain, even if the clock does.
 *
 * @internal
 */
export const signEntry = (
  head: Head,
  logId: string,
  signing: Pick<SigningKey, "keyId" | "key">,
  draft: Draft,
  nowMillis: number
): SignedLine => {
  const timestampMillis = Math.max(nowMillis, head.timestampMillis)
  const seq = head.seq + 1
  // The members in JCS order, written directly: the fields are fixed and known,
  // so only the payload needs the general canonicalization.
  const before = `{"action":${quote(draft.action)},"actor":${quote(draft.actor)},` +
    `"keyId":${quote(signing.keyId)},"logId":${quote(logId)},"payload":${canonicalize(draft.payload)},` +
    `"prevHash":"${head.hash}","runId":${quote(draft.runId)},"seq":${seq},` +
    `"sessionId":${quote(draft.sessionId)}`
  const after = `"timestamp":"${isoTimestamp(timestampMillis)}","userId":${draft.userId === null ? "null" : quote(draft.userId)}}`
  const signature = hmacHex(signing.key, `${before},${after}`)
  const line = `${before},"signature":"${signature}",${after}`
  return { line, signature, head: { seq, hash: sha256Hex(line), timestampMillis } }
}

/**
 * Signs the next entry after `head` (see {@link signEntry}) and builds it.
 *
 * @internal
 */
export const buildEntry = (
  head: Head,
  logId: string,
  signing: Pick<SigningKey, "keyId" | "key">,
  draft: Draft,
  nowMillis: number
): Built => {
  const signed = signEntry(head, logId, signing, draft, nowMillis)
  const timestamp = isoTimestamp(signed.head.timestampMillis)
  const entry = entryOf(draft, signed.head.seq, timestamp, logId, signing.keyId, head.hash, signed.signature)
  return { entry, line: signed.line, signature: signed.signature, head: signed.head }
}

/** The entry of a draft, once its place in the chain and its signature are known. */
const entryOf = (
  draft: Draft,
  seq: number,
  timestamp: string,
  logId: string,
  keyId: string,
  prevHash: string,
  signature: string
): AuditLog.AuditEntry => ({
  seq,
  timestamp,
  logId,
  keyId,
  sessionId: draft.sessionId,
  userId: draft.userId,
  runId: draft.runId,
  actor: draft.actor,
  action: draft.action,
  payload: draft.payload,
  prevHash,
  signature
})

/** What signing a batch of drafts after a head gives (see {@link signBatch}). @internal */
export interface SignedBatch {
  /** The entries' lines, each followed by a newline. */
  readonly text: string
  /** Per entry, in order: its signature then its hash, 64 hex characters each. */
  readonly chain: string
  /** The chain's head after the last entry. */
  readonly head: Head
}

/** Hex characters per digest. */
const HEX_DIGEST = 2 * SHA256_BYTES

/**
 * Signs `drafts` one after the other after `head`, as {@link buildEntry}
 * does, keeping only what the entries cannot be rebuilt from without the
 * key: the text to append and each entry's signature and hash. The audit
 * file's signers run this; {@link batchEntryAt} rebuilds the entries from
 * it.
 *
 * @internal
 */
export const signBatch = (
  head: Head,
  logId: string,
  signing: Pick<SigningKey, "keyId" | "key">,
  drafts: ReadonlyArray<Draft>,
  nowMillis: number
): SignedBatch => {
  let next = head
  let text = ""
  let chain = ""
  for (const draft of drafts) {
    const signed = signEntry(next, logId, signing, draft, nowMillis)
    text += `${signed.line}\n`
    chain += signed.signature + signed.head.hash
    next = signed.head
  }
  return { text, chain, head: next }
}

/** The entry of a committed batch at an index, built when asked for. @internal */
export type EntryAt = (index: number) => AuditLog.AuditEntry

/**
 * The entries of a batch signed by {@link signBatch} from the same `head`,
 * `logId`, key id and `drafts`, each built only when asked for (an entry
 * submitted without waiting is never read): the same objects
 * {@link buildEntry} makes. Every entry of a batch has the batch's
 * timestamp (the later of its clock reading and the previous head's).
 *
 * @internal
 */
export const batchEntryAt = (
  head: Head,
  logId: string,
  keyId: string,
  drafts: ReadonlyArray<Draft>,
  signed: Pick<SignedBatch, "chain" | "head">
): EntryAt => {
  let timestamp: string | undefined
  return (index) => {
    timestamp ??= isoTimestamp(signed.head.timestampMillis)
    const at = 2 * HEX_DIGEST * index
    const prevHash = index === 0 ? head.hash : signed.chain.slice(at - HEX_DIGEST, at)
    return entryOf(drafts[index]!, head.seq + 1 + index, timestamp, logId, keyId, prevHash, signed.chain.slice(at, at + HEX_DIGEST))
  }
}

/**
 * The canonical text that was signed: the canonical entry without its
 * `signature` member. After `signature` come only `timestamp` and `userId`,
 * whose string values cannot contain an unescaped quote, so the last
 * occurrence of the member's text is the top-level one.
 *
 * @internal
 */
export const unsignedText = (canonical: string, signature: string): string | undefined => {
  const member = `,"signature":"${signature}"`
  const at = canonical.lastIndexOf(member)
  return at === -1 ? undefined : canonical.slice(0, at) + canonical.slice(at + member.length)
}

// ---- reading ------------------------------------------------------------------

const FIELDS = [
  "action",
  "actor",
  "keyId",
  "logId",
  "payload",
  "prevHash",
  "runId",
  "seq",
  "sessionId",
  "signature",
  "timestamp",
  "userId"
] as const
const HEX64 = /^[0-9a-f]{64}$/

/**
 * Checks that `value` has the shape of an entry; returns what is wrong, or
 * `undefined`.
 *
 * @internal
 */
export const shapeProblem = (value: unknown): string | undefined => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object"
  const record = value as Record<string, unknown>
  const keys = Object.keys(record)
  for (const key of keys) {
    if (!(FIELDS as ReadonlyArray<string>).includes(key)) return `unexpected field ${JSON.stringify(key)}`
  }
  for (const field of FIELDS) {
    if (!(field in record)) return `missing field ${JSON.stringify(field)}`
  }
  const { seq, userId, payload } = record
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) return "seq is not a positive integer"
  for (const field of ["timestamp", "logId", "keyId", "sessionId", "runId", "actor", "action"] as const) {
    if (typeof record[field] !== "string") return `${field} is not a string`
  }
  if (userId !== null && typeof userId !== "string") return "userId is neither a string nor null"
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return "payload is not a JSON object"
  if (typeof record.prevHash !== "string" || !HEX64.test(record.prevHash)) return "prevHash is not 64 lowercase hex digits"
  if (typeof record.signature !== "string" || !HEX64.test(record.signature)) return "signature is not 64 lowercase hex digits"
  return undefined
}

/**
 * Parses one stored line into an entry, or says why it is not one. Lines must
 * be in canonical form: that also rejects duplicate member names, which two
 * JSON parsers could resolve differently.
 *
 * @internal
 */
export const parseLine = (text: string): { readonly entry: AuditLog.AuditEntry } | { readonly problem: string } => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return { problem: `not JSON (${error instanceof Error ? error.message : String(error)})` }
  }
  const problem = shapeProblem(value)
  if (problem !== undefined) return { problem }
  const canonical = canonicalOf(value)
  if (canonical === undefined) return { problem: "nested too deeply to canonicalize" }
  if (canonical !== text) return { problem: "not in canonical (JCS) form" }
  return { entry: value as AuditLog.AuditEntry }
}

/** JCS of a parsed value; undefined when it is nested too deeply for the stack (hostile input). */
const canonicalOf = (value: unknown): string | undefined => {
  try {
    return canonicalize(value)
  } catch {
    return undefined
  }
}

// ---- checkpoints -----------------------------------------------------------------

/** What a checkpoint's canonical text says it is: no entry has a `type` member, so no entry's signed text is a checkpoint's. */
const CHECKPOINT_TYPE = "jeevesagent/audit-checkpoint/1"

/** The canonical text a checkpoint's signature covers. */
const checkpointText = (c: Omit<AuditLog.Checkpoint, "signature">): string =>
  `{"hash":${quote(c.hash)},"keyId":${quote(c.keyId)},"logId":${quote(c.logId)},"seq":${c.seq},` +
  `"timestamp":${quote(c.timestamp)},"type":"${CHECKPOINT_TYPE}"}`

/**
 * A signed checkpoint of `head` (its seq and hash) in log `logId`.
 *
 * @internal
 */
export const signCheckpoint = (
  signing: Pick<SigningKey, "keyId" | "key">,
  logId: string,
  head: Head,
  nowMillis: number
): AuditLog.Checkpoint => {
  const unsigned = { logId, seq: head.seq, hash: head.hash, timestamp: isoTimestamp(nowMillis), keyId: signing.keyId }
  return { ...unsigned, signature: hmacHex(signing.key, checkpointText(unsigned)) }
}

/** The log id a given checkpoint names (whatever it is). */
const logIdOf = (value: unknown): unknown => typeof value === "object" && value !== null ? (value as { logId?: unknown }).logId : undefined

/** A checkpoint read back: its fields, or what is wrong with it. */
const readCheckpoint = (value: unknown, keys: VerifyKeys): AuditLog.Checkpoint | string => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "it is not an object"
  const c = value as Record<string, unknown>
  if (typeof c.logId !== "string") return "its logId is not a string"
  if (typeof c.seq !== "number" || !Number.isSafeInteger(c.seq) || c.seq < 1) return "its seq is not a positive integer"
  if (typeof c.hash !== "string" || !HEX64.test(c.hash)) return "its hash is not 64 lowercase hex digits"
  if (typeof c.timestamp !== "string" || typeof c.keyId !== "string") return "its timestamp or keyId is not a string"
  if (typeof c.signature !== "string" || !HEX64.test(c.signature)) return "its signature is not 64 lowercase hex digits"
  const checkpoint = c as unknown as AuditLog.Checkpoint
  const key = keys.byId.get(checkpoint.keyId) ?? keys.any
  if (key === undefined) return `it is signed with key ${JSON.stringify(checkpoint.keyId)}, which is not in the keyring`
  const expected = Buffer.from(hmacHex(key, checkpointText(checkpoint)), "hex")
  const actual = Buffer.from(checkpoint.signature, "hex")
  if (!crypto.timingSafeEqual(actual, expected)) return "its signature does not match its contents"
  return checkpoint
}

// ---- verification -------------------------------------------------------------

const signatureMatches = (key: HmacKey, canonical: string, signature: string): boolean => {
  const unsigned = unsignedText(canonical, signature)
  if (unsigned === undefined) return false
  const expected = Buffer.from(hmacHex(key, unsigned), "hex")
  const actual = Buffer.from(signature, "hex")
  return actual.length === expected.length && crypto.timingSafeEqual(actual, expected)
}

/** @internal */
export interface VerifierOptions {
  /** The log the entries must belong to; by default the first entry's. */
  readonly logId?: string | undefined
  /** Checkpoints kept outside the log (see `AuditLog.Checkpoint`); those of other logs are ignored. */
  readonly checkpoints?: Iterable<unknown> | undefined
}

/**
 * Verifies a chain one entry at a time and stops at the first problem.
 * Order of checks per entry: shape, key, signature, seq, log, prevHash — so a
 * deleted line is a seq gap (its neighbours are authentic) and a line spliced
 * in from another log that shares the key is a chain break.
 *
 * @internal
 */
export class ChainVerifier {
  private validCount = 0
  private lastSeq = 0
  private lastHash = GENESIS_HASH
  private lastTimestampMillis = 0
  private logId: string | undefined
  private failed: AuditLog.VerifyReport | undefined
  private torn: { readonly offset: number; readonly bytes: number } | undefined
  /** The checkpoints given, until the log's id is known; then `byId`'s, by seq. */
  private pendingCheckpoints: Array<unknown> | undefined
  private checkpointHashes: Map<number, Array<string>> | undefined
  private newestCheckpoint = 0
  private anchored = 0
  /** Checkpoints given, and the log ids they name (a log replaced by another one matches none of them). */
  private givenCheckpoints = 0
  private checkpointLogs: Set<unknown> | undefined

  constructor(private readonly keys: VerifyKeys, options?: VerifierOptions) {
    this.logId = options?.logId
    if (options?.checkpoints !== undefined) {
      this.pendingCheckpoints = Array.from(options.checkpoints)
      this.givenCheckpoints = this.pendingCheckpoints.length
      this.checkpointLogs = new Set(this.pendingCheckpoints.map(logIdOf))
      this.checkpointHashes = new Map()
      if (this.logId !== undefined) this.takeCheckpoints(this.logId, 0)
    }
  }

  /**
   * Keeps the checkpoints of `logId`, each checked; fails at the first bad
   * one. (A checkpoint of another log whose signature does not verify is
   * skipped with the rest of that log's: it says nothing about this one.)
   */
  private takeCheckpoints(logId: string, line: number): boolean {
    const given = this.pendingCheckpoints
    if (given === undefined) return true
    this.pendingCheckpoints = undefined
    let position = 0
    for (const value of given) {
      position++
      if (typeof value === "object" && value !== null && (value as { logId?: unknown }).logId !== logId) continue
      const checkpoint = readCheckpoint(value, this.keys)
      if (typeof checkpoint === "string") {
        return this.fail("checkpoint_mismatch", this.lastSeq + 1, line, `checkpoint ${position} of log ${JSON.stringify(logId)}: ${checkpoint}`)
      }
      const hashes = this.checkpointHashes!.get(checkpoint.seq)
      if (hashes === undefined) this.checkpointHashes!.set(checkpoint.seq, [checkpoint.hash])
      else hashes.push(checkpoint.hash)
      if (checkpoint.seq > this.newestCheckpoint) this.newestCheckpoint = checkpoint.seq
    }
    return true
  }

  get ok(): boolean {
    return this.failed === undefined
  }

  /** The chain head after the entries verified so far. */
  get head(): Head {
    return { seq: this.lastSeq, hash: this.lastHash, timestampMillis: this.lastTimestampMillis }
  }

  get currentLogId(): string | undefined {
    return this.logId
  }

  /** Verifies one stored line (`line` is its 1-based number). */
  pushLine(text: string, line: number): boolean {
    if (this.failed !== undefined) return false
    const parsed = parseLine(text)
    if ("problem" in parsed) return this.fail("bad_json", this.lastSeq + 1, line, `line ${line}: ${parsed.problem}`)
    return this.check(parsed.entry, line, text)
  }

  /** Verifies one entry given as a value (memory, database rows, callers' arrays). */
  pushEntry(value: unknown, position: number): boolean {
    if (this.failed !== undefined) return false
    const problem = shapeProblem(value)
    if (problem !== undefined) return this.fail("bad_json", this.lastSeq + 1, position, `entry ${position}: ${problem}`)
    const canonical = canonicalOf(value)
    if (canonical === undefined) {
      return this.fail("bad_json", this.lastSeq + 1, position, `entry ${position}: not JSON, or nested too deeply`)
    }
    return this.check(value as AuditLog.AuditEntry, position, canonical)
  }

  /** Records a torn final line: reported, but not a failure (it was never acknowledged). */
  tornTail(offset: number, bytes: number): void {
    if (this.failed === undefined) this.torn = { offset, bytes }
  }

  /** Fails with `reason` unless already failed (used by stores that know more, e.g. a chain head row). */
  fail(reason: AuditLog.VerifyFailure, seq: number, line: number, detail: string): false {
    if (this.failed === undefined) {
      this.failed = { valid: false, validCount: this.validCount, firstBadSeq: seq, failure: reason, line, detail }
    }
    return false
  }

  report(): AuditLog.VerifyReport {
    if (this.failed !== undefined) return this.failed
    if (this.pendingCheckpoints !== undefined) {
      // No entry named the log: every checkpoint given is taken as one of it.
      const ids = new Set(this.pendingCheckpoints.map(logIdOf))
      const only = ids.size === 1 ? [...ids][0] : undefined
      if (typeof only === "string") this.takeCheckpoints(only, this.validCount + 1)
      else if (this.pendingCheckpoints.length > 0) {
        this.fail("checkpoint_missing", 1, 1, "the log has no entries, but checkpoints were given for it")
      }
      if (this.failed !== undefined) return this.failed
    }
    if (this.givenCheckpoints > 0 && this.newestCheckpoint === 0) {
      const logs = [...this.checkpointLogs!].map((id) => JSON.stringify(id)).join(", ")
      this.fail(
        "checkpoint_missing",
        1,
        1,
        `none of the ${this.givenCheckpoints} checkpoints is of this log (${JSON.stringify(this.logId)}); they are of ${logs}: ` +
          "the file may have been replaced by another log, or emptied and started again"
      )
      return this.failed!
    }
    if (this.newestCheckpoint > this.lastSeq) {
      this.fail(
        "checkpoint_missing",
        this.lastSeq + 1,
        this.validCount + 1,
        `a checkpoint says the log reached seq ${this.newestCheckpoint}, but its entries end at seq ${this.lastSeq}: ` +
          "entries were cut off, or the log was rolled back to an older copy"
      )
      return this.failed!
    }
    const anchors = this.checkpointHashes === undefined ? {} : {
      anchoredSeq: this.anchored,
      ...(this.lastSeq > this.anchored ? { unanchoredTail: { fromSeq: this.anchored + 1, toSeq: this.lastSeq } } : {})
    }
    const base = {
      valid: true,
      validCount: this.validCount,
      lastSeq: this.lastSeq,
      lastHash: this.lastHash,
      logId: this.logId,
      ...anchors
    }
    if (this.torn === undefined) return base
    return {
      ...base,
      firstBadSeq: this.lastSeq + 1,
      failure: "torn_tail",
      line: this.validCount + 1,
      tornTail: this.torn,
      detail: `the last ${this.torn.bytes} bytes (from offset ${this.torn.offset}) are an unterminated line: ` +
        "a write interrupted by a crash, never acknowledged"
    }
  }

  private check(entry: AuditLog.AuditEntry, line: number, canonical: string): boolean {
    const key = this.keys.byId.get(entry.keyId) ?? this.keys.any
    if (key === undefined) {
      return this.fail("unknown_key", entry.seq, line, `seq ${entry.seq} is signed with key ${JSON.stringify(entry.keyId)}, which is not in the keyring`)
    }
    if (!signatureMatches(key, canonical, entry.signature)) {
      return this.fail("signature", entry.seq, line, `seq ${entry.seq}: the signature does not match its contents (key ${JSON.stringify(entry.keyId)})`)
    }
    const expected = this.lastSeq + 1
    if (entry.seq < expected) {
      return this.fail("duplicate", entry.seq, line, `seq ${entry.seq} appears again after seq ${this.lastSeq}`)
    }
    if (entry.seq > expected) {
      return this.fail("seq_gap", entry.seq, line, `expected seq ${expected}, found ${entry.seq}: entries are missing or out of order`)
    }
    if (this.logId === undefined) {
      this.logId = entry.logId
      if (!this.takeCheckpoints(entry.logId, line)) return false
    }
    if (entry.logId !== this.logId) {
      return this.fail("chain", entry.seq, line, `seq ${entry.seq} belongs to log ${JSON.stringify(entry.logId)}, not ${JSON.stringify(this.logId)}`)
    }
    if (entry.prevHash !== this.lastHash) {
      return this.fail("chain", entry.seq, line, `seq ${entry.seq}: prevHash does not match the hash of seq ${this.lastSeq}`)
    }
    const hash = sha256Hex(canonical)
    const checkpointed = this.checkpointHashes?.get(entry.seq)
    if (checkpointed !== undefined) {
      if (checkpointed.some((h) => h !== hash)) {
        return this.fail(
          "checkpoint_mismatch",
          entry.seq,
          line,
          `seq ${entry.seq} is not the entry its checkpoint recorded: the log was rewritten from there, or rolled back and written again`
        )
      }
      this.anchored = entry.seq
    }
    this.validCount++
    this.lastSeq = entry.seq
    this.lastHash = hash
    const millis = Date.parse(entry.timestamp)
    this.lastTimestampMillis = Number.isNaN(millis) ? this.lastTimestampMillis : millis
    return true
  }
}

/** @internal */
export const verifyAll = (
  entries: Iterable<unknown>,
  keys: VerifyKeys,
  options?: VerifierOptions
): AuditLog.VerifyReport => {
  const verifier = new ChainVerifier(keys, options)
  let position = 0
  for (const entry of entries) {
    if (!verifier.pushEntry(entry, ++position)) break
  }
  return verifier.report()
}

// ---- queries -------------------------------------------------------------------

/** Whether `entry` passes every filter that is set. @internal */
export const matches = (entry: AuditLog.AuditEntry, filter: AuditLog.QueryFilter | undefined): boolean => {
  if (filter === undefined) return true
  if (filter.userId !== undefined && entry.userId !== filter.userId) return false
  if (filter.sessionId !== undefined && entry.sessionId !== filter.sessionId) return false
  if (filter.action !== undefined && entry.action !== filter.action) return false
  if (filter.runId !== undefined && entry.runId !== filter.runId) return false
  if (filter.since !== undefined || filter.until !== undefined) {
    const millis = Date.parse(entry.timestamp)
    if (filter.since !== undefined && !(millis >= filter.since.getTime())) return false
    if (filter.until !== undefined && !(millis < filter.until.getTime())) return false
  }
  return true
}
