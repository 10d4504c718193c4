/**
 * A common production setup: the schema owner (or a deploy job) runs the
 * migrations, the application connects as a role with only DML rights
 * (SELECT/INSERT/UPDATE/DELETE, no CREATE on the schema — PostgreSQL 15's
 * default for `public`). Once every migration is applied, opening PgMemory or
 * PgAuditLog as that role works: there is nothing left to create, and
 * `CREATE TABLE IF NOT EXISTS` (which needs CREATE on the schema even when
 * the table exists) is not run.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { AuditLog, Memory, RunContext } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import * as PgMemory from "jeevesagent/PgMemory"
import pg from "pg"
import { afterAll, beforeAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const SECRET = "least-privilege-secret-0123456789"
const role = `jeeves_app_${process.pid}_${Math.random().toString(36).slice(2, 8)}`

const exec = async (url: string, statements: ReadonlyArray<string>) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    for (const statement of statements) await client.query(statement)
  } finally {
    await client.end()
  }
}

const asRole = (url: string) => {
  const parsed = new URL(url)
  parsed.username = role
  parsed.password = ""
  return parsed.toString()
}

describe.skipIf(!postgresAvailable)("Postgres backends opened by a DML-only role after migrations ran", () => {
  let database: { url: string; drop: () => Promise<void> } | undefined
  beforeAll(async () => {
    database = await createTestDatabase("least_priv")
    await exec(database.url, [`CREATE ROLE "${role}" LOGIN`])
    // The owner migrates (and writes once), as a deploy step would.
    await Effect.runPromise(
      Effect.gen(function*() {
        const memory = yield* Memory.Memory
        yield* memory.updateBlock("prefs", "set up")
        const audit = yield* AuditLog.AuditLog
        yield* audit.append({ actor: "system", action: "deploy", payload: {} })
      }).pipe(
        RunContext.withUser("owner"),
        Effect.provide(Layer.mergeAll(PgMemory.layer(), PgAuditLog.layer({ secret: SECRET }))),
        Effect.provide(pgLayer(database.url)),
        Effect.scoped
      )
    )
    // The application's role: data rights only.
    await exec(database.url, [
      `GRANT USAGE ON SCHEMA public TO "${role}"`,
      `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "${role}"`,
      `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "${role}"`
    ])
  })
  afterAll(async () => {
    await database?.drop()
    if (database !== undefined) await exec(database.url.replace(/\/[^/]*$/, "/postgres"), [`DROP ROLE IF EXISTS "${role}"`])
  })

  it.live("PgMemory opens and works (expected: success, no CREATE needed)", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.gen(function*() {
        const memory = yield* Memory.Memory
        yield* memory.updateBlock("prefs", "from the app")
        return (yield* memory.working).map((block) => block.content)
      }).pipe(
        RunContext.withUser("alice"),
        Effect.provide(PgMemory.layer().pipe(Layer.provide(pgLayer(asRole(database!.url))))),
        Effect.exit
      )
      assert.deepStrictEqual(exit, Exit.succeed(["from the app"]))
    }))

  it.live("PgAuditLog opens and appends (expected: success, no CREATE needed)", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.gen(function*() {
        const audit = yield* AuditLog.AuditLog
        const entry = yield* audit.append({ actor: "system", action: "start", payload: {} })
        const report = yield* audit.verify
        return [entry.seq, report.valid] as const
      }).pipe(
        RunContext.withUser("alice"),
        Effect.provide(PgAuditLog.layer({ secret: SECRET }).pipe(Layer.provide(pgLayer(asRole(database!.url))))),
        Effect.exit
      )
      assert.deepStrictEqual(exit, Exit.succeed([2, true] as const))
    }))
})
