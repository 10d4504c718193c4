/**
 * A denial's reason goes back to the model (a third party) as
 * `DENIED: <reason>`, unredacted. The agent redacts the same text on the
 * `jeeves.permission.check` span (`checkOutcome`), and redacts a failing
 * tool's error message before the model sees it ("it goes to the model, a
 * third party"), but a hook's (or a custom policy's) deny reason that quotes
 * a secret the agent's Secrets service handed out — or a connection string
 * with a password — reaches the model, `RunResult.toolCalls` and the stream
 * verbatim.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, Schema } from "effect"
import { Hooks, Secrets, Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

describe("what a denied call tells the model", () => {
  it.effect("a hook's deny reason holding a secret the agent's Secrets handed out reaches the model masked", () =>
    Effect.gen(function*() {
      const secrets = Secrets.make({ resolve: () => Effect.succeed("pg-pass-7c41d9") })
      const query = Tool.make("query", {
        description: "Runs a read-only query",
        parameters: Schema.Struct({ sql: Schema.String }),
        handler: () => Effect.succeed("rows")
      })
      // A hook that checks a quota in the database and denies, quoting the error it got.
      const quota = Hooks.layer({
        beforeTool: [() =>
          Effect.map(secrets.resolve("DB_PASSWORD"), (password) => ({
            deny: `quota check failed: could not connect to postgres://app:${Redacted.value(password)}@db`
          }))]
      })
      const result = yield* run.pipe(Effect.provide(agentWith(
        callThenSummarize([{ name: "query", args: { sql: "select 1" } }]),
        [query],
        quota as Layer.Layer<never>,
        Layer.succeed(Secrets.Secrets, secrets)
      )))
      assert.strictEqual(result.toolCalls[0]!.status, "denied")
      assert.notInclude(result.toolCalls[0]!.output, "pg-pass-7c41d9")
      assert.notInclude(result.output, "pg-pass-7c41d9")
    }))
})
