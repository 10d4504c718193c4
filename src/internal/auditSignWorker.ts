/**
 * The audit file's signing worker: a worker thread that signs batches of
 * entries ({@link signBatch}), taking the HMAC, the chain hash and the
 * canonical JSON of every entry off the main thread (which still serializes
 * and hands over the drafts, well under 1 µs each). It holds no chain state:
 * each request carries the head, the key and the drafts, and the answer the
 * text to append, each entry's signature and hash, and the new head. When
 * the request names the log file's descriptor, the worker appends the bytes
 * to it and syncs it too, so a batch costs the main thread one turn of its
 * event loop (the answer) instead of three (the answer, the write, the
 * sync); a busy main thread takes a while to get to each.
 *
 * @internal
 */
import { fsyncSync, writeSync } from "node:fs"
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

const messageOf = (error: unknown): string => error instanceof Error ? error.message : String(error)

const empty = new Uint8Array(0)

/** Appends all of `bytes` to `fd` (a write may take part of them), then syncs it if asked. */
const appendAll = (fd: number, bytes: Uint8Array, sync: boolean): void => {
  let offset = 0
  while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset)
  if (sync) fsyncSync(fd)
}

const answer = (request: SignRequest): SignReply => {
  let bytes: Uint8Array
  let signed: ReturnType<typeof signBatch>
  try {
    const drafts = JSON.parse(request.drafts) as ReadonlyArray<Draft>
    const signing = { keyId: request.keyId, key: keyOf(request.key) }
    signed = signBatch(request.head, request.logId, signing, drafts, request.now)
    bytes = encoder.encode(signed.text)
  } catch (error) {
    return { id: request.id, ok: false, error: messageOf(error), wrote: false }
  }
  if (request.fd === undefined) return { id: request.id, ok: true, bytes, chain: signed.chain, head: signed.head }
  try {
    appendAll(request.fd, bytes, request.sync === true)
  } catch (error) {
    return { id: request.id, ok: false, error: messageOf(error), wrote: true }
  }
  return { id: request.id, ok: true, bytes: empty, written: bytes.length, chain: signed.chain, head: signed.head }
}

const started = !isMainThread && parentPort !== null &&
  (workerData as { readonly jeevesagentAuditSigner?: unknown } | null)?.jeevesagentAuditSigner === true

if (started) {
  const port = parentPort!
  port.on("message", (request: SignRequest) => {
    const reply = answer(request)
    // The bytes move to the main thread rather than being copied.
    if (reply.ok && reply.bytes.length > 0) port.postMessage(reply, [reply.bytes.buffer as ArrayBuffer])
    else port.postMessage(reply)
  })
  port.postMessage(READY)
}
