/**
 * Cost of the audit log.
 *
 * 0. CPU per operation, in one fiber: µs per `Secrets.redact` call (a short
 *    string with no secret, a sentence, a string holding a handed-out value,
 *    one holding a key shape, a typical payload through `redactDeep`) and µs
 *    per in-memory append. `--micro` prints only this section.
 * 1. Appends per second: memory; file with fsync from 1 appender (one fsync
 *    per entry) and from 64 concurrent appenders (group commit); file without
 *    fsync; Postgres (when it answers at JEEVES_TEST_PG_URL, default the local
 *    server) from 1 and 64 appenders, in a scratch database.
 * 2. Verification speed (entries per second) of a file.
 * 3. The added cost per agent turn: `Agent.run` (one tool call, two model
 *    calls, four audit entries) with each log, minus the same with
 *    `AuditLog.layerNone`.
 *
 * Run: npx tsx bench/audit.ts [--seconds 2] [--turns 2000] [--micro]
 */
import * as nodeFs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Layer, Redacted, Schema } from "effect"
import pg from "pg"
import { Agent, AuditLog, Model, RunContext, Secrets, Tool } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"

const argValue = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? Number(process.argv[index + 1]) : fallback
}

const SECONDS = argValue("seconds", 2)
const TURNS = argValue("turns", 2_000)
const SECRET = Redacted.make("bench-secret-0123456789abcdef")
const adminUrl = process.env.JEEVES_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const dir = nodeFs.mkdtempSync(join(tmpdir(), "jeeves-audit-bench-"))
const payload = { tool: "search", call_id: "call_0123456789", args: { query: "quarterly revenue by region", limit: 20 }, turn: 1 }

const MICRO_ONLY = process.argv.includes("--micro")

/** Best of five rounds of `rounds` calls, in µs per call (after a warm-up round). */
const perCall = (rounds: number, call: () => unknown): number => {
  for (let i = 0; i < rounds; i++) call()
  let best = Infinity
  for (let round = 0; round < 5; round++) {
    const started = performance.now()
    for (let i = 0; i < rounds; i++) call()
    best = Math.min(best, ((performance.now() - started) * 1000) / rounds)
  }
  return best
}

/** µs per in-memory append: best of five fresh logs of `count` appends each. */
const memoryAppend = (count: number, secrets: Secrets.Service) =>
  Effect.gen(function*() {
    let best = Infinity
    for (let round = 0; round < 6; round++) {
      const audit = yield* AuditLog.makeMemory({ secret: SECRET })
      // What the agent does per entry: a fresh input, so no work is shared between appends.
      let i = 0
      const started = performance.now()
      yield* Effect.whileLoop({
        while: () => i < count,
        body: () => audit.append({ actor: "model", action: "tool_call", payload: { ...payload, turn: i } }),
        step: () => void i++
      })
      if (round > 0) best = Math.min(best, ((performance.now() - started) * 1000) / count)
    }
    return best
  }).pipe(RunContext.withUser("bench"), Effect.provideService(Secrets.Secrets, secrets))

const micro = () => {
  const secrets = Secrets.makeDict({ DB_PASSWORD: "correct horse battery staple", API_KEY: "sk-live-0123456789abcdef" })
  const payloadJson = JSON.stringify(payload)
  const cases: ReadonlyArray<readonly [string, number, () => unknown]> = [
    ["redact: short, no secret (\"tool_call\")", 1_000_000, () => secrets.redact("tool_call")],
    ["redact: sentence, no secret (58 chars)", 300_000, () =>
      secrets.redact("Quarterly revenue by region, with totals for EMEA and APAC")],
    ["redact: handed-out value inside", 300_000, () => secrets.redact("connecting with correct horse battery staple now")],
    ["redact: GitHub token inside", 300_000, () => secrets.redact(`key ghp_${"A1b2C3d4".repeat(5)} used`)],
    ["redact: JSON text of the payload", 300_000, () => secrets.redact(payloadJson)],
    ["redactDeep: the payload (9 strings)", 300_000, () => Secrets.redactDeep(payload, secrets.redact)]
  ]
  console.log("CPU per operation (µs, best of 5)")
  for (const [name, rounds, call] of cases) console.log(`  ${name.padEnd(40)}${perCall(rounds, call).toFixed(3)}`)
  console.log(`  ${"append, memory log".padEnd(40)}${Effect.runSync(memoryAppend(20_000, secrets)).toFixed(2)}`)
}

const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 2 : 0 })

/** Appends from `appenders` fibers for about SECONDS; returns appends per second. */
const throughput = (layer: Layer.Layer<AuditLog.AuditLog, unknown>, appenders: number) =>
  Effect.gen(function*() {
    const audit = yield* AuditLog.AuditLog
    const append = audit.append({ actor: "model", action: "tool_call", payload })
    yield* Effect.forEach(Array.from({ length: 20 }, () => append), (a) => a, { discard: true }) // warm-up
    const deadline = Date.now() + SECONDS * 1000
    let count = 0
    const started = performance.now()
    yield* Effect.forEach(
      Array.from({ length: appenders }, (_, i) => i),
      () =>
        Effect.whileLoop({
          while: () => Date.now() < deadline,
          body: () => append,
          step: () => void count++
        }),
      { concurrency: "unbounded", discard: true }
    )
    const seconds = (performance.now() - started) / 1000
    const report = yield* audit.verify
    if (!report.valid) throw new Error(`the benchmark's own log does not verify: ${report.detail}`)
    return count / seconds
  }).pipe(RunContext.withUser("bench"), Effect.provide(layer))

