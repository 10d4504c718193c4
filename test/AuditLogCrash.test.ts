/**
 * Crash safety of the audit file: a child process appends in a loop and is
 * killed with SIGKILL at random moments, 50 times. After every kill, every
 * acknowledged entry is in the file exactly as acknowledged, the file
 * verifies, and the only problem ever reported is a torn final line.
 *
 * The child is bundled once with esbuild (from vitest's toolchain) so that
 * 50 starts cost milliseconds each instead of a TypeScript compile.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { once } from "node:events"
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import { afterAll, beforeAll } from "vitest"
import { bundleScript } from "./support/auditBundle.js"
import { independentVerify } from "./support/auditConformance.js"

const SECRET = "crash-test-secret-0123456789"
const LANES = 5
const KILLS_PER_LANE = 10

let dir = ""
let bundle = ""
const running = new Set<ReturnType<typeof spawn>>()

beforeAll(async () => {
  dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-crash-"))
  bundle = await bundleScript(new URL("./support/auditCrashChild.ts", import.meta.url), dir)
})
afterAll(() => {
  // A failed assertion in one lane must not leave the other lanes' children appending.
  for (const child of running) child.kill("SIGKILL")
  nodeFs.rmSync(dir, { recursive: true, force: true })
})

const verifyFile = (path: string) =>
  Effect.runPromise(AuditLog.verifyFile(path, SECRET).pipe(Effect.provide(NodeFileSystem.layer)))

/** The complete (newline-terminated) lines of the file, parsed. */
const storedEntries = (path: string): Array<AuditLog.AuditEntry> => {
  const text = nodeFs.readFileSync(path, "utf8")
  return text.slice(0, text.lastIndexOf("\n") + 1).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
}

interface LaneResult {
  readonly acknowledged: number
  readonly tornTails: number
}

/** One child at a time on one file: start, wait for the first ack, kill at a random moment, check. */
const lane = async (path: string): Promise<LaneResult> => {
  const acked = new Map<number, string>()
  let tornTails = 0
  for (let kill = 0; kill < KILLS_PER_LANE; kill++) {
    const child = spawn(process.execPath, [bundle, path, SECRET, "4"], { stdio: ["ignore", "pipe", "pipe"] })
    running.add(child)
    child.on("exit", () => running.delete(child))
    let stderr = ""
    child.stderr.on("data", (chunk) => (stderr += chunk))
    let sawAck!: () => void
    const firstAck = new Promise<void>((resolve) => (sawAck = resolve))
    createInterface({ input: child.stdout }).on("line", (line) => {
      const ack = /^(\d+) ([0-9a-f]{64})$/.exec(line) // other lines are the child's log output
      if (ack === null) return
      acked.set(Number(ack[1]), ack[2]!)
      sawAck()
    })
    const closed = once(child, "close")
    await Promise.race([firstAck, closed])
    assert.isNull(child.exitCode, `the child exited before appending: ${stderr}`)
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 40))
    child.kill("SIGKILL")
    await closed

    const report = await verifyFile(path)
    assert.isTrue(report.valid, `after kill ${kill}: ${report.failure} ${report.detail}`)
    assert.oneOf(report.failure, [undefined, "torn_tail"])
    if (report.failure === "torn_tail") tornTails++
    const bySeq = new Map(storedEntries(path).map((entry) => [entry.seq, entry.signature]))
    for (const [seq, signature] of acked) {
      assert.strictEqual(bySeq.get(seq), signature, `acknowledged seq ${seq} is missing or different after kill ${kill}`)
    }
  }
  return { acknowledged: acked.size, tornTails }
}

describe("audit file crash safety", () => {
  it.live(`${LANES * KILLS_PER_LANE} SIGKILLs at random moments lose no acknowledged entry`, () =>
    Effect.gen(function*() {
      const paths = Array.from({ length: LANES }, (_, i) => join(dir, `lane-${i}`, "audit.jsonl"))
      const results = yield* Effect.promise(() => Promise.all(paths.map(lane)))
      const acknowledged = results.reduce((n, r) => n + r.acknowledged, 0)
      const tornTails = results.reduce((n, r) => n + r.tornTails, 0)
      console.log(`crash test: ${LANES * KILLS_PER_LANE} kills, ${acknowledged} acknowledged appends, ${tornTails} torn tails seen`)
      assert.isAbove(acknowledged, LANES * KILLS_PER_LANE)

      // Reopening repairs any last torn tail; then every file verifies completely, also by the spec-only verifier.
      for (const path of paths) {
        yield* Effect.void.pipe(Effect.provide(AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(NodeFileSystem.layer))))
        const report = yield* Effect.promise(() => verifyFile(path))
        assert.deepStrictEqual([report.valid, report.failure], [true, undefined])
        const entries = storedEntries(path)
        assert.strictEqual(report.validCount, entries.length)
        assert.isUndefined(independentVerify(entries, SECRET))
        // Each recovery left its bytes in .broken and its record in the chain.
        const recoveries = entries.filter((e) => e.action === "log_recovered")
        const broken = nodeFs.existsSync(`${path}.broken`) ? nodeFs.statSync(`${path}.broken`).size : 0
        assert.strictEqual(broken, recoveries.reduce((n, e) => n + (e.payload as { dropped_bytes: number }).dropped_bytes, 0))
      }
    }), 120_000)
})
