/**
 * `Hooks.make` guards each hook: a hook that throws, fails, dies or hangs is
 * logged and the next hook still runs ("every afterTool hook runs; failures
 * and timeouts are logged, never fatal"). A hook that answers with something
 * that is not an Effect (a JavaScript caller's plain function, or an async
 * function given to `Hooks.layer` instead of `Hooks.layerPromise`) makes
 * `guardNow` throw outside its try (`answer.pipe` is not a function): the
 * defect escapes the whole `afterTool` loop, so every later afterTool hook
 * (an audit or metrics sink, say) is silently skipped.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Hooks, RunContext, type Tool } from "jeevesagent"

const call: Tool.Call = { id: "call_7", name: "send_email", args: { to: "bob@example.com" }, destructive: false }
const okResult: Tool.Result = { callId: "call_7", name: "send_email", status: "ok", output: "sent" }

describe("Hooks.make: an afterTool hook that answers with no Effect", () => {
  it.effect("is one failed hook: the hooks after it still run", () =>
    Effect.gen(function*() {
      const ran: Array<string> = []
      const hooks = Hooks.make({
        afterTool: [
          // Plain JavaScript: returns nothing (or a Promise), not an Effect.
          (() => {
            ran.push("first")
          }) as unknown as Hooks.AfterTool,
          (c, result) => Effect.sync(() => ran.push(`${c.name}:${result.status}`))
        ]
      })
      // Never fatal: whatever the first hook did, the step completes...
      yield* Effect.exit(hooks.afterTool(call, okResult).pipe(RunContext.withUser("alice")))
      // ...and the second hook ran.
      assert.deepStrictEqual(ran, ["first", "send_email:ok"])
    }))
})
