/**
 * The fast paths of the audit chain against the plain implementations they
 * replace: HMAC from prepared pads vs `createHmac`, one-shot SHA-256 vs
 * `createHash`, the cached-day timestamp vs `toISOString`, and JCS with its
 * quoting shortcut vs a direct `JSON.stringify` transcription of RFC 8785;
 * and the batch writer's hand-off.
 */
import { createHash, createHmac } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, FastCheck, Fiber, Scope } from "effect"
import { AuditLog } from "jeevesagent"
import { type BatchWriter, makeBatchWriter, type Outcome } from "../src/internal/audit.js"
import { type Draft, type EntryAt, hmacHex, isoTimestamp, sha256Hex, verifyKeys } from "../src/internal/auditChain.js"
import { canonicalize, quote, toJson } from "../src/internal/auditJcs.js"

/** Any UTF-16 code units, lone surrogates included. */
const codeUnits = (maxLength: number) =>
  FastCheck.array(FastCheck.integer({ min: 0, max: 0xffff }), { maxLength }).map((codes) => String.fromCharCode(...codes))

const reference = (key: string, text: string) => createHmac("sha256", Buffer.from(key, "utf8")).update(text, "utf8").digest("hex")

describe("hmacHex", () => {
  const keys = ["", "k", "bench-secret-0123456789abcdef", "x".repeat(64), "y".repeat(65), "ключ🔑".repeat(30)]
  const texts = [
    "",
    "a",
    "{\"action\":\"tool_call\"}",
    "grüße 密码 🔑",
    "lone \ud800 high, lone \udc00 low, reversed \udc00\ud800",
    "€".repeat(20_000), // grows the scratch buffer (3 bytes per code unit)
    "z".repeat(70_000) // over the one-shot limit: createHmac
  ]

  it("equals createHmac for keys shorter than, equal to and longer than the block, and any text", () => {
    for (const key of keys) {
      const prepared = verifyKeys(key).any!
      for (const text of texts) assert.strictEqual(hmacHex(prepared, text), reference(key, text), `${key.length} / ${text.length}`)
    }
  })

  it.prop("equals createHmac on arbitrary code units", [codeUnits(40), codeUnits(600)], ([key, text]) =>
    hmacHex(verifyKeys(key).any!, text) === reference(key, text))

  it("two keys used in turn do not share state", () => {
    const a = verifyKeys("key-a").any!
    const b = verifyKeys("key-b").any!
    for (let i = 0; i < 5; i++) {
      assert.strictEqual(hmacHex(a, `t${i}`), reference("key-a", `t${i}`))
      assert.strictEqual(hmacHex(b, `t${i}`), reference("key-b", `t${i}`))
    }
  })
})

describe("sha256Hex", () => {
  it.prop("equals createHash for strings and bytes", [codeUnits(600)], ([text]) =>
    sha256Hex(text) === createHash("sha256").update(text, "utf8").digest("hex") &&
    sha256Hex(Buffer.from(text, "utf8")) === createHash("sha256").update(Buffer.from(text, "utf8")).digest("hex"))
})

describe("isoTimestamp", () => {
  const DAY = 86_400_000
  const YEAR_10000 = 253_402_300_800_000

  it("equals toISOString at day, year and range edges", () => {
    const edges = [
      0, 1, 999, 1000, DAY - 1, DAY, DAY + 1, 1_700_000_000_000, 951_782_400_000 /* 2000-02-29 */,
      YEAR_10000 - 1, YEAR_10000, YEAR_10000 + DAY, -1, -DAY, -62_198_755_200_000, 1.5, 1_700_000_000_000.999
    ]
    for (const millis of edges) assert.strictEqual(isoTimestamp(millis), new Date(millis).toISOString(), String(millis))
  })

  it.prop(
    "equals toISOString, also when consecutive calls change day",
    [FastCheck.array(FastCheck.integer({ min: -1e13, max: YEAR_10000 + 1e12 }), { minLength: 1, maxLength: 20 })],
    ([values]) => values.every((millis) => isoTimestamp(millis) === new Date(millis).toISOString())
  )
})

/** RFC 8785 written the plain way: `JSON.stringify` for every string and number. */
const jcsReference = (value: unknown): string => {
  if (typeof value === "string" || typeof value === "number") return JSON.stringify(value)
  if (typeof value === "boolean" || value === null) return String(value)
  if (Array.isArray(value)) return `[${value.map(jcsReference).join(",")}]`
  const record = value as Record<string, unknown>
  return `{${
    Object.keys(record).sort().filter((key) => record[key] !== undefined).map((key) =>
      `${JSON.stringify(key)}:${jcsReference(record[key])}`
    ).join(",")
  }}`
}

