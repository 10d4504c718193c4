import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import { Worker } from "node:worker_threads"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer, Logger, Redacted } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { READY } from "../src/internal/auditSignProtocol.js"
import { terminateSharedWorker, testing, workerStats } from "../src/internal/auditSigner.js"
import { auditConformance } from "./support/auditConformance.js"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "signer-test-secret-0123456789"

const scratch = scratchDirectories("jeeves-signer-")
afterAll(scratch.removeAll)
const freshPath = () => join(scratch.make(), "audit.jsonl")

const fileLayer = (options: AuditLog.FileOptions) => AuditLog.layerFile(options).pipe(Layer.provide(NodeFileSystem.layer))

const append = (action: string, payload: Record<string, unknown> = {}) =>
  Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action, payload }))

const verifyFile = (path: string, keys: AuditLog.Secret | AuditLog.Keyring = SECRET) =>
  AuditLog.verifyFile(path, keys).pipe(Effect.provide(NodeFileSystem.layer))

/** Collects the messages logged while `self` runs. */
const withLogs = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const messages: Array<string> = []
    const logger = Logger.make(({ message }) => {
      messages.push(Array.isArray(message) ? message.join(" ") : String(message))
    })
    return Effect.map(self.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))), (value) => ({ value, messages }))
  })

/** The same appends as one user's run would make: batches of every size, payloads of every JSON shape. */
const workload = Effect.gen(function*() {
  const entries: Array<AuditLog.AuditEntry> = []
  entries.push(yield* append("run_started", { prompt: "héllo \u2028 \"quoted\" \\ back", n: -0, big: 1e21, tiny: 5e-7 }))
  const many = yield* Effect.forEach(
    Array.from({ length: 40 }, (_, i) => i),
    (i) => append("tool_call", { i, nested: { z: [1, { b: true, a: null }], a: "x".repeat(i) }, emoji: "👍🏽" }),
    { concurrency: "unbounded" }
  )
  entries.push(...many)
  entries.push(yield* append("run_completed", {}))
  return entries
}).pipe(RunContext.withUser("user_1", { sessionId: "sess-1" }))

describe("the audit file's signing worker", () => {
  auditConformance({
    fresh: () => {
      const path = freshPath()
      return { open: (keys) => fileLayer({ ...keys, path, signing: "inline" }) }
    },
    persistent: true
  })

  it.effect("signs in the worker, byte for byte what signing on the main thread writes", () =>
    Effect.gen(function*() {
      const before = workerStats.batches
      const inWorker = freshPath()
      const inline = freshPath()
      const signed = yield* withLogs(workload.pipe(Effect.provide(fileLayer({ path: inWorker, secret: SECRET, logId: "log_same" }))))
      const expected = yield* workload.pipe(
        Effect.provide(fileLayer({ path: inline, secret: SECRET, logId: "log_same", signing: "inline" }))
      )
      assert.isAbove(workerStats.batches, before, "the worker signed the batches")
      assert.deepStrictEqual(signed.messages, [], "no fallback warning")
      // The same entries handed back to the callers, and the same bytes on disk.
      assert.deepStrictEqual(signed.value, expected)
      assert.strictEqual(nodeFs.readFileSync(inWorker, "utf8"), nodeFs.readFileSync(inline, "utf8"))
      const report = yield* verifyFile(inWorker)
      assert.isTrue(report.valid)
      assert.strictEqual(report.validCount, 42)
    }))

  it.effect("signs with a keyring's current key id", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const keyring: AuditLog.Keyring = { current: "k2", keys: { k1: Redacted.make("first-key-0123456789"), k2: "second-key-0123456789" } }
      const before = workerStats.batches
      const entries = yield* workload.pipe(Effect.provide(fileLayer({ path, keyring })))
      assert.isAbove(workerStats.batches, before)
      assert.isTrue(entries.every((entry) => entry.keyId === "k2"))
      assert.isTrue((yield* verifyFile(path, keyring)).valid)
      assert.isFalse((yield* verifyFile(path, { current: "k2", keys: { k2: "another-key-0123456789" } })).valid)
    }))

  it.live("a worker that died while idle is replaced by a new one", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const outcome = yield* withLogs(
        Effect.gen(function*() {
          const first = yield* workload
          yield* Effect.promise(terminateSharedWorker)
          const before = workerStats.batches
          const second = yield* workload
          assert.isAbove(workerStats.batches, before, "a new worker signed")
          return [...first, ...second]
        }).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      )
      assert.deepStrictEqual(outcome.value.map((entry) => entry.seq), Array.from({ length: 84 }, (_, i) => i + 1))
      assert.deepStrictEqual(outcome.messages, [])
      const report = yield* verifyFile(path)
      assert.isTrue(report.valid)
      assert.strictEqual(report.validCount, 84)
    }))

  /** Runs `self` with the given worker in place of the real one, then puts the real one back. */
  const withBrokenWorker = <A, E, R>(code: string, self: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.promise(async () => {
        await terminateSharedWorker()
        testing.makeWorker = () => new Worker(code, { eval: true })
      }),
      () => self,
      () =>
        Effect.promise(async () => {
          testing.makeWorker = undefined
          await terminateSharedWorker()
        })
    )

  it.live("when the worker dies with a batch, that batch and the next are signed on the main thread, with a warning; nothing is lost", () =>
    Effect.gen(function*() {
      const path = freshPath()
      // Listens, then exits on the first batch it is given.
      const dying = `const { parentPort } = require("node:worker_threads")
parentPort.on("message", () => process.exit(3))
parentPort.postMessage(${JSON.stringify(READY)})`
      const outcome = yield* withBrokenWorker(
        dying,
        withLogs(Effect.zip(workload, workload).pipe(Effect.provide(fileLayer({ path, secret: SECRET }))))
      )
      const entries = [...outcome.value[0], ...outcome.value[1]]
      assert.deepStrictEqual(entries.map((entry) => entry.seq), Array.from({ length: 84 }, (_, i) => i + 1))
      const report = yield* verifyFile(path)
      assert.isTrue(report.valid)
      assert.strictEqual(report.validCount, 84)
      assert.deepStrictEqual(
        outcome.messages.filter((message) => message.includes("the signing worker cannot sign")).length,
        1,
        `one warning, saying why: ${JSON.stringify(outcome.messages)}`
      )
      assert.include(outcome.messages[0]!, "exited (code 3)")
    }))

  it.live("when the worker cannot start, the log signs on the main thread, with a warning", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const outcome = yield* withBrokenWorker(
        `throw new Error("no worker here")`,
        withLogs(workload.pipe(Effect.provide(fileLayer({ path, secret: SECRET }))))
      )
      assert.strictEqual(outcome.value.length, 42)
      assert.isTrue((yield* verifyFile(path)).valid)
      assert.strictEqual(outcome.messages.length, 1, JSON.stringify(outcome.messages))
      assert.include(outcome.messages[0]!, "no worker here")

      // The real worker again for the next log.
      const before = workerStats.batches
      yield* workload.pipe(Effect.provide(fileLayer({ path: freshPath(), secret: SECRET })))
      assert.isAbove(workerStats.batches, before)
    }))
})
