import { assert, describe, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Chunk, Effect, Exit, Layer, Stream } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { auditConformance, independentVerify, jcs } from "./support/auditConformance.js"
import { faultyFileSystem, scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "unit-test-secret-0123456789"

const scratch = scratchDirectories("jeeves-audit-")
afterAll(scratch.removeAll)
const freshDir = scratch.make
const freshPath = () => join(freshDir(), "nested", "deeper", "audit.jsonl")

const fileLayer = (options: AuditLog.FileOptions) => AuditLog.layerFile(options).pipe(Layer.provide(NodeFileSystem.layer))

const append = (action: string, payload: Record<string, unknown> = {}, actor: AuditLog.Actor = "system") =>
  Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor, action, payload }))
const query = (filter?: AuditLog.QueryFilter) => Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query(filter))
const verify = Effect.flatMap(AuditLog.AuditLog, (audit) => audit.verify)

const verifyFile = (path: string, keys: AuditLog.Secret | AuditLog.Keyring = SECRET, options?: AuditLog.VerifyOptions) =>
  AuditLog.verifyFile(path, keys, options).pipe(Effect.provide(NodeFileSystem.layer))

/** Writes `count` entries to a new file log and returns its path. */
const writeLog = (count: number, path = freshPath()) =>
  Effect.as(
    Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => append("step", { i }), { discard: true }).pipe(
      Effect.provide(fileLayer({ path, secret: SECRET, durability: "none" }))
    ),
    path
  )

const lines = (path: string) => nodeFs.readFileSync(path, "utf8").split("\n").filter((line) => line !== "")

describe("AuditLog.layerMemory", () => {
  auditConformance({
    fresh: () => ({ open: (keys) => AuditLog.layerMemory(keys) }),
    persistent: false
  })
})