const fileLayer = (name: string, durability: "fsync" | "none") =>
  AuditLog.layerFile({ path: join(dir, name), secret: SECRET, durability }).pipe(Layer.provide(NodeFileSystem.layer))

const echo = Tool.make("echo", {
  description: "Echoes",
  parameters: Schema.Struct({ text: Schema.String }),
  handler: ({ text }) => Effect.succeed(text)
})
const script: Model.Script = (request) =>
  request.messages.at(-1)!.role === "tool"
    ? { text: "done", usage: { inputTokens: 20, outputTokens: 3 } }
    : { toolCalls: [{ name: "echo", args: { text: "hi" } }], usage: { inputTokens: 10, outputTokens: 5 } }

/** Microseconds per `Agent.run` (one user turn) with the given audit layer. */
const perTurn = (audit: Layer.Layer<AuditLog.AuditLog, unknown>) =>
  Effect.gen(function*() {
    const agent = yield* Agent.Agent
    for (let i = 0; i < Math.min(200, TURNS); i++) yield* agent.run("hi", { userId: `user-${i % 100}` })
    const started = performance.now()
    for (let i = 0; i < TURNS; i++) yield* agent.run("hi", { userId: `user-${i % 100}` })
    return ((performance.now() - started) * 1000) / TURNS
  }).pipe(
    Effect.provide(
      Agent.layer({ tools: [echo] }).pipe(
        Layer.provide(Model.layerScripted(script)),
        Layer.provide(Layer.mergeAll(Agent.layerDefaults, audit))
      )
    )
  )

const postgres = async (): Promise<{ url: string; drop: () => Promise<void> } | undefined> => {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 })
  try {
    await admin.connect()
  } catch {
    return undefined
  }
  const name = `jeeves_audit_bench_${process.pid}`
  await admin.query(`create database "${name}"`)
  await admin.end()
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: adminUrl })
      await client.connect()
      await client.query(`drop database if exists "${name}" with (force)`)
      await client.end()
    }
  }
}

const main = async () => {
  const run = <A>(effect: Effect.Effect<A, unknown>) => Effect.runPromise(effect)
  micro()
  if (MICRO_ONLY) return
  console.log(`\naudit log benchmark (${SECONDS} s per throughput figure, ${TURNS} agent turns per layer)\n`)
  console.log("appends per second")
  console.log(`  memory, 1 appender            ${fmt(await run(throughput(AuditLog.layerMemory({ secret: SECRET }), 1)))}`)
  console.log(`  file fsync, 1 appender        ${fmt(await run(throughput(fileLayer("fsync-1.jsonl", "fsync"), 1)))}`)
  console.log(`  file fsync, 64 appenders      ${fmt(await run(throughput(fileLayer("fsync-64.jsonl", "fsync"), 64)))}  (group commit)`)
  console.log(`  file no fsync, 64 appenders   ${fmt(await run(throughput(fileLayer("none-64.jsonl", "none"), 64)))}`)

  const database = await postgres()
  if (database === undefined) {
    console.log(`  postgres                      skipped: ${adminUrl} does not answer`)
  } else {
    try {
      const pgAudit = (chain: string) =>
        PgAuditLog.layer({ secret: SECRET, chain }).pipe(
          Layer.provide(PgClient.layer({ url: Redacted.make(database.url), maxConnections: 10 }))
        )
      console.log(`  postgres, 1 appender          ${fmt(await run(throughput(pgAudit("one"), 1)))}`)
      console.log(`  postgres, 64 appenders        ${fmt(await run(throughput(pgAudit("many"), 64)))}  (batched transactions)`)
    } finally {
      await database.drop()
    }
  }

  const big = join(dir, "none-64.jsonl")
  const entries = nodeFs.readFileSync(big, "utf8").split("\n").length - 1
  const started = performance.now()
  const report = await run(AuditLog.verifyFile(big, SECRET).pipe(Effect.provide(NodeFileSystem.layer)))
  const seconds = (performance.now() - started) / 1000
  console.log(`\nverifyFile: ${fmt(entries / seconds)} entries per second (${fmt(entries)} entries, valid: ${report.valid})`)

  console.log("\nagent turn (µs per run: 2 model calls, 1 tool call, 4 audit entries)")
  const none = await run(perTurn(AuditLog.layerNone))
  console.log(`  no audit log                  ${fmt(none)}`)
  for (const [name, layer] of [
    ["memory", AuditLog.layerMemory({ secret: SECRET })],
    ["file, fsync", fileLayer("agent-fsync.jsonl", "fsync")],
    ["file, no fsync", fileLayer("agent-none.jsonl", "none")]
  ] as const) {
    const micros = await run(perTurn(layer))
    console.log(`  ${name.padEnd(30)}${fmt(micros)}  (+${fmt(micros - none)})`)
  }
}

main()
  .finally(() => nodeFs.rmSync(dir, { recursive: true, force: true }))
  .catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
