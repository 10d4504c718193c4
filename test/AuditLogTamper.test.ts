/**
 * The tamper matrix: each way of changing a log after the fact is detected,
 * with the right reason and the first bad seq. Built on a file log of 12
 * entries by three users, signed with two keys (a rotation after seq 6).
 */
import { assert, describe, it } from "@effect/vitest"
import { createHash, createHmac } from "node:crypto"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, FastCheck, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { jcs } from "./support/auditConformance.js"

const K1 = "tamper-key-one-0123456789"
const K2 = "tamper-key-two-9876543210"
const keyring: AuditLog.Keyring = { current: "k2", keys: { k1: K1, k2: K2 } }
const USERS = ["alice", "bob", null] as const

let dir = ""
let original: ReadonlyArray<string> = []
let foreign: ReadonlyArray<string> = []

const writeEntries = (path: string, from: number, to: number, keys: AuditLog.KeyOptions) =>
  Effect.forEach(
    Array.from({ length: to - from }, (_, i) => from + i),
    (i) =>
      Effect.flatMap(AuditLog.AuditLog, (audit) =>
        audit.append({ actor: i % 2 === 0 ? "model" : "system", action: i % 2 === 0 ? "tool_call" : "tool_result", payload: { i, tool: "transfer", amount: 100 * i } })
      ).pipe(RunContext.withUser(USERS[i % 3], { sessionId: `s${i % 3}`, runId: `r${i % 3}` })),
    { discard: true }
  ).pipe(Effect.provide(AuditLog.layerFile({ path, durability: "none", ...keys }).pipe(Layer.provide(NodeFileSystem.layer))))

const readLines = (path: string) => nodeFs.readFileSync(path, "utf8").split("\n").filter((l) => l !== "")

beforeAll(async () => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-tamper-"))
  const path = join(dir, "original.jsonl")
  await Effect.runPromise(
    Effect.gen(function*() {
      yield* writeEntries(path, 0, 6, { keyring: { current: "k1", keys: { k1: K1 } } })
      yield* writeEntries(path, 6, 12, { keyring })
    })
  )
  original = readLines(path)
  // Another log sharing the current key: its lines carry valid signatures.
  const other = join(dir, "other.jsonl")
  await Effect.runPromise(writeEntries(other, 0, 8, { keyring }))
  foreign = readLines(other)
})
afterAll(() => nodeFs.rmSync(dir, { recursive: true, force: true }))

const verifyText = (text: string, keys: AuditLog.Secret | AuditLog.Keyring = keyring) => {
  const path = join(dir, `case-${Math.random().toString(36).slice(2)}.jsonl`)
  nodeFs.writeFileSync(path, text)
  return AuditLog.verifyFile(path, keys).pipe(Effect.provide(NodeFileSystem.layer))
}
const joined = (lines: ReadonlyArray<string>) => lines.map((line) => `${line}\n`).join("")

const editLine = (lines: ReadonlyArray<string>, index: number, edit: (entry: Record<string, any>) => void) =>
  lines.map((line, i) => {
    if (i !== index) return line
    const entry = JSON.parse(line)
    edit(entry)
    return jcs(entry)
  })

const resign = (entry: Record<string, any>, key: string) => {
  const { signature: _, ...unsigned } = entry
  entry.signature = createHmac("sha256", key).update(jcs(unsigned)).digest("hex")
}

interface Case {
  readonly name: string
  readonly text: () => string
  readonly expect: { readonly failure: AuditLog.VerifyFailure; readonly firstBadSeq: number; readonly validCount: number }
  readonly keys?: AuditLog.Secret | AuditLog.Keyring
}

