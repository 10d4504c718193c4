import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Tracer from "effect/Tracer"

/** The fiber's own FiberRef setter: present on every effect 3 `FiberRuntime`, not in its public type. */
interface FiberRefSetter {
  readonly setFiberRef?: <X>(fiberRef: FiberRef.FiberRef<X>, value: X) => void
}

/**
 * `Effect.locally(self, ref, value)` with the same semantics (the previous
 * value is back on every exit, interruption included; forked fibers inherit
 * `value`; other FiberRefs changed by `self` are kept) at about half the
 * cost: effect's version goes through `acquireUseRelease`, and every run
 * pays for it more than once. Falls back to `Effect.locally` if the fiber
 * has no setter.
 *
 * @internal
 */
export const locally = <A, E, R, X>(self: Effect.Effect<A, E, R>, ref: FiberRef.FiberRef<X>, value: X) =>
  locallyWith(self, ref, () => value)

/** {@link locally} with the value computed from the current one. @internal */
export const locallyWith = <A, E, R, X>(
  self: Effect.Effect<A, E, R>,
  ref: FiberRef.FiberRef<X>,
  f: (current: X) => X,
  onExit?: (exit: Exit.Exit<A, E>, fiber: Fiber.RuntimeFiber<A, E>) => void
): Effect.Effect<A, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.withFiberRuntime<A, E, R>((fiber) => {
      const setter = fiber as unknown as FiberRefSetter
      const previous = fiber.getFiberRef(ref)
      if (typeof setter.setFiberRef !== "function") {
        const fallback = Effect.locally(restore(self), ref, f(previous))
        return onExit === undefined ? fallback : Effect.onExit(fallback, (exit) => Effect.sync(() => onExit(exit, fiber)))
      }
      setter.setFiberRef(ref, f(previous))
      return Effect.matchCauseEffect(restore(self), {
        onFailure: (cause) => {
          setter.setFiberRef!(ref, previous)
          onExit?.(Exit.failCause(cause), fiber)
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          setter.setFiberRef!(ref, previous)
          onExit?.(Exit.succeed(value), fiber)
          return Effect.succeed(value)
        }
      })
    })
  )

/**
 * `Effect.withSpan(self, name, options)` for the agent's own spans: the span
 * is made by `Effect.makeSpan` (so tracer, parent, annotations and links are
 * effect's), installed as the parent span with {@link locallyWith}, and
 * ended with the exit, timed by the fiber's `Clock`. About a third cheaper
 * than `Effect.withSpan`, which installs the span through two
 * `acquireUseRelease`s.
 *
 * @internal
 */
export const withSpan = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  options: Tracer.SpanOptions
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.makeSpan(name, options), (span) =>
    locallyWith(
      self,
      FiberRef.currentContext,
      (context) => Context.add(context, Tracer.ParentSpan, span),
      (exit, fiber) => {
        if (span.status._tag === "Ended") return
        const timed = fiber.getFiberRef(FiberRef.currentTracerTimingEnabled)
        span.end(timed ? Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos() : BigInt(0), exit)
      }
    ))

/** `Effect.withParentSpan` through {@link locallyWith}. @internal */
export const withParentSpan = <A, E, R>(self: Effect.Effect<A, E, R>, span: Tracer.AnySpan): Effect.Effect<A, E, R> =>
  locallyWith(self, FiberRef.currentContext, (context) => Context.add(context, Tracer.ParentSpan, span))