describe("AuditLog.layerFile", () => {
  auditConformance({
    fresh: () => {
      const path = freshPath()
      return { open: (keys) => fileLayer({ ...keys, path }) }
    },
    persistent: true
  })

  it.effect("writes one canonical JSON line per entry, creating parent directories", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const entries = yield* Effect.all([append("a", { text: "héllo" }), append("b", { n: [1, 2.5, -3] })]).pipe(
        Effect.provide(fileLayer({ path, secret: SECRET }))
      )
      const text = nodeFs.readFileSync(path, "utf8")
      assert.isTrue(text.endsWith("\n"))
      const stored = lines(path)
      assert.strictEqual(stored.length, 2)
      assert.deepStrictEqual(stored.map((line) => JSON.parse(line)), entries)
      assert.deepStrictEqual(stored, entries.map(jcs))
      // prevHash is the SHA-256 of the previous line's exact bytes.
      assert.strictEqual(entries[1]!.prevHash, createHash("sha256").update(stored[0]!).digest("hex"))
      assert.isFalse(nodeFs.existsSync(`${path}.lock`), "the lock is released on close")
    }))

  it.effect("members are ordered by UTF-16 code units (RFC 8785 §3.2.3) and numbers written as ECMAScript does", () =>
    Effect.gen(function*() {
      const path = freshPath()
      yield* append("vectors", {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\ud83d\ude00": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
        numbers: [1e21, 1e-7, -0, 0.1 + 0.2, 333333333.3333333, 4.5e-324, 9007199254740991]
      }).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      const line = lines(path)[0]!
      assert.include(
        line,
        `"payload":{"\\r":"Carriage Return","1":"One",` +
          `"numbers":[1e+21,1e-7,0,0.30000000000000004,333333333.3333333,5e-324,9007199254740991],` +
          `"\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}`
      )
      assert.isTrue((yield* verifyFile(path)).valid)
    }))

  it.effect("a verifier written from the format alone accepts the file's lines", () =>
    Effect.gen(function*() {
      const path = yield* writeLog(25)
      yield* append("unicode", { s: "😀 \u2028 \u0000 \"q\" \\", lone: "\ud800x" }).pipe(
        RunContext.withUser("ünïcødé"),
        Effect.provide(fileLayer({ path, secret: SECRET }))
      )
      const parsed = lines(path).map((line) => JSON.parse(line))
      assert.strictEqual(parsed.length, 26)
      assert.isUndefined(independentVerify(parsed, SECRET))
      assert.strictEqual(parsed[25].payload.lone, "\ufffdx", "lone surrogates become U+FFFD (I-JSON)")
      assert.isDefined(independentVerify(parsed, "another-key"))
    }))

  it.effect("reopening recovers seq and hash; query reads the file back", () =>
    Effect.gen(function*() {
      const path = yield* writeLog(2)
      const [third, all] = yield* Effect.all([append("c").pipe(RunContext.withUser("alice")), query()]).pipe(
        Effect.provide(fileLayer({ path, secret: SECRET }))
      )
      assert.strictEqual(third.seq, 3)
      assert.deepStrictEqual(all.map((e) => e.seq), [1, 2, 3])
      assert.strictEqual(third.prevHash, createHash("sha256").update(lines(path)[1]!).digest("hex"))
      assert.deepStrictEqual((yield* verifyFile(path)).validCount, 3)
    }))

  it.effect("a torn final line is moved to <path>.broken, recorded as log_recovered, and the chain continues", () =>
    Effect.gen(function*() {
      const path = yield* writeLog(3)
      const size = nodeFs.statSync(path).size
      const torn = lines(path)[2]!.slice(0, 40)
      nodeFs.appendFileSync(path, torn)

      const before = yield* verifyFile(path)
      assert.deepStrictEqual(
        [before.valid, before.failure, before.validCount, before.firstBadSeq, before.tornTail],
        [true, "torn_tail", 3, 4, { offset: size, bytes: 40 }]
      )

      const [next, recovered] = yield* Effect.all([append("after"), query({ action: "log_recovered" })]).pipe(
        Effect.provide(fileLayer({ path, secret: SECRET }))
      )
      assert.strictEqual(nodeFs.readFileSync(`${path}.broken`, "utf8"), torn)
      assert.strictEqual(recovered.length, 1)
      assert.deepStrictEqual(recovered[0]!.payload, {
        reason: "torn_tail",
        offset: size,
        dropped_bytes: 40,
        dropped_sha256: createHash("sha256").update(torn).digest("hex"),
        broken_file: "audit.jsonl.broken"
      })
      assert.deepStrictEqual([recovered[0]!.seq, recovered[0]!.userId, next.seq], [4, null, 5])
      const after = yield* verifyFile(path)
      assert.deepStrictEqual([after.valid, after.failure, after.validCount], [true, undefined, 5])
    }))

  it.effect("torn-byte sweep: a cut anywhere in the last line keeps exactly the complete lines before it", () =>
    Effect.gen(function*() {
      const original = yield* writeLog(4)
      const bytes = nodeFs.readFileSync(original)
      const lastStart = bytes.lastIndexOf(0x0a, bytes.length - 2) + 1
      for (let cut = lastStart + 1; cut < bytes.length; cut += 23) {
        const path = join(freshDir(), "audit.jsonl")
        nodeFs.writeFileSync(path, bytes.subarray(0, cut))
        const entry = yield* append("after-cut").pipe(Effect.provide(fileLayer({ path, secret: SECRET, durability: "none" })))
        assert.strictEqual(entry.seq, 5, `cut at ${cut}: 3 kept, log_recovered is 4`)
        assert.deepStrictEqual(nodeFs.readFileSync(`${path}.broken`), bytes.subarray(lastStart, cut))
        assert.isTrue(nodeFs.readFileSync(path).subarray(0, lastStart).equals(bytes.subarray(0, lastStart)))
        const report = yield* verifyFile(path)
        assert.deepStrictEqual([report.valid, report.validCount, report.failure], [true, 5, undefined])
      }
    }))

  it.effect("damage before the last line refuses to open, with a typed error, and leaves the file untouched", () =>
    Effect.gen(function*() {
      const path = yield* writeLog(4)
      const stored = lines(path)
      const damaged = [stored[0], stored[1]!.replace('"i":1', '"i":7'), stored[2], stored[3]].join("\n") + "\n"
      nodeFs.writeFileSync(path, damaged)
      const error = yield* Effect.flip(Layer.build(fileLayer({ path, secret: SECRET })).pipe(Effect.scoped))
      assert.strictEqual(error._tag, "AuditCorrupted")
      const report = (error as AuditLog.AuditCorrupted).report as AuditLog.VerifyReport
      assert.deepStrictEqual([report.failure, report.firstBadSeq, report.line], ["signature", 2, 2])
      assert.include(error.message, "signature at seq 2")
      assert.strictEqual(nodeFs.readFileSync(path, "utf8"), damaged)
      assert.isFalse(nodeFs.existsSync(`${path}.broken`))
      assert.isFalse(nodeFs.existsSync(`${path}.lock`))

      // 512 zero bytes inside a middle line (etcd's TearMiddle fault): not repaired either.
      const zeroed = Buffer.from(yield* writeLog(5).pipe(Effect.map((p) => nodeFs.readFileSync(p))))
      const second = zeroed.indexOf(0x0a) + 1
      zeroed.fill(0, second + 10, second + 10 + 100)
      const zeroPath = join(freshDir(), "audit.jsonl")
      nodeFs.writeFileSync(zeroPath, zeroed)
      const zeroError = yield* Effect.flip(Layer.build(fileLayer({ path: zeroPath, secret: SECRET })).pipe(Effect.scoped))
      assert.strictEqual(zeroError._tag, "AuditCorrupted")
      assert.strictEqual(((zeroError as AuditLog.AuditCorrupted).report as AuditLog.VerifyReport).failure, "bad_json")
      assert.isTrue(nodeFs.readFileSync(zeroPath).equals(zeroed))
    }))

  it.effect("one writer per file: a second layer on the same path fails; a dead process's lock is taken over", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const second = yield* Effect.gen(function*() {
        yield* append("first")
        return yield* Effect.flip(Layer.build(fileLayer({ path, secret: SECRET })).pipe(Effect.scoped))
      }).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      assert.strictEqual(second._tag, "AuditUnavailable")
      assert.include(second.message, "already open for writing by this process")

      nodeFs.writeFileSync(`${path}.lock`, "2147483646\n") // no such process
      const entry = yield* append("after stale lock").pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      assert.strictEqual(entry.seq, 2)
    }))

  it.effect("a failed fsync poisons the writer: that append and every later one fail, nothing acknowledged is lost", () =>
    Effect.gen(function*() {
      const path = freshPath()
      let failing = false
      const faulty = faultyFileSystem({ failSync: () => failing })
      const layer = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(faulty.layer))
      const outcome = yield* Effect.gen(function*() {
        const first = yield* append("one")
        failing = true
        const failed = yield* Effect.exit(append("two"))
        failing = false // the disk "recovers", but the file's state after a failed fsync is unknown
        const later = yield* Effect.exit(append("three"))
        return { first, failed, later }
      }).pipe(Effect.provide(layer))
      assert.strictEqual(outcome.first.seq, 1)
      assert.isTrue(Exit.isFailure(outcome.failed) && Exit.isFailure(outcome.later))
      const error = yield* Effect.flip(outcome.later)
      assert.strictEqual(error._tag, "AuditUnavailable")
      assert.include(error.message, "EIO")
      const report = yield* verifyFile(path)
      assert.isTrue(report.valid)
      assert.isAtLeast(report.validCount, 1, "the acknowledged entry is there")
    }))

  it.effect("group commit: concurrent appends share fsyncs", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const counting = faultyFileSystem({})
      yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) => append("burst", { i }), {
        concurrency: "unbounded",
        discard: true
      }).pipe(Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(counting.layer))))
      assert.strictEqual(lines(path).length, 200)
      assert.isBelow(counting.counters.syncs, 20, `200 appends took ${counting.counters.syncs} fsyncs`)
      assert.isTrue((yield* verifyFile(path)).valid)
    }))

  it.effect("durability none writes without fsync", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const counting = faultyFileSystem({})
      yield* Effect.all([append("a"), append("b")]).pipe(
        Effect.provide(AuditLog.layerFile({ path, secret: SECRET, durability: "none" }).pipe(Layer.provide(counting.layer)))
      )
      assert.strictEqual(lines(path).length, 2)
      // Only what creating the log syncs: the new file, its directory, and the parents of the two directories
      // made for it (nested/ and deeper/); no append is synced.
      assert.strictEqual(counting.counters.syncs, 4, "only the new file and the directory entries are synced")
    }))

  it.effect("a pinned logId must match the file's", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const first = yield* append("a").pipe(Effect.provide(fileLayer({ path, secret: SECRET, logId: "log_prod_eu" })))
      assert.strictEqual(first.logId, "log_prod_eu")
      const error = yield* Effect.flip(Layer.build(fileLayer({ path, secret: SECRET, logId: "log_other" })).pipe(Effect.scoped))
      assert.strictEqual(error._tag, "AuditCorrupted")
      assert.include(error.message, "log_prod_eu")
      const report = yield* verifyFile(path, SECRET, { logId: "log_other" })
      assert.deepStrictEqual([report.valid, report.failure], [false, "chain"])
    }))
})

