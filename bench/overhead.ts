/**
 * Framework overhead per turn.
 *
 * A "turn" here is one user request: a model call that asks for a tool, the
 * tool call, and a model call that answers — with a zero-latency scripted
 * model, so only the framework's own cost is measured. It compares:
 *
 * - a bare hand-written loop (plain functions, no Effect),
 * - `Agent.run` inside an Effect program with no governance layers (no
 *   budget, allow-all permissions, no approver, no hooks, no memory, no
 *   audit, no telemetry) — the headline figure;
 * - the same plus the in-memory memory (seeding and remembering each turn),
 *   with fresh sessions and with one growing session per user (whose replayed
 *   history makes every turn's prompt longer: memory content, not overhead);
 * - the Promise facade (`createAgent().run`).
 *
 * Run: npm run bench:overhead [-- --turns 20000]
 */
import { Effect, Layer, Schema } from "effect"
import { availableParallelism, loadavg } from "node:os"
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

const measureAgent = (memory: Layer.Layer<Memory.Memory>, freshSessions: boolean): Promise<Figures> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const runs = (count: number, offset: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < count; i++) {
            const user = users[(offset + i) % USERS]!
            // Fresh sessions keep the replayed history (and so the prompt) the same size every turn.
            const sessionId = freshSessions ? `s_${offset + i}` : `s_${user}`
            yield* agent.run("what is my plan?", { userId: user, sessionId })
          }
        })
      yield* runs(WARMUP, 0)
      collect()
      const gcBefore = gcCount
      const heapBefore = process.memoryUsage().heapUsed
      const start = process.hrtime.bigint()
      yield* runs(TURNS, WARMUP)
      return {
        microsPerTurn: Number(process.hrtime.bigint() - start) / 1000 / TURNS,
        bytesPerTurn: (process.memoryUsage().heapUsed - heapBefore) / TURNS,
        gcs: gcCount - gcBefore
      }
    }).pipe(
      Effect.provide(
        Agent.layer(config).pipe(
          Layer.provide(Layer.succeed(Model.Model, model)),
          Layer.provide(Layer.mergeAll(Agent.layerDefaults, memory))
        )
      )
    )
  )

const main = async () => {
  const bare = await measure(TURNS, (i) => bareTurn(users[i % USERS]!, "what is my plan?"), false)
  const ungoverned = await measureAgent(Memory.layerNone, true)
  const inMemory = await measureAgent(Memory.layerInMemory(), true)
  const withHistory = await measureAgent(Memory.layerInMemory(), false)

  const facade = createAgent({ model: Layer.succeed(Model.Model, model), memory: Memory.layerNone, ...config })
  const viaFacade = await measure(
    Math.min(TURNS, 5_000),
    (i) => facade.run("what is my plan?", { userId: users[i % USERS]! }),
    true
  )
  await facade.dispose()

  const row = (name: string, f: Figures) =>
    `  ${name.padEnd(58)} ${f.microsPerTurn.toFixed(2).padStart(9)} µs/turn ${
      (f.bytesPerTurn / 1024).toFixed(2).padStart(8)
    } KiB/turn${f.gcs > 0 ? ` (${f.gcs} GCs: allocation is a lower bound)` : ""}`
  console.log(`Framework overhead per turn (${TURNS} sequential turns, ${USERS} users; one tool call + one answer per turn)`)
  console.log(row("bare hand-written loop", bare))
  console.log(row("Agent.run, no governance layers (Memory.layerNone)", ungoverned))
  console.log(row("Agent.run, + in-memory memory (seed and remember)", inMemory))
  console.log(row("Agent.run, + in-memory memory, one growing session per user", withHistory))
  console.log(row("createAgent().run (Promise facade, no governance layers)", viaFacade))
  const overhead = ungoverned.microsPerTurn - bare.microsPerTurn
  console.log(
    `  overhead of Agent.run over the bare loop: ${overhead.toFixed(2)} µs/turn (ratio ${
      (ungoverned.microsPerTurn / bare.microsPerTurn).toFixed(0)
    }x); target < 25 µs — ${overhead < 25 ? "met" : "NOT met"}`
  )
  console.log(`  (load average ${loadavg().map((n) => n.toFixed(2)).join(" ")} on ${availableParallelism()} cores)`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