describe("JCS", () => {
  it.prop("quote equals JSON.stringify for any code units", [codeUnits(60)], ([text]) => quote(text) === JSON.stringify(text), {
    fastCheck: { numRuns: 1000 }
  })

  it("numbers are written as ECMAScript does", () => {
    const numbers = [0, -0, 1, -1, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 123456789012345680000, -1.5e-9]
    for (const n of numbers) assert.strictEqual(canonicalize(n), JSON.stringify(n))
    assert.throws(() => canonicalize(Number.NaN))
    assert.throws(() => canonicalize(Number.POSITIVE_INFINITY))
  })

  it.prop("canonicalize equals the reference on any JSON value", [FastCheck.jsonValue()], ([value]) =>
    canonicalize(value) === jcsReference(value), { fastCheck: { numRuns: 500 } })

  it.prop(
    "member order is by UTF-16 code units, for few and many members with any names",
    [FastCheck.uniqueArray(codeUnits(6), { minLength: 0, maxLength: 40 })],
    ([names]) => {
      const record: Record<string, number> = {}
      names.forEach((name, i) => (record[name] = i))
      return canonicalize(record) === jcsReference(record)
    },
    { fastCheck: { numRuns: 500 } }
  )

  it.prop(
    "toJson keeps JSON values as JSON.parse(JSON.stringify(..)) would, lone surrogates as U+FFFD",
    [FastCheck.jsonValue()],
    ([value]) => {
      const text = JSON.stringify(value)
      // A "__proto__" member sets the prototype of a plain object (as it always has): not compared here.
      if (text.includes("\"__proto__\"")) return true
      const expected = JSON.parse(text.replace(/\\ud[89a-f][0-9a-f]{2}/g, (escape) => {
        const unit = Number.parseInt(escape.slice(2), 16)
        return unit >= 0xd800 && unit <= 0xdfff ? "\\ufffd" : escape
      }))
      // Compared as text: -0 stays -0 in the value (JCS writes it as 0).
      return JSON.stringify(toJson(value, (s) => s)) === JSON.stringify(expected)
    },
    { fastCheck: { numRuns: 300 } }
  )

  it("toJson: holes in arrays are null, as JSON.stringify writes them; lone surrogates become U+FFFD", () => {
    // eslint-disable-next-line no-sparse-arrays
    assert.deepStrictEqual(toJson([1, , 3], (s) => s), [1, null, 3])
    assert.deepStrictEqual(toJson({ ["k\ud800"]: "v\udc00x" }, (s) => s), { "k\ufffd": "v\ufffdx" })
  })
})

