import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createAgent } from "jeevesagent/promise"
import { createTestDatabase, postgresAvailable } from "./support/postgres.js"

describe.skipIf(!postgresAvailable)("jeevesagent/promise with postgres:// memory", () => {
  let database: { url: string; drop: () => Promise<void> }
  beforeAll(async () => {
    database = await createTestDatabase("facade")
  })
  afterAll(async () => {
    await database?.drop()
  })

  it("two agents on one database share memory, partitioned by user", async () => {
    const first = createAgent({ model: "echo", memory: database.url })
    const second = createAgent({ model: "echo", memory: database.url })
    try {
      await first.run("remember the blue door", { userId: "alice", sessionId: "s1" })
      await second.run("remember the red door", { userId: "bob", sessionId: "s1" })
      const alice = await second.memory("alice").export()
      expect(alice.episodes.map((e) => e.input)).toEqual(["remember the blue door"])
      const bob = await first.memory("bob").export()
      expect(bob.episodes.map((e) => e.input)).toEqual(["remember the red door"])
      expect((await first.memory(null).export()).episodes).toEqual([])
    } finally {
      await Promise.all([first.dispose(), second.dispose()])
    }
  })
})
