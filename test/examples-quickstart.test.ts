import { describe, expect, it } from "vitest"
import { runExample } from "./support/runExample.js"

describe("examples/quickstart.ts (npm run demo)", () => {
  it("serves three users from one agent, each seeing only their own account", async () => {
    const { code, stderr, stdout } = await runExample("quickstart.ts")
    expect(stderr).not.toMatch(/Error/)
    expect(code).toBe(0)
    expect(stdout).toContain("[alice] Hi alice! You are on the pro plan with a balance of $120.")
    expect(stdout).toContain("[bob] Hi bob! You are on the free plan with a balance of $0.")
    expect(stdout).toContain("[carol] Hi carol! You are on the team plan with a balance of $42.5.")
    expect(stdout).toContain("alice has 1 remembered episode(s); bob has 1.")
  })
})
