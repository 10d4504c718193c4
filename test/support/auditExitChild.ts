/**
 * A process that uses a file audit log with the signing worker and then has
 * nothing left to do: it must exit on its own. `idle`: opens and closes the
 * log without an append; `append`: appends a batch the worker signs, then
 * closes; `unclosed`: appends and never closes the log's scope.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Exit, Layer, Scope } from "effect"
import { AuditLog } from "jeevesagent"
import { startWorker, workerReady, workerStats } from "../../src/internal/auditSigner.js"

const [path, mode] = process.argv.slice(2) as [string, "idle" | "append" | "unclosed"]
const layer = AuditLog.layerFile({ path, secret: "exit-test-secret-0123456789" }).pipe(Layer.provide(NodeFileSystem.layer))
const appendMany = Effect.flatMap(AuditLog.AuditLog, (audit) =>
  Effect.forEach(Array.from({ length: 64 }, (_, i) => i), (i) => audit.append({ actor: "system", action: "step", payload: { i } }), {
    concurrency: "unbounded",
    discard: true
  }))

// The starting worker does not keep the process alive (nothing waits for it): this wait does.
const keepAlive = setInterval(() => {}, 1_000)
await startWorker()
clearInterval(keepAlive)
const program = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(layer, scope)
  if (mode !== "idle") yield* appendMany.pipe(Effect.provide(context))
  if (mode !== "unclosed") yield* Scope.close(scope, Exit.void)
})
await Effect.runPromise(program)
process.stdout.write(`ready=${workerReady()} batches=${workerStats.batches}\n`)
