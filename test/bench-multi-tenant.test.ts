/**
 * The multi-tenant load bench at smoke scale: it passes on a correct agent,
 * and each deliberately planted violation makes it fail on the check meant
 * to catch it — so the checks can fail.
 */
import { assert, describe, it } from "@effect/vitest"
import {
  type BenchOptions,
  type BenchReport,
  defaults,
  format,
  type Injection,
  runBench
} from "../bench/multiTenant/bench.js"
import { p99ByTurn } from "../bench/multiTenant/report.js"
import type { Check } from "../bench/multiTenant/violations.js"
import { adminUrl, createTestDatabase, postgresAvailable } from "./support/postgres.js"

const smoke: BenchOptions = defaults({ users: 10, turns: 2, latencyMs: 5, backend: "memory" })

/** 10 users x 2 turns: 9 entries a turn, 8 for user_7 (policy denial, no approval), 13 for the over-quota user_1. */
const SMOKE_AUDIT_ENTRIES = 8 * 2 * 9 + 2 * 8 + 13

const assertPass = (report: BenchReport) => {
  assert.strictEqual(report.status, "PASS", format(report))
  assert.deepStrictEqual(report.violations.counts, {})
  assert.strictEqual(report.figures.runs, 20)
  assert.isTrue(report.figures.audit.valid)
  assert.strictEqual(report.figures.audit.entries, SMOKE_AUDIT_ENTRIES)
  assert.strictEqual(report.figures.p99ByTurn.length, 2)
  for (const p99 of report.figures.p99ByTurn) assert.isAtLeast(p99, 10, "two model calls of 5 ms each")
}

/** The checks each injection must trip (others may trip too). */
const caughtBy: Record<Injection, ReadonlyArray<Check>> = {
  "tool-wrong-user": ["tool-user", "model-context"],
  "skip-charge": ["budget-user", "budget-global"],
  "leak-episode": ["recall", "session-history", "episodes"],
  "lose-episode": ["episodes", "session-history"],
  "misattribute-audit": ["audit-attribution"],
  "tamper-audit": ["audit-verify"]
}

const assertCaught = (report: BenchReport, injection: Injection) => {
  assert.strictEqual(report.status, "FAIL", `${injection} went unnoticed:\n${format(report)}`)
  for (const check of caughtBy[injection]) {
    assert.isAbove(report.violations.counts[check] ?? 0, 0, `${injection} not caught by ${check}:\n${format(report)}`)
  }
}

describe("p99ByTurn", () => {
  it("takes each turn's slots across users", () => {
    // Three users, two turns: slot index * 2 + turn - 1. Turn 1 is slow for user 2 only.
    const latencies = [10, 20, 11, 21, 900, 22]
    assert.deepStrictEqual(p99ByTurn(latencies, 2), [900, 22])
    assert.deepStrictEqual(p99ByTurn([5, Number.NaN, 7], 1), [7])
  })
})

describe("bench/multi-tenant", () => {
  it("passes with every layer on, memory backend", async () => {
    assertPass(await runBench(smoke))
  })

  it("passes with the SQLite backend", async () => {
    assertPass(await runBench({ ...smoke, backend: "sqlite" }))
  })

  for (const injection of Object.keys(caughtBy) as Array<Injection>) {
    it(`fails when ${injection} is injected`, async () => {
      assertCaught(await runBench({ ...smoke, inject: injection }), injection)
    })
  }
})

describe.skipIf(!postgresAvailable)("bench/multi-tenant, 2 processes sharing Postgres", () => {
  const shared = (database: string): BenchOptions => ({
    ...smoke,
    backend: "postgres",
    processes: 2,
    postgresUrl: adminUrl,
    database
  })

  it("passes, checking the shared ledger, memory and audit chain", async () => {
    const { drop, url } = await createTestDatabase("bench_mt")
    try {
      assertPass(await runBench(shared(url)))
    } finally {
      await drop()
    }
  }, 120_000)

  for (const injection of ["skip-charge", "misattribute-audit"] as const) {
    it(`fails when ${injection} is injected in a worker`, async () => {
      const { drop, url } = await createTestDatabase("bench_mt")
      try {
        assertCaught(await runBench({ ...shared(url), inject: injection }), injection)
      } finally {
        await drop()
      }
    }, 120_000)
  }
})
