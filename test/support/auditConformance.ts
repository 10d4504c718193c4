/**
 * One behavioural suite for every AuditLog backend (memory, file, Postgres).
 *
 * `fresh()` returns a backend nobody else uses (a new file, a new chain, a
 * new instance); `open(keys)` opens it — again and again for persistent
 * backends, which must then continue the same chain.
 */
import { assert, it } from "@effect/vitest"
import { createHash, createHmac } from "node:crypto"
import { Effect, Layer, Redacted, TestClock } from "effect"
import { AuditLog, RunContext, Secrets } from "jeevesagent"

export interface Backend {
  readonly open: (keys: AuditLog.KeyOptions) => Layer.Layer<AuditLog.AuditLog, unknown>
}

export interface ConformanceOptions {
  readonly fresh: () => Backend
  /** Whether reopening `fresh()`'s backend continues its chain (false for memory). */
  readonly persistent: boolean
}

const SECRET = "conformance-secret-0123456789"

const as = (userId: string | null, sessionId: string, runId = `run_${sessionId}`) =>
  RunContext.withUser(userId, { sessionId, runId })

const append = (action: string, payload: Record<string, unknown> = {}, actor: AuditLog.Actor = "system") =>
  Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor, action, payload }))

const query = (filter?: AuditLog.QueryFilter) => Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query(filter))

const verify = Effect.flatMap(AuditLog.AuditLog, (audit) => audit.verify)

