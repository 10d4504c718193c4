import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Tracer } from "effect"
import { Memory, RunContext, Telemetry } from "jeevesagent"

/** The default tracer, recording the names of the spans it starts. */
const recording = Effect.map(Effect.tracer, (inner) => {
  const names: Array<string> = []
  const tracer = Tracer.make({
    span: (name, ...rest) => {
      names.push(name)
      return inner.span(name, ...rest)
    },
    context: inner.context
  })
  return { names, layer: Layer.setTracer(tracer) }
})

describe("service spans", () => {
  it.effect("are off by default: a span costs more than an in-memory operation", () =>
    Effect.gen(function*() {
      const { layer, names } = yield* recording
      yield* Effect.flatMap(Memory.Memory, (memory) => memory.working).pipe(
        RunContext.withUser("alice"),
        Effect.provide(Layer.merge(Memory.layerInMemory(), layer))
      )
      assert.deepStrictEqual(names, [])
    }))

  it.effect("stay off with a Telemetry layer unless it asks for them", () =>
    Effect.gen(function*() {
      const { layer, names } = yield* recording
      yield* Effect.flatMap(Memory.Memory, (memory) => memory.working).pipe(
        RunContext.withUser("alice"),
        Effect.provide(Layer.mergeAll(Memory.layerInMemory(), Telemetry.layer(), layer))
      )
      assert.deepStrictEqual(names, [])
    }))

  it.effect("are on with a Telemetry layer and serviceSpans: true", () =>
    Effect.gen(function*() {
      const { layer, names } = yield* recording
      yield* Effect.flatMap(Memory.Memory, (memory) => memory.working).pipe(
        RunContext.withUser("alice"),
        Effect.provide(Layer.mergeAll(Memory.layerInMemory(), Telemetry.layer({ serviceSpans: true }), layer))
      )
      assert.deepStrictEqual(names, ["Memory.working"])
    }))
})
