/**
 * A lock file left behind by a crashed process whose PID is the same as the
 * current process's. In containers this is the normal case, not a corner
 * case: the Node process is PID 1 (or another fixed low PID) in every
 * incarnation, and the log directory is a volume that outlives the crash. So
 * after any crash — the very situation torn-tail recovery exists for — the
 * next start finds `<path>.lock` holding its own PID and refuses to open the
 * log, although nothing in this process has it open.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll } from "vitest"
import { scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "lock-test-secret-0123456789"
const scratch = scratchDirectories("jeeves-audit-lock-")
afterAll(scratch.removeAll)

const fileLayer = (path: string) => AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))
const append = (action: string) => Effect.flatMap(AuditLog.AuditLog, (audit) => audit.append({ actor: "system", action, payload: {} }))

describe("AuditLog.layerFile lock", () => {
  it.effect("a stale lock holding this process's own PID (a crashed earlier incarnation, e.g. PID 1 in a container) does not block reopening", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      yield* Effect.zipRight(append("before crash"), append("before crash")).pipe(Effect.provide(fileLayer(path)))
      assert.isFalse(nodeFs.existsSync(`${path}.lock`))
      // What a SIGKILLed / OOM-killed previous incarnation with the same PID leaves behind.
      nodeFs.writeFileSync(`${path}.lock`, `${process.pid}\n`)
      // No layer of this process has the file open: the log must open and continue its chain.
      const result = yield* Effect.either(append("after restart").pipe(Effect.provide(fileLayer(path))))
      assert.isTrue(result._tag === "Right", result._tag === "Left" ? result.left.message : "")
      if (result._tag === "Right") assert.strictEqual(result.right.seq, 3)
    }))

  it.effect("a lock written before the machine last booted is stale, even when its pid is alive again", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      yield* append("before reboot").pipe(Effect.provide(fileLayer(path)))
      // PID 1 is alive here (another process since the reboot); the lock names an earlier boot.
      nodeFs.writeFileSync(`${path}.lock`, "1\n00000000-0000-0000-0000-000000000000\n")
      const entry = yield* append("after reboot").pipe(Effect.provide(fileLayer(path)))
      assert.strictEqual(entry.seq, 2)
      // A lock of this boot naming a live process still keeps a second writer out.
      nodeFs.writeFileSync(`${path}.lock`, `1\n${nodeFs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()}\n`)
      const refused = yield* Effect.flip(append("second writer").pipe(Effect.provide(fileLayer(path))))
      assert.include(refused.message, "already open for writing by process 1")
      nodeFs.rmSync(`${path}.lock`)
    }))

  it.effect("a lock naming this pid with another process start time (this version's format) is an earlier process's", () =>
    Effect.gen(function*() {
      const path = join(scratch.make(), "audit.jsonl")
      yield* append("before crash").pipe(Effect.provide(fileLayer(path)))
      const boot = nodeFs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
      nodeFs.writeFileSync(`${path}.lock`, `${process.pid}\n${boot}\n1\n`)
      const entry = yield* append("after restart").pipe(Effect.provide(fileLayer(path)))
      assert.strictEqual(entry.seq, 2)
    }))
})
