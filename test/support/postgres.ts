/**
 * Test access to a real PostgreSQL server.
 *
 * The server comes from `JEEVES_TEST_PG_URL` (default: the local server on
 * 127.0.0.1:5432 as user `postgres`). Each suite gets a fresh database that is
 * dropped afterwards, so suites and processes never see each other's tables.
 *
 * When no server answers: in CI (`CI=true`) the suite fails; elsewhere it is
 * skipped with one line saying why.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Redacted from "effect/Redacted"
import type * as Layer from "effect/Layer"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { ConfigError } from "effect/ConfigError"
import pg from "pg"

export const adminUrl = process.env.JEEVES_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

const probe = async (): Promise<string | undefined> => {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 })
  try {
    await client.connect()
    await client.query("select 1")
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  } finally {
    await client.end().catch(() => undefined)
  }
}

/** Whether a server answers. Throws in CI when it does not. Logs one line when skipping. */
export const postgresAvailable: boolean = await (async () => {
  const problem = await probe()
  if (problem === undefined) return true
  if (process.env.CI === "true") {
    throw new Error(`PostgreSQL is required in CI but ${adminUrl} is unreachable: ${problem}`)
  }
  console.warn(`[skip] PostgreSQL tests skipped: ${adminUrl} is unreachable (${problem})`)
  return false
})()

/** A fresh, uniquely named database; returns its URL and a function that drops it. */
export const createTestDatabase = async (prefix: string): Promise<{ url: string; drop: () => Promise<void> }> => {
  const name = `jeeves_${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 10)}`.toLowerCase()
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`create database "${name}"`)
  } finally {
    await admin.end()
  }
  return {
    url: withDatabase(adminUrl, name),
    drop: async () => {
      const client = new pg.Client({ connectionString: adminUrl })
      await client.connect()
      try {
        await client.query(`drop database if exists "${name}" with (force)`)
      } finally {
        await client.end()
      }
    }
  }
}

/** A PgClient layer for `url`. */
export const pgLayer = (url: string): Layer.Layer<PgClient.PgClient | SqlClient, SqlError | ConfigError> =>
  PgClient.layer({ url: Redacted.make(url), maxConnections: 10 })
