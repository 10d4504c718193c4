/**
 * `toJson` (auditJcs.ts) promises to convert any payload "the way
 * JSON.stringify would ... but never throws", and it catches a throwing
 * `toJSON` ("[Unserializable]"). A throwing getter, or a revoked Proxy (a
 * common way to hand out a capability that is later withdrawn), is read
 * outside any try: `AuditLog.append` then dies with a defect — not an
 * `AuditUnavailable` the caller can handle, and nothing is recorded. In the
 * agent, `noteNow` has already counted the entry as pending when `submit`
 * throws.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { join } from "node:path"
import { Cause, Effect, Exit, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "accessor-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-accessor-")
afterAll(scratch.removeAll)

const appendExit = (payload: Record<string, unknown>) =>
  Effect.exit(Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action: "odd", payload })))

const throwingGetter = () => ({
  id: 7,
  get session() {
    throw new Error("session is closed")
  }
})

const revokedProxy = () => {
  const { proxy, revoke } = Proxy.revocable({ token: "x" }, {})
  revoke()
  return proxy
}

describe("AuditLog.append with payloads whose accessors throw", () => {
  for (const [name, make] of [["a throwing getter", throwingGetter], ["a revoked Proxy", revokedProxy]] as const) {
    it.effect(`memory log: ${name} in the payload does not make append die`, () =>
      Effect.gen(function*() {
        const exit = yield* appendExit({ tool: "t", value: make() }).pipe(Effect.provide(AuditLog.layerMemory({ secret: SECRET })))
        assert.isFalse(Exit.isFailure(exit) && Cause.isDie(exit.cause), `append died: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
      }))

    it.effect(`file log: ${name} in the payload does not make append die`, () =>
      Effect.gen(function*() {
        const path = join(scratch.make(), "audit.jsonl")
        const layer = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))
        const exit = yield* appendExit({ tool: "t", value: make() }).pipe(Effect.provide(layer))
        assert.isFalse(Exit.isFailure(exit) && Cause.isDie(exit.cause), `append died: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
      }))
  }
})
