import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"

/**
 * Whether the services record their own spans (`Memory.recall`,
 * `AuditLog.append`, ...). An effect span costs several microseconds even
 * with no tracer installed — more than the operation itself on the in-memory
 * stores — so they are off unless a Telemetry layer turns them on.
 *
 * @internal
 */
export const serviceSpans: FiberRef.FiberRef<boolean> = globalValue(
  Symbol.for("jeevesagent/internal/serviceSpans"),
  () => FiberRef.unsafeMake(false)
)

/**
 * Turns service spans on for the program the layer is provided to.
 *
 * @internal
 */
export const layerServiceSpans: Layer.Layer<never> = Layer.scopedDiscard(
  Effect.locallyScopedWith(serviceSpans, () => true)
)

/**
 * `Effect.withSpan`, when service spans are on.
 *
 * @internal
 */
export const withServiceSpan =
  (name: string, options?: Tracer.SpanOptions) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(FiberRef.get(serviceSpans), (on) => (on ? Effect.withSpan(self, name, options) : self))

/**
 * `Stream.withSpan`, when service spans are on.
 *
 * @internal
 */
export const withServiceStreamSpan =
  (name: string, options?: Tracer.SpanOptions) => <A, E, R>(self: Stream.Stream<A, E, R>): Stream.Stream<A, E, R> =>
    Stream.unwrap(Effect.map(FiberRef.get(serviceSpans), (on) => (on ? Stream.withSpan(self, name, options) : self)))
