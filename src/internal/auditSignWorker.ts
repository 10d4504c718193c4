/**
 * The audit file's signing worker: a worker thread that signs batches of
 * entries ({@link signBatch}), taking the HMAC, the chain hash and the
 * canonical JSON of every entry off the main thread (which still serializes
 * and hands over the drafts, well under 1 µs each). It holds no chain state:
 * each request carries the head, the key and the drafts, and the answer the
 * text to append, each entry's signature and hash, and the new head. The
 * main thread writes and syncs the bytes itself.
 *
 * @internal
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads"
import { type Draft, type HmacKey, hmacKeyOfBytes, signBatch } from "./auditChain.js"
import { READY, type SignReply, type SignRequest } from "./auditSignProtocol.js"

/** Prepared keys by their bytes: a handful of logs (and rotations) per process. */
const keys = new Map<string, HmacKey>()
const KEYS_KEPT = 16

const keyOf = (bytes: Uint8Array): HmacKey => {
  const id = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")
  let key = keys.get(id)
  if (key === undefined) {
    if (keys.size >= KEYS_KEPT) keys.clear()
    key = hmacKeyOfBytes(bytes)
    keys.set(id, key)
  }
  return key
}

const encoder = new TextEncoder()

const answer = (request: SignRequest): SignReply => {
  try {
    const drafts = JSON.parse(request.drafts) as ReadonlyArray<Draft>
    const signing = { keyId: request.keyId, key: keyOf(request.key) }
    const signed = signBatch(request.head, request.logId, signing, drafts, request.now)
    return { id: request.id, ok: true, bytes: encoder.encode(signed.text), chain: signed.chain, head: signed.head }
  } catch (error) {
    return { id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) }
  }
}

const started = !isMainThread && parentPort !== null &&
  (workerData as { readonly jeevesagentAuditSigner?: unknown } | null)?.jeevesagentAuditSigner === true

if (started) {
  const port = parentPort!
  port.on("message", (request: SignRequest) => {
    const reply = answer(request)
    // The bytes move to the main thread rather than being copied.
    if (reply.ok) port.postMessage(reply, [reply.bytes.buffer as ArrayBuffer])
    else port.postMessage(reply)
  })
  port.postMessage(READY)
}