const cases: ReadonlyArray<Case> = [
  {
    name: "edit a payload",
    text: () => joined(editLine(original, 4, (e) => (e.payload.amount = 1))),
    expect: { failure: "signature", firstBadSeq: 5, validCount: 4 }
  },
  {
    name: "swap two entries' user ids",
    text: () => {
      const a = JSON.parse(original[2]!)
      const b = JSON.parse(original[7]!)
      assert.notStrictEqual(a.userId, b.userId)
      return joined(editLine(editLine(original, 2, (e) => (e.userId = b.userId)), 7, (e) => (e.userId = a.userId)))
    },
    expect: { failure: "signature", firstBadSeq: 3, validCount: 2 }
  },
  {
    name: "delete a line",
    text: () => joined(original.filter((_, i) => i !== 5)),
    expect: { failure: "seq_gap", firstBadSeq: 7, validCount: 5 }
  },
  {
    name: "reorder two lines",
    text: () => joined([...original.slice(0, 3), original[4]!, original[3]!, ...original.slice(5)]),
    expect: { failure: "seq_gap", firstBadSeq: 5, validCount: 3 }
  },
  {
    name: "duplicate a line",
    text: () => joined([...original.slice(0, 6), original[5]!, ...original.slice(6)]),
    expect: { failure: "duplicate", firstBadSeq: 6, validCount: 6 }
  },
  {
    name: "replay an old line later",
    text: () => joined([...original, original[1]!]),
    expect: { failure: "duplicate", firstBadSeq: 2, validCount: 12 }
  },
  {
    name: "truncate in the middle (a line cut short, later lines kept)",
    text: () => joined([...original.slice(0, 7), original[7]!.slice(0, 90), ...original.slice(8)]),
    expect: { failure: "bad_json", firstBadSeq: 8, validCount: 7 }
  },
  {
    name: "re-sign an edited entry with a wrong key",
    text: () => joined(editLine(original, 8, (e) => ((e.payload.amount = 0), resign(e, "attacker-key")))),
    expect: { failure: "signature", firstBadSeq: 9, validCount: 8 }
  },
  {
    name: "rebuild the whole chain with a wrong key",
    text: () => {
      let prevHash = "0".repeat(64)
      return joined(original.map((line) => {
        const entry = JSON.parse(line)
        entry.prevHash = prevHash
        resign(entry, "attacker-key")
        const rebuilt = jcs(entry)
        prevHash = createHash("sha256").update(rebuilt).digest("hex")
        return rebuilt
      }))
    },
    expect: { failure: "signature", firstBadSeq: 1, validCount: 0 }
  },
  {
    name: "re-sign an old entry with the newer key (CVE-2023-31439 class)",
    text: () => joined(editLine(original, 1, (e) => ((e.payload.amount = 0), resign(e, K2)))),
    expect: { failure: "signature", firstBadSeq: 2, validCount: 1 }
  },
  {
    name: "splice in a line from another log that shares the key",
    text: () => joined([...original.slice(0, 4), foreign[4]!, ...original.slice(5)]),
    expect: { failure: "chain", firstBadSeq: 5, validCount: 4 }
  },
  {
    name: "splice in a line re-chained onto this log (its logId gives it away)",
    text: () => {
      const entry = JSON.parse(foreign[4]!)
      entry.prevHash = createHash("sha256").update(original[3]!).digest("hex")
      resign(entry, K2)
      return joined([...original.slice(0, 4), jcs(entry), ...original.slice(5)])
    },
    expect: { failure: "chain", firstBadSeq: 5, validCount: 4 }
  },
  {
    name: "a key id the keyring does not have",
    text: () => joined(editLine(original, 9, (e) => ((e.keyId = "k9"), resign(e, "k9-secret")))),
    expect: { failure: "unknown_key", firstBadSeq: 10, validCount: 9 }
  },
  {
    name: "old entries without their key in the keyring",
    keys: { current: "k2", keys: { k2: K2 } },
    text: () => joined(original),
    expect: { failure: "unknown_key", firstBadSeq: 1, validCount: 0 }
  },
  {
    name: "a duplicated member name (parsers disagree which one counts)",
    text: () => joined(original.map((line, i) => (i === 2 ? line.replace('{"action"', '{"userId":"mallory","action"') : line))),
    expect: { failure: "bad_json", firstBadSeq: 3, validCount: 2 }
  },
  {
    name: "a reformatted (non-canonical) line",
    text: () => joined(original.map((line, i) => (i === 3 ? JSON.stringify(JSON.parse(line), null, 1).replace(/\n/g, "") : line))),
    expect: { failure: "bad_json", firstBadSeq: 4, validCount: 3 }
  },
  {
    name: "an empty line in the middle",
    text: () => joined([...original.slice(0, 6), "", ...original.slice(6)]),
    expect: { failure: "bad_json", firstBadSeq: 7, validCount: 6 }
  }
]

