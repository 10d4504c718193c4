/**
 * Checkpoints of the audit file: signed heads published outside the file,
 * which make cutting entries off its end, and rolling it back to an older
 * copy, detectable — what the chain alone cannot show.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Logger, Ref } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "checkpoint-test-secret-0123456789"
const LOG_ID = "log_checkpointed"

const scratch = scratchDirectories("jeeves-audit-checkpoints-")
afterAll(scratch.removeAll)

/** Appends `count` entries through a file log that checkpoints to `sink`, then closes it. */
const writeLog = (path: string, count: number, checkpoints: AuditLog.CheckpointOptions, first = 1) =>
  Effect.scoped(
    Effect.gen(function*() {
      const audit = yield* AuditLog.makeFile({ path, secret: SECRET, logId: LOG_ID, checkpoints, signing: "inline" })
      for (let i = first; i < first + count; i++) {
        yield* audit.append({ actor: "system", action: "step", payload: { i } }).pipe(RunContext.withUser(`user_${i % 3}`))
      }
    })
  ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)

const verify = (path: string, options?: AuditLog.VerifyOptions) =>
  AuditLog.verifyFile(path, SECRET, options).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)

const readCheckpoints = (path: string) => AuditLog.readCheckpoints(path).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)

/** The file without its last `count` lines. */
const cutLines = (path: string, count: number) => {
  const lines = nodeFs.readFileSync(path, "utf8").split("\n").filter((line) => line !== "")
  nodeFs.writeFileSync(path, lines.slice(0, lines.length - count).map((line) => `${line}\n`).join(""))
}

const setup = () => {
  const dir = scratch.make()
  return { log: join(dir, "audit.jsonl"), anchors: join(dir, "checkpoints.jsonl") }
}

