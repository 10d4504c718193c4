/**
 * Lone surrogates in the fields that are not the payload: `action` (the
 * caller's text), `sessionId` and `runId` (the run context's, often taken
 * from a request header). Payload strings and object keys go through
 * `toWellFormed` precisely because "other languages' verifiers would decode
 * them as U+FFFD and compute a different signature" (auditJcs.ts) — but
 * these fields are written as `\udXXX` escapes. Such a line is not I-JSON
 * (RFC 7493 §2.1), which RFC 8785 requires of its input, and a verifier
 * written in another language (Go's encoding/json maps a lone surrogate
 * escape to U+FFFD; Rust's serde_json rejects it) cannot check its signature.
 */
import { assert, describe, it } from "@effect/vitest"
import { createHash, createHmac } from "node:crypto"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "surrogate-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-surrogate-")
afterAll(scratch.removeAll)

interface WellFormed {
  isWellFormed(): boolean
  toWellFormed(): string
}

/** A JSON value as an I-JSON parser outside JavaScript gives it (Go: a lone surrogate escape decodes to U+FFFD). */
const asDecodedElsewhere = (value: unknown): unknown => {
  if (typeof value === "string") return (value as unknown as WellFormed).toWellFormed()
  if (Array.isArray(value)) return value.map(asDecodedElsewhere)
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [(k as unknown as WellFormed).toWellFormed(), asDecodedElsewhere(v)]))
  }
  return value
}

/** RFC 8785 for well-formed JSON values (as in support/auditConformance.ts). */
const jcs = (value: unknown): string => {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`
  const record = value as Record<string, unknown>
  return `{${Object.keys(record).sort().map((k) => `${JSON.stringify(k)}:${jcs(record[k])}`).join(",")}}`
}

const strings = (value: unknown): Array<string> =>
  typeof value === "string" ? [value] : value !== null && typeof value === "object"
    ? Object.entries(value).flatMap(([k, v]) => [k, ...strings(v)])
    : []

describe("audit file: lone surrogates outside the payload", () => {
  it.effect("an entry whose action / sessionId / runId hold a lone surrogate is I-JSON and verifies outside JavaScript", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      const layer = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))
      yield* Effect.flatMap(AuditLog.AuditLog, (audit) =>
        audit.append({ actor: "user", action: "tool_call:\ud83d", payload: { note: "cut \ud83d" } })).pipe(
          RunContext.withUser("alice", { sessionId: "sess-\udca9", runId: "run-\ud800" }),
          Effect.provide(layer)
        )
      const [line] = nodeFs.readFileSync(path, "utf8").split("\n")
      const parsed = JSON.parse(line!) as Record<string, unknown>

      // RFC 8785 takes I-JSON only: no string of the entry may hold a lone surrogate.
      const lone = strings(parsed).filter((s) => !(s as unknown as WellFormed).isWellFormed())
      assert.deepStrictEqual(lone.map((s) => JSON.stringify(s)), [], "strings that are not I-JSON")

      // And a verifier in another language must be able to check the signature and the chain.
      const decoded = asDecodedElsewhere(parsed) as Record<string, unknown>
      const { signature, ...unsigned } = decoded
      assert.strictEqual(createHmac("sha256", SECRET).update(jcs(unsigned)).digest("hex"), signature)
      assert.strictEqual(createHash("sha256").update(jcs(decoded)).digest("hex"), createHash("sha256").update(line!).digest("hex"))
    }))
})
