/**
 * The per-layer cost bench at smoke scale: each variant really runs with
 * its layers replaced by their no-ops (and only those), every run of every
 * variant succeeds, and the report has a figure for each.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AuditLog, Budget, Memory, Permissions, Telemetry } from "jeevesagent"
import { Probe } from "../bench/multiTenant/agent.js"
import {
  formatLayers,
  LAYERABLE,
  type Layerable,
  measureLayers,
  VARIANTS,
  variantLayer
} from "../bench/multiTenant/layers.js"
import * as plan from "../bench/multiTenant/plan.js"

/** Which of the five services in the built agent context are the no-ops. */
const noOpsIn = (off: ReadonlyArray<Layerable>) => {
  const dir = mkdtempSync(join(tmpdir(), "jeeves-layers-test-"))
  const bench = plan.makePlan(4, 1, 0)
  const resources = {
    auditPath: join(dir, "audit.jsonl"),
    sqlitePath: join(dir, "memory.db"),
    databaseUrl: undefined,
    auditSecret: Redacted.make("0".repeat(64))
  }
  return Effect.runPromise(
    Effect.scoped(
      Effect.map(Layer.build(variantLayer(off, bench, new Probe(undefined), resources)), (context) => {
        const found: Array<Layerable> = []
        if (Context.get(context, Telemetry.Telemetry) === Telemetry.none) found.push("telemetry")
        if (Context.get(context, AuditLog.AuditLog) === AuditLog.none) found.push("audit")
        if (Context.get(context, Budget.Budget) === Budget.none) found.push("budget")
        if (Context.get(context, Permissions.Permissions) === Permissions.allowAllService) found.push("permissions")
        if (Context.get(context, Memory.Memory) === Memory.none) found.push("memory")
        return found
      })
    )
  ).finally(() => rmSync(dir, { recursive: true, force: true }))
}

describe("bench/layers", () => {
  it("replaces exactly the layers a variant turns off", async () => {
    assert.deepStrictEqual(await noOpsIn([]), [])
    for (const layer of LAYERABLE) assert.deepStrictEqual(await noOpsIn([layer]), [layer])
    assert.deepStrictEqual(await noOpsIn(LAYERABLE), [...LAYERABLE])
  })

  it("times every variant with no failed run", { timeout: 60_000 }, async () => {
    const report = await measureLayers({ users: 20, rounds: 2, concurrency: "unbounded" })
    assert.deepStrictEqual(report.variants.map((figures) => figures.variant), [...VARIANTS])
    for (const figures of report.variants) {
      assert.strictEqual(figures.failures, 0, figures.variant.name)
      assert.strictEqual(figures.microsPerTurn.length, 2)
      for (const micros of figures.microsPerTurn) assert.isTrue(Number.isFinite(micros) && micros > 0)
    }
    assert.isTrue(report.bareMicrosPerTurn > 0)
    const text = formatLayers(report)
    for (const variant of VARIANTS) assert.include(text, variant.name)
  })
})