describe("tamper matrix", () => {
  it.effect("the untouched log verifies, with both keys of the rotation", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(original.map((l) => JSON.parse(l).keyId), [...Array(6).fill("k1"), ...Array(6).fill("k2")])
      const report = yield* verifyText(joined(original))
      assert.deepStrictEqual([report.valid, report.validCount, report.failure], [true, 12, undefined])
    }))

  for (const c of cases) {
    it.effect(`${c.name} → ${c.expect.failure} at seq ${c.expect.firstBadSeq}`, () =>
      Effect.gen(function*() {
        const report = yield* verifyText(c.text(), c.keys)
        assert.deepStrictEqual(
          { valid: report.valid, failure: report.failure, firstBadSeq: report.firstBadSeq, validCount: report.validCount },
          { valid: false, ...c.expect },
          report.detail
        )
        assert.isString(report.detail)
      }))
  }

  it.effect("entry-level mutations are caught the same way by verifyEntries", () =>
    Effect.gen(function*() {
      for (const c of cases.filter((c) => c.expect.failure !== "bad_json")) {
        const entries = c.text().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
        const report = yield* AuditLog.verifyEntries(entries, c.keys ?? keyring)
        assert.deepStrictEqual([report.failure, report.firstBadSeq], [c.expect.failure, c.expect.firstBadSeq], c.name)
      }
    }))

  it.effect("truncating the file inside its last line is a torn tail: reported, still valid, nothing before it lost", () =>
    Effect.gen(function*() {
      const text = joined(original)
      const report = yield* verifyText(text.slice(0, text.length - 30))
      assert.deepStrictEqual(
        [report.valid, report.failure, report.validCount, report.firstBadSeq],
        [true, "torn_tail", 11, 12]
      )
    }))

  it.effect("changing any one character of any line is detected at that line", () =>
    Effect.promise(() => {
      const arbitrary = FastCheck.record({
        line: FastCheck.nat({ max: 11 }),
        position: FastCheck.nat(),
        char: FastCheck.constantFrom("0", "a", "f", "Z", "\"", "{", ",", ":", " ", "9", "\\", "é")
      })
      return FastCheck.assert(
        FastCheck.asyncProperty(arbitrary, async ({ char, line, position }) => {
          const target = original[line]!
          const at = position % target.length
          FastCheck.pre(target[at] !== char)
          const lines = original.map((l, i) => (i === line ? l.slice(0, at) + char + l.slice(at + 1) : l))
          const report = await Effect.runPromise(verifyText(joined(lines)))
          return !report.valid && report.line === line + 1
        }),
        { numRuns: 150 }
      )
    }))
})

describe("the live file log's verify checks what it acknowledged", () => {
  const SECRET_LIVE = "tamper-live-secret-0123456789"
  const liveLayer = (path: string) =>
    AuditLog.layerFile({ path, secret: SECRET_LIVE, durability: "none", signing: "inline" }).pipe(
      Layer.provide(NodeFileSystem.layer)
    )
  const appendLive = (i: number) =>
    Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "a", payload: { i } }))
  const verifyLive = Effect.flatMap(AuditLog.AuditLog, (audit) => audit.verify)
  const livePath = () => join(nodeFs.mkdtempSync(join(tmpdir(), "jeeves-tamper-live-")), "audit.jsonl")

  it.live("the newest acknowledged entries cut off the file: invalid, with the count it acknowledged", () =>
    Effect.gen(function*() {
      const path = livePath()
      const report = yield* Effect.gen(function*() {
        for (let i = 0; i < 5; i++) yield* appendLive(i)
        nodeFs.writeFileSync(path, joined(readLines(path).slice(0, 3)))
        return yield* verifyLive
      }).pipe(Effect.provide(liveLayer(path)))
      assert.isFalse(report.valid)
      assert.strictEqual(report.failure, "seq_gap")
      assert.include(report.detail, "acknowledged 5 entries")
    }))

  it.live("a cut through an acknowledged line is tampering, not a torn tail", () =>
    Effect.gen(function*() {
      const path = livePath()
      const report = yield* Effect.gen(function*() {
        for (let i = 0; i < 5; i++) yield* appendLive(i)
        nodeFs.truncateSync(path, nodeFs.statSync(path).size - 40)
        return yield* verifyLive
      }).pipe(Effect.provide(liveLayer(path)))
      assert.isFalse(report.valid)
      assert.strictEqual(report.failure, "seq_gap")
    }))

  it.live("an intact live log verifies, with every entry it acknowledged", () =>
    Effect.gen(function*() {
      const path = livePath()
      const report = yield* Effect.gen(function*() {
        for (let i = 0; i < 5; i++) yield* appendLive(i)
        return yield* verifyLive
      }).pipe(Effect.provide(liveLayer(path)))
      assert.isTrue(report.valid, report.detail)
      assert.strictEqual(report.validCount, 5)
    }))
})
