/**
 * Per-user budget caps: one tenant cannot exhaust another's quota.
 *
 * alice sends requests until her per-user token cap blocks her; bob, on the
 * same shared agent, is unaffected. The global cap would stop everybody.
 *
 * Run: npx tsx examples/budget.ts
 */
import { createAgent } from "jeevesagent/promise"

const agent = createAgent({
  model: "scripted",
  // Every model call reports 400 input + 100 output tokens and $0.002.
  script: () => ({ text: "Here is your answer.", usage: { inputTokens: 400, outputTokens: 100, costUsd: 0.002 } }),
  autoExtract: false,
  budget: {
    maxTokens: 10_000_000, // global: all users together
    maxCostUsd: 100,
    perUserMaxTokens: 1_200, // each user's own bucket
    perUserMaxCostUsd: 2,
    softWarningAt: 0.8, // warn at 80% of a cap
    maxUsers: 10_000, // bounded per-user state (LRU)
    userIdleTtl: "1 hour" // idle users' totals are dropped
  }
})

try {
  for (let request = 1; request <= 4; request++) {
    const result = await agent.run(`question ${request}`, { userId: "alice" })
    console.log(
      `alice #${request}: ${result.interrupted ? `blocked (${result.interruptionReason})` : `ok, ${result.tokensIn + result.tokensOut} tokens`}`
    )
  }
  const bob = await agent.run("question 1", { userId: "bob" })
  console.log(`bob   #1: ${bob.interrupted ? `blocked (${bob.interruptionReason})` : "ok"}`)

  // Warnings arrive as events on the stream.
  const carol = createAgent({
    model: "scripted",
    script: () => ({ text: "ok", usage: { inputTokens: 850, outputTokens: 0 } }),
    autoExtract: false,
    budget: { perUserMaxTokens: 1_000 }
  })
  await carol.run("first", { userId: "carol" })
  for await (const event of carol.stream("second", { userId: "carol" })) {
    if (event._tag === "budget_warning") console.log(`carol warning: ${event.reason}`)
  }
  await carol.dispose()

  console.log("usage:", JSON.stringify({ alice: await agent.usageFor("alice"), bob: await agent.usageFor("bob") }))
  console.log("global:", JSON.stringify(await agent.globalUsage()))
} finally {
  await agent.dispose()
}
