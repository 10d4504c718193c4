/**
 * `package.json` declares `@effect/sql`, `@effect/sql-pg`,
 * `@effect/sql-sqlite-node` and `@effect/experimental` as optional peer
 * dependencies, so npm does not install them. The plain-Node facade loads
 * them only when `memory: "sqlite:..."` or `"postgres://..."` asks for them:
 * `import { createAgent } from "jeevesagent/promise"` with the default
 * in-memory store works without them, and asking for a SQL store without
 * them is a `MemoryError` saying what to install.
 *
 * The test makes every optional SQL package unloadable, as if not installed.
 */
import { describe, expect, it, vi } from "vitest"

const notInstalled = [
  "@effect/sql",
  "@effect/sql/Migrator",
  "@effect/sql/SqlClient",
  "@effect/sql-pg",
  "@effect/sql-pg/PgClient",
  "@effect/sql-pg/PgMigrator",
  "@effect/sql-sqlite-node",
  "@effect/sql-sqlite-node/SqliteClient",
  "@effect/sql-sqlite-node/SqliteMigrator",
  "@effect/experimental",
  "@effect/experimental/Reactivity"
]

describe("jeevesagent/promise without the optional peer dependencies", () => {
  it("imports and runs an in-memory agent when @effect/sql* and @effect/experimental are not installed", async () => {
    for (const specifier of notInstalled) {
      vi.doMock(specifier, () => {
        throw new Error(`Cannot find package '${specifier}' (an optional peer dependency that is not installed)`)
      })
    }
    const loaded = await import("jeevesagent/promise").then(
      (module) => ({ module }),
      (error: unknown) => ({ error })
    )
    // On failure, show which package the import needed (vitest wraps the factory's error as `cause`).
    const failure = "error" in loaded ? `${String((loaded.error as Error).cause ?? loaded.error)}` : "imported"
    expect(failure).toBe("imported")
    const { createAgent } = (loaded as { module: typeof import("jeevesagent/promise") }).module
    const agent = createAgent({ model: "echo" })
    try {
      expect((await agent.run("hello", { userId: "alice" })).output).toBe("Echo: hello")
    } finally {
      await agent.dispose()
    }
    const { Memory } = await import("jeevesagent")
    for (const [memory, needs] of [["sqlite:/nonexistent/x.db", "@effect/sql-sqlite-node"], ["postgres://127.0.0.1:1/x", "@effect/sql-pg"]]) {
      const sql = createAgent({ model: "echo", memory: memory! })
      try {
        const error = await sql.run("hello").then(() => undefined, (error: unknown) => error)
        expect(error).toBeInstanceOf(Memory.MemoryError)
        expect((error as Error).message).toContain(`needs the optional peer dependencies`)
        expect((error as Error).message).toContain(needs!)
      } finally {
        await sql.dispose()
      }
    }
  })
})
