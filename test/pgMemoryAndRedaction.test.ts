/**
 * PgMemory with NUL characters and with Postgres gone, and secrets that must
 * stay masked: in auto-extract's warnings, in audit payloads as numbers, in
 * the facade's rejections with an async secrets backend.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Redacted } from "effect"
import { Agent, AuditLog, Budget, Memory, Model, RunContext, Secrets } from "jeevesagent"
import * as PgMemory from "jeevesagent/PgMemory"
import { createAgent } from "jeevesagent/promise"
import { afterAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const databases: Array<{ url: string; drop: () => Promise<void> }> = []
afterAll(() => Promise.all(databases.map((db) => db.drop())))
const newDatabase = async (prefix: string) => {
  const db = await createTestDatabase(prefix)
  databases.push(db)
  return db
}
const shared = postgresAvailable ? (await newDatabase("pg_nul")).url : "postgres://unavailable"

let namespaces = 0
const freshNamespace = () => `nul_${process.pid}_${namespaces++}`
const as = (userId: string | null, sessionId = "s1") => RunContext.withUser(userId, { sessionId })

// ---- PgMemory -------------------------------------------------------------------

describe.skipIf(!postgresAvailable)("PgMemory: NUL characters and Postgres gone", () => {
  it.effect("PgMemory stores text holding a NUL character (as U+FFFD: Postgres text cannot hold NUL) instead of failing", () =>
    Effect.gen(function*() {
      const input = "paste from a binary file: MZ\u0000\u0000 header"
      const both = (layer: Layer.Layer<Memory.Memory, unknown>) =>
        Effect.gen(function*() {
          const m = yield* Memory.Memory
          yield* m.remember({ input, output: "noted", toolCalls: [{ name: "read", args: { bytes: "\u0000\u0001" } }] })
          yield* m.updateBlock("notes", input)
          yield* m.appendFact({ subject: "file", predicate: "starts with", object: "MZ\u0000" })
          const data = yield* m.export
          return [data.episodes.map((e) => e.input), data.blocks.map((b) => b.content), data.facts.map((f) => f.object)]
        }).pipe(as("alice"), Effect.provide(layer))
      const expected = (yield* both(Memory.layerInMemory())).map((texts) => texts.map((t) => t.replaceAll("\u0000", "\ufffd")))
      const exit = yield* Effect.exit(both(PgMemory.layer({ namespace: freshNamespace() }).pipe(Layer.provide(pgLayer(shared)))))
      assert.deepStrictEqual(exit._tag === "Success" ? exit.value : String(exit), expected)
    }))

  it.effect("an agent run whose prompt holds a NUL character completes with PgMemory (it fails at remember, after the model call)", () =>
    Effect.gen(function*() {
      const result = yield* Effect.exit(
        Effect.flatMap(Agent.Agent, (agent) => agent.run("hello\u0000world", { userId: "mallory" }))
      )
      assert.strictEqual(result._tag, "Success", String(result))
    }).pipe(
      Effect.provide(
        Agent.layer({}).pipe(
          Layer.provide(Model.layerEcho()),
          Layer.provide(
            Layer.merge(Agent.layerDefaults, PgMemory.layer({ namespace: freshNamespace() }).pipe(Layer.provide(pgLayer(shared))))
          )
        )
      )
    ))

  it.live("with Postgres gone, export fails with a MemoryError of method export (not working)", () =>
    Effect.gen(function*() {
      const db = yield* Effect.promise(() => newDatabase("pg_down"))
      yield* Effect.gen(function*() {
        const m = yield* Memory.Memory
        yield* m.updateBlock("prefs", "tea").pipe(as("alice"))
        yield* Effect.promise(() => db.drop())
        const error = yield* Effect.flip(m.export.pipe(as("alice")))
        assert.strictEqual(error._tag, "MemoryError")
        assert.strictEqual((error as Memory.MemoryError).method, "export")
      }).pipe(Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(db.url)))))
    }))
})

// ---- Secrets / redaction -------------------------------------------------------

/** An Anthropic-shaped key: `Secrets.redactPatterns` masks it without any Secrets service. */
const ANTHROPIC_KEY = "sk-ant-api03-" + "Zx9".repeat(31) + "AA"

describe("redaction of handed-out secrets", () => {
  it.effect("auto-extract's warning about a failed extraction masks a key in the model's error", () => {
    const lines: Array<string> = []
    const capture = Logger.add(Logger.make(({ message }) => void lines.push(JSON.stringify(message))))
    const model = Model.layerScripted(() => ({
      error: new Model.ModelError({ reason: "authentication", retryable: false, status: 401, description: `invalid key ${ANTHROPIC_KEY}` })
    }))
    return Effect.gen(function*() {
      const m = yield* Memory.Memory
      yield* m.remember({ input: "hello", output: "hi" }).pipe(as("carol"))
      assert.isAbove(lines.length, 0, "a warning is logged")
      for (const line of lines) assert.notInclude(line, ANTHROPIC_KEY)
    }).pipe(
      Effect.provide(
        Memory.autoExtract().pipe(
          Layer.provide(Memory.layerInMemory()),
          Layer.provide(Layer.mergeAll(model, Budget.layerNone, Secrets.layerDict({})))
        )
      ),
      Effect.provide(capture)
    )
  })

  it.effect("an audit payload holding a handed-out numeric code as a number is masked", () =>
    Effect.gen(function*() {
      const secrets = Secrets.makeDict({ BACKUP_CODE: "83920175" })
      const audit = yield* AuditLog.AuditLog.pipe(
        Effect.provide(AuditLog.layerMemory({ secret: "audit-key-0123456789abcdef" }).pipe(
          Layer.provide(Layer.succeed(Secrets.Secrets, secrets))
        ))
      )
      const code = Redacted.value(yield* secrets.resolve("BACKUP_CODE"))
      // The model passes the code it saw as a JSON number.
      yield* audit.append({ actor: "model", action: "tool_call", payload: { tool: "login", args: { code: Number(code) } } })
      const entries = yield* audit.query()
      assert.notInclude(JSON.stringify(entries), code)
    }))

  it("the promise facade masks a value handed out by an async secrets backend when the services fail to build", async () => {
    const token = "vault-token-3f9a1c77e2b84d05"
    // A model layer that looks its key up and validates it at start-up (an upstream that rejects it).
    const model = Layer.effect(
      Model.Model,
      Effect.gen(function*() {
        const secrets = yield* Secrets.Secrets
        const key = yield* secrets.resolve("UPSTREAM_KEY")
        return yield* Effect.fail(new Error(`upstream refused key ${Redacted.value(key)}`))
      })
    )
    const agent = createAgent({
      model,
      secrets: { resolve: async (ref: string) => (ref === "UPSTREAM_KEY" ? token : undefined) }
    })
    try {
      const error = await agent.run("hi").then(() => undefined, (e: unknown) => e)
      assert.instanceOf(error, Error)
      assert.include((error as Error).message, "upstream refused key")
      assert.notInclude((error as Error).message, token)
    } finally {
      await agent.dispose()
    }
  })
})
