/**
 * Persistent memory: a SQLite file keeps every user's sessions across
 * restarts, each user's apart, and `forget` erases one user's data (from the
 * file too, not just from the tables).
 *
 * The agent is started, used, disposed and started again on the same file:
 * the second run of alice's session sees her first turn; bob sees nothing of
 * hers. Offline (a scripted model that says how much history it was shown).
 *
 * Run: npx tsx examples/persistent-memory.ts
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Model } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"

const dir = mkdtempSync(join(tmpdir(), "jeeves-persistent-memory-"))
const database = join(dir, "agent.db")

/** Answers with what it was shown: the user's earlier turns of this session, replayed from memory. */
const script: Model.Script = (request, context) => {
  const earlier = request.messages.filter((m) => m.role === "user").slice(0, -1).map((m) => m.content)
  return {
    text: `${context.userId}: ${earlier.length === 0 ? "no earlier turns" : `earlier turns: ${earlier.join(" / ")}`}`,
    usage: { inputTokens: 10, outputTokens: 5 }
  }
}

const start = () => createAgent({ model: "scripted", script, memory: `sqlite:${database}`, autoExtract: false })

try {
  const first = start()
  console.log((await first.run("I moved to Lisbon", { userId: "alice", sessionId: "alice-chat" })).output)
  console.log((await first.run("I like green tea", { userId: "bob", sessionId: "bob-chat" })).output)
  await first.dispose()

  // A restart: a new agent on the same file.
  const second = start()
  console.log((await second.run("Where do I live?", { userId: "alice", sessionId: "alice-chat" })).output)
  console.log((await second.run("Where do I live?", { userId: "bob", sessionId: "alice-chat" })).output)
  const episodes = (await second.memory("alice").export()).episodes.map((e) => e.input)
  console.log(`alice's stored episodes: ${episodes.join(" | ")}`)
  console.log(`forget alice: ${await second.memory("alice").forget()} items erased`)
  console.log(`alice after forget: ${(await second.memory("alice").export()).episodes.length} episodes`)
  console.log(`bob keeps his: ${(await second.memory("bob").export()).episodes.length} episode(s)`)
  await second.dispose()
} finally {
  rmSync(dir, { recursive: true, force: true })
}
