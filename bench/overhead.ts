/**
 * Framework overhead per turn.
 *
 * A "turn" here is one user request: a model call that asks for a tool, the
 * tool call, and a model call that answers — with a zero-latency scripted
 * model, so only the framework's own cost is measured. It compares:
 *
 * - a bare hand-written loop (plain functions, no Effect),
 * - `Agent.run` inside an Effect program, with the default layers
 *   (no budget, allow-all permissions, no hooks, in-memory memory, no audit),
 * - the same through the Promise facade (`createAgent().run`).
 *
 * Run: npm run bench:overhead [-- --turns 20000]
 */
import { Effect, Layer, Schema } from "effect"
import { PerformanceObserver } from "node:perf_hooks"
import { Agent, Memory, Model, RunContext, Tool } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"

const argValue = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? Number(process.argv[index + 1]) : fallback
}

const TURNS = argValue("turns", 20_000)
const WARMUP = Math.min(5_000, TURNS)
const USERS = 100

// ---- the shared "model" and "tool" logic --------------------------------------

const usage = { inputTokens: 12, outputTokens: 4, costUsd: 0 }
const toolCallTurn: Model.ModelResponse = {
  text: "",
  toolCalls: [{ id: "call_1", name: "lookup", args: { key: "plan" } }],
  usage,
  stopReason: "tool_use"
}
const answer = (toolOutput: string): Model.ModelResponse => ({
  text: `Your plan is ${toolOutput}`,
  toolCalls: [],
  usage,
  stopReason: "end_turn"
})
const respond = (messages: ReadonlyArray<Model.Message>): Model.ModelResponse => {
  const last = messages[messages.length - 1]!
  return last.role === "tool" ? answer(last.content) : toolCallTurn
}
const lookup = (userId: string | null, key: string) => `${key}:${userId ?? "anonymous"}:pro`

// ---- the bare loop -------------------------------------------------------------

const bareTurn = (userId: string, prompt: string): string => {
  const messages: Array<Model.Message> = [{ role: "system", content: "Be brief." }, { role: "user", content: prompt }]
  let output = ""
  for (let turn = 0; turn < 50; turn++) {
    const response = respond(messages)
    output = response.text
    messages.push({ role: "assistant", content: response.text, toolCalls: response.toolCalls })
    if (response.toolCalls.length === 0) break
    for (const call of response.toolCalls) {
      const args = call.args as { key: string }
      messages.push({ role: "tool", toolCallId: call.id, toolName: call.name, content: lookup(userId, args.key), isError: false })
    }
  }
  return output
}

// ---- the agent -------------------------------------------------------------------

const lookupTool = Tool.make("lookup", {
  description: "Looks a key up for the current user",
  parameters: Schema.Struct({ key: Schema.String }),
  handler: ({ key }) => Effect.map(RunContext.currentUserId, (userId) => lookup(userId, key))
})
const model = Model.make({ name: "bench", complete: (request) => Effect.succeed(respond(request.messages)) })
const config: Agent.Config = { instructions: "Be brief.", tools: [lookupTool] }

// ---- measurement -------------------------------------------------------------------

let gcCount = 0
new PerformanceObserver((list) => (gcCount += list.getEntries().length)).observe({ entryTypes: ["gc"] })
const collect = () => (globalThis as { gc?: () => void }).gc?.()

interface Figures {
  readonly microsPerTurn: number
  readonly bytesPerTurn: number
  readonly gcs: number
}

const measure = async (turns: number, run: (i: number) => unknown | Promise<unknown>, isAsync: boolean): Promise<Figures> => {
  for (let i = 0; i < WARMUP; i++) isAsync ? await run(i) : run(i)
  collect()
  const gcBefore = gcCount
  const heapBefore = process.memoryUsage().heapUsed
  const start = process.hrtime.bigint()
  for (let i = 0; i < turns; i++) isAsync ? await run(i) : run(i)
  const elapsed = Number(process.hrtime.bigint() - start) / 1000
  const heapAfter = process.memoryUsage().heapUsed
  return { microsPerTurn: elapsed / turns, bytesPerTurn: (heapAfter - heapBefore) / turns, gcs: gcCount - gcBefore }
}

const users = Array.from({ length: USERS }, (_, i) => `user_${i}`)

const main = async () => {
  const bare = await measure(TURNS, (i) => bareTurn(users[i % USERS]!, "what is my plan?"), false)

  const layer = (memory: Layer.Layer<Memory.Memory>) =>
    Agent.layer(config).pipe(
      Layer.provide(Layer.succeed(Model.Model, model)),
      Layer.provide(Layer.mergeAll(Agent.layerDefaults, memory))
    )

  // A memory that keeps nothing, to separate the loop's cost from the in-memory store's.
  const memoryOff = Layer.effect(Memory.Memory, Memory.makeInMemory({ maxUsers: 1, userIdleTtl: null }))

  const inEffect = (memory: Layer.Layer<Memory.Memory>) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const agent = yield* Agent.Agent
        const runs = (count: number) =>
          Effect.gen(function*() {
            for (let i = 0; i < count; i++) {
              yield* agent.run("what is my plan?", { userId: users[i % USERS]!, sessionId: `s_${i % USERS}` })
            }
          })
        yield* runs(WARMUP)
        return yield* Effect.promise(() => measure(TURNS, () => undefined, false).then(() => undefined)).pipe(
          Effect.zipRight(Effect.suspend(() => {
            collect()
            const gcBefore = gcCount
            const heapBefore = process.memoryUsage().heapUsed
            const start = process.hrtime.bigint()
            return Effect.map(runs(TURNS), (): Figures => ({
              microsPerTurn: Number(process.hrtime.bigint() - start) / 1000 / TURNS,
              bytesPerTurn: (process.memoryUsage().heapUsed - heapBefore) / TURNS,
              gcs: gcCount - gcBefore
            }))
          }))
        )
      }).pipe(Effect.provide(layer(memory)))
    )

  const agentRun = await inEffect(Memory.layerInMemory())
  const agentRunNoHistory = await inEffect(memoryOff)

  const facade = createAgent({ model: Layer.succeed(Model.Model, model), ...config })
  const viaFacade = await measure(
    Math.min(TURNS, 5_000),
    (i) => facade.run("what is my plan?", { userId: users[i % USERS]!, sessionId: `s_${i % USERS}` }),
    true
  )
  await facade.dispose()

  const row = (name: string, f: Figures) =>
    `  ${name.padEnd(44)} ${f.microsPerTurn.toFixed(2).padStart(9)} µs/turn ${
      (f.bytesPerTurn / 1024).toFixed(2).padStart(9)
    } KiB/turn${f.gcs > 0 ? ` (${f.gcs} GCs during the batch: allocation figure is a lower bound)` : ""}`
  console.log(`Framework overhead per turn (${TURNS} sequential turns, ${USERS} users; one tool call + one answer per turn)`)
  console.log(row("bare hand-written loop", bare))
  console.log(row("Agent.run, default layers, in-memory memory", agentRun))
  console.log(row("Agent.run, default layers, memory keeps 1 user", agentRunNoHistory))
  console.log(row("createAgent().run (Promise facade)", viaFacade))
  console.log(
    `  overhead of Agent.run over the bare loop: ${(agentRun.microsPerTurn - bare.microsPerTurn).toFixed(2)} µs/turn` +
      ` (ratio ${(agentRun.microsPerTurn / bare.microsPerTurn).toFixed(1)}x); target < 25 µs`
  )
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
