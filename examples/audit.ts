/**
 * Per-user audit: every run, tool call, decision and result is written to a
 * tamper-evident JSONL file, attributed to its user — then queried per user
 * and verified, and a tampered copy is caught.
 *
 * Run: npx tsx examples/audit.ts
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Effect, Schema } from "effect"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AuditLog, type Model, Tool } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"

const dir = await mkdtemp(join(tmpdir(), "jeeves-audit-example-"))
const path = join(dir, "audit", "agent.jsonl")
const secret = "example-audit-secret"

const exportData = Tool.fromPromise("export_data", {
  description: "Exports the current user's data",
  parameters: Schema.Struct({ format: Schema.Literal("json", "csv") }),
  handler: async ({ format }, { context }) => `exported ${context.userId}'s data as ${format}`
})

const script: Model.Script = (request) =>
  request.messages.at(-1)!.role === "tool" ?
    { text: "Your export is ready." } :
    { toolCalls: [{ name: "export_data", args: { format: "json" } }] }

const agent = createAgent({ model: "scripted", script, tools: [exportData], auditLog: { path, secret }, autoExtract: false })
try {
  await agent.run("export my data", { userId: "alice", sessionId: "s1" })
  await agent.run("export my data", { userId: "bob", sessionId: "s2" })

  // Compliance queries: by user, by session, or both with an action.
  const alice = await agent.audit.query({ userId: "alice" })
  console.log(`alice: ${alice.map((entry) => entry.action).join(", ")}`)
  console.log(`session s2: ${(await agent.audit.query({ sessionId: "s2" })).length} entries, all bob's: ${
    (await agent.audit.query({ sessionId: "s2" })).every((entry) => entry.userId === "bob")
  }`)
  console.log(`bob tool calls: ${(await agent.audit.query({ userId: "bob", action: "tool_call" })).length}`)
  const verified = await agent.audit.verify()
  console.log(`verify: valid=${verified.valid} entries=${verified.validCount}`)
} finally {
  await agent.dispose()
}

// Anyone with the secret can check the file, without the agent.
const verify = (file: string) => Effect.runPromise(AuditLog.verifyFile(file, secret).pipe(Effect.provide(NodeFileSystem.layer)))
const report = await verify(path)
console.log(`verifyFile: valid=${report.valid} entries=${report.validCount}`)

// Swap bob's id into one of alice's entries: the signature no longer matches.
const lines = (await readFile(path, "utf8")).trimEnd().split("\n")
const forged = lines.map((line, i) => (i === 1 ? line.replace(`"userId":"alice"`, `"userId":"bob"`) : line))
const tampered = join(dir, "tampered.jsonl")
await writeFile(tampered, forged.join("\n") + "\n")
const caught = await verify(tampered)
console.log(`tampered copy: valid=${caught.valid} firstBadSeq=${caught.firstBadSeq} failure=${caught.failure}`)

await rm(dir, { recursive: true, force: true })
