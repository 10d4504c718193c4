import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Budget, Memory, Model, RunContext, Secrets } from "jeevesagent"

const isExtraction = (request: Model.ModelRequest) =>
  request.messages[0]?.role === "system" && request.messages[0].content === Memory.extractionPrompt

const layerWith = (answer: Model.ScriptedTurn, options?: Memory.AutoExtractOptions) =>
  Memory.autoExtract(options).pipe(
    Layer.provide(Memory.layerInMemory()),
    Layer.provide(Layer.merge(Model.layerScripted((request) => (isExtraction(request) ? answer : { text: "ok" })), Budget.layerNone))
  )

const storedFacts = Effect.flatMap(Memory.Memory, (memory) => memory.export).pipe(
  Effect.map((exported) => exported.facts.map((fact) => [fact.subject, fact.predicate, fact.object])),
  RunContext.withUser("alice")
)

describe("Memory.autoExtract answers and errors", () => {
  it.effect("an answer wrapping the list in {\"facts\": [...]} is read as that list", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "I live in Lisbon", output: "Noted" }).pipe(RunContext.withUser("alice"))
      assert.deepStrictEqual(yield* storedFacts, [["user", "lives in", "Lisbon"]])
    }).pipe(Effect.provide(layerWith({
      text: "```json\n" + JSON.stringify({ facts: [{ subject: "user", predicate: "lives in", object: "Lisbon" }] }) + "\n```"
    }))))

  it.effect("an answer with a sentence before its fenced list, or before a bare list, is read as that list", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "I live in Lisbon", output: "Noted" }).pipe(RunContext.withUser("alice"))
      yield* memory.remember({ input: "I like tea", output: "Noted" }).pipe(RunContext.withUser("alice"))
      assert.deepStrictEqual(yield* storedFacts, [["user", "lives in", "Lisbon"], ["user", "likes", "tea"]])
    }).pipe(Effect.provide(Memory.autoExtract().pipe(
      Layer.provide(Memory.layerInMemory()),
      Layer.provide(Layer.merge(
        Model.layerScripted((request) => {
          if (!isExtraction(request)) return { text: "ok" }
          return request.messages[1]!.content.includes("Lisbon") ?
            { text: "Here are the facts I found:\n```json\n[{\"subject\": \"user\", \"predicate\": \"lives in\", \"object\": \"Lisbon\"}]\n```" } :
            { text: "Sure. [{\"subject\": \"user\", \"predicate\": \"likes\", \"object\": \"tea\"}] That is all." }
        }),
        Budget.layerNone
      ))
    ))))

  it.effect("an object without a facts list still gives no facts", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "hi", output: "hello" }).pipe(RunContext.withUser("alice"))
      assert.deepStrictEqual(yield* storedFacts, [])
    }).pipe(Effect.provide(layerWith({ text: JSON.stringify({ facts: "none", items: [{ subject: "a", predicate: "b", object: "c" }] }) }))))

  it.effect("an item whose subject or predicate is longer than a store keeps is skipped, the others kept", () =>
    Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "long", output: "ok" }).pipe(RunContext.withUser("alice"))
      assert.deepStrictEqual(yield* storedFacts, [["user", "likes", "tea"]])
    }).pipe(Effect.provide(layerWith({
      text: JSON.stringify([
        { subject: "x".repeat(257), predicate: "is", object: "long" },
        { subject: "user", predicate: "p".repeat(257), object: "long" },
        { subject: "user", predicate: "likes", object: "tea" }
      ])
    }))))

  it.effect("onError gets the error redacted, as the warning log has it", () => {
    const key = "sk-ant-api03-" + "Q".repeat(40)
    const seen: Array<Memory.AutoExtractError> = []
    return Effect.gen(function*() {
      const memory = yield* Memory.Memory
      yield* memory.remember({ input: "hi", output: "hello" }).pipe(RunContext.withUser("alice"))
      assert.strictEqual(seen.length, 1)
      const error = seen[0]!
      assert.instanceOf(error, Memory.AutoExtractError)
      assert.strictEqual(error.reason, "model")
      assert.include(error.description, "upstream rejected")
      assert.notInclude(error.description, key)
      assert.notInclude(error.message, key)
      assert.notInclude(String((error.cause as Error | undefined)?.message ?? ""), key)
    }).pipe(Effect.provide(layerWith(
      { error: new Model.ModelError({ reason: "authentication", retryable: false, description: `upstream rejected key ${key}` }) },
      { onError: (error) => void seen.push(error) }
    )), Effect.provide(Secrets.layerDict({})))
  })
})
