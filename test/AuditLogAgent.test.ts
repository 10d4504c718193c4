/**
 * The audit trail an agent run leaves, and failing closed when it cannot be
 * written.
 */
import { assert, describe, it } from "@effect/vitest"
import * as nodeFs from "node:fs"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Deferred, Effect, Fiber, Layer, Redacted, Ref, Schema } from "effect"
import { Agent, Approval, AuditLog, Model, Permissions, Secrets, Tool } from "jeevesagent"
import { afterAll } from "vitest"
import { faultyFileSystem, scratchDirectories } from "./support/auditFileSystem.js"

const SECRET = "agent-audit-secret-0123456789"

const scratch = scratchDirectories("jeeves-agent-audit-")
afterAll(scratch.removeAll)
const freshPath = () => join(scratch.make(), "audit.jsonl")

const echo = Tool.make("echo", {
  description: "Echoes its text",
  parameters: Schema.Struct({ text: Schema.String }),
  handler: ({ text }) => Effect.succeed(text)
})

/** A destructive tool that records every execution in `executed`. */
const deleteFile = (executed: Ref.Ref<Array<string>>) =>
  Tool.make("delete_file", {
    description: "Deletes a file",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: true,
    handler: ({ path }) => Effect.as(Ref.update(executed, (paths) => [...paths, path]), `deleted ${path}`)
  })

/** Calls `calls` on the first model turn, then answers with the tool results joined. */
const callThenSummarize = (calls: ReadonlyArray<{ name: string; args: unknown }>): Model.Script => (request) => {
  const last = request.messages.at(-1)!
  if (last.role !== "tool") return { toolCalls: calls, usage: { inputTokens: 10, outputTokens: 5 } }
  return {
    text: request.messages.filter((m) => m.role === "tool").map((m) => m.content).join(" | "),
    usage: { inputTokens: 20, outputTokens: 3 }
  }
}

const agentWith = (
  script: Model.Script,
  tools: ReadonlyArray<Tool.Any>,
  services: Layer.Layer<never, unknown, never> | Layer.Layer<any, unknown, never>
) =>
  Agent.layer({ tools }).pipe(
    Layer.provide(Model.layerScripted(script)),
    Layer.provide(Layer.mergeAll(Agent.layerDefaults, services))
  )

const run = (prompt: string, options?: Agent.RunOptions) => Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt, options))
const query = (filter?: AuditLog.QueryFilter) => Effect.flatMap(AuditLog.AuditLog, (audit) => audit.query(filter))

