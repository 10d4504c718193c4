import { context as otelContext, propagation, trace } from "@opentelemetry/api"
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node"
import { Effect } from "effect"

/**
 * OpenTelemetry's async-hooks context manager registered for the scope, as
 * an instrumented app has one (`register()` installs it); the globals are
 * reset when the scope closes.
 */
export const registeredContextManager = Effect.acquireRelease(
  Effect.sync(() => new NodeTracerProvider().register()),
  () =>
    Effect.sync(() => {
      trace.disable()
      otelContext.disable()
      propagation.disable()
    })
)
