/**
 * `Permissions.standard` and `Permissions.perUser` refuse option keys they do
 * not know, as they refuse an unknown mode: configuration from JavaScript or
 * a JSON/YAML file is not type checked, and an ignored key silently leaves out
 * the rule it meant, so the tool the operator denied would run. Two
 * realistic ways to hit it: the Python original's snake_case keys
 * (`denied_tools`) in a config file ported from Python, and the facade given
 * the Effect API's per-user shape `{ policies, default }` instead of
 * `{ perUser, default }`, or another key beside `perUser` (the facade
 * passes only the keys it knows on, so it checks them itself).
 */
import { Permissions } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"
import { callThenSummarize, sendEmail } from "./support/toolAgent.js"

const mailEveryone = callThenSummarize([{ name: "send_email", args: { to: "everyone@example.com" } }])

describe("Permissions options with keys the policy does not know", () => {
  it("a config file with the Python original's `denied_tools` is a TypeError naming the key", () => {
    const config = JSON.parse(`{ "mode": "default", "denied_tools": ["send_email"] }`) as Permissions.StandardOptions
    expect(() => Permissions.standard(config)).toThrow(TypeError)
    expect(() => Permissions.standard(config)).toThrow(/unknown option "denied_tools"/)
  })

  it("perUser: an unknown key, a policy with one, or policies given as a Map are TypeErrors", () => {
    expect(() => Permissions.perUser({ policies: {}, default: {}, defaults: {} } as never)).toThrow(/unknown option "defaults"/)
    expect(() => Permissions.perUser({ policies: { alice: { denied: ["x"] } as never }, default: {} })).toThrow(
      /unknown option "denied"/
    )
    expect(() => Permissions.perUser({ policies: new Map([["alice", {}]]) as never, default: {} })).toThrow(TypeError)
    // The known keys still build.
    Permissions.perUser({ policies: { alice: { mode: "acceptEdits", deniedTools: ["x"] } }, anonymous: {}, default: {} })
  })

  it("createAgent given the `{ policies, default }` shape rejects with a TypeError and never runs the tool", () =>
    // The Effect API's `Permissions.perUser` option names, given to the facade (from a JS config).
    facadeRejects({ policies: { alice: { deniedTools: ["send_email"] } }, default: { deniedTools: ["send_email"] } }, "policies"))

  it("createAgent's `{ perUser }` shape with another key (a deny-list meant for everyone) rejects too", () =>
    facadeRejects({ perUser: { alice: { mode: "acceptEdits" } }, default: {}, deniedTools: ["send_email"] }, "deniedTools"))
})

/** `createAgent` with `permissions` (as a JS config gives them) rejects naming `key`, and send_email never runs. */
const facadeRejects = async (permissions: object, key: string) => {
  const sent: Array<string> = []
  const agent = createAgent({
    model: "scripted",
    script: mailEveryone,
    tools: [sendEmail(sent)],
    permissions: permissions as never
  })
  try {
    const error = await agent.run("mail everyone", { userId: "bob" }).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(TypeError)
    expect((error as Error).message).toContain(`unknown option "${key}"`)
    expect(sent).toEqual([])
  } finally {
    await agent.dispose()
  }
}
