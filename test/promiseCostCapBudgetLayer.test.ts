/**
 * README (Models): with `requireCost: true` — which `createAgent` sets itself
 * when a cost cap is configured — an unpriced model is a `ModelConfigError`
 * rather than $0 (an unpriced model's calls cost $0 and no cost cap would
 * ever hold them). A cap given as a ready budget layer — `Budget.layer({
 * maxCostUsd })`, or the production form `PgBudget.layer({
 * perUserMaxCostUsd })` — is a cost cap too (`Budget.Service.costCapped`).
 */
import { Budget, Model } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

// A model id no price-table prefix covers (a model released after this version).
const UNPRICED = "claude-nextgen-9-0"

describe("jeevesagent/promise: a cost cap on an unpriced Claude model", () => {
  it("control: budget given as options rejects ready() with ModelConfigError", async () => {
    const agent = createAgent({ model: UNPRICED, apiKey: "sk-ant-test-key", autoExtract: false, budget: { maxCostUsd: 5 } })
    try {
      await expect(agent.ready()).rejects.toBeInstanceOf(Model.ModelConfigError)
    } finally {
      await agent.dispose()
    }
  })

  it("the same cap given as a Budget layer also rejects ready() with ModelConfigError", async () => {
    const agent = createAgent({
      model: UNPRICED,
      apiKey: "sk-ant-test-key",
      autoExtract: false,
      budget: Budget.layer({ maxCostUsd: 5, perUserMaxCostUsd: 0.5 })
    })
    try {
      const outcome = await agent.ready().then(() => "built", (e: unknown) => e)
      expect(outcome).toBeInstanceOf(Model.ModelConfigError)
    } finally {
      await agent.dispose()
    }
  })

  it("a budget layer without a cost cap leaves an unpriced model allowed", async () => {
    const agent = createAgent({
      model: UNPRICED,
      apiKey: "sk-ant-test-key",
      autoExtract: false,
      budget: Budget.layer({ perUserMaxTokens: 1_000 })
    })
    try {
      await agent.ready()
    } finally {
      await agent.dispose()
    }
  })
})