describe("the audit trail of a run", () => {
  it.effect("run_started comes first and run_completed last, every entry attributed to the run", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const [result, entries] = yield* Effect.all([
        run("say hi", { userId: "alice" }),
        query()
      ]).pipe(Effect.provide(Layer.merge(agentWith(callThenSummarize([{ name: "echo", args: { text: "hi" } }]), [echo], audit), audit)))
      assert.deepStrictEqual(entries.map((e) => [e.seq, e.action, e.actor]), [
        [1, "run_started", "user"],
        [2, "tool_call", "model"],
        [3, "tool_result", "system"],
        [4, "run_completed", "system"]
      ])
      for (const entry of entries) {
        assert.deepStrictEqual([entry.userId, entry.sessionId, entry.runId], ["alice", result.sessionId, result.runId])
      }
      assert.strictEqual(result.auditFailures, 0)
    }).pipe(Effect.scoped))

  it.effect("a run that fails still ends its trail: run_completed, interrupted with reason error and the failure", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const failing: Model.Script = () => ({
        error: new Model.ModelError({ reason: "bad_request", retryable: false, status: 400, description: "prompt too long" })
      })
      const [exit, entries] = yield* Effect.all([Effect.exit(run("hi", { userId: "alice" })), query()]).pipe(
        Effect.provide(Layer.merge(agentWith(failing, [], audit), audit))
      )
      assert.strictEqual(exit._tag, "Failure")
      assert.deepStrictEqual(entries.map((e) => e.action), ["run_started", "run_completed"])
      const completed = entries[1]!.payload as Record<string, unknown>
      assert.strictEqual(completed.interrupted, true)
      assert.strictEqual(completed.interruption_reason, "error")
      assert.include(String(completed.error), "prompt too long")
    }).pipe(Effect.scoped))

  it.effect("a run interrupted mid-tool still ends its trail: run_completed, interrupted with reason cancelled", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const started = yield* Deferred.make<void>()
      const hang = Tool.make("hang", {
        description: "never answers",
        parameters: Schema.Struct({}),
        handler: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)
      })
      const entries = yield* Effect.gen(function*() {
        const fiber = yield* Effect.fork(run("hi", { userId: "alice" }))
        yield* Deferred.await(started)
        yield* Fiber.interrupt(fiber)
        return yield* query()
      }).pipe(Effect.provide(Layer.merge(agentWith(callThenSummarize([{ name: "hang", args: {} }]), [hang], audit), audit)))
      assert.deepStrictEqual(entries.map((e) => e.action), ["run_started", "tool_call", "run_completed"])
      const completed = entries.at(-1)!.payload as Record<string, unknown>
      assert.strictEqual(completed.interruption_reason, "cancelled")
      assert.notProperty(completed, "error")
    }).pipe(Effect.scoped))

  it.effect("a run interrupted while a human decides records the pending approval as cancelled before run_completed", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const asked = yield* Deferred.make<void>()
      const executed = yield* Ref.make<Array<string>>([])
      const gate = Approval.layer(() => Effect.zipRight(Deferred.succeed(asked, undefined), Effect.never))
      const asksForDestructive = Permissions.perUser({ policies: {}, default: { mode: "default" } })
      const entries = yield* Effect.gen(function*() {
        const fiber = yield* Effect.fork(run("clean up", { userId: "alice" }))
        yield* Deferred.await(asked)
        yield* Fiber.interrupt(fiber)
        return yield* query()
      }).pipe(Effect.provide(Layer.merge(
        agentWith(callThenSummarize([{ name: "delete_file", args: { path: "/tmp/x" } }]), [deleteFile(executed)], Layer.mergeAll(audit, gate, asksForDestructive)),
        audit
      )))
      assert.deepStrictEqual(entries.map((e) => e.action), [
        "run_started",
        "tool_call",
        "permission_decision",
        "approval_decision",
        "run_completed"
      ])
      const decision = entries[3]!.payload as Record<string, unknown>
      assert.strictEqual(decision.outcome, "cancelled")
      assert.strictEqual(decision.reason, "run interrupted")
      assert.strictEqual(typeof decision.duration_ms, "number")
      assert.strictEqual((entries[4]!.payload as Record<string, unknown>).interruption_reason, "cancelled")
      assert.deepStrictEqual(yield* Ref.get(executed), [])
    }).pipe(Effect.scoped))

  it.effect("tool_call and tool_result carry tool, call_id and ok; run_completed carries the run summary", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const [result, entries] = yield* Effect.all([run("go"), query()]).pipe(
        Effect.provide(Layer.merge(agentWith(callThenSummarize([{ name: "echo", args: { text: "x" } }]), [echo], audit), audit))
      )
      const call = entries.find((e) => e.action === "tool_call")!.payload as Record<string, unknown>
      const outcome = entries.find((e) => e.action === "tool_result")!.payload as Record<string, unknown>
      const completed = entries.find((e) => e.action === "run_completed")!.payload as Record<string, unknown>
      const callId = result.toolCalls[0]!.callId
      assert.deepStrictEqual([call.tool, call.call_id, call.args, call.destructive], ["echo", callId, { text: "x" }, false])
      assert.deepStrictEqual([outcome.tool, outcome.call_id, outcome.ok, outcome.denied], ["echo", callId, true, false])
      assert.deepStrictEqual([completed.turns, completed.tokens_in, completed.tokens_out], [2, 30, 8])
      assert.isNumber(completed.elapsed_ms)
      assert.isNull(entries[0]!.userId, "an anonymous run is attributed to null")
    }).pipe(Effect.scoped))

  it.effect("a denied call is recorded with denied and the reason", () =>
    Effect.gen(function*() {
      const executed = yield* Ref.make<Array<string>>([])
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const services = Layer.mergeAll(audit, Permissions.standard({ deniedTools: ["delete_file"] }))
      const [result, entries] = yield* Effect.all([run("clean up", { userId: "bob" }), query({ action: "tool_result" })]).pipe(
        Effect.provide(
          Layer.merge(agentWith(callThenSummarize([{ name: "delete_file", args: { path: "/etc/passwd" } }]), [deleteFile(executed)], services), audit)
        )
      )
      const outcome = entries[0]!.payload as Record<string, unknown>
      assert.deepStrictEqual([outcome.ok, outcome.denied, outcome.reason], [false, true, result.toolCalls[0]!.reason])
      assert.include(String(outcome.reason), "denied by policy")
      assert.deepStrictEqual(yield* Ref.get(executed), [])
    }).pipe(Effect.scoped))

  it.effect("ten users running at once each find exactly their own runs in the shared log", () =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(AuditLog.layerMemory({ secret: SECRET }))
      const users = Array.from({ length: 10 }, (_, i) => `user_${i}`)
      const { entries, results } = yield* Effect.gen(function*() {
        const results = yield* Effect.forEach(
          [...users, ...users],
          (userId) => Effect.map(run("hi", { userId }), (result) => ({ userId, result })),
          { concurrency: "unbounded" }
        )
        const entries = yield* Effect.forEach(users, (userId) => query({ userId }))
        return { entries, results }
      }).pipe(Effect.provide(Layer.merge(agentWith(callThenSummarize([{ name: "echo", args: { text: "a" } }]), [echo], audit), audit)))
      users.forEach((userId, i) => {
        const runIds = new Set(results.filter((r) => r.userId === userId).map((r) => r.result.runId))
        assert.strictEqual(entries[i]!.length, 8)
        assert.deepStrictEqual(new Set(entries[i]!.map((e) => e.runId)), runIds)
      })
      const all = yield* query().pipe(Effect.provide(audit))
      assert.isTrue((yield* AuditLog.verifyEntries(all, SECRET)).valid)
    }).pipe(Effect.scoped))

  it.effect("without an audit log runs work and nothing is counted as failed", () =>
    Effect.gen(function*() {
      const result = yield* run("hi").pipe(
        Effect.provide(agentWith(callThenSummarize([{ name: "echo", args: { text: "ok" } }]), [echo], AuditLog.layerNone))
      )
      assert.deepStrictEqual([result.output, result.auditFailures], ["ok", 0])
    }))

  it.effect("end to end: the file verifies and holds no key or handed-out secret", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const secrets = Secrets.makeDict({ SERVICE_TOKEN: "tok-live-9f8e7d6c5b4a" })
      const SecretsLive = Layer.succeed(Secrets.Secrets, secrets)
      const fetchToken = Tool.make("fetch_token", {
        description: "Returns the service token",
        parameters: Schema.Struct({}),
        handler: () => Effect.map(secrets.resolve("SERVICE_TOKEN"), Redacted.value)
      })
      // The model copies the token it saw into the next call's arguments (a prompt-injection shape).
      const script: Model.Script = (request) => {
        const tools = request.messages.filter((m) => m.role === "tool")
        if (tools.length === 0) return { toolCalls: [{ name: "fetch_token", args: {} }] }
        if (tools.length === 1) return { toolCalls: [{ name: "echo", args: { text: `token=${tools[0]!.content}` } }] }
        return { text: "done" }
      }
      const audit = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(Layer.merge(NodeFileSystem.layer, SecretsLive)))
      const result = yield* run("use sk-ant-api03-abcdefghijklmnopqrstuvwxyz to call the API", { userId: "carol" }).pipe(
        Effect.provide(agentWith(script, [fetchToken, echo], Layer.merge(audit, SecretsLive)))
      )
      assert.strictEqual(result.output, "done")
      const text = nodeFs.readFileSync(path, "utf8")
      assert.notInclude(text, "tok-live-9f8e7d6c5b4a")
      assert.notInclude(text, "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
      assert.include(text, "token=[REDACTED")
      const report = yield* AuditLog.verifyFile(path, SECRET).pipe(Effect.provide(NodeFileSystem.layer))
      assert.deepStrictEqual([report.valid, report.validCount], [true, 6])
    }))
})

