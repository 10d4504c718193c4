/**
 * The messages between the audit file's writer and its signing worker
 * (`auditSignWorker.ts`).
 *
 * @internal
 */
import type { Head } from "./auditChain.js"

/** A batch to sign. @internal */
export interface SignRequest {
  readonly id: number
  readonly keyId: string
  /** The HMAC key's bytes. */
  readonly key: Uint8Array
  readonly logId: string
  readonly head: Head
  readonly now: number
  /**
   * The drafts, as `JSON.stringify` writes them. (Posting the objects costs
   * the sending thread several times more; the string is copied into the
   * message as it is, which costs the sending thread less than encoding it
   * to UTF-8 bytes to transfer. A payload is JSON already, so parsing gives
   * back the same values, as far as canonical JSON can tell.)
   */
  readonly drafts: string
  /**
   * The log file's descriptor (opened for appending by the main thread; a
   * worker shares the process's descriptors): the worker appends the
   * batch's bytes to it itself, and syncs it when `sync`, before it
   * answers. Without it, the bytes come back for the main thread to write.
   */
  readonly fd?: number | undefined
  readonly sync?: boolean | undefined
}

/**
 * The signed batch — its bytes transferred, not copied, or, when the request
 * named a file, how many bytes the worker appended (and synced) — or why it
 * could not be signed. `wrote`: `true`, the failure came while appending or
 * syncing, so the file may hold part of the batch; `false`, it came before
 * anything was written; absent, the main thread checks the file (a cut-back).
 *
 * @internal
 */
export type SignReply =
  | {
    readonly id: number
    readonly ok: true
    readonly bytes: Uint8Array
    readonly written?: number | undefined
    readonly chain: string
    readonly head: Head
  }
  | { readonly id: number; readonly ok: false; readonly error: string; readonly wrote?: boolean | undefined }

/** What every version of the worker's first message starts with. @internal */
export const READY_PREFIX = "jeevesagent/audit-sign-worker/ready/"

/**
 * The worker's first message, once it listens: it names the protocol's
 * version, so a worker of another version of the library is never used.
 *
 * @internal
 */
export const READY = `${READY_PREFIX}3`

/** The `workerData` the worker is started with; it does nothing without it. @internal */
export const WORKER_DATA = { jeevesagentAuditSigner: true } as const
