/**
 * The three Memory backends side by side, each on a store nobody else uses:
 * in memory, a new SQLite file, a new Postgres namespace (skipped when no
 * server answers). For tests that run one script on all of them and compare.
 */
import { Layer } from "effect"
import { Memory } from "jeevesagent"
import * as PgMemory from "jeevesagent/PgMemory"
import * as SqliteMemory from "jeevesagent/SqliteMemory"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { createTestDatabase, pgLayer, postgresAvailable } from "./postgres.js"

const directory = mkdtempSync(join(tmpdir(), "jeeves-three-backends-"))
const db = postgresAvailable ? await createTestDatabase("three") : undefined
afterAll(async () => {
  rmSync(directory, { recursive: true, force: true })
  await db?.drop()
})

let counter = 0

export type BackendName = "memory" | "sqlite" | "pg"

export const backends: ReadonlyArray<{ readonly name: BackendName; readonly fresh: () => Layer.Layer<Memory.Memory, unknown> }> = [
  { name: "memory", fresh: () => Memory.layerInMemory() },
  { name: "sqlite", fresh: () => SqliteMemory.layer({ filename: join(directory, `m-${counter++}.db`) }) },
  ...(db === undefined ? [] : [{
    name: "pg" as const,
    fresh: () => PgMemory.layer({ namespace: `ns_${process.pid}_${counter++}` }).pipe(Layer.provide(pgLayer(db.url)))
  }])
]

export const pgUrl = db?.url
