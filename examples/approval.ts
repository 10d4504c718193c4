/**
 * Per-user tool policy with a human in the loop, offline.
 *
 * One shared agent serves five runs at once (four users and an anonymous
 * one). A per-user policy map decides who may run what; destructive calls of
 * ordinary users go to an approval handler, an async function that "asks a
 * human" (simulated here: a short wait, then a rule). Every answer other than
 * an explicit yes, including no answer in time, is a denial the model reads
 * as `DENIED: <reason>`.
 *
 * Run: npx tsx examples/approval.ts
 */
import { Effect, Layer, Schema } from "effect"
import { Agent, Approval, Hooks, Model, Permissions, Tool } from "jeevesagent"

const readReport = Tool.fromPromise("read_report", {
  description: "Reads a report",
  parameters: Schema.Struct({ name: Schema.String }),
  handler: async ({ name }) => `report ${name}: 42 rows`
})

const deleteRecords = Tool.fromPromise("delete_records", {
  description: "Deletes every record of a table",
  parameters: Schema.Struct({ table: Schema.String }),
  destructive: true,
  handler: async ({ table }) => `deleted all records of ${table}`
})

// Who may do what. Everyone else gets the default: destructive calls need a human's yes.
const PermissionsLive = Permissions.perUser({
  policies: {
    alice: { mode: "bypassPermissions" }, // an admin: no approval needed
    carol: { deniedTools: ["delete_records"] } // never deletes
  },
  anonymous: { allowedTools: ["read_report"] }, // anonymous runs may only read
  default: { mode: "default" }
})

// The "human": answers after a short wait; says yes to staging tables only.
const askHuman = async (call: Tool.Call, userId: string | null): Promise<boolean> => {
  await new Promise((resolve) => setTimeout(resolve, 50))
  const { table } = call.args as { table?: string }
  const yes = table === "staging"
  const who = userId ?? "anonymous"
  console.log(`  [approver] ${who} wants ${call.name}(${JSON.stringify(call.args)}): ${yes ? "yes" : "no"}`)
  return yes
}
const ApprovalLive = Approval.layerPromise(askHuman, { timeout: "30 seconds" })

// Hooks can only deny: here, nobody touches the audit table, whatever their policy says.
const HooksLive = Hooks.layerPromise({
  beforeTool: [
    (call) => ((call.args as { table?: string }).table === "audit" ? { deny: "the audit table is append-only" } : undefined)
  ]
})

// Each user's model wants the report and a deletion; the second turn summarises the tool results.
const TABLES: Record<string, string> = { alice: "audit", bob: "staging", carol: "staging", dave: "production" }
const USERS = ["alice", "bob", "carol", "dave", null]
const ModelLive = Model.layerScripted((request, context) => {
  const results = request.messages.filter((message) => message.role === "tool")
  if (results.length > 0) return { text: results.map((message) => message.content).join(" | ") }
  return {
    toolCalls: [
      { name: "read_report", args: { name: "weekly" } },
      { name: "delete_records", args: { table: TABLES[context.userId ?? ""] ?? "staging" } }
    ]
  }
})

const AgentLive = Agent.layer({ instructions: "You manage records.", tools: [readReport, deleteRecords] }).pipe(
  Layer.provide(ModelLive),
  Layer.provide(Layer.mergeAll(Agent.layerDefaults, PermissionsLive, ApprovalLive, HooksLive))
)

const program = Effect.gen(function*() {
  const agent = yield* Agent.Agent
  console.log(`Running ${USERS.length} users at once...`)
  const results = yield* Effect.forEach(USERS, (userId) => agent.run("Clean up the old records", { userId }), {
    concurrency: "unbounded"
  })
  console.log("\nPer-user results:")
  for (const result of results) {
    console.log(`${result.userId ?? "anonymous"}: ${result.output}`)
  }
})

Effect.runPromise(Effect.provide(program, AgentLive)).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
