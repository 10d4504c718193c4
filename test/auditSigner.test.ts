import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { execFile } from "node:child_process"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Worker } from "node:worker_threads"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, ExecutionStrategy, Exit, Fiber, Layer, Logger, Redacted, Scope } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { READY, READY_PREFIX, WORKER_DATA } from "../src/internal/auditSignProtocol.js"
import { crashWorker, resetWorker, startWorker, testing, workerStats } from "../src/internal/auditSigner.js"
import { auditConformance, jcs } from "./support/auditConformance.js"
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

  const ready = Effect.promise(startWorker)

  /** Runs `self` with workers made by `make` in place of the real one, then puts the real one back. */
  const withWorker = <A, E, R>(make: () => Worker, self: Effect.Effect<A, E, R>, limits: Partial<typeof testing> = {}) =>
    Effect.acquireUseRelease(
      Effect.promise(async () => {
        await resetWorker()
        Object.assign(testing, { makeWorker: make, ...limits })
      }),
      () => self,
      () =>
        Effect.promise(async () => {
          Object.assign(testing, { makeWorker: undefined, startupTimeoutMillis: 10_000, answerTimeoutMillis: 10_000 })
          await resetWorker()
        })
    )

  /** A worker running `code` (CommonJS, `parentPort` in scope). */
  const fake = (code: string) => () =>
    new Worker(`const { parentPort } = require("node:worker_threads");\n${code}`, { eval: true })

  /** Every entry acknowledged once, in order, and the file verifies. */
  const intact = (path: string, entries: ReadonlyArray<AuditLog.AuditEntry>) =>
    Effect.gen(function*() {
      assert.deepStrictEqual(entries.map((entry) => entry.seq), Array.from({ length: entries.length }, (_, i) => i + 1))
      const report = yield* verifyFile(path)
      assert.isTrue(report.valid, report.detail)
      assert.strictEqual(report.validCount, entries.length)
    })

  const warnings = (messages: ReadonlyArray<string>) => messages.filter((message) => message.includes("the signing worker:"))

  it.effect("signs in the worker: the entries and the file are byte for byte what signing on the main thread gives", () =>
    Effect.gen(function*() {
      yield* ready
      const before = workerStats.batches
      const inWorker = freshPath()
      const inline = freshPath()
      const signed = yield* withLogs(workload.pipe(Effect.provide(fileLayer({ path: inWorker, secret: SECRET, logId: "log_same" }))))
      const expected = yield* workload.pipe(
        Effect.provide(fileLayer({ path: inline, secret: SECRET, logId: "log_same", signing: "inline" }))
      )
      assert.isAbove(workerStats.batches, before, "the worker signed the batches")
      assert.deepStrictEqual(signed.messages, [], "no fallback warning")
      assert.deepStrictEqual(signed.value, expected)
      assert.strictEqual(nodeFs.readFileSync(inWorker, "utf8"), nodeFs.readFileSync(inline, "utf8"))
      yield* intact(inWorker, signed.value)
      const stored = yield* AuditLog.AuditLog.pipe(
        Effect.flatMap((audit) => audit.query()),
        Effect.provide(fileLayer({ path: inWorker, secret: SECRET }))
      )
      // Compared canonically: a -0 in a payload reads back as 0, and members come back in canonical order.
      assert.deepStrictEqual(stored.map(jcs), signed.value.map(jcs), "what append returned is what was written")
    }))

  it.live("signs with a keyring's current key id", () =>
    Effect.gen(function*() {
      yield* ready
      const path = freshPath()
      const keyring: AuditLog.Keyring = { current: "k2", keys: { k1: Redacted.make("first-key-0123456789"), k2: "second-key-0123456789" } }
      const before = workerStats.batches
      const entries = yield* workload.pipe(Effect.provide(fileLayer({ path, keyring })))
      assert.isAbove(workerStats.batches, before)
      assert.isTrue(entries.every((entry) => entry.keyId === "k2"))
      assert.isTrue((yield* verifyFile(path, keyring)).valid)
      assert.isFalse((yield* verifyFile(path, { current: "k2", keys: { k2: "another-key-0123456789" } })).valid)
    }))

  it.live("a worker that crashes while idle: the next batches are signed on the main thread, with one warning; nothing is lost", () =>
    Effect.gen(function*() {
      yield* ready
      const path = freshPath()
      const outcome = yield* withLogs(
        Effect.gen(function*() {
          const first = yield* workload
          yield* Effect.promise(crashWorker)
          const before = workerStats.batches
          const second = yield* workload
          assert.strictEqual(workerStats.batches, before, "signed on the main thread")
          return [...first, ...second]
        }).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      )
      yield* intact(path, outcome.value)
      assert.strictEqual(warnings(outcome.messages).length, 1, JSON.stringify(outcome.messages))
      assert.include(warnings(outcome.messages)[0]!, "exited")
      yield* Effect.promise(resetWorker)
    }))

  const listening = `parentPort.postMessage(${JSON.stringify(READY)})`
  const failures: ReadonlyArray<{
    readonly title: string
    readonly code: string
    readonly limits?: Partial<typeof testing>
    readonly warning: string
  }> = [
    {
      title: "dies with a batch",
      code: `parentPort.on("message", () => process.exit(3))\n${listening}`,
      warning: "exited (code 3)"
    },
    {
      title: "does not answer in time",
      code: `parentPort.on("message", () => {})\n${listening}`,
      limits: { answerTimeoutMillis: 50 },
      warning: "did not answer a batch"
    },
    {
      title: "answers a batch with an error",
      code: `parentPort.on("message", (m) => parentPort.postMessage({ id: m.id, ok: false, error: "out of sorts" }))\n${listening}`,
      warning: "out of sorts"
    },
    {
      title: "answers without a head",
      // The right number of signatures and hashes, but no head.
      code: `parentPort.on("message", (m) => {
  const count = JSON.parse(m.drafts).length
  parentPort.postMessage({ id: m.id, ok: true, bytes: new Uint8Array(1), chain: "0".repeat(128 * count) })
})\n${listening}`,
      warning: "does not fit"
    },
    {
      title: "answers something that does not fit the batch",
      code:
        `parentPort.on("message", (m) => parentPort.postMessage({ id: m.id, ok: true, bytes: new Uint8Array(1), chain: "", head: m.head }))\n${listening}`,
      warning: "does not fit"
    },
    {
      title: "appends part of a batch and dies",
      // The file is cut back to where the batch began before the batch is written again.
      code: `parentPort.on("message", (m) => {
  require("node:fs").writeSync(m.fd, '{"seq":1,"torn')
  process.exit(4)
})\n${listening}`,
      warning: "exited (code 4)"
    },
    {
      title: "appends a whole line and does not answer in time",
      code: `parentPort.on("message", (m) => { require("node:fs").writeSync(m.fd, '{"not":"an entry"}\\n') })\n${listening}`,
      limits: { answerTimeoutMillis: 200 },
      warning: "did not answer a batch"
    },
    {
      title: "appends and answers something that does not fit",
      code: `parentPort.on("message", (m) => {
  require("node:fs").writeSync(m.fd, "garbage")
  parentPort.postMessage({ id: m.id, ok: true, bytes: new Uint8Array(0), written: 7, chain: "", head: m.head })
})\n${listening}`,
      warning: "does not fit"
    },
    {
      title: "cannot start",
      code: `throw new Error("no worker here")`,
      warning: "no worker here"
    }
  ]

  for (const failure of failures) {
    it.live(`a worker that ${failure.title}: the batch is signed on the main thread, with one warning; nothing is lost`, () =>
      Effect.gen(function*() {
        const path = freshPath()
        const outcome = yield* withWorker(
          fake(failure.code),
          Effect.zipRight(ready, withLogs(workload.pipe(Effect.provide(fileLayer({ path, secret: SECRET }))))),
          failure.limits
        )
        yield* intact(path, outcome.value)
        assert.strictEqual(warnings(outcome.messages).length, 1, JSON.stringify(outcome.messages))
        assert.include(warnings(outcome.messages)[0]!, failure.warning)
      }))
  }

  it.live("appends and syncs the batches it signs itself: the file holds every entry once", () =>
    Effect.gen(function*() {
      yield* ready
      const path = freshPath()
      const before = { ...workerStats }
      const entries = yield* workload.pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      assert.isAbove(workerStats.batches, before.batches)
      const written = workerStats.written - before.written
      assert.isAbove(written, 0, "the worker appended its batches")
      // The two single entries are signed and written on the main thread (too small a batch for the worker).
      assert.isBelow(written, nodeFs.statSync(path).size)
      yield* intact(path, entries)
      assert.strictEqual(nodeFs.readFileSync(path, "utf8").trimEnd().split("\n").length, entries.length)
    }))

  /**
   * The real signing worker (loaded through tsx, as the library loads it from
   * its sources), with `prelude` run first: it may wrap `post` (the real
   * `parentPort.postMessage`) or add a `message` listener that runs before the real one.
   */
  const realWorkerWith = (prelude: string) => () => {
    const module = JSON.stringify(new URL("../src/internal/auditSignWorker.ts", import.meta.url).href)
    return new Worker(
      `const { parentPort } = require("node:worker_threads")
const post = parentPort.postMessage.bind(parentPort)
${prelude}
import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${module}) })`,
      { eval: true, workerData: WORKER_DATA }
    )
  }

  /** Ten concurrent appends: one batch, large enough for the worker. */
  const batchOf10 = (tag: string) =>
    Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => append(tag, { i }), { concurrency: "unbounded" })

  it.live("a worker that misreports how much it appended is not trusted: the batch is cut back and written again, and a later cut-back keeps every acknowledged entry", () =>
    Effect.gen(function*() {
      const path = freshPath()
      // The first batch is signed, appended and synced by the real worker but reported as 1 byte;
      // the worker then dies on the next batch it is sent.
      const prelude = `let answers = 0
parentPort.postMessage = (message, transfer) => {
  if (message !== null && typeof message === "object" && message.ok === true && ++answers === 1) message = { ...message, written: 1 }
  return post(message, transfer)
}
parentPort.on("message", (m) => { if (m.id === 2) process.exit(6) })`
      const entries = yield* withWorker(
        realWorkerWith(prelude),
        Effect.zipRight(
          ready,
          Effect.gen(function*() {
            const first = yield* batchOf10("first")
            const second = yield* batchOf10("second")
            return [...first, ...second]
          }).pipe(RunContext.withUser("user_1"), Effect.provide(fileLayer({ path, secret: SECRET })))
        )
      )
      yield* intact(path, entries)
      assert.strictEqual(nodeFs.readFileSync(path, "utf8").trimEnd().split("\n").length, 20)
    }))

  it.live("a log closed in a scope with parallel finalizers while the worker appends its batch: the batch settles and the file stays open until it is written", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const other = join(scratch.make(), "unrelated.txt")
      // The real worker, 300 ms slow to start on each batch.
      const slow = realWorkerWith(`parentPort.on("message", () => { const t = Date.now(); while (Date.now() - t < 300) {} })`)
      const result = yield* withWorker(
        slow,
        Effect.zipRight(
          ready,
          Effect.gen(function*() {
            const scope = yield* Scope.make(ExecutionStrategy.parallel)
            const audit = yield* Scope.extend(AuditLog.makeFile({ path, secret: SECRET }), scope).pipe(
              Effect.provide(NodeFileSystem.layer)
            )
            const appends = yield* Effect.fork(
              Effect.forEach(
                Array.from({ length: 10 }, (_, i) => i),
                (i) => audit.append({ actor: "system", action: "step", payload: { i } }),
                { concurrency: "unbounded" }
              )
            )
            yield* Effect.sleep("50 millis") // the batch is with the worker now
            yield* Scope.close(scope, Exit.void)
            // The next file opened would take the log's descriptor, were it freed under the worker.
            const fd = nodeFs.openSync(other, "a")
            yield* Effect.sleep("600 millis")
            nodeFs.closeSync(fd)
            return { settled: yield* Fiber.poll(appends), unrelated: nodeFs.readFileSync(other, "utf8") }
          }).pipe(RunContext.withUser("user_1"))
        )
      )
      assert.strictEqual(result.unrelated, "", "audit entries were appended to an unrelated file")
      assert.isTrue(result.settled._tag === "Some" && Exit.isSuccess(result.settled.value), "the appends taken before the close settle")
      const report = yield* verifyFile(path)
      assert.isTrue(report.valid, report.detail)
      assert.strictEqual(report.validCount, 10)
    }))

  it.live("a worker that reports appending failed: the batch fails as a failed write does, and the log takes no more entries", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const code = `parentPort.on("message", (m) => {
  require("node:fs").writeSync(m.fd, '{"seq":1,"to')
  parentPort.postMessage({ id: m.id, ok: false, error: "ENOSPC: no space left on device", wrote: true })
})\n${listening}`
      const outcome = yield* withWorker(
        fake(code),
        Effect.zipRight(
          ready,
          withLogs(
            Effect.gen(function*() {
              const batch = yield* Effect.forEach(
                Array.from({ length: 10 }, (_, i) => i),
                (i) => Effect.either(append("tool_call", { i })),
                { concurrency: "unbounded" }
              )
              const after = yield* Effect.either(append("run_completed"))
              return { batch, after }
            }).pipe(RunContext.withUser("user_1"), Effect.provide(fileLayer({ path, secret: SECRET })))
          )
        )
      )
      assert.isTrue(outcome.value.batch.every((result) => result._tag === "Left"), "no entry of the batch is acknowledged")
      const failure = outcome.value.batch[0]!
      assert.isTrue(failure._tag === "Left" && failure.left.message.includes("ENOSPC"), JSON.stringify(failure))
      assert.isTrue(outcome.value.after._tag === "Left", "the log accepts no more entries")
      // Reopened, the torn line is moved aside: the file holds nothing acknowledged, and verifies.
      const report = yield* verifyFile(path)
      assert.strictEqual(report.validCount, 0)
    }))

  it.live("a worker that leaves the file shorter than the log wrote: the batch fails rather than padding the file, and the log takes no more entries", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const code = `parentPort.on("message", (m) => {
  require("node:fs").ftruncateSync(m.fd, 0)
  process.exit(5)
})\n${listening}`
      const outcome = yield* withWorker(
        fake(code),
        Effect.zipRight(
          ready,
          Effect.gen(function*() {
            // One entry on its own first (signed and written on the main thread), so the file has a size to lose.
            const first = yield* append("run_started")
            const batch = yield* Effect.forEach(
              Array.from({ length: 10 }, (_, i) => i),
              (i) => Effect.either(append("tool_call", { i })),
              { concurrency: "unbounded" }
            )
            const after = yield* Effect.either(append("run_completed"))
            return { first, batch, after }
          }).pipe(RunContext.withUser("user_1"), Effect.provide(fileLayer({ path, secret: SECRET })))
        )
      )
      assert.strictEqual(outcome.first.seq, 1)
      const failure = outcome.batch[0]!
      assert.isTrue(outcome.batch.every((result) => result._tag === "Left"), "no entry of the batch is acknowledged")
      assert.isTrue(failure._tag === "Left" && failure.left.message.includes("fewer than"), JSON.stringify(failure))
      assert.isTrue(outcome.after._tag === "Left", "the log accepts no more entries")
      assert.strictEqual(nodeFs.statSync(path).size, 0, "not padded back with zeros")
    }))

  it.live("a log does not wait for a worker that is still starting: it signs on the main thread meanwhile, without warning", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const before = workerStats.batches
      // Never says it is ready.
      const outcome = yield* withWorker(
        fake(`parentPort.on("message", () => {})`),
        withLogs(workload.pipe(Effect.provide(fileLayer({ path, secret: SECRET })))),
        { startupTimeoutMillis: 1_000 }
      )
      yield* intact(path, outcome.value)
      assert.strictEqual(workerStats.batches, before)
      assert.deepStrictEqual(outcome.messages, [])
    }))

  it.live("a worker of another protocol version is never used, nor started again", () =>
    Effect.gen(function*() {
      let made = 0
      const other = fake(`parentPort.postMessage(${JSON.stringify(`${READY_PREFIX}0`)})`)
      const outcome = yield* withWorker(
        () => {
          made++
          return other()
        },
        Effect.zipRight(
          ready,
          withLogs(
            Effect.gen(function*() {
              const entries = yield* workload.pipe(Effect.provide(fileLayer({ path: freshPath(), secret: SECRET })))
              yield* ready
              yield* workload.pipe(Effect.provide(fileLayer({ path: freshPath(), secret: SECRET })))
              return entries
            })
          )
        )
      )
      assert.strictEqual(outcome.value.length, 42)
      assert.strictEqual(made, 1)
      assert.include(warnings(outcome.messages)[0]!, "protocol")
    }))

  const child = fileURLToPath(new URL("./support/auditExitChild.ts", import.meta.url))

  /** Runs the child in `mode`; resolves with its exit code and output, or "hung" if it is still alive after 30 s. */
  const runChild = (mode: string) =>
    Effect.async<{ readonly code: number | "hung"; readonly stdout: string; readonly stderr: string }>((resume) => {
      const process_ = execFile(
        process.execPath,
        ["--import", "tsx", child, freshPath(), mode],
        { timeout: 30_000, killSignal: "SIGKILL" },
        (error, stdout, stderr) => {
          const killed = error !== null && (error as { killed?: boolean }).killed === true
          resume(Effect.succeed({ code: killed ? "hung" : (error as { code?: number } | null)?.code ?? 0, stdout, stderr }))
        }
      )
      return Effect.sync(() => process_.kill("SIGKILL"))
    })

  for (const [mode, batches] of [["idle", 0], ["append", 1], ["unclosed", 1]] as const) {
    it.live(`the worker never keeps a process alive: ${mode}`, () =>
      Effect.gen(function*() {
        const outcome = yield* runChild(mode)
        assert.strictEqual(outcome.code, 0, outcome.stderr)
        const reported = /ready=(\w+) batches=(\d+)/.exec(outcome.stdout)
        assert.isNotNull(reported, outcome.stdout)
        assert.strictEqual(reported![1], "true", "the worker had started")
        assert.isAtLeast(Number(reported![2]), batches)
      }), 60_000)
  }
})
