/**
 * Quick start: one shared agent serving three users at once.
 *
 * Each user's question makes the model call a tool that reads *the current
 * user* from the run context — the tool never takes a user id argument, so a
 * confused model cannot ask for somebody else's account.
 *
 * Offline by default (a scripted model). With ANTHROPIC_API_KEY set it talks
 * to Claude instead.
 *
 * Run: npm run demo
 */
import { Schema } from "effect"
import { type Model, Tool } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"

const accounts: Record<string, { plan: string; balance: number }> = {
  alice: { plan: "pro", balance: 120 },
  bob: { plan: "free", balance: 0 },
  carol: { plan: "team", balance: 42.5 }
}

const accountSummary = Tool.fromPromise("account_summary", {
  description: "Returns the plan and balance of the user you are talking to",
  parameters: Schema.Struct({}),
  handler: async (_args, { context }) => {
    const account = context.userId === null ? undefined : accounts[context.userId]
    return account === undefined ? "no account" : { user: context.userId, ...account }
  }
})

/** The offline model: ask for the tool, then answer from its result. */
const script: Model.Script = (request, context) => {
  const last = request.messages[request.messages.length - 1]!
  if (last.role !== "tool") {
    return { toolCalls: [{ name: "account_summary", args: {} }], usage: { inputTokens: 60, outputTokens: 12 } }
  }
  const account = JSON.parse(last.content) as { plan: string; balance: number }
  return {
    text: `Hi ${context.userId}! You are on the ${account.plan} plan with a balance of $${account.balance}.`,
    usage: { inputTokens: 90, outputTokens: 20 }
  }
}

const online = process.env.ANTHROPIC_API_KEY !== undefined && process.env.ANTHROPIC_API_KEY !== ""

const agent = createAgent({
  model: online ? "claude-haiku-4-5" : "scripted",
  script,
  instructions: "You are a billing assistant. Use account_summary to answer questions about the user's account.",
  tools: [accountSummary],
  autoExtract: false
})

try {
  console.log(`jeevesagent quick start (${online ? "Claude" : "offline scripted model"})\n`)
  const users = Object.keys(accounts)
  const results = await Promise.all(
    users.map((userId) => agent.run("What is my plan and balance?", { userId, sessionId: `${userId}-session` }))
  )
  for (const result of results) {
    const tools = result.toolCalls.map((call) => `${call.name} -> ${call.status}`).join(", ")
    console.log(`[${result.userId}] ${result.output}`)
    console.log(`    turns=${result.turns} tokens=${result.tokensIn}+${result.tokensOut} tools: ${tools}`)
  }
  const history = await agent.memory("alice").export()
  console.log(`\nalice has ${history.episodes.length} remembered episode(s); bob has ${(await agent.memory("bob").export()).episodes.length}.`)
} finally {
  await agent.dispose()
}
