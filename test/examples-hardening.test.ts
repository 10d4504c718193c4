import { describe, expect, it } from "vitest"
import { runExample } from "./support/runExample.js"

const ok = async (name: string) => {
  const { code, stderr, stdout } = await runExample(name)
  expect(stderr).not.toMatch(/Error/)
  expect(code).toBe(0)
  return stdout
}

describe("production-hardening examples", () => {
  it("examples/budget.ts blocks only the user over their cap", async () => {
    const stdout = await ok("budget.ts")
    expect(stdout).toContain("alice #3: ok, 500 tokens")
    expect(stdout).toContain("alice #4: blocked (budget:per_user_max_tokens)")
    expect(stdout).toContain("bob   #1: ok")
    expect(stdout).toContain("carol warning: per-user tokens at 85%")
    expect(stdout).toContain(`"alice":{"tokensIn":1200,"tokensOut":300,"tokensTotal":1500`)
    expect(stdout).toContain(`global: {"tokensIn":1600,"tokensOut":400,"tokensTotal":2000`)
  })

  it("examples/bounded-state.ts evicts least recently used users", async () => {
    const stdout = await ok("bounded-state.ts")
    expect(stdout).toContain("alice before the flood: 15 tokens, blocks=1")
    expect(stdout).toContain("alice after the flood: 0 tokens, blocks=0")
    expect(stdout).toContain("visitor_99 is kept: 15 tokens")
    expect(stdout).toContain("visitor_0 was evicted: 0 tokens")
  })

  it("examples/persistent-memory.ts keeps each user's sessions across a restart and forgets one user", async () => {
    const stdout = await ok("persistent-memory.ts")
    expect(stdout).toContain("alice: earlier turns: I moved to Lisbon")
    expect(stdout.split("\n").filter((line) => line === "bob: no earlier turns")).toHaveLength(2)
    expect(stdout).toContain("alice's stored episodes: I moved to Lisbon | Where do I live?")
    expect(stdout).toContain("forget alice: 2 items erased")
    expect(stdout).toContain("alice after forget: 0 episodes")
    expect(stdout).toContain("bob keeps his: 2 episode(s)")
  })

  it("examples/audit.ts queries per user, verifies, and catches a forged user id", async () => {
    const stdout = await ok("audit.ts")
    expect(stdout).toContain("alice: run_started, tool_call, tool_result, run_completed")
    expect(stdout).toContain("session s2: 4 entries, all bob's: true")
    expect(stdout).toContain("verifyFile: valid=true entries=8")
    expect(stdout).toContain("tampered copy: valid=false firstBadSeq=2 failure=signature")
  })
})

describe("examples/auto-extract-metrics.ts", () => {
  it("extracts per-user facts, charges the user's budget and exports tagged metrics", async () => {
    const { code, stdout } = await runExample("auto-extract-metrics.ts")
    expect(code).toBe(0)
    expect(stdout).toContain("alice facts: alice prefers green tea")
    expect(stdout).toContain("bob facts: bob prefers espresso")
    expect(stdout).toContain("alice budget (runs + extraction): 75 tokens")
    expect(stdout).toContain("jeeves.auto_extract.invocations user_id=alice status=ok: 1")
    expect(stdout).toContain("jeeves.auto_extract.invocations user_id=bob status=error: 1")
    expect(stdout).toContain("jeeves.auto_extract.duration_ms user_id=bob status=ok: count=1")
  })
})
