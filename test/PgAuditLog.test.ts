import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import { afterAll, beforeAll } from "vitest"
import { auditConformance, independentVerify } from "./support/auditConformance.js"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const SECRET = "pg-audit-secret-0123456789"

describe.skipIf(!postgresAvailable)("PgAuditLog", () => {
  let database: { url: string; drop: () => Promise<void> } | undefined
  beforeAll(async () => {
    database = await createTestDatabase("audit")
  })
  afterAll(async () => {
    await database?.drop()
  })
  const url = () => database!.url

  let chains = 0
  const freshChain = () => `chain_${++chains}`
  const layerFor = (chain: string, keys: AuditLog.KeyOptions = { secret: SECRET }) =>
    PgAuditLog.layer({ ...keys, chain }).pipe(Layer.provide(pgLayer(url())))

  const append = (action: string, payload: Record<string, unknown> = {}) =>
    Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action, payload }))
  const verify = Effect.flatMap(AuditLog.AuditLog, (audit) => audit.verify)
  const sql = <A>(effect: Effect.Effect<A, unknown, SqlClient.SqlClient>) =>
    Effect.provide(effect, pgLayer(url())).pipe(Effect.orDie)

  describe("conformance", () => {
    auditConformance({
      fresh: () => {
        const chain = freshChain()
        return { open: (keys) => layerFor(chain, keys) }
      },
      persistent: true
    })
  })

  it.live("four writers with their own connection pools build one gap-free chain", () =>
    Effect.gen(function*() {
      const chain = freshChain()
      const writers = Array.from({ length: 4 }, (_, w) => w)
      const acked = yield* Effect.forEach(
        writers,
        (w) =>
          Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) => append("write", { w, i }), { concurrency: 5 }).pipe(
            RunContext.withUser(`writer_${w}`),
            Effect.provide(layerFor(chain))
          ),
        { concurrency: "unbounded" }
      )
      const [report, entries] = yield* Effect.all([verify, Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query())]).pipe(
        Effect.provide(layerFor(chain))
      )
      assert.deepStrictEqual([report.valid, report.validCount, report.lastSeq], [true, 200, 200])
      assert.deepStrictEqual(entries.map((e) => e.seq), Array.from({ length: 200 }, (_, i) => i + 1))
      assert.isUndefined(independentVerify(entries, SECRET))
      const stored = new Map(entries.map((e) => [e.seq, e.signature]))
      for (const entry of acked.flat()) assert.strictEqual(stored.get(entry.seq), entry.signature)
      for (const w of writers) assert.strictEqual(entries.filter((e) => e.userId === `writer_${w}`).length, 50)
    }), 60_000)

  it.live("tampering with rows is detected: an edited entry, a deleted row, deleted newest rows, a moved head", () =>
    Effect.gen(function*() {
      const chain = freshChain()
      const layer = layerFor(chain)
      yield* Effect.forEach(Array.from({ length: 6 }, (_, i) => i), (i) => append("step", { i }), { discard: true }).pipe(
        Effect.provide(layer)
      )
      const logId = (yield* sql(Effect.flatMap(SqlClient.SqlClient, (s) => s<{ log_id: string }>`SELECT log_id FROM jeeves_audit_chains WHERE name = ${chain}`)))[0]!.log_id
      const exec = (run: (s: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) => sql(Effect.flatMap(SqlClient.SqlClient, run))
      const check = Effect.provide(verify, layer)

      yield* exec((s) => s`UPDATE jeeves_audit_entries SET entry = replace(entry, '"i":2', '"i":9') WHERE log_id = ${logId} AND seq = 3`)
      const edited = yield* check
      assert.deepStrictEqual([edited.valid, edited.failure, edited.firstBadSeq], [false, "signature", 3])
      yield* exec((s) => s`UPDATE jeeves_audit_entries SET entry = replace(entry, '"i":9', '"i":2') WHERE log_id = ${logId} AND seq = 3`)
      assert.isTrue((yield* check).valid)

      yield* exec((s) => s`DELETE FROM jeeves_audit_entries WHERE log_id = ${logId} AND seq = 6`)
      const truncated = yield* check
      assert.deepStrictEqual([truncated.valid, truncated.failure, truncated.firstBadSeq], [false, "seq_gap", 6])

      yield* exec((s) => s`DELETE FROM jeeves_audit_entries WHERE log_id = ${logId} AND seq = 2`)
      const gap = yield* check
      assert.deepStrictEqual([gap.valid, gap.failure, gap.firstBadSeq], [false, "seq_gap", 3])

      const other = freshChain()
      yield* append("x").pipe(Effect.provide(layerFor(other)))
      yield* exec((s) => s`UPDATE jeeves_audit_chains SET hash = ${"f".repeat(64)}, seq = 1 WHERE name = ${other}`)
      const moved = yield* Effect.provide(verify, layerFor(other))
      assert.deepStrictEqual([moved.valid, moved.failure], [false, "chain"])
    }), 60_000)

  it.live("a failed append is a typed error that fails only itself; the chain stays gap-free", () =>
    Effect.gen(function*() {
      const chain = freshChain()
      const exec = (run: (s: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) => sql(Effect.flatMap(SqlClient.SqlClient, run))
      const outcome = yield* Effect.gen(function*() {
        const first = yield* append("before")
        // The table goes away under the writer (a migration gone wrong, a restore in progress).
        yield* exec((s) => s`ALTER TABLE jeeves_audit_entries RENAME TO jeeves_audit_entries_away`)
        const failed = yield* Effect.flip(append("during"))
        yield* exec((s) => s`ALTER TABLE jeeves_audit_entries_away RENAME TO jeeves_audit_entries`)
        const after = yield* append("after")
        return { first, failed, after, report: yield* verify }
      }).pipe(Effect.provide(layerFor(chain)))
      assert.strictEqual(outcome.failed._tag, "AuditUnavailable")
      assert.include(outcome.failed.message, "append failed")
      assert.deepStrictEqual([outcome.first.seq, outcome.after.seq], [1, 2])
      assert.deepStrictEqual([outcome.report.valid, outcome.report.validCount], [true, 2])
    }), 60_000)

  it.live("a NUL in one run's session id fails no other user's append, and a session filter matches exactly", () =>
    Effect.gen(function*() {
      const [bad, good] = yield* Effect.all([
        Effect.either(append("odd").pipe(RunContext.withUser("mallory", { sessionId: "s\u0000" }))),
        Effect.either(append("good").pipe(RunContext.withUser("bob", { sessionId: "s1" })))
      ], { concurrency: "unbounded" }).pipe(
        Effect.zipLeft(append("look-alike").pipe(RunContext.withUser("eve", { sessionId: "s\ufffd" }))),
        Effect.flatMap((results) =>
          Effect.gen(function*() {
            const odd = yield* Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query({ sessionId: "s\u0000" }))
            const report = yield* verify
            assert.isTrue(report.valid, report.detail)
            assert.deepStrictEqual(odd.map((entry) => [entry.userId, entry.sessionId]), [["mallory", "s\u0000"]])
            return results
          })
        ),
        Effect.provide(layerFor(freshChain()))
      )
      assert.strictEqual(bad._tag, "Right")
      assert.strictEqual(good._tag, "Right")
    }))

  it.live("an unreachable server fails the layer with a typed error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Layer.build(PgAuditLog.layer({ secret: SECRET }).pipe(Layer.provide(pgLayer("postgres://postgres@127.0.0.1:1/none")))).pipe(
          Effect.scoped,
          Effect.timeout("20 seconds")
        )
      )
      assert.include(["SqlError", "AuditUnavailable"], (error as { _tag: string })._tag)
      assert.match(String((error as Error).message), /connect|ECONNREFUSED|127\.0\.0\.1:1/i)
    }), 30_000)
})
