/**
 * Submitted entries (what the agent appends without waiting) are never
 * built as entry objects: a committed batch gives its entries by index,
 * built only for the appends that are awaited. Here: that those entries
 * are the ones built one by one before, that the worker's request and the
 * inline signer write the same bytes, and that submitted entries settle
 * while awaited appends in the same batches still get their full entries.
 */
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, FastCheck, Layer, Scope } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { type Outcome, submitterOf } from "../src/internal/audit.js"
import { batchEntryAt, buildEntry, type Draft, type Head, hmacKeyOfBytes, signBatch } from "../src/internal/auditChain.js"
import { toJson } from "../src/internal/auditJcs.js"
import { resetWorker, startWorker, workerStats } from "../src/internal/auditSigner.js"
import { scratchDirectories } from "./support/auditFileSystem.js"

/** Any UTF-16 code units, lone surrogates, quotes, newlines and U+2028 included. */
const codeUnits = (maxLength: number) =>
  FastCheck.array(
    FastCheck.oneof(
      FastCheck.integer({ min: 0, max: 0xffff }),
      FastCheck.constantFrom(0x0a, 0x22, 0x5c, 0x2028, 0xd800, 0xdc00, 0x61, 0x5f)
    ),
    { maxLength }
  ).map((codes) => String.fromCharCode(...codes))

/** Payloads as callers pass them: JSON values and the rest (undefined, bigint, non-finite numbers, dates, -0). */
const payloads = FastCheck.letrec((tie) => ({
  value: FastCheck.oneof(
    { depthSize: "small" },
    FastCheck.constantFrom(null, undefined, true, false, -0, Number.NaN, Number.POSITIVE_INFINITY, 1e21, 5e-7),
    FastCheck.double(),
    FastCheck.integer(),
    FastCheck.bigInt(),
    codeUnits(12),
    FastCheck.date({ noInvalidDate: true }),
    FastCheck.array(tie("value"), { maxLength: 4 }),
    FastCheck.dictionary(FastCheck.oneof(codeUnits(4), FastCheck.constantFrom("__proto__", "a", "b", "1", "10")), tie("value"), {
      maxKeys: 20
    })
  )
})).value

const drafts = FastCheck.array(
  FastCheck.record({
    sessionId: codeUnits(8),
    userId: FastCheck.oneof(FastCheck.constant(null), codeUnits(8)),
    runId: codeUnits(8),
    actor: FastCheck.constantFrom<AuditLog.Actor>("user", "model", "system"),
    action: codeUnits(10),
    payload: payloads
  }).map((fields): Draft => ({ ...fields, payload: toJson(fields.payload, (s) => s) })),
  { minLength: 1, maxLength: 12 }
)

describe("signing a batch", () => {
  const key = hmacKeyOfBytes(new TextEncoder().encode("batch-test-key"))
  const signing = { keyId: "k\"1", key }
  const head: Head = { seq: 41, hash: "ab".repeat(32), timestampMillis: 1_700_000_000_123 }

  it.prop(
    "the worker's request and the drafts themselves sign alike; the entries built on demand are those buildEntry makes, one by one",
    [drafts, FastCheck.integer({ min: 1_600_000_000_000, max: 1_800_000_000_000 })],
    ([batch, now]) => {
      const inline = signBatch(head, "log_1", signing, batch, now)
      // What the worker signs: the drafts as the request carries them.
      const worker = signBatch(head, "log_1", signing, JSON.parse(JSON.stringify(batch)) as Array<Draft>, now)
      assert.deepStrictEqual(worker, inline)
      const entryAt = batchEntryAt(head, "log_1", signing.keyId, batch, inline)
      let next = head
      let text = ""
      // Asked for in any order: each entry stands alone.
      const entries = batch.map((_, i) => entryAt(batch.length - 1 - i)).reverse()
      batch.forEach((draft, i) => {
        const built = buildEntry(next, "log_1", signing, draft, now)
        next = built.head
        text += `${built.line}\n`
        // The same members in the same order, the same values.
        assert.strictEqual(JSON.stringify(entries[i]), JSON.stringify(built.entry))
        assert.deepStrictEqual(entries[i], built.entry)
        assert.strictEqual(entries[i]!.payload, draft.payload, "the draft's payload, not a copy")
      })
      assert.strictEqual(inline.text, text)
      assert.deepStrictEqual(inline.head, next)
      return true
    },
    { fastCheck: { numRuns: 200 } }
  )
})

