/**
 * Promise-based secrets backends that answer something other than a string,
 * and an OpenTelemetry metric export interval longer than a Node timer holds.
 */
import { assert, describe, it } from "@effect/vitest"
import { AggregationTemporality, type PushMetricExporter } from "@opentelemetry/sdk-metrics"
import { Cause, Duration, Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { Secrets, Telemetry } from "jeevesagent"

// A numeric secret as a JSON-backed vault hands it out: `{ "PIN": 123456789012 }`.
const PIN = 123456789012
const numericVault = (): Secrets.PromiseBackend => ({
  resolve: async () => PIN as unknown as string,
  lookupSync: () => PIN as unknown as string
})

describe("Secrets.fromPromise with a backend answering a non-string", () => {
  it.effect("resolve fails with a typed SecretNotFound, not a defect whose message carries the secret", () =>
    Effect.gen(function*() {
      const secrets = Secrets.fromPromise({ resolve: numericVault().resolve })
      const exit = yield* Effect.exit(secrets.resolve("PIN"))
      assert.isTrue(Exit.isFailure(exit), "a non-string value is not a secret the service can hand out")
      if (Exit.isSuccess(exit)) return
      // Today: a defect, Node's ERR_INVALID_ARG_TYPE from Buffer.from in KnownValues.add.
      assert.isFalse(Cause.isDie(exit.cause), `untyped defect: ${Cause.pretty(exit.cause)}`)
      const failure = Cause.failureOption(exit.cause)
      assert.isTrue(Option.isSome(failure) && failure.value._tag === "SecretNotFound")
      assert.notInclude(Cause.pretty(exit.cause), String(PIN), "the error must not carry the secret value")
    }))

  it.effect("a value handed out after that first failure is masked by redact", () =>
    Effect.gen(function*() {
      const secrets = Secrets.fromPromise({ resolve: numericVault().resolve })
      yield* Effect.exit(secrets.resolve("PIN")) // dies; leaves the value half-registered
      const second = yield* Effect.exit(secrets.resolve("PIN"))
      if (Exit.isSuccess(second)) {
        // Handed out (as a number) although redact never learnt it.
        const handedOut = String(Redacted.value(second.value))
        assert.notInclude(secrets.redact(`using pin ${handedOut}`), handedOut, "a handed-out value leaks through redact")
      }
    }))

  it("lookupSync of a backend answering a non-string neither throws nor leaks the value", () => {
    const secrets = Secrets.fromPromise(numericVault())
    let found: string | undefined
    try {
      found = secrets.lookupSync("PIN")
    } catch (error) {
      assert.fail(`lookupSync threw: ${String(error)}`)
    }
    if (found !== undefined) assert.notInclude(secrets.redact(`pin ${String(found)}`), String(PIN))
  })
})

describe("Telemetry.layerOtel metric export interval", () => {
  it.live("a very long metricExportInterval (\"Infinity\": only at shutdown) does not export every millisecond", () =>
    Effect.gen(function*() {
      let exports = 0
      const exporter: PushMetricExporter = {
        export: (_metrics, done) => {
          exports++
          done({ code: 0 })
        },
        forceFlush: () => Promise.resolve(),
        shutdown: () => Promise.resolve(),
        selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE
      }
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(
        Telemetry.layerOtel({ serviceName: "t", metricExporter: exporter, metricExportInterval: Duration.infinity }),
        scope
      )
      yield* Effect.sleep("200 millis")
      const during = exports
      yield* Scope.close(scope, Exit.void)
      // Node clamps a timer over 2^31-1 ms to 1 ms: the reader then exports ~1000 times a second.
      assert.isAtMost(during, 1, `exported ${during} times in 200 ms`)
    }))
})
