/**
 * The facade's per-user permissions shape `{ perUser, anonymous, default }`
 * refuses a key it does not know — a typo (`anonymus`), a Python key, or a
 * top-level `deniedTools` meant for everyone — with a TypeError naming it,
 * as `Permissions.perUser` does: dropped, the rule it meant would be left
 * out and the tool it meant to deny would run.
 */
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"
import { callThenSummarize, sendEmail } from "./support/toolAgent.js"

const mailEveryone = callThenSummarize([{ name: "send_email", args: { to: "everyone@example.com" } }])

describe("the facade's { perUser } permissions with a key no policy knows", () => {
  it("rejects with a TypeError instead of dropping the key and running the tool", async () => {
    const sent: Array<string> = []
    const agent = createAgent({
      model: "scripted",
      script: mailEveryone,
      tools: [sendEmail(sent)],
      // From a JS/JSON config: the operator meant send_email to be denied to everyone.
      permissions: JSON.parse(`{
        "perUser": { "alice": { "mode": "acceptEdits" } },
        "default": {},
        "deniedTools": ["send_email"]
      }`)
    })
    try {
      const outcome = await agent.run("mail everyone", { userId: "bob" }).then(
        (result) => ({ result }),
        (error: unknown) => ({ error })
      )
      expect(sent).toEqual([])
      expect("error" in outcome ? outcome.error : undefined).toBeInstanceOf(TypeError)
      expect(String("error" in outcome ? (outcome.error as Error).message : "")).toContain(`"deniedTools"`)
    } finally {
      await agent.dispose()
    }
  })
})
