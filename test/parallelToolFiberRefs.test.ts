/**
 * Parallel tool calls of one answer are concurrent: each starts from the
 * run's FiberRefs, as with `Effect.forEach(..., { concurrency: "unbounded" })`.
 * `forEachConcurrent` instead runs the calls in the run's own fiber one after
 * another until one suspends, so whether a call sees a FiberRef a sibling set
 * depends on timing: it does when the sibling completed without suspending,
 * it does not when the sibling waited on anything first.
 */
import { Effect, FiberRef, Schema } from "effect"
import { Agent, Tool } from "jeevesagent"
import { describe, expect, it } from "vitest"
import { agentWith, callThenSummarize } from "./support/toolAgent.js"

/** A per-call setting a tool changes for itself (say, the account it acts for). */
const actingAs = FiberRef.unsafeMake("default")

const switchNow = Tool.make("switch_now", {
  description: "Switches its own account at once",
  parameters: Schema.Struct({}),
  handler: () => Effect.as(FiberRef.set(actingAs, "switched"), "switched")
})

const switchLater = Tool.make("switch_later", {
  description: "Looks something up, then switches its own account",
  parameters: Schema.Struct({}),
  handler: () => Effect.zipRight(Effect.sleep("1 millis"), Effect.as(FiberRef.set(actingAs, "switched"), "switched"))
})

const read = Tool.make("read", {
  description: "Reads the account it acts for",
  parameters: Schema.Struct({}),
  handler: () => FiberRef.get(actingAs)
})

const siblingSees = (first: string) =>
  Effect.runPromise(
    Effect.flatMap(Agent.Agent, (agent) => agent.run("x", { userId: "alice" })).pipe(
      Effect.provide(
        agentWith(callThenSummarize([{ name: first, args: {} }, { name: "read", args: {} }]), [switchNow, switchLater, read])
      )
    )
  ).then((result) => result.toolCalls.find((call) => call.name === "read")!.output)

describe("parallel tool calls and FiberRefs", () => {
  it("a call never sees a FiberRef its parallel sibling set, whether or not the sibling suspended first", async () => {
    const afterSuspendingSibling = await siblingSees("switch_later")
    const afterSynchronousSibling = await siblingSees("switch_now")
    // Before the fix: ["default", "switched"]: the same two parallel calls see different values depending on timing.
    expect([afterSuspendingSibling, afterSynchronousSibling]).toEqual(["default", "default"])
  })
})