describe("failing closed", () => {
  const destructiveAndSafe = callThenSummarize([
    { name: "delete_file", args: { path: "/srv/data" } },
    { name: "echo", args: { text: "still here" } }
  ])

  it.effect("when the audit file becomes unwritable mid-run, the destructive tool does not run", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const executed = yield* Ref.make<Array<string>>([])
      // The first write (run_started) succeeds; from then on the disk is full.
      const faulty = faultyFileSystem({ failWrite: (n) => n >= 2 })
      const audit = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(faulty.layer))
      const result = yield* run("wipe it", { userId: "mallory" }).pipe(
        Effect.provide(agentWith(destructiveAndSafe, [deleteFile(executed), echo], audit))
      )
      assert.deepStrictEqual(yield* Ref.get(executed), [], "the destructive handler never ran")
      const byName = Object.fromEntries(result.toolCalls.map((call) => [call.name, call]))
      assert.deepStrictEqual([byName.delete_file!.status, byName.delete_file!.reason], ["denied", "audit unavailable"])
      assert.deepStrictEqual([byName.echo!.status, byName.echo!.output], ["ok", "still here"])
      assert.isAbove(result.auditFailures, 0)
      // What was acknowledged is intact: every line of the first (successful) write
      // verifies. How many entries shared that write depends on group commit.
      const report = yield* AuditLog.verifyFile(path, SECRET).pipe(Effect.provide(NodeFileSystem.layer))
      const lines = nodeFs.readFileSync(path, "utf8").split("\n").filter((line) => line.length > 0)
      assert.isTrue(report.valid)
      assert.isAtLeast(lines.length, 1)
      assert.strictEqual(report.validCount, lines.length)
      assert.include(lines[0]!, `"action":"run_started"`)
    }))

  it.effect("when the write holding the destructive call's own tool_call fails, the call is denied and never runs", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const executed = yield* Ref.make<Array<string>>([])
      // Whatever shares that group-commit write fails with it; everything before it was written.
      const faulty = faultyFileSystem({ failWrite: (_, text) => text.includes(`"tool":"delete_file"`) })
      const audit = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(faulty.layer))
      const result = yield* run("wipe it", { userId: "mallory" }).pipe(
        Effect.provide(agentWith(destructiveAndSafe, [deleteFile(executed), echo], audit))
      )
      assert.deepStrictEqual(yield* Ref.get(executed), [], "the destructive handler never ran")
      const deleteCall = result.toolCalls.find((call) => call.name === "delete_file")!
      assert.deepStrictEqual([deleteCall.status, deleteCall.reason], ["denied", "audit unavailable"])
      assert.isAbove(result.auditFailures, 0)
      const lines = nodeFs.readFileSync(path, "utf8").split("\n").filter((line) => line.length > 0)
      assert.isFalse(lines.some((line) => line.includes(`"tool":"delete_file"`)), "its tool_call entry was never acknowledged")
      const report = yield* AuditLog.verifyFile(path, SECRET).pipe(Effect.provide(NodeFileSystem.layer))
      assert.deepStrictEqual([report.valid, report.validCount], [true, lines.length])
    }))

  it.effect("once the file log has failed, a later run's entries fail at once and its destructive tool is denied", () =>
    Effect.gen(function*() {
      const path = freshPath()
      const executed = yield* Ref.make<Array<string>>([])
      const faulty = faultyFileSystem({ failWrite: (n) => n >= 2 })
      const audit = AuditLog.layerFile({ path, secret: SECRET }).pipe(Layer.provide(faulty.layer))
      const [, second] = yield* Effect.all([run("wipe it", { userId: "mallory" }), run("again", { userId: "mallory" })]).pipe(
        Effect.provide(agentWith(destructiveAndSafe, [deleteFile(executed), echo], audit))
      )
      assert.deepStrictEqual(yield* Ref.get(executed), [], "the destructive handler never ran")
      const byName = Object.fromEntries(second.toolCalls.map((call) => [call.name, call]))
      assert.deepStrictEqual([byName.delete_file!.status, byName.delete_file!.reason], ["denied", "audit unavailable"])
      assert.deepStrictEqual([byName.echo!.status, byName.echo!.output], ["ok", "still here"])
      assert.strictEqual(second.auditFailures, 6, "run_started, two tool_calls, two tool_results, run_completed")
    }))

  it.effect("an audit service that fails every append denies destructive tools in every run", () =>
    Effect.gen(function*() {
      const executed = yield* Ref.make<Array<string>>([])
      const failing = Layer.succeed(AuditLog.AuditLog, {
        enabled: true,
        append: () => Effect.fail(new AuditLog.AuditUnavailable({ description: "postgres is down" })),
        query: () => Effect.succeed([]),
        verify: Effect.succeed({ valid: true, validCount: 0 })
      })
      const results = yield* Effect.all([run("a", { userId: "u1" }), run("b", { userId: "u2" })]).pipe(
        Effect.provide(agentWith(destructiveAndSafe, [deleteFile(executed), echo], failing))
      )
      for (const result of results) {
        assert.strictEqual(result.toolCalls.find((c) => c.name === "delete_file")!.reason, "audit unavailable")
        assert.strictEqual(result.auditFailures, 6, "run_started, two tool_calls, two tool_results, run_completed")
      }
      assert.deepStrictEqual(yield* Ref.get(executed), [])
    }))
})

