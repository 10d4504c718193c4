/**
 * The messages between the audit file's writer and its signing worker
 * (`auditSignWorker.ts`).
 *
 * @internal
 */
import type { Draft, Head } from "./auditChain.js"

/** A batch to sign. @internal */
export interface SignRequest {
  readonly id: number
  readonly keyId: string
  /** The HMAC key's bytes. */
  readonly key: Uint8Array
  readonly logId: string
  readonly head: Head
  readonly now: number
  readonly drafts: ReadonlyArray<Draft>
}

/** The signed batch (its bytes transferred, not copied), or why it could not be signed. @internal */
export type SignReply =
  | { readonly id: number; readonly ok: true; readonly bytes: Uint8Array; readonly chain: string; readonly head: Head }
  | { readonly id: number; readonly ok: false; readonly error: string }

/** The worker's first message, once it listens. @internal */
export const READY = "jeevesagent/audit-sign-worker/ready"

/** The `workerData` the worker is started with; it does nothing without it. @internal */
export const WORKER_DATA = { jeevesagentAuditSigner: true } as const