describe("AuditLog.verifyFile and streamFile", () => {
  it.effect("a missing file is a typed error; an empty file is valid with no entries", () =>
    Effect.gen(function*() {
      const dir = freshDir()
      const error = yield* Effect.flip(verifyFile(join(dir, "missing.jsonl")))
      assert.strictEqual(error._tag, "AuditUnavailable")
      assert.include(error.message, "missing.jsonl")
      nodeFs.writeFileSync(join(dir, "empty.jsonl"), "")
      assert.deepStrictEqual(yield* verifyFile(join(dir, "empty.jsonl")), {
        valid: true,
        validCount: 0,
        lastSeq: 0,
        lastHash: "0".repeat(64),
        logId: undefined
      })
    }))

  it.effect("streams a large file with filters, skipping a torn tail; a bad middle line fails the stream", () =>
    Effect.gen(function*() {
      const path = freshPath()
      yield* Effect.forEach(
        Array.from({ length: 3000 }, (_, i) => i),
        (i) => append(i % 3 === 0 ? "tool_call" : "other", { i, pad: "x".repeat(100) }).pipe(RunContext.withUser(`u${i % 2}`)),
        { concurrency: 50, discard: true }
      ).pipe(Effect.provide(fileLayer({ path, secret: SECRET, durability: "none" })))
      nodeFs.appendFileSync(path, "{\"seq\":30")
      const stream = AuditLog.streamFile(path, { userId: "u0", action: "tool_call" }).pipe(Stream.provideLayer(NodeFileSystem.layer))
      const found = Chunk.toReadonlyArray(yield* Stream.runCollect(stream))
      assert.strictEqual(found.length, 500)
      assert.isTrue(found.every((e) => e.userId === "u0" && e.action === "tool_call"))

      const broken = lines(path)
      broken[10] = "not json"
      nodeFs.writeFileSync(path, broken.join("\n") + "\n")
      const error = yield* Effect.flip(Stream.runDrain(AuditLog.streamFile(path).pipe(Stream.provideLayer(NodeFileSystem.layer))))
      assert.strictEqual(error._tag, "AuditUnavailable")
      assert.include(error.message, "line 11")
    }))
})

