/**
 * The format requires `payload` to be a JSON object, and the verifier
 * rejects any other ("payload is not a JSON object", `bad_json`). The
 * writer does not check it: a payload that is `JSON.parse` of a request body
 * (typed `any`, so the compiler lets it through) that happens to be an array
 * or `null`, or an object whose `toJSON` gives a non-object, is signed,
 * written, fsynced and acknowledged. From then on the log's own `verify`
 * says it is damaged at that entry, and the file log can no longer be opened
 * at all (`AuditCorrupted`): one bad payload takes the audit log — and the
 * destructive tools that depend on it — down for good.
 */
import { assert, describe, it } from "@effect/vitest"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "payload-shape-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-payload-shape-")
afterAll(scratch.removeAll)

const fileLayer = (path: string) => AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))

const cases: ReadonlyArray<readonly [string, () => Readonly<Record<string, unknown>>]> = [
  ["an array from JSON.parse", () => JSON.parse(`[{"event":"push"}]`)],
  ["null from JSON.parse", () => JSON.parse("null")],
  ["an object whose toJSON gives a string", () => ({ id: 1, toJSON: () => "record#1" })]
]

describe("AuditLog.append with a payload that is not a JSON object", () => {
  for (const [name, payload] of cases) {
    it.effect(`file log: ${name} never leaves the log unverifiable or unopenable`, () =>
      Effect.gen(function*() {
        const path = join(scratch.make(), "audit.jsonl")
        const report = yield* Effect.gen(function*() {
          const audit = yield* AuditLog.AuditLog
          yield* audit.append({ actor: "system", action: "before", payload: {} })
          // Kept, under `value`: the event is not lost, and the entry is one its own verifier accepts.
          const entry = yield* audit.append({ actor: "user", action: "webhook", payload: payload() })
          assert.deepStrictEqual(entry.payload, { value: JSON.parse(JSON.stringify(payload())) })
          return yield* audit.verify
        }).pipe(Effect.provide(fileLayer(path)))
        assert.isTrue(report.valid, `${report.failure}: ${report.detail}`)

        const reopened = yield* Effect.either(
          Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "after", payload: {} })).pipe(
            Effect.provide(fileLayer(path))
          )
        )
        assert.strictEqual(reopened._tag, "Right", reopened._tag === "Left" ? reopened.left.message : "")
      }))
  }

  it.effect("memory log: verify stays valid after such an append", () =>
    Effect.gen(function*() {
      const report = yield* Effect.gen(function*() {
        const audit = yield* AuditLog.AuditLog
        yield* Effect.either(audit.append({ actor: "user", action: "webhook", payload: JSON.parse("[1]") }))
        return yield* audit.verify
      }).pipe(Effect.provide(AuditLog.layerMemory({ secret: SECRET })))
      assert.isTrue(report.valid, `${report.failure}: ${report.detail}`)
    }))
})
