/**
 * `createAgent` reads every option when it is called, `secrets` included: a
 * multi-tenant program that builds one agent per tenant from one config
 * object (`Object.assign(config, { secrets: tenant.secrets })`) gives each
 * agent its own tenant's keys (never billing B's calls to A), and each
 * agent's rejections are masked with its own values.
 */
import { Effect, Redacted } from "effect"
import * as Jeeves from "jeevesagent"
import { type AgentOptions, createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const resolveToken = (agent: ReturnType<typeof createAgent>) =>
  agent.runtime.runPromise(Effect.flatMap(Jeeves.Secrets.Secrets, (secrets) => secrets.resolve("TENANT_TOKEN"))).then(Redacted.value)

describe("jeevesagent/promise: one options object reused for two agents", () => {
  it("the second agent uses the secrets the options hold when it is created", async () => {
    const config: Mutable<AgentOptions> = { model: "echo", secrets: { TENANT_TOKEN: "tenant-a-token-1f2e3d4c" } }
    const tenantA = createAgent(config)
    config.secrets = { TENANT_TOKEN: "tenant-b-token-9a8b7c6d" }
    const tenantB = createAgent(config)
    try {
      expect(await resolveToken(tenantA)).toBe("tenant-a-token-1f2e3d4c")
      expect(await resolveToken(tenantB)).toBe("tenant-b-token-9a8b7c6d")
    } finally {
      await Promise.all([tenantA.dispose(), tenantB.dispose()])
    }
  })

  it("the second agent's rejections mask its own secret values", async () => {
    const secretB = "tenant-b-token-9a8b7c6d"
    const config: Mutable<AgentOptions> = { model: "echo", secrets: { TENANT_TOKEN: "tenant-a-token-1f2e3d4c" } }
    const tenantA = createAgent(config)
    config.secrets = { TENANT_TOKEN: secretB }
    config.model = Jeeves.Model.layerScripted([
      { error: new Jeeves.Model.ModelError({ reason: "authentication", retryable: false, status: 401, description: `rejected key ${secretB}` }) }
    ])
    const tenantB = createAgent(config)
    try {
      const error = await tenantB.run("hi").then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(Jeeves.Model.ModelError)
      expect((error as Error).message).not.toContain(secretB)
    } finally {
      await Promise.all([tenantA.dispose(), tenantB.dispose()])
    }
  })
})

