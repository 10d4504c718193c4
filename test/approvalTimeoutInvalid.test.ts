/**
 * A misspelt `approvalTimeout` (`"2 minuets"`, or `"120s"` read from an
 * environment variable) rejects `ready()` with an error that names the
 * option and shows the bad value, as every sibling option's error does — not
 * effect's bare `Invalid DurationInput`.
 */
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

describe("jeevesagent/promise: an invalid approvalTimeout", () => {
  it("rejects ready() with an error naming the option and the bad value", async () => {
    const agent = createAgent({
      model: "echo",
      approvalHandler: async () => true,
      approvalTimeout: "2 minuets" as never
    })
    try {
      const error = await agent.ready().then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      expect((error as Error).message).toMatch(/timeout/i)
      expect((error as Error).message).toContain("2 minuets")
      expect((error as Error).message).toContain("approvalTimeout")
    } finally {
      await agent.dispose()
    }
  })
})
