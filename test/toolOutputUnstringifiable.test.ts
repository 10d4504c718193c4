/**
 * A tool that succeeds with a value neither `JSON.stringify` nor `String()`
 * can turn into text — a null-prototype row (what `node:sqlite` and many
 * dictionary-style APIs return) holding a bigint or a cycle — gets a text
 * result like any other: tool outcomes never end the run (Tool.ts, README
 * "Tools"), and its sibling call's result is kept. A bigint is shown as its
 * digits.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import { Tool } from "jeevesagent"
import { agentWith, callThenSummarize, run } from "./support/toolAgent.js"

const countRows = Tool.make("count_rows", {
  description: "Counts rows (a driver returning null-prototype rows with bigints)",
  parameters: Schema.Struct({}),
  handler: () => Effect.sync(() => Object.assign(Object.create(null), { count: 12345678901234567890n }))
})

const ping = Tool.make("ping", {
  description: "pong",
  parameters: Schema.Struct({}),
  handler: () => Effect.succeed("pong")
})

const cyclicRow = Tool.make("cyclic_row", {
  description: "A null-prototype row that refers to itself",
  parameters: Schema.Struct({}),
  handler: () =>
    Effect.sync(() => {
      const row = Object.assign(Object.create(null), { id: 1 })
      row.self = row
      return row
    })
})

describe("a tool result value that cannot be stringified", () => {
  it.effect("a cycle in a null-prototype row: a text result, the run goes on", () =>
    Effect.gen(function*() {
      const result = yield* run
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
      assert.strictEqual(result.toolCalls[0]!.output, "[object Object]")
      assert.strictEqual(result.toolCalls[1]!.output, "pong")
    }).pipe(
      Effect.provide(agentWith(callThenSummarize([{ name: "cyclic_row", args: {} }, { name: "ping", args: {} }]), [cyclicRow, ping]))
    ))

  it.effect("does not kill the run: the call gets a result and the run goes on", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(run)
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? String(exit.cause) : "")
      if (Exit.isFailure(exit)) return
      const result = exit.value
      assert.strictEqual(result.turns, 2)
      assert.deepStrictEqual(result.toolCalls.map((c) => c.name), ["count_rows", "ping"])
      assert.strictEqual(result.toolCalls[1]!.output, "pong")
      assert.strictEqual(result.toolCalls[0]!.status, "ok")
      assert.strictEqual(result.toolCalls[0]!.output, `{"count":"12345678901234567890"}`)
    }).pipe(
      Effect.provide(agentWith(callThenSummarize([{ name: "count_rows", args: {} }, { name: "ping", args: {} }]), [countRows, ping]))
    ))
})