/** RFC 8785 for the values JSON.parse produces, in five lines (no `undefined`, no non-finite numbers). */
export const jcs = (value: unknown): string => {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`
  const record = value as Record<string, unknown>
  return `{${Object.keys(record).sort().map((k) => `${JSON.stringify(k)}:${jcs(record[k])}`).join(",")}}`
}

/**
 * A verifier written from the DESIGN "Audit file format" alone (node:crypto
 * and {@link jcs}); returns the first problem, or undefined.
 */
export const independentVerify = (entries: ReadonlyArray<unknown>, key: string): string | undefined => {
  let prevHash = "0".repeat(64)
  let logId: unknown
  for (const [index, value] of entries.entries()) {
    const { signature, ...unsigned } = value as Record<string, unknown>
    if (unsigned.seq !== index + 1) return `entry ${index}: seq ${String(unsigned.seq)}`
    if (unsigned.prevHash !== prevHash) return `entry ${index}: prevHash`
    logId ??= unsigned.logId
    if (unsigned.logId !== logId) return `entry ${index}: logId`
    if (createHmac("sha256", key).update(jcs(unsigned)).digest("hex") !== signature) return `entry ${index}: signature`
    prevHash = createHash("sha256").update(jcs(value)).digest("hex")
  }
  return undefined
}

export const auditConformance = (options: ConformanceOptions) => {
  const withLog = <A, E>(backend: Backend, effect: Effect.Effect<A, E, AuditLog.AuditLog>, keys: AuditLog.KeyOptions = { secret: SECRET }) =>
    Effect.provide(effect, backend.open(keys))

  it.effect("appends carry seq 1, 2, ... and non-decreasing timestamps", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        const first = yield* append("a")
        yield* TestClock.adjust("1500 millis")
        const second = yield* append("b")
        yield* TestClock.adjust("1 millis")
        const third = yield* append("c")
        assert.deepStrictEqual([first.seq, second.seq, third.seq], [1, 2, 3])
        assert.strictEqual(first.prevHash, "0".repeat(64))
        assert.isTrue(first.timestamp <= second.timestamp && second.timestamp <= third.timestamp)
        assert.strictEqual(Date.parse(second.timestamp) - Date.parse(first.timestamp), 1500)
        assert.match(third.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
        assert.strictEqual(first.logId, third.logId)
        assert.strictEqual(first.keyId, "default")
      })
    ))

  it.effect("entries are attributed to the run context; anonymous is null", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        const alice = yield* append("tool_call", { tool: "x" }, "model").pipe(as("alice", "s1", "run_1"))
        const anon = yield* append("run_started", {}, "user").pipe(as(null, "s2", "run_2"))
        assert.deepStrictEqual(
          [alice.userId, alice.sessionId, alice.runId, alice.actor, alice.action],
          ["alice", "s1", "run_1", "model", "tool_call"]
        )
        assert.deepStrictEqual([anon.userId, anon.sessionId, anon.runId], [null, "s2", "run_2"])
        const stored = yield* query()
        assert.deepStrictEqual(stored, [alice, anon])
      })
    ))

  it.effect("query filters combine with AND; userId null selects the anonymous runs", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        yield* append("run_started").pipe(as("alice", "s1", "r1"))
        yield* append("tool_call").pipe(as("alice", "s1", "r1"))
        yield* append("run_started").pipe(as("bob", "s2", "r2"))
        yield* TestClock.adjust("10 seconds")
        yield* append("tool_call").pipe(as("alice", "s3", "r3"))
        yield* append("tool_call").pipe(as(null, "s4", "r4"))
        const seqs = (filter: AuditLog.QueryFilter) => Effect.map(query(filter), (entries) => entries.map((e) => e.seq))
        assert.deepStrictEqual(yield* seqs({}), [1, 2, 3, 4, 5])
        assert.deepStrictEqual(yield* seqs({ userId: "alice" }), [1, 2, 4])
        assert.deepStrictEqual(yield* seqs({ userId: "bob" }), [3])
        assert.deepStrictEqual(yield* seqs({ userId: null }), [5])
        assert.deepStrictEqual(yield* seqs({ sessionId: "s1" }), [1, 2])
        assert.deepStrictEqual(yield* seqs({ action: "tool_call" }), [2, 4, 5])
        assert.deepStrictEqual(yield* seqs({ userId: "alice", action: "tool_call" }), [2, 4])
        assert.deepStrictEqual(yield* seqs({ runId: "r3" }), [4])
        assert.deepStrictEqual(yield* seqs({ since: new Date(10_000) }), [4, 5])
        assert.deepStrictEqual(yield* seqs({ until: new Date(10_000) }), [1, 2, 3])
        assert.deepStrictEqual(yield* seqs({ userId: "alice", since: new Date(5_000), until: new Date(20_000) }), [4])
        assert.deepStrictEqual(yield* seqs({ userId: "carol" }), [])
      })
    ))

  it.effect("verify: valid with the right key, signature failure with a wrong one, and a verifier from the spec agrees", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        for (let i = 0; i < 5; i++) yield* append("step", { i, note: "naïve ☃ 😀", big: 2 ** 53, tiny: 1e-7, neg: -0 })
        const report = yield* verify
        assert.isTrue(report.valid)
        assert.strictEqual(report.validCount, 5)
        assert.strictEqual(report.lastSeq, 5)
        const entries = yield* query()
        assert.isTrue((yield* AuditLog.verifyEntries(entries, SECRET)).valid)
        assert.isTrue((yield* AuditLog.verifyEntries(entries, Redacted.make(SECRET))).valid)
        const wrong = yield* AuditLog.verifyEntries(entries, "not-the-key")
        assert.deepStrictEqual([wrong.valid, wrong.failure, wrong.firstBadSeq, wrong.validCount], [false, "signature", 1, 0])
        assert.isUndefined(independentVerify(entries, SECRET))
        assert.strictEqual(report.lastHash, createHash("sha256").update(jcs(entries[4])).digest("hex"))
      })
    ))

  it.effect("concurrent appends get distinct, gap-free seqs and the chain verifies", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        const entries = yield* Effect.forEach(
          Array.from({ length: 60 }, (_, i) => i),
          (i) => append("parallel", { i }).pipe(as(`user_${i % 3}`, `s${i % 3}`)),
          { concurrency: "unbounded" }
        )
        assert.deepStrictEqual(entries.map((e) => e.seq).sort((a, b) => a - b), Array.from({ length: 60 }, (_, i) => i + 1))
        const report = yield* verify
        assert.deepStrictEqual([report.valid, report.validCount], [true, 60])
        assert.strictEqual((yield* query({ userId: "user_1" })).length, 20)
      })
    ))

  it.effect("payloads are redacted before signing: key shapes always, handed-out secrets with a Secrets service", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ DB_PASSWORD: "hunter2-correct-horse" })
      const backend = options.fresh()
      const layer = backend.open({ secret: SECRET }).pipe(Layer.provide(Layer.succeed(Secrets.Secrets, secrets)))
      const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
      const [entry, stored] = yield* Effect.all([
        append("tool_call", {
          args: { key: "sk-ant-api03-abcdefghijklmnopqrstuvwxyz", password, nested: [`login with ${password}`] }
        }),
        query()
      ]).pipe(Effect.provide(layer))
      const text = JSON.stringify(entry)
      assert.notInclude(text, "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
      assert.notInclude(text, password)
      assert.include(text, "[REDACTED")
      assert.deepStrictEqual(stored, [entry])
      assert.isTrue((yield* AuditLog.verifyEntries(stored, SECRET)).valid)
    }))

  it.effect("payloads become JSON: dates, bigints, undefined, cycles, non-finite numbers", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        const cyclic: Record<string, unknown> = { name: "loop" }
        cyclic.self = cyclic
        const entry = yield* append("odd", {
          when: new Date(0),
          count: 12345678901234567890n,
          missing: undefined,
          cyclic,
          nan: Number.NaN,
          list: [undefined, 1]
        })
        assert.deepStrictEqual(entry.payload, {
          when: "1970-01-01T00:00:00.000Z",
          count: "12345678901234567890",
          cyclic: { name: "loop", self: "[Circular]" },
          nan: null,
          list: [null, 1]
        })
        assert.deepStrictEqual(yield* query(), [entry])
        assert.isTrue((yield* verify).valid)
      })
    ))

  it.effect("a payload member named __proto__ is signed as a member, never made the prototype", () =>
    withLog(
      options.fresh(),
      Effect.gen(function*() {
        const payload = JSON.parse(`{"__proto__":{"isAdmin":true},"a":1}`) as Record<string, unknown>
        const entry = yield* append("odd", payload)
        assert.deepStrictEqual(Object.keys(entry.payload as object), ["__proto__", "a"])
        assert.strictEqual(Object.getPrototypeOf(entry.payload), Object.prototype)
        assert.isUndefined((entry.payload as { isAdmin?: unknown }).isAdmin)
        assert.include(jcs(entry), `"payload":{"__proto__":{"isAdmin":true},"a":1}`)
        assert.deepStrictEqual((yield* query()).map(jcs), [jcs(entry)])
        assert.isTrue((yield* verify).valid)
      })
    ))

  it.effect("an empty key or a keyring without its current key is refused", () =>
    Effect.gen(function*() {
      const backend = options.fresh()
      const empty = yield* Effect.flip(Layer.build(backend.open({ secret: "" })).pipe(Effect.scoped))
      assert.include(String((empty as Error).message), "empty")
      const missing = yield* Effect.flip(
        Layer.build(backend.open({ keyring: { current: "k2", keys: { k1: "one" } } })).pipe(Effect.scoped)
      )
      assert.include(String((missing as Error).message), "k2")
    }))

  if (options.persistent) {
    it.effect("reopening continues the chain (seq 3 after two entries)", () =>
      Effect.gen(function*() {
        const backend = options.fresh()
        yield* withLog(backend, Effect.zipRight(append("a"), append("b")))
        const third = yield* withLog(backend, append("c"))
        assert.strictEqual(third.seq, 3)
        const report = yield* withLog(backend, verify)
        assert.deepStrictEqual([report.valid, report.validCount], [true, 3])
      }))

    it.effect("key rotation: new entries use the current key, old ones verify with theirs, a missing key is unknown_key", () =>
      Effect.gen(function*() {
        const backend = options.fresh()
        const k1 = { keyring: { current: "k1", keys: { k1: "first-key-aaaaaaaa" } } }
        const k2 = { keyring: { current: "k2", keys: { k1: "first-key-aaaaaaaa", k2: Redacted.make("second-key-bbbbbbbb") } } }
        yield* withLog(backend, Effect.zipRight(append("a"), append("b")), k1)
        yield* withLog(backend, append("c"), k2)
        const entries = yield* withLog(backend, query(), k2)
        assert.deepStrictEqual(entries.map((e) => e.keyId), ["k1", "k1", "k2"])
        assert.isTrue((yield* withLog(backend, verify, k2)).valid)
        assert.isTrue((yield* AuditLog.verifyEntries(entries, k2.keyring)).valid)
        const withoutOld = yield* AuditLog.verifyEntries(entries, { current: "k2", keys: { k2: "second-key-bbbbbbbb" } })
        assert.deepStrictEqual([withoutOld.valid, withoutOld.failure, withoutOld.firstBadSeq], [false, "unknown_key", 1])
        const swapped = yield* AuditLog.verifyEntries(entries, { current: "k2", keys: { k1: "second-key-bbbbbbbb", k2: "second-key-bbbbbbbb" } })
        assert.deepStrictEqual([swapped.failure, swapped.firstBadSeq], ["signature", 1])
      }))
  }
}
