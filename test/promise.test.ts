import { Effect, Layer, Schema } from "effect"
import { Memory, Model, RunContext, Tool } from "jeevesagent"
import { AgentDisposed, createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

const whoami = Tool.fromPromise("whoami", {
  description: "The current user",
  parameters: Schema.Struct({}),
  handler: async (_args, { context }) => context.userId ?? "anonymous"
})

const callThenAnswer: Model.Script = (request) =>
  request.messages.at(-1)!.role === "tool" ?
    { text: `you are ${request.messages.at(-1)!.content}`, usage: { inputTokens: 5, outputTokens: 2 } } :
    { toolCalls: [{ name: "whoami", args: {} }], usage: { inputTokens: 4, outputTokens: 1 } }

describe("jeevesagent/promise", () => {
  it("runs one shared agent for many users", async () => {
    const agent = createAgent({ model: "scripted", script: callThenAnswer, tools: [whoami] })
    try {
      const results = await Promise.all(["alice", "bob", "carol"].map((userId) => agent.run("who am i?", { userId })))
      expect(results.map((r) => r.output)).toEqual(["you are alice", "you are bob", "you are carol"])
      expect(results.map((r) => r.userId)).toEqual(["alice", "bob", "carol"])
    } finally {
      await agent.dispose()
    }
  })

  it("echo model works offline", async () => {
    const agent = createAgent({ model: "echo" })
    expect((await agent.run("hello", { userId: "alice" })).output).toBe("Echo: hello")
    await agent.dispose()
  })

  it("rejects with our typed error instances, never FiberFailure", async () => {
    const agent = createAgent({ model: "echo" })
    const invalid = await agent.run("x", { userId: "" }).catch((error: unknown) => error)
    expect(invalid).toBeInstanceOf(RunContext.InvalidUserId)
    expect((invalid as RunContext.InvalidUserId).rule).toBe("empty")
    expect((invalid as Error).message).toContain("empty")

    const failing = createAgent({
      model: Model.layerScripted([
        { error: new Model.ModelError({ reason: "bad_request", retryable: false, status: 400, description: "nope" }) }
      ])
    })
    const modelError = await failing.run("x").catch((error: unknown) => error)
    expect(modelError).toBeInstanceOf(Model.ModelError)
    expect((modelError as Model.ModelError).status).toBe(400)
    await Promise.all([agent.dispose(), failing.dispose()])
  })

  it("configuration errors reject with a typed error naming the option", async () => {
    const agent = createAgent({ model: "gpt-4o" })
    const error = await agent.ready().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(Model.ModelConfigError)
    expect((error as Error).message).toContain("gpt-4o")
    const scripted = createAgent({ model: "scripted" })
    expect(await scripted.ready().catch((e: unknown) => e)).toBeInstanceOf(Model.ModelConfigError)
  })

  it("aborting the signal interrupts the run and rejects with the abort reason", async () => {
    let interrupted = false
    let started!: () => void
    const running = new Promise<void>((resolve) => (started = resolve))
    const hanging = Tool.make("hang", {
      description: "hangs",
      parameters: Schema.Struct({}),
      handler: () =>
        Effect.sync(() => started()).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
        )
    })
    const agent = createAgent({
      model: Model.layerScripted([{ toolCalls: [{ name: "hang", args: {} }] }]),
      tools: [hanging]
    })
    const controller = new AbortController()
    const run = agent.run("x", { userId: "alice", signal: controller.signal })
    await running
    controller.abort()
    const error = await run.catch((e: unknown) => e)
    expect((error as Error).name).toBe("AbortError")
    expect(interrupted).toBe(true)
    const already = await agent.run("x", { signal: controller.signal }).catch((e: unknown) => e)
    expect((already as Error).name).toBe("AbortError")
    await agent.dispose()
  })

  it("an abort while the services are still being built stops run() and stream() before any tool runs", async () => {
    const ran: Array<string> = []
    const sideEffect = Tool.make("side_effect", {
      description: "has a side effect",
      parameters: Schema.Struct({}),
      handler: () => Effect.sync(() => ran.push("side_effect"))
    })
    let built!: () => void
    const building = new Promise<void>((resolve) => (built = resolve))
    const slowToBuild = Layer.unwrapEffect(
      Effect.as(Effect.promise(() => building), Model.layerScripted(() => ({ toolCalls: [{ name: "side_effect", args: {} }] })))
    )
    const [streaming, running] = [1, 2].map(() => createAgent({ model: slowToBuild, tools: [sideEffect] }))
    const streamAbort = new AbortController()
    const first = streaming!.stream("x", { signal: streamAbort.signal })[Symbol.asyncIterator]().next()
    const runAbort = new AbortController()
    const run = running!.run("x", { signal: runAbort.signal })
    await new Promise((resolve) => setTimeout(resolve, 5))
    streamAbort.abort()
    runAbort.abort()
    built()
    expect(((await first.catch((e: unknown) => e)) as Error).name).toBe("AbortError")
    expect(((await run.catch((e: unknown) => e)) as Error).name).toBe("AbortError")
    await Promise.all([streaming!.ready(), running!.ready()])
    expect(ran).toEqual([])
    await Promise.all([streaming!.dispose(), running!.dispose()])
  })

  it("stream yields events; breaking out stops the run", async () => {
    const agent = createAgent({ model: "scripted", script: callThenAnswer, tools: [whoami] })
    const tags: Array<string> = []
    for await (const event of agent.stream("who?", { userId: "dave" })) {
      tags.push(event._tag)
      if (event._tag === "completed") expect(event.result.output).toBe("you are dave")
    }
    expect(tags[0]).toBe("started")
    expect(tags.at(-1)).toBe("completed")

    let interrupted = false
    const hanging = Tool.make("hang", {
      description: "hangs",
      parameters: Schema.Struct({}),
      handler: () => Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
    })
    const blocking = createAgent({ model: Model.layerScripted([{ toolCalls: [{ name: "hang", args: {} }] }]), tools: [hanging] })
    for await (const event of blocking.stream("x")) {
      if (event._tag === "tool_call") break
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(interrupted).toBe(true)
    await Promise.all([agent.dispose(), blocking.dispose()])
  })

  it("memory and usage admin calls are scoped to the named user", async () => {
    const agent = createAgent({ model: "echo" })
    await agent.run("remember tea", { userId: "alice", sessionId: "s1" })
    await agent.memory("alice").updateBlock("prefs", "tea")
    expect((await agent.memory("alice").working()).map((b) => b.content)).toEqual(["tea"])
    expect(await agent.memory("bob").working()).toEqual([])
    expect((await agent.memory("alice").export()).episodes).toHaveLength(1)
    expect((await agent.memory(null).export()).episodes).toHaveLength(0)
    await expect(agent.memory(RunContext.ANONYMOUS_USER).working()).rejects.toBeInstanceOf(RunContext.InvalidUserId)
    expect(await agent.usageFor("alice")).toEqual({ tokensIn: 0, tokensOut: 0, tokensTotal: 0, costUsd: 0 })
    await agent.dispose()
  })

  it("accepts ready layers for services", async () => {
    const agent = createAgent({ model: Layer.succeed(Model.Model, Model.makeEcho({ prefix: "> " })) })
    expect((await agent.run("hi")).output).toBe("> hi")
    await agent.dispose()
  })
})

describe("jeevesagent/promise governance options", () => {
  const deleteFile = Tool.fromPromise("delete_file", {
    description: "Deletes a file",
    parameters: Schema.Struct({ path: Schema.String }),
    destructive: true,
    handler: async ({ path }) => `deleted ${path}`
  })
  const readFile = Tool.fromPromise("read_file", {
    description: "Reads a file",
    parameters: Schema.Struct({ path: Schema.String }),
    handler: async ({ path }) => `contents of ${path}`
  })
  const script: Model.Script = (request) =>
    request.messages.at(-1)!.role === "tool" ?
      { text: request.messages.filter((m) => m.role === "tool").map((m) => m.content).join(" | ") } :
      { toolCalls: [{ name: "delete_file", args: { path: "a.txt" } }, { name: "read_file", args: { path: "b.txt" } }] }

  it("per-user permissions, a promise approval handler and hooks are wired", async () => {
    const asked: Array<string> = []
    const agent = createAgent({
      model: "scripted",
      script,
      tools: [deleteFile, readFile],
      permissions: {
        perUser: { admin: { mode: "bypassPermissions" }, reader: { allowedTools: ["read_file"] } },
        default: { mode: "default" }
      },
      approvalHandler: async (call, userId) => {
        asked.push(`${userId}:${call.name}`)
        return userId === "approved_user"
      },
      approvalTimeout: "1 second",
      hooks: { beforeTool: [(call) => (call.name === "read_file" && (call.args as { path: string }).path === "secret") ? { deny: "no secrets" } : undefined] }
    })
    try {
      const [admin, reader, approved, declined] = await Promise.all(
        ["admin", "reader", "approved_user", "someone"].map((userId) => agent.run("clean up", { userId }))
      )
      expect(admin!.output).toBe("deleted a.txt | contents of b.txt")
      expect(reader!.output).toBe("DENIED: delete_file: not in allow-list | contents of b.txt")
      expect(approved!.output).toBe("deleted a.txt | contents of b.txt")
      expect(declined!.output).toBe(
        "DENIED: approval declined (delete_file: destructive call requires approval) | contents of b.txt"
      )
      expect(asked.sort()).toEqual(["approved_user:delete_file", "someone:delete_file"])
    } finally {
      await agent.dispose()
    }
  })

  it("an approvalHandler without permissions is asked about destructive calls (permissions default to mode default)", async () => {
    const asked: Array<string> = []
    const withHandler = createAgent({
      model: "scripted",
      script,
      tools: [deleteFile, readFile],
      approvalHandler: async (call) => {
        asked.push(call.name)
        return false
      }
    })
    const withoutHandler = createAgent({ model: "scripted", script, tools: [deleteFile, readFile] })
    try {
      expect((await withHandler.run("clean up", { userId: "alice" })).output).toBe(
        "DENIED: approval declined (delete_file: destructive call requires approval) | contents of b.txt"
      )
      expect(asked).toEqual(["delete_file"])
      // No handler and no permissions: allow all, as before.
      expect((await withoutHandler.run("clean up", { userId: "alice" })).output).toBe("deleted a.txt | contents of b.txt")
    } finally {
      await Promise.all([withHandler.dispose(), withoutHandler.dispose()])
    }
  })

  it("a bad permission mode rejects ready() instead of throwing at construction", async () => {
    const agent = createAgent({ model: "echo", permissions: { mode: "yolo" as never } })
    await expect(agent.ready()).rejects.toThrow(/mode/)
  })
})

describe("jeevesagent/promise redaction", () => {
  it("rejections never carry a secret value the Secrets service handed out", async () => {
    const apiKey = "vault-token-Zq8#2!x"
    const agent = createAgent({
      model: Model.layerScripted([
        { error: new Model.ModelError({ reason: "authentication", retryable: false, status: 401, description: `bad key ${apiKey}` }) }
      ]),
      secrets: { UPSTREAM_KEY: apiKey }
    })
    const error = await agent.run("x").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(Model.ModelError)
    expect((error as Error).message).not.toContain(apiKey)
    expect((error as Error).message).toContain("[REDACTED]")
    await agent.dispose()
  })

  it("a service that fails to build: the rejection still masks the values of the secrets record", async () => {
    const token = "vault-token-3f9a1c77e2b84d05"
    const memory = Layer.fail(new Error(`vector store refused credential ${token}`)) as Layer.Layer<Memory.Memory, unknown>
    const agent = createAgent({ model: "echo", secrets: { VAULT_TOKEN: token }, memory })
    try {
      for (const call of [() => agent.run("hi"), () => agent.ready()]) {
        const error = await call().then(() => undefined, (e: unknown) => e)
        expect(error).toBeInstanceOf(Error)
        expect((error as Error).message).toContain("vector store refused credential")
        expect((error as Error).message).not.toContain(token)
      }
    } finally {
      await agent.dispose()
    }
  })

  it("an async secrets backend is accepted as is", async () => {
    const agent = createAgent({
      model: "echo",
      secrets: { resolve: async (ref: string) => (ref === "X" ? "value-of-x-123" : undefined) }
    })
    await expect(agent.run("hello")).resolves.toMatchObject({ output: "Echo: hello" })
    await agent.dispose()
  })
})

describe("jeevesagent/promise audit log", () => {
  it("writes a verifiable, per-user file log and queries it", async () => {
    const { mkdtemp, readFile, rm } = await import("node:fs/promises")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const dir = await mkdtemp(join(tmpdir(), "jeeves-audit-"))
    const path = join(dir, "nested", "audit.jsonl")
    const agent = createAgent({
      model: "scripted",
      script: callThenAnswer,
      tools: [whoami],
      auditLog: { path, secret: "audit-secret-123" },
      secrets: { DB_PASSWORD: "hunter2-very-secret" }
    })
    try {
      await agent.run("who am i? my password is hunter2-very-secret", { userId: "alice", sessionId: "s1" })
      await agent.run("who am i?", { userId: "bob" })
      const alice = await agent.audit.query({ userId: "alice" })
      expect(alice.map((e) => e.action)).toEqual(["run_started", "tool_call", "tool_result", "run_completed"])
      expect(new Set(alice.map((e) => e.sessionId))).toEqual(new Set(["s1"]))
      expect((await agent.audit.query({ userId: "bob", action: "run_completed" })).length).toBe(1)
      expect(await agent.audit.verify()).toMatchObject({ valid: true, validCount: 8 })
      const file = await readFile(path, "utf8")
      expect(file.trim().split("\n")).toHaveLength(8)
      expect(file).not.toContain("hunter2-very-secret")
    } finally {
      await agent.dispose()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe("jeevesagent/promise memory backends", () => {
  it("sqlite:PATH keeps memory across agents (a restart)", async () => {
    const { mkdtemp, rm } = await import("node:fs/promises")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const dir = await mkdtemp(join(tmpdir(), "jeeves-sqlite-"))
    const memory = `sqlite:${join(dir, "memory.db")}`
    try {
      const first = createAgent({ model: "echo", memory })
      await first.run("I like green tea", { userId: "alice", sessionId: "s1" })
      await first.memory("alice").updateBlock("prefs", "tea")
      await first.dispose()
      const seen: Array<string> = []
      const second = createAgent({
        model: "scripted",
        memory,
        script: (request) => {
          seen.push(...request.messages.map((m) => `${m.role}:${m.content}`))
          return { text: "ok" }
        }
      })
      await second.run("what do I like?", { userId: "alice", sessionId: "s1" })
      expect(seen).toContain("user:I like green tea")
      expect(seen.some((m) => m.includes("<prefs>\ntea\n</prefs>"))).toBe(true)
      expect((await second.memory("bob").export()).episodes).toEqual([])
      await second.dispose()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it("autoExtract: true extracts facts after each run, for the run's user only", async () => {
    const agent = createAgent({
      model: "scripted",
      autoExtract: true,
      script: (request) => {
        const system = request.messages.find((m) => m.role === "system")?.content ?? ""
        if (system.toLowerCase().includes("extract")) {
          return { text: JSON.stringify([{ subject: "alice", predicate: "likes", object: "green tea" }]) }
        }
        return { text: "noted" }
      }
    })
    try {
      await agent.run("I like green tea", { userId: "alice" })
      const facts = await agent.memory("alice").recallFacts("green tea")
      expect(facts.map((f) => [f.subject, f.predicate, f.object])).toEqual([["alice", "likes", "green tea"]])
      expect(await agent.memory("bob").recallFacts("green tea")).toEqual([])
      const before = new Date(facts[0]!.recordedAt.getTime() - 1)
      expect(await agent.memory("alice").recallFacts("green tea", { knownAt: before })).toEqual([])
      expect((await agent.memory("alice").recallFacts("green tea", { knownAt: facts[0]!.recordedAt })).length).toBe(1)
    } finally {
      await agent.dispose()
    }
  })
})

describe("jeevesagent/promise budget", () => {
  it("per-user caps block only the offender; usage is reported per user", async () => {
    const agent = createAgent({
      model: "scripted",
      script: () => ({ text: "ok", usage: { inputTokens: 60, outputTokens: 10, costUsd: 0.01 } }),
      budget: { perUserMaxTokens: 100, maxUsers: 1000, userIdleTtl: "1 hour" }
    })
    try {
      await agent.run("one", { userId: "alice" })
      await agent.run("two", { userId: "alice" })
      const blocked = await agent.run("three", { userId: "alice" })
      expect(blocked).toMatchObject({ interrupted: true, interruptionReason: "budget:per_user_max_tokens", turns: 0 })
      const bob = await agent.run("one", { userId: "bob" })
      expect(bob.interrupted).toBe(false)
      expect(await agent.usageFor("alice")).toEqual({ tokensIn: 120, tokensOut: 20, tokensTotal: 140, costUsd: 0.02 })
      expect((await agent.globalUsage()).tokensTotal).toBe(210)
      await expect(agent.usageFor("")).rejects.toBeInstanceOf(RunContext.InvalidUserId)
    } finally {
      await agent.dispose()
    }
  })

  it("a bad cap rejects with a typed error naming the field", async () => {
    const agent = createAgent({ model: "echo", budget: { perUserMaxTokens: -1 } })
    const error = await agent.ready().catch((e: unknown) => e)
    expect((error as Error).message).toContain("perUserMaxTokens")
  })
})

describe("jeevesagent/promise dispose", () => {
  it("interrupts the runs and streams in flight, waits for their cleanup, then refuses calls", async () => {
    let cleanedUp = 0
    let started = 0
    let bothStarted!: () => void
    const running = new Promise<void>((resolve) => (bothStarted = resolve))
    const hanging = Tool.make("hang", {
      description: "hangs",
      parameters: Schema.Struct({}),
      handler: () =>
        Effect.sync(() => ++started === 2 && bothStarted()).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Effect.delay(Effect.sync(() => cleanedUp++), "20 millis"))
        )
    })
    const agent = createAgent({ model: "scripted", script: () => ({ toolCalls: [{ name: "hang", args: {} }] }), tools: [hanging] })
    const run = agent.run("x", { userId: "alice" }).catch((e: unknown) => e)
    const stream = (async () => {
      for await (const _event of agent.stream("x", { userId: "bob" })) {
        // waits for the run's end
      }
    })().catch((e: unknown) => e)
    await running
    const disposing = agent.dispose()
    expect(agent.dispose()).toBe(disposing)
    await disposing
    expect(cleanedUp).toBe(2)
    expect(await run).toBeInstanceOf(AgentDisposed)
    expect(await stream).toBeInstanceOf(AgentDisposed)
    expect((await run as AgentDisposed).message).toContain("disposed")
    await expect(agent.run("x")).rejects.toBeInstanceOf(AgentDisposed)
    await expect(agent.stream("x")[Symbol.asyncIterator]().next()).rejects.toBeInstanceOf(AgentDisposed)
    await expect(agent.memory("alice").working()).rejects.toBeInstanceOf(AgentDisposed)
    await expect(agent.ready()).rejects.toBeInstanceOf(AgentDisposed)
  })

  it("aborts the signal of a pending approval request", async () => {
    let asked!: () => void
    const asking = new Promise<void>((resolve) => (asked = resolve))
    let approvalAborted = false
    const deleteFile = Tool.fromPromise("delete_file", {
      description: "Deletes a file",
      parameters: Schema.Struct({ path: Schema.String }),
      destructive: true,
      handler: async ({ path }) => `deleted ${path}`
    })
    const agent = createAgent({
      model: Model.layerScripted([{ toolCalls: [{ name: "delete_file", args: { path: "a.txt" } }] }]),
      tools: [deleteFile],
      permissions: { mode: "default" },
      approvalHandler: (_call, _userId, { signal }) =>
        new Promise<boolean>((resolve) => {
          signal.addEventListener("abort", () => {
            approvalAborted = true
            resolve(false)
          })
          asked()
        })
    })
    const run = agent.run("clean up", { userId: "alice" }).catch((e: unknown) => e)
    await asking
    await agent.dispose()
    expect(approvalAborted).toBe(true)
    expect(await run).toBeInstanceOf(AgentDisposed)
  })
})
