/**
 * What a tracer tells the agent about its sampling. A tracer whose sampler
 * drops every child of an unsampled parent (OpenTelemetry's default,
 * parent-based sampling) is marked, so the agent makes none of its own
 * spans under such a parent (`locally.ts` `spanNow`) instead of asking the
 * tracer a dozen times per turn for spans it would drop. An unmarked tracer
 * is always asked: a record-only or always-on sampler, or effect's own
 * tracer, makes those spans.
 *
 * Apart from `locally.ts` so that the OpenTelemetry tracer and the tracer
 * wrappers can mark a tracer without loading each other.
 *
 * @internal
 */
import type * as Tracer from "effect/Tracer"

/**
 * The mark, a property of the `Tracer` object (a `Symbol.for`, so one copy
 * of the package reads another's).
 *
 * @internal
 */
export const DropsUnsampledChildren: unique symbol = Symbol.for("jeevesagent/Tracer/dropsUnsampledChildren") as never

/** A tracer that may carry {@link DropsUnsampledChildren}. */
type Marked = Tracer.Tracer & { [DropsUnsampledChildren]?: true }

/**
 * Whether `tracer` drops every child of an unsampled parent: one property
 * read, as it is asked for each of the agent's spans.
 *
 * @internal
 */
export const dropsUnsampledChildren = (tracer: Tracer.Tracer): boolean => (tracer as Marked)[DropsUnsampledChildren] === true

/**
 * Marks `tracer` as dropping every child of an unsampled parent.
 *
 * @internal
 */
export const markDropsUnsampledChildren = <T extends Tracer.Tracer>(tracer: T): T => {
  ;(tracer as Marked)[DropsUnsampledChildren] = true
  return tracer
}

/**
 * Gives `wrapper` the mark of the tracer it wraps (a wrapper that hands
 * every span to `inner` samples as `inner` does).
 *
 * @internal
 */
export const withSamplingOf = <T extends Tracer.Tracer>(inner: Tracer.Tracer, wrapper: T): T =>
  dropsUnsampledChildren(inner) ? markDropsUnsampledChildren(wrapper) : wrapper