describe("hostile input", () => {
  it.effect("values that are not entries, or not JSON, are bad_json, never a crash", () =>
    Effect.gen(function*() {
      const entries = yield* Effect.zipRight(append("a"), query()).pipe(Effect.provide(AuditLog.layerMemory({ secret: SECRET })))
      const cases: ReadonlyArray<unknown> = [
        null,
        "a string",
        [entries[0]],
        { ...entries[0], extra: 1 },
        { ...entries[0], seq: "1" },
        { ...entries[0], seq: 0 },
        { ...entries[0], payload: [] },
        { ...entries[0], payload: { x: Number.NaN } },
        { ...entries[0], signature: entries[0]!.signature.toUpperCase() }
      ]
      for (const value of cases) {
        const report = yield* AuditLog.verifyEntries([value], SECRET)
        assert.deepStrictEqual([report.valid, report.failure, report.firstBadSeq], [false, "bad_json", 1], JSON.stringify(value))
      }
    }))

  it.effect("an appended payload nested deeper than 64 levels is cut there, and still verifies", () =>
    Effect.gen(function*() {
      let nested: Record<string, unknown> = { leaf: true }
      for (let i = 0; i < 100; i++) nested = { nested }
      const entry = yield* append("deep", nested).pipe(Effect.provide(AuditLog.layerMemory({ secret: SECRET })))
      let depth = 0
      let cursor: unknown = entry.payload
      while (typeof cursor === "object" && cursor !== null) {
        cursor = (cursor as { nested?: unknown }).nested
        depth++
      }
      assert.deepStrictEqual([depth, cursor], [64, "[Truncated]"])
      assert.isTrue((yield* AuditLog.verifyEntries([entry], SECRET)).valid)
    }))

  it.effect("an entry whose payload is nested 200 000 levels deep is bad_json", () =>
    Effect.gen(function*() {
      const path = yield* writeLog(1)
      const deep = "[".repeat(200_000) + "]".repeat(200_000)
      nodeFs.writeFileSync(path, nodeFs.readFileSync(path, "utf8").replace('"payload":{"i":0}', `"payload":{"i":${deep}}`))
      const report = yield* verifyFile(path)
      assert.deepStrictEqual([report.valid, report.failure, report.firstBadSeq], [false, "bad_json", 1])
      assert.include(report.detail, "nested too deeply")
    }))
})