describe("makeBatchWriter", () => {
  const draft = (action: string): Draft => ({ sessionId: "s", userId: null, runId: "r", actor: "system", action, payload: {} })
  const entryOf = (d: Draft, seq: number) => ({ ...d, seq }) as unknown as AuditLog.AuditEntry
  /** A commit's entries, by index. */
  const at = (entries: ReadonlyArray<AuditLog.AuditEntry>): EntryAt => (index) => entries[index]!

  it.scoped("an appender interrupted while its batch is written does not stop the writer; later appends complete", () =>
    Effect.gen(function*() {
      const gate = yield* Effect.makeLatch(false)
      const committed: Array<string> = []
      const { append: submit } = yield* makeBatchWriter({
        maxBatch: 8,
        poisonOnFailure: false,
        name: "test writer",
        commit: (drafts) =>
          Effect.zipRight(
            gate.await,
            Effect.sync(() => at(drafts.map((d) => (committed.push(d.action), entryOf(d, committed.length)))))
          )
      })
      const first = yield* Effect.fork(submit(draft("one")))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(first)
      yield* gate.open
      const second = yield* submit(draft("two"))
      assert.strictEqual(second.action, "two")
      assert.deepStrictEqual(committed, ["one", "two"])
    }))

  it.scoped("a failed batch fails each of its appenders with the batch's error", () =>
    Effect.gen(function*() {
      const { append: submit } = yield* makeBatchWriter({
        maxBatch: 8,
        poisonOnFailure: true,
        name: "test writer",
        commit: () => Effect.fail(new AuditLog.AuditUnavailable({ description: "disk full" }))
      })
      const results = yield* Effect.all([submit(draft("a")), submit(draft("b"))], { concurrency: "unbounded", mode: "either" })
      for (const result of results) assert.isTrue(Either.isLeft(result) && result.left.description === "disk full")
      const later = yield* Effect.either(submit(draft("c")))
      assert.isTrue(Either.isLeft(later) && later.left.description === "disk full")
    }))

  it.scoped("a batch whose commit dies (a bug) fails its appenders and the later ones with a typed error, instead of leaving them waiting", () =>
    Effect.gen(function*() {
      const { append: submit } = yield* makeBatchWriter({
        maxBatch: 8,
        poisonOnFailure: true,
        name: "test writer",
        commit: () => Effect.die(new Error("index out of range"))
      })
      const results = yield* Effect.all([submit(draft("a")), submit(draft("b"))], { concurrency: "unbounded", mode: "either" })
      for (const result of results) {
        assert.isTrue(Either.isLeft(result), "failed")
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left._tag, "AuditUnavailable")
          assert.include(result.left.description, "could not be committed (a bug): index out of range")
        }
      }
      const later = yield* Effect.either(submit(draft("c")))
      assert.isTrue(Either.isLeft(later) && later.left.description.includes("index out of range"))
    }))

  it.effect("batches hold at most maxBatch entries, in order; closing writes every entry taken before it, then refuses", () =>
    Effect.gen(function*() {
      const batches: Array<Array<string>> = []
      const outcomes: Array<string> = []
      const scope = yield* Scope.make()
      const writer = yield* makeBatchWriter({
        maxBatch: 3,
        poisonOnFailure: false,
        name: "test writer",
        commit: (drafts) =>
          Effect.sync(() => {
            batches.push(drafts.map((d) => d.action))
            return at(drafts.map((d, i) => entryOf(d, i + 1)))
          })
      }).pipe(Scope.extend(scope))
      const report = (label: string) => (outcome: Outcome) => outcomes.push(Exit.isSuccess(outcome) ? label : `failed: ${outcome.cause}`)
      for (let i = 0; i < 7; i++) writer.submit(draft(`e${i}`), () => 0, report(`e${i}`))
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(batches, [["e0", "e1", "e2"], ["e3", "e4", "e5"], ["e6"]])
      assert.deepStrictEqual(outcomes, ["e0", "e1", "e2", "e3", "e4", "e5", "e6"])
      const late = yield* Effect.either(writer.append(draft("late")))
      assert.isTrue(Either.isLeft(late) && late.left.description === "test writer is closed")
    }))

  it.scoped("a backlog is committed in full batches, in order; its last, partial one is filled with what arrived meanwhile", () =>
    Effect.gen(function*() {
      const gate = yield* Effect.makeLatch(false)
      const batches: Array<Array<string>> = []
      const outcomes: Array<string> = []
      const report = (label: string) => (outcome: Outcome) => outcomes.push(Exit.isSuccess(outcome) ? label : `${label}: failed`)
      const writer: BatchWriter = yield* makeBatchWriter({
        maxBatch: 64,
        poisonOnFailure: false,
        name: "test writer",
        commit: (drafts) =>
          Effect.zipRight(
            gate.await,
            Effect.sync(() => {
              batches.push(drafts.map((d) => d.action))
              // Five more arrive while the backlog's first batch is committed.
              if (batches.length === 2) for (let i = 0; i < 5; i++) writer.submit(draft(`late${i}`), () => 0, report(`late${i}`))
              return at(drafts.map((d, i) => entryOf(d, i + 1)))
            })
          )
      })
      writer.submit(draft("first"), () => 0, report("first"))
      yield* Effect.yieldNow()
      // The first batch is being committed; 200 more wait behind it.
      for (let i = 0; i < 200; i++) writer.submit(draft(`e${i}`), () => 0, report(`e${i}`))
      const awaited = yield* Effect.fork(writer.append(draft("awaited")))
      yield* Effect.yieldNow()
      yield* gate.open
      const entry = yield* Fiber.join(awaited)
      assert.strictEqual(entry.action, "awaited")
      yield* Effect.yieldNow()
      assert.deepStrictEqual(batches.map((batch) => batch.length), [1, 64, 64, 64, 14])
      const expected = ["first", ...Array.from({ length: 200 }, (_, i) => `e${i}`), "awaited", ...Array.from({ length: 5 }, (_, i) => `late${i}`)]
      assert.deepStrictEqual(batches.flat(), expected)
      assert.deepStrictEqual(outcomes, expected.filter((action) => action !== "awaited"))
    }))

  it.scoped("submit takes entries in order with appends and reports each outcome once its batch is committed", () =>
    Effect.gen(function*() {
      const gate = yield* Effect.makeLatch(false)
      const committed: Array<string> = []
      const writer = yield* makeBatchWriter({
        maxBatch: 8,
        poisonOnFailure: true,
        name: "test writer",
        commit: (drafts) =>
          Effect.zipRight(
            gate.await,
            drafts.some((d) => d.action === "bad") ?
              Effect.fail(new AuditLog.AuditUnavailable({ description: "disk full" })) :
              Effect.sync(() => at(drafts.map((d) => (committed.push(d.action), entryOf(d, committed.length)))))
          )
      })
      const outcomes: Array<string> = []
      const report = (label: string) => (outcome: Outcome) => outcomes.push(Exit.isSuccess(outcome) ? `${label}:ok` : `${label}:failed`)
      writer.submit(draft("one"), () => 0, report("one"))
      const awaited = yield* Effect.fork(writer.append(draft("two")))
      yield* Effect.yieldNow()
      writer.submit(draft("three"), () => 0, report("three"))
      yield* Effect.yieldNow()
      assert.deepStrictEqual(outcomes, [], "nothing is reported before the batch is durable")
      yield* gate.open
      assert.strictEqual((yield* Fiber.join(awaited)).seq, 2)
      yield* Effect.yieldNow()
      assert.deepStrictEqual(committed, ["one", "two", "three"])
      assert.deepStrictEqual(outcomes, ["one:ok", "three:ok"])
      writer.submit(draft("bad"), () => 0, report("bad"))
      yield* Effect.either(writer.append(draft("after")))
      writer.submit(draft("poisoned"), () => 0, report("poisoned"))
      assert.deepStrictEqual(outcomes.slice(2), ["bad:failed", "poisoned:failed"])
    }))
})
