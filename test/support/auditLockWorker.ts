/**
 * A worker thread of this process that opens an audit file log and appends
 * one entry; posts `{ ok: true, seq }` or `{ ok: false, message }`.
 */
import { parentPort, workerData } from "node:worker_threads"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import * as AuditLog from "../../src/AuditLog.js"

const { path, secret } = workerData as { path: string; secret: string }
const layer = AuditLog.layerFile({ path, secret }).pipe(Layer.provide(NodeFileSystem.layer))
const program = Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "from worker", payload: {} }))

Effect.runPromise(Effect.either(Effect.provide(program, layer))).then(
  (result) =>
    parentPort!.postMessage(result._tag === "Right" ? { ok: true, seq: result.right.seq } : { ok: false, message: result.left.message }),
  (defect) => parentPort!.postMessage({ ok: false, message: `defect: ${String(defect)}` })
)
