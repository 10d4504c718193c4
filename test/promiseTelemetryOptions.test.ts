/**
 * The facade's `telemetry` option takes every option of `Telemetry.layer`
 * (`userIdAttribute`, `metricUserIdAttribute`, `serviceSpans`), not only
 * `userIdAttribute`: with `metricUserIdAttribute: "raw"` the run's metrics
 * carry the raw user id, as they would through the Effect API.
 */
import { Metric } from "effect"
import { Model } from "jeevesagent"
import { createAgent } from "jeevesagent/promise"
import { describe, expect, it } from "vitest"

describe("jeevesagent/promise telemetry options", () => {
  it("metricUserIdAttribute and serviceSpans are taken", async () => {
    const agent = createAgent({
      model: Model.layerScripted([{ text: "ok", usage: { inputTokens: 3, outputTokens: 2 } }]),
      telemetry: { userIdAttribute: "omit", metricUserIdAttribute: "raw", serviceSpans: true }
    })
    try {
      await agent.run("hi", { userId: "telemetry_option_user" })
      const pairs = await agent.runtime.runPromise(Metric.snapshot)
      const tagged = pairs.filter((pair) =>
        pair.metricKey.name === "jeeves.tokens.input" &&
        [...pair.metricKey.tags].some((tag) => tag.key === "user_id" && tag.value === "telemetry_option_user")
      )
      expect(tagged.length).toBe(1)
    } finally {
      await agent.dispose()
    }
  })
})
