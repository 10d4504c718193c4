/**
 * A child process for the audit crash test: appends to an audit file as fast
 * as it can, from several fibers, and prints one line per acknowledged append
 * — only after the append returned:
 *
 *   <seq> <signature>
 *
 * Usage: auditCrashChild <file> <secret> <fibers>
 *
 * It runs until it is killed. Payloads vary in size (up to a few pages) so
 * that a kill can land in the middle of a multi-page write.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import * as AuditLog from "../../src/AuditLog.js"
import * as RunContext from "../../src/RunContext.js"

const [path, secret, fibersArg] = process.argv.slice(2)
if (path === undefined || secret === undefined || fibersArg === undefined) {
  console.error("usage: auditCrashChild <file> <secret> <fibers>")
  process.exit(2)
}

const AuditLive = AuditLog.layerFile({ path, secret }).pipe(Layer.provide(NodeFileSystem.layer))

const worker = (fiber: number) =>
  Effect.flatMap(AuditLog.AuditLog, (audit) =>
    Effect.forever(
      audit.append({
        actor: "system",
        action: "crash_test",
        payload: { fiber, pad: "x".repeat(Math.floor(Math.random() * 5000)) }
      }).pipe(
        // stdout is a pipe: on Linux the write is synchronous, so a printed seq was acknowledged first.
        Effect.flatMap((entry) => Effect.sync(() => process.stdout.write(`${entry.seq} ${entry.signature}\n`)))
      )
    )).pipe(RunContext.withUser(`writer_${fiber}`))

const program = Effect.forEach(Array.from({ length: Number(fibersArg) }, (_, i) => i), worker, {
  concurrency: "unbounded",
  discard: true
}).pipe(Effect.provide(AuditLive))

Effect.runPromise(program).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error))
  process.exit(3)
})