describe("audit checkpoints", () => {
  it.effect("a checkpoint every N entries and one at close; the intact file verifies as anchored to its end", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 12, { sink: AuditLog.checkpointFile(anchors), everyEntries: 5 })
      const checkpoints = yield* readCheckpoints(anchors)
      const seqs = checkpoints.map((c) => c.seq)
      assert.strictEqual(seqs.at(-1), 12, "the close publishes the final head")
      assert.isTrue(seqs.length >= 2 && seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]!), `increasing: ${seqs}`)
      const plain = yield* verify(log)
      assert.strictEqual(checkpoints[0]!.logId, plain.logId)
      assert.strictEqual(checkpoints.at(-1)!.hash, plain.lastHash)
      const report = yield* verify(log, { checkpoints })
      assert.strictEqual(report.valid, true)
      assert.strictEqual(report.anchoredSeq, 12)
      assert.strictEqual(report.unanchoredTail, undefined)
    }))

  it.effect("entries cut off the end of a closed file pass the chain alone but fail against the checkpoints", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 12, { sink: AuditLog.checkpointFile(anchors), everyEntries: 5 })
      const checkpoints = yield* readCheckpoints(anchors)
      cutLines(log, 3)
      assert.strictEqual((yield* verify(log)).valid, true, "the chain cannot tell")
      const report = yield* verify(log, { checkpoints })
      assert.strictEqual(report.valid, false)
      assert.strictEqual(report.failure, "checkpoint_missing")
      assert.strictEqual(report.firstBadSeq, 10)
      assert.match(report.detail!, /reached seq 12, but its entries end at seq 9/)
    }))

  it.effect("a rollback to an older copy is detected, and so is one written again past the checkpoint", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      const sink = AuditLog.checkpointFile(anchors)
      yield* writeLog(log, 4, { sink, everyEntries: 100 })
      const older = nodeFs.readFileSync(log)
      yield* writeLog(log, 8, { sink, everyEntries: 100 }, 5)
      const checkpoints = yield* readCheckpoints(anchors)
      assert.deepStrictEqual(checkpoints.map((c) => c.seq), [4, 12])

      nodeFs.writeFileSync(log, older)
      const rolledBack = yield* verify(log, { checkpoints })
      assert.strictEqual(rolledBack.failure, "checkpoint_missing")
      assert.strictEqual(rolledBack.firstBadSeq, 5)

      // Written again from the older copy up to the checkpointed seq and past it: other entries at seq 12.
      yield* writeLog(log, 9, { sink: () => Effect.void, everyEntries: 100 }, 100)
      assert.strictEqual((yield* verify(log)).valid, true, "the chain cannot tell")
      const rewritten = yield* verify(log, { checkpoints })
      assert.strictEqual(rewritten.failure, "checkpoint_mismatch")
      assert.strictEqual(rewritten.firstBadSeq, 12)
    }))

  it.effect("entries after the newest checkpoint are reported as the unanchored tail", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 6, { sink: AuditLog.checkpointFile(anchors), everyEntries: 100 })
      yield* writeLog(log, 3, { sink: () => Effect.fail("the sink is down"), everyEntries: 100 }, 7)
      const report = yield* verify(log, { checkpoints: yield* readCheckpoints(anchors) })
      assert.strictEqual(report.valid, true)
      assert.strictEqual(report.anchoredSeq, 6)
      assert.deepStrictEqual(report.unanchoredTail, { fromSeq: 7, toSeq: 9 })
    }))

  it.effect("a forged or edited checkpoint fails verification; another log's checkpoints are ignored", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 5, { sink: AuditLog.checkpointFile(anchors), everyEntries: 100 })
      const [checkpoint] = yield* readCheckpoints(anchors)
      const edited = { ...checkpoint!, seq: 3 }
      const report = yield* verify(log, { checkpoints: [edited] })
      assert.strictEqual(report.failure, "checkpoint_mismatch")
      assert.match(report.detail!, /signature does not match/)
      const other = { ...checkpoint!, logId: "log_other", seq: 99 }
      assert.strictEqual((yield* verify(log, { checkpoints: [checkpoint!, other] })).valid, true)
      // Signed with another key: not this log's writer.
      const { anchors: foreignAnchors, log: foreignLog } = setup()
      yield* Effect.scoped(
        Effect.flatMap(
          AuditLog.makeFile({
            path: foreignLog,
            secret: "another-secret-0123456789",
            logId: checkpoint!.logId,
            checkpoints: { sink: AuditLog.checkpointFile(foreignAnchors) }
          }),
          (audit) => audit.append({ actor: "system", action: "step", payload: {} })
        )
      ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
      const forged = yield* verify(log, { checkpoints: [checkpoint!, ...(yield* readCheckpoints(foreignAnchors))] })
      assert.strictEqual(forged.failure, "checkpoint_mismatch")
    }))

  it.effect("an empty or missing log with checkpoints for it fails as cut off", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 3, { sink: AuditLog.checkpointFile(anchors), everyEntries: 100 })
      nodeFs.writeFileSync(log, "")
      const report = yield* verify(log, { checkpoints: yield* readCheckpoints(anchors) })
      assert.strictEqual(report.failure, "checkpoint_missing")
      assert.strictEqual(report.firstBadSeq, 1)
    }))

  it.effect("verifyEntries takes checkpoints too", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 7, { sink: AuditLog.checkpointFile(anchors), everyEntries: 3 })
      const checkpoints = yield* readCheckpoints(anchors)
      const entries = nodeFs.readFileSync(log, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
      assert.strictEqual((yield* AuditLog.verifyEntries(entries, SECRET, { checkpoints })).anchoredSeq, 7)
      const cut = yield* AuditLog.verifyEntries(entries.slice(0, 5), SECRET, { checkpoints })
      assert.strictEqual(cut.failure, "checkpoint_missing")
    }))

  it.live("with few entries, the interval publishes the head", () =>
    Effect.gen(function*() {
      const published = yield* Ref.make<Array<number>>([])
      const { log } = setup()
      yield* Effect.scoped(
        Effect.gen(function*() {
          const audit = yield* AuditLog.makeFile({
            path: log,
            secret: SECRET,
            logId: LOG_ID,
            checkpoints: { sink: (c) => Ref.update(published, (seqs) => [...seqs, c.seq]), everyEntries: 1000, interval: "30 millis" }
          })
          yield* audit.append({ actor: "system", action: "step", payload: {} })
          yield* audit.append({ actor: "system", action: "step", payload: {} })
          let waited = 0
          while ((yield* Ref.get(published)).length === 0 && waited++ < 200) yield* Effect.sleep("10 millis")
          assert.deepStrictEqual(yield* Ref.get(published), [2])
        })
      ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
      // Nothing new at close: no second checkpoint of the same head.
      assert.deepStrictEqual(yield* Ref.get(published), [2])
    }))

  it.effect("a sink that fails, dies, rejects or throws never fails an append; each failure is logged", () => {
    const messages: Array<string> = []
    const capture = Logger.make(({ message }) => {
      messages.push(Array.isArray(message) ? message.join(" ") : String(message))
    })
    return Effect.gen(function*() {
      const sinks: ReadonlyArray<AuditLog.CheckpointOptions["sink"]> = [
        () => Effect.fail(new Error("sink down")),
        () => Effect.die(new Error("sink bug")),
        () => Promise.reject(new Error("rejected")),
        () => {
          throw new Error("thrown")
        }
      ]
      for (const sink of sinks) {
        const { log } = setup()
        yield* writeLog(log, 3, { sink, everyEntries: 1 })
        assert.strictEqual((yield* verify(log)).lastSeq, 3)
      }
      const warnings = messages.filter((m) => m.includes("was not published"))
      for (const why of ["sink down", "sink bug", "rejected", "thrown"]) {
        assert.isTrue(warnings.some((m) => m.includes(why)), `logged: ${why} in ${JSON.stringify(warnings)}`)
      }
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
  })

  it.live("a sink that keeps failing is retried with backoff, not on every batch; it is used again once it recovers", () =>
    Effect.gen(function*() {
      let calls = 0
      let down = true
      const stored: Array<number> = []
      const sink = (checkpoint: AuditLog.Checkpoint) =>
        Effect.suspend(() => {
          calls++
          if (down) return Effect.fail(new Error("sink down"))
          stored.push(checkpoint.seq)
          return Effect.void
        })
      const { log } = setup()
      yield* Effect.scoped(
        Effect.gen(function*() {
          const audit = yield* AuditLog.makeFile({
            path: log,
            secret: SECRET,
            logId: LOG_ID,
            signing: "inline",
            checkpoints: { sink, everyEntries: 1, interval: "1 hour" }
          })
          for (let i = 0; i < 40; i++) {
            yield* audit.append({ actor: "system", action: "step", payload: { i } })
            yield* Effect.sleep("3 millis")
          }
          assert.isAtMost(calls, 2, `sink calls while it was down: ${calls}`)
          down = false
          yield* audit.append({ actor: "system", action: "step", payload: { i: 40 } })
          let waited = 0
          while (stored.length === 0 && waited++ < 300) yield* Effect.sleep("10 millis")
          assert.deepStrictEqual(stored, [41])
        })
      ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
    }), 10_000)

  it.effect("a file emptied (or deleted) and written again by the restarted app fails against the sink's checkpoints", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      const options = { sink: AuditLog.checkpointFile(anchors), everyEntries: 5 }
      yield* writeLog(log, 12, options)
      // Emptied (no key needed); the application restarts with the same options and writes again.
      nodeFs.truncateSync(log, 0)
      yield* writeLog(log, 3, options)
      const checkpoints = yield* readCheckpoints(anchors)
      assert.isTrue(checkpoints.some((c) => c.seq === 12))
      const report = yield* verify(log, { checkpoints })
      assert.strictEqual(report.valid, false, JSON.stringify(report))
      assert.include(["checkpoint_missing", "checkpoint_mismatch"], report.failure)
    }))

  it.effect("a file of another log verified against this log's checkpoints fails: none of them is its", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      yield* writeLog(log, 4, { sink: AuditLog.checkpointFile(anchors), everyEntries: 100 })
      const other = setup()
      yield* Effect.scoped(
        Effect.flatMap(AuditLog.makeFile({ path: other.log, secret: SECRET, signing: "inline" }), (audit) =>
          audit.append({ actor: "system", action: "step", payload: {} }))
      ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
      const report = yield* verify(other.log, { checkpoints: yield* readCheckpoints(anchors) })
      assert.strictEqual(report.failure, "checkpoint_missing")
      assert.match(report.detail!, /none of the 1 checkpoints is of this log/)
    }))

  it.effect("checkpoints need a fixed logId: without one the layer fails with AuditUnavailable", () =>
    Effect.gen(function*() {
      const { log } = setup()
      const opened = yield* Effect.either(
        Effect.scoped(AuditLog.makeFile({ path: log, secret: SECRET, checkpoints: { sink: () => Effect.void } })).pipe(
          Effect.provide(NodeFileSystem.layer)
        )
      )
      assert.strictEqual(opened._tag, "Left")
      if (opened._tag === "Left") assert.match(opened.left.message, /checkpoints need a fixed logId/)
    }))

  it.effect("the sink is called one at a time: the close waits for a checkpoint still being stored, and does not store it twice", () =>
    Effect.gen(function*() {
      const { log } = setup()
      let inFlight = 0
      let maxInFlight = 0
      const stored: Array<number> = []
      const sink = async (checkpoint: AuditLog.Checkpoint) => {
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        await new Promise((resolve) => setTimeout(resolve, 300))
        stored.push(checkpoint.seq)
        inFlight--
      }
      yield* Effect.scoped(
        Effect.gen(function*() {
          const audit = yield* AuditLog.makeFile({ path: log, secret: SECRET, logId: LOG_ID, signing: "inline", checkpoints: { sink, everyEntries: 1 } })
          yield* audit.append({ actor: "system", action: "step", payload: { i: 1 } })
          // The publisher starts storing the checkpoint of seq 1; the log closes meanwhile.
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
        })
      ).pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)
      assert.strictEqual(maxInFlight, 1)
      assert.deepStrictEqual(stored, [1], "stored once, before the close returned")
    }))

  it.effect("a checkpoint write cut short by a crash is skipped on reading, and the next one starts a line of its own", () =>
    Effect.gen(function*() {
      const { anchors, log } = setup()
      const sink = AuditLog.checkpointFile(anchors)
      yield* writeLog(log, 3, { sink, everyEntries: 100 })
      nodeFs.appendFileSync(anchors, `{"logId":"${LOG_ID}","seq":`)
      assert.deepStrictEqual((yield* readCheckpoints(anchors)).map((c) => c.seq), [3])
      yield* writeLog(log, 2, { sink, everyEntries: 100 }, 4)
      const checkpoints = yield* readCheckpoints(anchors)
      assert.deepStrictEqual(checkpoints.map((c) => c.seq), [3, 5])
      assert.strictEqual((yield* verify(log, { checkpoints })).anchoredSeq, 5)
      // A line that is not JSON anywhere (a torn write ended where the file cannot be cut) is no checkpoint.
      nodeFs.writeFileSync(anchors, `garbage\n${nodeFs.readFileSync(anchors, "utf8")}`)
      assert.deepStrictEqual((yield* readCheckpoints(anchors)).map((c) => c.seq), [3, 5])
    }))

  it.effect("bad checkpoint options fail the layer with AuditUnavailable", () =>
    Effect.gen(function*() {
      for (const checkpoints of [{ everyEntries: 0 }, { everyEntries: 1.5 }, { interval: "0 millis" }, { interval: "soon" }]) {
        const { log } = setup()
        const opened = yield* Effect.either(
          Effect.scoped(AuditLog.makeFile({ path: log, secret: SECRET, logId: LOG_ID, checkpoints: { sink: () => Effect.void, ...checkpoints } as AuditLog.CheckpointOptions }))
            .pipe(Effect.provide(NodeFileSystem.layer))
        )
        assert.strictEqual(opened._tag, "Left")
        if (opened._tag === "Left") assert.strictEqual(opened.left._tag, "AuditUnavailable")
      }
    }))
})