describe("long text is redacted before it is cut", () => {
  const TOKEN = "vault-token-3f9a1c77e2b84d05"
  /** The token's first 12 characters: what a canary check greps for. */
  const PREFIX = TOKEN.slice(0, 12)
  const dict = Secrets.makeDict({ VAULT_TOKEN: TOKEN })
  const withSecrets = (
    script: Model.Script,
    tools: ReadonlyArray<Tool.Any>,
    audit: Layer.Layer<AuditLog.AuditLog, AuditLog.AuditUnavailable>
  ) =>
    Agent.layer({ tools }).pipe(
      Layer.provide(Model.layerScripted(script)),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, Layer.succeed(Secrets.Secrets, dict), audit))
    )
  const entriesOf = (prompt: string, script: Model.Script, tools: ReadonlyArray<Tool.Any>) =>
    Effect.gen(function*() {
      const audit = yield* Layer.memoize(
        AuditLog.layerMemory({ secret: SECRET }).pipe(Layer.provide(Layer.succeed(Secrets.Secrets, dict)))
      )
      return yield* Effect.flatMap(Agent.Agent, (agent) => agent.run(prompt)).pipe(
        Effect.zipRight(query()),
        Effect.provide(Layer.merge(withSecrets(script, tools, audit), audit))
      )
    }).pipe(Effect.scoped)

  it.effect("run_started: a known secret across the prompt's 500th character leaves no part of it", () =>
    Effect.gen(function*() {
      const prompt = "x".repeat(500 - PREFIX.length) + TOKEN + " please"
      const entries = yield* entriesOf(prompt, [{ text: "ok" }], [])
      const started = entries.find((entry) => entry.action === "run_started")!
      assert.notInclude(JSON.stringify(started.payload), PREFIX)
      assert.strictEqual(String((started.payload as { readonly prompt: unknown }).prompt).length, 500)
    }))

  it.effect("tool_result: a known secret across the 2 000th character of a tool error leaves no part of it", () =>
    Effect.gen(function*() {
      // An HTTP client error quoting a long response body that echoes the token, say.
      const failing = Tool.make("fetch", {
        description: "fails quoting the token",
        parameters: Schema.Struct({}),
        handler: () =>
          Effect.flatMap(Effect.map(dict.resolve("VAULT_TOKEN"), Redacted.value), (token) =>
            Effect.fail(new Error("upstream said: " + "y".repeat(2000 - 15 - PREFIX.length) + token + " invalid")))
      })
      const script: Model.Script = (request) =>
        request.messages.at(-1)!.role === "tool" ? { text: "done" } : { toolCalls: [{ name: "fetch", args: {} }] }
      const entries = yield* entriesOf("go", script, [failing])
      const result = entries.find((entry) => entry.action === "tool_result")!
      assert.notInclude(JSON.stringify(result.payload), PREFIX)
    }))
})