describe("the original's test_audit.py, translated", () => {
  const memory = AuditLog.layerMemory({ secret: SECRET })

  it.effect("test_in_memory_audit_log_appends_with_monotonic_seq", () =>
    Effect.gen(function*() {
      const a = yield* append("run_started", {}, "user")
      const b = yield* append("run_completed")
      assert.deepStrictEqual([a.seq, b.seq], [1, 2])
      assert.isTrue(a.timestamp <= b.timestamp)
    }).pipe(Effect.provide(memory)))

  it.effect("test_in_memory_audit_log_signature_verifies", () =>
    Effect.gen(function*() {
      yield* append("tool_call", { tool: "echo" }, "model")
      const entries = yield* query()
      assert.isTrue((yield* AuditLog.verifyEntries(entries, SECRET)).valid)
      assert.isFalse((yield* AuditLog.verifyEntries(entries, "wrong")).valid)
    }).pipe(Effect.provide(memory)))

  it.effect("test_in_memory_audit_log_query_filters_by_session and _by_action", () =>
    Effect.gen(function*() {
      yield* append("run_started").pipe(RunContext.withUser(null, { sessionId: "s1" }))
      yield* append("tool_call").pipe(RunContext.withUser(null, { sessionId: "s2" }))
      yield* append("run_completed").pipe(RunContext.withUser(null, { sessionId: "s1" }))
      assert.deepStrictEqual((yield* query({ sessionId: "s1" })).map((e) => e.action), ["run_started", "run_completed"])
      assert.deepStrictEqual((yield* query({ action: "tool_call" })).map((e) => e.sessionId), ["s2"])
    }).pipe(Effect.provide(memory)))

  it.effect("test_file_audit_log_writes_jsonl, _recovers_seq_on_restart, _query_reads_back, _creates_parent_directory", () =>
    Effect.gen(function*() {
      const path = freshPath()
      assert.isFalse(nodeFs.existsSync(join(path, "..")))
      yield* Effect.all([append("a", { k: "v" }), append("b", { n: 2 })]).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      const stored = lines(path).map((line) => JSON.parse(line))
      assert.deepStrictEqual(stored.map((e) => [e.seq, e.payload]), [[1, { k: "v" }], [2, { n: 2 }]])
      const [third, all] = yield* Effect.all([append("c"), query()]).pipe(Effect.provide(fileLayer({ path, secret: SECRET })))
      assert.strictEqual(third.seq, 3)
      assert.deepStrictEqual(all.map((e) => e.action), ["a", "b", "c"])
    }))

  it.effect("test_audit_entry_carries_top_level_user_id, test_audit_query_filter_by_user_id, _combined_user_and_action_filter", () =>
    Effect.gen(function*() {
      const entry = yield* append("tool_call").pipe(RunContext.withUser("alice"))
      yield* append("run_started").pipe(RunContext.withUser("alice"))
      yield* append("tool_call").pipe(RunContext.withUser("bob"))
      assert.strictEqual(entry.userId, "alice")
      assert.strictEqual((yield* query({ userId: "alice" })).length, 2)
      assert.strictEqual((yield* query({ userId: "bob" })).length, 1)
      assert.deepStrictEqual((yield* query({ userId: "alice", action: "tool_call" })).map((e) => e.seq), [1])
    }).pipe(Effect.provide(memory)))

  it.effect("test_audit_entries_are_signed_and_verifiable: editing a payload breaks the signature", () =>
    Effect.gen(function*() {
      yield* append("tool_call", { tool: "delete_file", path: "notes/x.txt" }, "model")
      yield* append("tool_result", { ok: true })
      const entries = yield* query()
      assert.isTrue((yield* verify).valid)
      const edited = [{ ...entries[0]!, payload: { tool: "read_file", path: "notes/x.txt" } }, entries[1]!]
      const report = yield* AuditLog.verifyEntries(edited, SECRET)
      assert.deepStrictEqual([report.valid, report.failure, report.firstBadSeq], [false, "signature", 1])
    }).pipe(Effect.provide(memory)))
})

describe("AuditLog.none", () => {
  it.effect("is disabled and refuses appends", () =>
    Effect.gen(function*() {
      assert.isFalse(AuditLog.none.enabled)
      const error = yield* Effect.flip(AuditLog.none.append({ actor: "system", action: "x", payload: {} }))
      assert.strictEqual(error._tag, "AuditUnavailable")
    }))
})
