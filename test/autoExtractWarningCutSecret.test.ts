import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { Budget, Memory, Model, RunContext, Secrets } from "jeevesagent"

// A per-tenant credential the Secrets service handed out (any shape: no pattern knows it).
const SECRET = "tenant-7f3a-correct-horse-battery-staple"

describe("Memory.autoExtract: the warning for a non-JSON answer", () => {
  it.effect("masks a handed-out value the answer quotes, even where the 200-character excerpt cuts it", () => {
    const lines: Array<string> = []
    const capture = Logger.add(Logger.make(({ message }) => void lines.push(JSON.stringify(message))))
    // The extraction model answers in prose (it happens) quoting the credential from the episode,
    // which starts 175 characters in, so the excerpt's cut at 200 falls inside it.
    const answer = "Sorry, no JSON. ".padEnd(157, ".") + `The user's key is ${SECRET}, keep it safe.`
    const model = Model.layerScripted(() => ({ text: answer }))
    return Effect.gen(function*() {
      const secrets = yield* Secrets.Secrets
      // The whole answer is masked by the service.
      assert.notInclude(secrets.redact(answer), SECRET.slice(0, 20))
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "what is my key?", output: `your key is ${SECRET}` }).pipe(
        RunContext.withUser("carol", { sessionId: "s1" })
      )
      const warnings = lines.filter((line) => line.includes("auto-extract failed"))
      assert.strictEqual(warnings.length, 1)
      // Before the fix the excerpt is cut before it is redacted: the first 25 characters of the
      // credential are no longer the whole value, so they go to the log unmasked.
      assert.notInclude(warnings[0]!, SECRET.slice(0, 20))
    }).pipe(
      Effect.provide(
        Memory.autoExtract().pipe(
          Layer.provide(Memory.layerInMemory()),
          Layer.provideMerge(Layer.mergeAll(model, Budget.layerNone, Secrets.layerDict({ TENANT_KEY: SECRET })))
        )
      ),
      Effect.provide(capture)
    )
  })
})
