/**
 * Bounded per-user state: a flood of one-shot user ids cannot grow memory
 * without limit. Budget buckets and memory are capped at `maxUsers` (least
 * recently used evicted first) and dropped after `userIdleTtl` of idleness.
 * Eviction is destructive in process: an evicted user's totals and memory
 * start again from zero (use SQLite/Postgres to keep memory).
 *
 * Run: npx tsx examples/bounded-state.ts
 */
import { createAgent } from "jeevesagent/promise"

const agent = createAgent({
  model: "scripted",
  script: () => ({ text: "ok", usage: { inputTokens: 10, outputTokens: 5 } }),
  autoExtract: false,
  budget: { perUserMaxTokens: 1_000, maxUsers: 3, userIdleTtl: "1 hour" },
  memoryBounds: { maxUsers: 3, userIdleTtl: "1 hour" }
})

try {
  await agent.run("hello", { userId: "alice" })
  await agent.memory("alice").updateBlock("notes", "likes tea")
  console.log(`alice before the flood: ${(await agent.usageFor("alice")).tokensTotal} tokens, blocks=${(await agent.memory("alice").working()).length}`)

  // 100 one-shot users arrive; only the 3 most recent stay in process.
  for (let i = 0; i < 100; i++) await agent.run("hi", { userId: `visitor_${i}` })

  console.log(`alice after the flood: ${(await agent.usageFor("alice")).tokensTotal} tokens, blocks=${(await agent.memory("alice").working()).length}`)
  console.log(`visitor_99 is kept: ${(await agent.usageFor("visitor_99")).tokensTotal} tokens`)
  console.log(`visitor_0 was evicted: ${(await agent.usageFor("visitor_0")).tokensTotal} tokens`)
} finally {
  await agent.dispose()
}
