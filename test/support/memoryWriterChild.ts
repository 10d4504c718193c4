/**
 * A child process that writes to a Memory backend and prints one line per
 * acknowledged write, only after the write returned:
 *
 *   ack <episode id> <input>
 *
 * Usage: node --import tsx memoryWriterChild.ts <sqlite FILE | pg URL> <tag> <count | forever> [users,...]
 *
 * Each write, as user `users[i % users.length]` in session `tag`: remember
 * an episode `<tag>-<i>`, append `<tag>-<i>;` to the block `log`, and append
 * the fact (status, is, `<tag>-<i>`). `forever` keeps writing until killed;
 * a count writes that many, prints `done`, and exits.
 *
 * Once the store is open it prints `ready` and waits for a line on stdin
 * (end of input counts), so that several writers can start together.
 */
import { Effect, Layer, Redacted } from "effect"
import * as Memory from "../../src/Memory.js"
import * as RunContext from "../../src/RunContext.js"

const [backend, target, tag, countArg, usersArg] = process.argv.slice(2)
if (backend === undefined || target === undefined || tag === undefined || countArg === undefined) {
  console.error("usage: memoryWriterChild.ts <sqlite|pg> <file|url> <tag> <count|forever> [users,...]")
  process.exit(2)
}
const count = countArg === "forever" ? Infinity : Number(countArg)
const users = (usersArg ?? "user_1,user_10,-").split(",").map((u) => (u === "-" ? null : u))

// Only the backend in use is loaded: start-up time is most of a short run.
const openMemory = async (): Promise<Layer.Layer<Memory.Memory, Memory.MemoryError | unknown>> => {
  if (backend === "pg") {
    const [PgMemory, { PgClient }] = await Promise.all([import("../../src/PgMemory.js"), import("@effect/sql-pg")])
    return PgMemory.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(target), maxConnections: 2 })))
  }
  const SqliteMemory = await import("../../src/SqliteMemory.js")
  return SqliteMemory.layer({ filename: target })
}
const MemoryLive = await openMemory()

const startSignal = Effect.async<void>((resume) => {
  const go = () => resume(Effect.void)
  process.stdin.once("data", go)
  process.stdin.once("end", go)
})

const program = Effect.gen(function*() {
  const memory = yield* Memory.Memory
  process.stdout.write("ready\n")
  yield* startSignal
  for (let i = 0; i < count; i++) {
    const input = `${tag}-${i}`
    const id = yield* Effect.gen(function*() {
      const id = yield* memory.remember({ input, output: "ok" })
      yield* memory.appendBlock("log", `${input};`)
      yield* memory.appendFact({ subject: "status", predicate: "is", object: input })
      return id
    }).pipe(RunContext.withUser(users[i % users.length], { sessionId: tag }))
    // A pipe to the parent is written synchronously on Linux: once printed, the line is out.
    process.stdout.write(`ack ${id} ${input}\n`)
  }
  process.stdout.write("done\n")
})

Effect.runPromise(Effect.provide(program, MemoryLive)).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
