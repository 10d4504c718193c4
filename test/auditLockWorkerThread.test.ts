/**
 * The same-pid lock takeover (a lock naming this pid that is not in `heldLocks` is taken as left by
 * an earlier incarnation) keys "held by this process" on a `globalValue` — which is per JavaScript
 * realm, not per process. A worker thread (`node:worker_threads`) has the same `process.pid` and its
 * own globals: it finds the main thread's live lock, sees its own pid, does not find the lock in ITS
 * `heldLocks`, and "takes over the lock of a process that is gone" — two writers on one chain.
 * (Before the lock recorded start times, `isAlive(process.pid)` refused the second writer.)
 */
import { assert, describe, it } from "@effect/vitest"
import { createRequire } from "node:module"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "lock-worker-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-lock-worker-")
afterAll(scratch.removeAll)

const inWorker = (path: string) =>
  Effect.async<{ ok: boolean; seq?: number; message?: string }, Error>((resume) => {
    // tsx registered inside the worker (a worker does not take `--import` hooks of its own).
    const api = createRequire(import.meta.url).resolve("tsx/esm/api").replace(/\.cjs$/, ".mjs")
    const entry = new URL("./support/auditLockWorker.ts", import.meta.url).href
    const code = `import(${JSON.stringify(pathToFileURL(api).href)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}) })`
    const worker = new Worker(code, { eval: true, workerData: { path, secret: SECRET } })
    worker.once("message", (message) => {
      resume(Effect.succeed(message))
      void worker.terminate()
    })
    worker.once("error", (error) => resume(Effect.fail(error)))
  })

describe("AuditLog.layerFile lock across worker threads", () => {
  it.live("a worker thread of this process cannot open a log the main thread has open", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      const layer = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))
      const outcome = yield* Effect.gen(function*() {
        const audit = yield* AuditLog.AuditLog
        yield* audit.append({ actor: "system", action: "main thread", payload: {} })
        // The log is open here (its lock held) while the worker tries.
        return yield* inWorker(path)
      }).pipe(Effect.provide(layer))
      // Before the fix: { ok: true, seq: 2 } — the worker took the live lock over and wrote to the same chain.
      assert.isFalse(outcome.ok, `the worker opened the log: ${JSON.stringify(outcome)}`)
      assert.include(outcome.message ?? "", "already open for writing by this process")
    }))
})