const scratch = scratchDirectories("jeeves-submit-")
afterAll(scratch.removeAll)

const payload = (i: number) => ({ tool: "purge_cache", call_id: `call_${i}`, args: { owner: "user_17", scope: "own" }, destructive: true, turn: i })

describe("submitted entries of the file log", () => {
  for (const signing of ["worker", "inline"] as const) {
    it.live(`${signing} signing: submitted entries settle once durable, and appends awaited in the same batches get their full entries`, () =>
      Effect.gen(function*() {
        if (signing === "worker") yield* Effect.promise(startWorker)
        const batchesBefore = workerStats.batches
        const path = join(scratch.make(), "audit.jsonl")
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          AuditLog.layerFile({ path, secret: "submit-secret", signing }).pipe(Layer.provide(NodeFileSystem.layer)),
          scope
        )
        const audit = Context.get(context, AuditLog.AuditLog)
        const submit = submitterOf(audit)
        assert.isDefined(submit)
        const outcomes = new Map<string, Outcome>()
        // Per round, 20 submitted entries around 4 awaited ones: batches large enough for the worker.
        const round = (r: number) =>
          Effect.withFiberRuntime<ReadonlyArray<AuditLog.AuditEntry>, AuditLog.AuditUnavailable>((fiber) => {
            for (let i = 0; i < 20; i++) {
              const id = `s${r}_${i}`
              assert.isTrue(submit!(fiber, { actor: "model", action: id, payload: payload(i) }, (outcome) => outcomes.set(id, outcome)))
            }
            return Effect.all(
              Array.from({ length: 4 }, (_, i) => audit.append({ actor: "user", action: `a${r}_${i}`, payload: payload(100 + i) })),
              { concurrency: "unbounded" }
            )
          })
        const awaited = (yield* Effect.forEach([0, 1, 2], round, { concurrency: "unbounded" })).flat()
        assert.strictEqual(outcomes.size, 60)
        for (const outcome of outcomes.values()) assert.isTrue(Exit.isSuccess(outcome))
        if (signing === "worker") assert.isAbove(workerStats.batches, batchesBefore, "the worker signed")

        // The awaited entries are the ones stored, field for field.
        const stored = yield* audit.query()
        assert.strictEqual(stored.length, 72)
        const bySeq = new Map(stored.map((entry) => [entry.seq, entry]))
        for (const entry of awaited) {
          assert.deepStrictEqual(entry, bySeq.get(entry.seq))
          assert.strictEqual(entry.actor, "user")
          assert.deepStrictEqual(entry.payload, payload(100 + Number(entry.action.split("_")[1])))
        }
        for (const entry of stored) {
          if (entry.action.startsWith("s")) assert.deepStrictEqual(entry.payload, payload(Number(entry.action.split("_")[1])))
          assert.strictEqual(entry.userId, "user_1")
          assert.strictEqual(entry.sessionId, "sess-1")
        }
        assert.isTrue((yield* audit.verify).valid)

        // After the log is closed, a submitted entry fails.
        yield* Scope.close(scope, Exit.void)
        const late = yield* Effect.withFiberRuntime<Outcome>((fiber) =>
          Effect.async((resume) => {
            submit!(fiber, { actor: "model", action: "late", payload: {} }, (outcome) => resume(Effect.succeed(outcome)))
          })
        )
        assert.isTrue(Exit.isFailure(late))
        if (signing === "worker") yield* Effect.promise(resetWorker)
      }).pipe(RunContext.withUser("user_1", { sessionId: "sess-1" })))
  }
})
