import { assert, describe, it } from "vitest"
import { runExample } from "./support/runExample.js"

describe("examples/approval.ts", () => {
  it("runs offline and prints each user's outcome", async () => {
    const { code, stderr, stdout } = await runExample("approval.ts")
    assert.strictEqual(code, 0, stderr)
    const lines = stdout.split("\n")
    for (
      const expected of [
        `  [approver] bob wants delete_records({"table":"staging"}): yes`,
        `  [approver] dave wants delete_records({"table":"production"}): no`,
        "alice: report weekly: 42 rows | DENIED: the audit table is append-only",
        "bob: report weekly: 42 rows | deleted all records of staging",
        "carol: report weekly: 42 rows | DENIED: delete_records: denied by policy",
        "dave: report weekly: 42 rows | DENIED: approval declined (delete_records: destructive call requires approval)",
        "anonymous: report weekly: 42 rows | DENIED: delete_records: not in allow-list"
      ]
    ) {
      assert.include(lines, expected)
    }
  })
})
