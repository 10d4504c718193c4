/**
 * `PgAuditLog.layer({ timeout })` accepts any finite duration of at least
 * 1 ms, and passes it to PostgreSQL as `lock_timeout` / `statement_timeout`
 * at the start of every append's transaction. PostgreSQL refuses values above
 * 2147483647 ms (about 24.8 days): with `timeout: "30 days"` the layer builds
 * fine, and then every single append fails with `AuditUnavailable` (the agent
 * denies every destructive tool). Either the layer must refuse the option, or
 * the bound must be clamped so appends work.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { AuditLog } from "jeevesagent"
import * as PgAuditLog from "jeevesagent/PgAuditLog"
import { afterAll, beforeAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./support/postgres.js"

describe.skipIf(!postgresAvailable)("PgAuditLog timeout beyond PostgreSQL's range", () => {
  let database: { url: string; drop: () => Promise<void> } | undefined
  beforeAll(async () => {
    database = await createTestDatabase("audit_timeout")
  })
  afterAll(async () => {
    await database?.drop()
  })

  it.live("a layer that builds with timeout: \"30 days\" can append", () =>
    Effect.gen(function*() {
      const layer = PgAuditLog.layer({ secret: "pg-timeout-secret-0123456789", chain: "long", timeout: "30 days" }).pipe(
        Layer.provide(pgLayer(database!.url))
      )
      const outcome = yield* Effect.exit(
        Effect.scoped(
          Effect.gen(function*() {
            const context = yield* Layer.build(layer)
            const audit = AuditLog.AuditLog.pipe(Effect.provide(context))
            // The layer was accepted: an append must then work.
            return yield* Effect.either(Effect.flatMap(audit, (log) => log.append({ actor: "system", action: "deploy", payload: {} })))
          })
        )
      )
      if (Exit.isFailure(outcome)) return // refused at construction: fine
      const appended = outcome.value
      assert.strictEqual(
        appended._tag,
        "Right",
        `the layer was built, but the append failed: ${appended._tag === "Left" ? appended.left.message : ""}`
      )
    }), 60_000)
})
