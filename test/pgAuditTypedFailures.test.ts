/**
 * PgAuditLog's failures are typed: construction fails with AuditUnavailable,
 * and `verify` is `Effect<VerifyReport, AuditUnavailable>`, also on the two
 * paths that used to die with a defect, escaping every
 * `catchTag("AuditUnavailable")` an application (or the agent's
 * deny-destructive-tools logic) relies on:
 * 1. a migration that fails (`@effect/sql`'s Migrator turns it into a
 *    defect; shown with a leftover `jeeves_audit_entries` table — a dropped
 *    connection or a statement timeout during the migration takes the same
 *    path);
 * 2. the chain's head row missing (deleted while the process runs).
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Effect, Exit, Layer } from "effect"
import { AuditLog, RunContext } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import { afterAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

const SECRET = "typed-failures-secret-0123456789"

const databases: Array<{ url: string; drop: () => Promise<void> }> = []
afterAll(() => Promise.all(databases.map((db) => db.drop())))
const newDatabase = async () => {
  const db = await createTestDatabase("audit_typed")
  databases.push(db)
  return db.url
}

const exec = (url: string, run: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, run).pipe(Effect.provide(pgLayer(url)), Effect.orDie)

/** The exit is a success or a typed AuditUnavailable failure, never a defect or interruption. */
const assertTyped = <A>(exit: Exit.Exit<A, unknown>) => {
  if (Exit.isFailure(exit)) {
    assert.isFalse(Cause.isDie(exit.cause), `died with a defect: ${Cause.pretty(exit.cause)}`)
    const failure = Cause.failureOption(exit.cause)
    assert.isTrue(failure._tag === "Some" && failure.value instanceof AuditLog.AuditUnavailable, Cause.pretty(exit.cause))
  }
}

describe.skipIf(!postgresAvailable)("PgAuditLog failures are typed", () => {
  it.live("a failing migration fails construction with AuditUnavailable (expected), not a defect", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(newDatabase)
      // Something already occupies a name the first migration creates.
      yield* exec(url, (sql) => sql`CREATE TABLE jeeves_audit_entries (x integer)`)
      const exit = yield* PgAuditLog.layer({ secret: SECRET }).pipe(
        Layer.provide(pgLayer(url)),
        Layer.build,
        Effect.scoped,
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      assertTyped(exit)
    }))

  it.live("verify with the chain's head row deleted reports it (expected), it does not die", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(newDatabase)
      const exit = yield* Effect.gen(function*() {
        const audit = yield* AuditLog.AuditLog
        yield* audit.append({ actor: "system", action: "one", payload: {} })
        yield* audit.append({ actor: "system", action: "two", payload: {} })
        yield* exec(url, (sql) => sql`DELETE FROM jeeves_audit_chains`)
        return yield* audit.verify
      }).pipe(
        RunContext.withUser("ops"),
        Effect.provide(PgAuditLog.layer({ secret: SECRET }).pipe(Layer.provide(pgLayer(url)))),
        Effect.exit
      )
      assertTyped(exit)
      // When it reports, the chain is not valid: its two entries have no head vouching for them.
      if (Exit.isSuccess(exit)) assert.isFalse(exit.value.valid)
    }))
})
