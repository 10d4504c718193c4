import type * as Arr from "effect/Array"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { preRedacted, type PreRedactedOptions, setRedactedAttribute } from "./secretsSinks.js"
import { dropsUnsampledChildren } from "./tracerSampling.js"

/** The fiber's own FiberRef setter: present on every effect 3 `FiberRuntime`, not in its public type. */
interface FiberRefSetter {
  readonly setFiberRef?: <X>(fiberRef: FiberRef.FiberRef<X>, value: X) => void
  readonly setFiberRefs?: (fiberRefs: FiberRefs.FiberRefs) => void
  /** The fiber's FiberRefs as they are (`getFiberRefs()` first writes the runtime flags into them: one more copy). */
  readonly _fiberRefs?: FiberRefs.FiberRefs
}

type Stack = Arr.NonEmptyReadonlyArray<readonly [FiberId.Single, unknown]>

/** The stack of `ref` once `id` set it to `value`, kept as effect keeps it; `undefined` when nothing changes. */
const pushed = (stack: Stack | undefined, id: FiberId.Single, value: unknown): Stack | undefined => {
  if (stack === undefined) return [[id, value]]
  const [headId, headValue] = stack[0]
  // The head replaced when this fiber set it, else pushed.
  if (headId !== id && !Equal.equals(headId, id)) return [[id, value], ...stack]
  if (headValue === value) return undefined
  return stack.length === 1 ? [[id, value]] : [[id, value], ...stack.slice(1)]
}

/**
 * Installs `refs` as the fiber's FiberRefs; false (nothing done) where the
 * fiber has no setter.
 *
 * @internal
 */
export const installRefs = (fiber: Fiber.RuntimeFiber<unknown, unknown>, refs: FiberRefs.FiberRefs): boolean => {
  const setter = fiber as unknown as FiberRefSetter
  if (typeof setter.setFiberRefs !== "function") return false
  setter.setFiberRefs(refs)
  return true
}

/** Whether {@link setRefs} can write the fiber's FiberRefs itself. @internal */
export const canSetRefs = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => {
  const setter = fiber as unknown as FiberRefSetter
  return typeof setter.setFiberRef === "function"
}

/**
 * `fiber.setFiberRef(ref, value)` (and as much for `ref2`, `value2` if
 * given) with the same result at a fraction of the cost: effect's copies
 * the fiber's FiberRefs through the `Map` iterator (an entry array per
 * FiberRef), once per FiberRef set, after comparing the old value with the
 * new one by `Equal.equals` (a structural walk of the whole `Context` for
 * `currentContext`). Here the FiberRefs are copied once, through
 * `forEach`, and the check is by identity. Falls back to effect's setter
 * where the fiber's FiberRefs are not what this expects. Call only when
 * {@link canSetRefs}.
 *
 * Returns the FiberRefs it installed (for {@link resetRefs}), or
 * `undefined` when it installed none itself.
 *
 * @internal
 */
export const setRefs = <X, Y = never>(
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  ref: FiberRef.FiberRef<X>,
  value: X,
  ref2?: FiberRef.FiberRef<Y>,
  value2?: Y
): FiberRefs.FiberRefs | undefined => {
  const setter = fiber as unknown as FiberRefSetter
  const locals = setter._fiberRefs?.locals
  if (!(locals instanceof Map) || typeof setter.setFiberRefs !== "function") {
    setter.setFiberRef!(ref, value)
    if (ref2 !== undefined) setter.setFiberRef!(ref2, value2 as Y)
    return undefined
  }
  const id = fiber.id()
  const first = pushed(locals.get(ref) as Stack | undefined, id, value)
  const second = ref2 === undefined ? undefined : pushed(locals.get(ref2) as Stack | undefined, id, value2)
  if (first === undefined && second === undefined) return undefined
  const copy = new Map<FiberRef.FiberRef<unknown>, Stack>()
  locals.forEach((entry, key) => copy.set(key, entry))
  if (first !== undefined) copy.set(ref as FiberRef.FiberRef<unknown>, first)
  if (second !== undefined) copy.set(ref2 as FiberRef.FiberRef<unknown>, second)
  const installed = FiberRefs.unsafeMake(copy)
  setter.setFiberRefs(installed)
  return installed
}

/** The fiber's FiberRefs as they are, before a {@link setRefs} (for {@link resetRefs}). @internal */
export const refsOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): FiberRefs.FiberRefs | undefined =>
  (fiber as unknown as FiberRefSetter)._fiberRefs

/** Whether `a` holds exactly the entries of `b`: the same FiberRefs with the same stacks. */
const sameLocals = (a: FiberRefs.FiberRefs | undefined, b: FiberRefs.FiberRefs): boolean => {
  if (a === b) return true
  const left = a?.locals
  const right = b.locals
  if (!(left instanceof Map) || left.size !== right.size) return false
  let same = true
  left.forEach((stack, key) => {
    if (same && right.get(key) !== stack) same = false
  })
  return same
}

/** Whether the top of `ref`'s stack in `refs` is the fiber `id`'s own entry. */
const ownHead = (refs: FiberRefs.FiberRefs, ref: FiberRef.FiberRef<unknown>, id: FiberId.Single): boolean => {
  const stack = refs.locals.get(ref) as Stack | undefined
  if (stack === undefined) return false
  const headId = stack[0][0]
  return headId === id || Equal.equals(headId, id)
}

/**
 * Puts `ref` (and `ref2`) back to `value` (`value2`), the values they had
 * in `before`, after {@link setRefs} installed `installed` over `before`.
 * When nothing else changed the fiber's FiberRefs since (entry for entry
 * they are still `installed`: a fork or a join that changed no value keeps
 * them so) and `before` has the fiber's own entry for each ref, `before`
 * itself goes back, with no copy, exactly as it was; otherwise this is
 * {@link setRefs}. (Without its own entry, `before` would drop the entry a
 * child forked meanwhile names as its parent's: joined later, the child
 * would bring its value back into this fiber.)
 *
 * @internal
 */
export const resetRefs = <X, Y = never>(
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  before: FiberRefs.FiberRefs | undefined,
  installed: FiberRefs.FiberRefs | undefined,
  ref: FiberRef.FiberRef<X>,
  value: X,
  ref2?: FiberRef.FiberRef<Y>,
  value2?: Y
): void => {
  const setter = fiber as unknown as FiberRefSetter
  if (
    installed !== undefined && before !== undefined && sameLocals(setter._fiberRefs, installed) &&
    ownHead(before, ref as FiberRef.FiberRef<unknown>, fiber.id()) &&
    (ref2 === undefined || ownHead(before, ref2 as FiberRef.FiberRef<unknown>, fiber.id()))
  ) {
    setter.setFiberRefs!(before)
    return
  }
  setRefs(fiber, ref, value, ref2, value2)
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
      const before = refsOf(fiber)
      const installed = setRefs(fiber, ref, f(previous))
      return Effect.matchCauseEffect(restore(self), {
        onFailure: (cause) => {
          resetRefs(fiber, before, installed, ref, previous)
          onExit?.(Exit.failCause(cause), fiber)
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          resetRefs(fiber, before, installed, ref, previous)
          onExit?.(Exit.succeed(value), fiber)
          return Effect.succeed(value)
        }
      })
    })
  )

/**
 * `Context.add(context, Tracer.ParentSpan, span)`, copying the services
 * through `forEach` rather than the `Map` iterator (which makes an entry
 * array per service): the agent installs a parent span a dozen times a
 * turn, each time over every service of the context.
 *
 * @internal
 */
export const withParent = <R>(context: Context.Context<R>, span: Tracer.AnySpan): Context.Context<R> => {
  const map = new Map<string, unknown>()
  context.unsafeMap.forEach((service, key) => map.set(key, service))
  map.set(Tracer.ParentSpan.key, span)
  return Context.unsafeMake(map)
}

/** The parent of a new span, skipping spans marked `DisablePropagation` (as effect does). */
const propagatedParent = (candidate: Option.Option<Tracer.AnySpan>): Option.Option<Tracer.AnySpan> => {
  let current = candidate
  while (Option.isSome(current) && Context.get(current.value.context, Tracer.DisablePropagation)) {
    current = current.value._tag === "Span" ? current.value.parent : Option.none()
  }
  return current
}

const noTime = BigInt(0)

/**
 * `Effect.makeSpan` done synchronously on `fiber`: same tracer, parent,
 * clock, annotations and links as effect's.
 *
 * - `"unsampled"`, with no span made, when the parent was not sampled and
 *   the tracer is marked as dropping every span under such a parent (a
 *   parent-based sampler, OpenTelemetry's default; see `tracerSampling.ts`),
 *   so the agent does not make its own spans there at all. Any other tracer
 *   is asked, as `Effect.withSpan` asks it (effect's own tracer, a
 *   record-only or always-on sampler make spans there).
 * - `undefined` when this fast path does not apply (tracing disabled, a
 *   stack trace asked for, a fiber without its default services); the
 *   caller then goes through `Effect.makeSpan`.
 *
 * @internal
 */
export const spanNow = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  name: string,
  options: Tracer.SpanOptions
): Tracer.Span | "unsampled" | undefined => {
  const parent = options.parent !== undefined ?
    Option.some(options.parent) :
    options.root === true ?
    Option.none() :
    propagatedParent(Context.getOption(fiber.getFiberRef(FiberRef.currentContext), Tracer.ParentSpan))
  const services = fiber.currentDefaultServices
  if (services === undefined) return undefined
  const tracer = Context.get(services, Tracer.Tracer)
  if (parent._tag === "Some" && !parent.value.sampled && dropsUnsampledChildren(tracer)) return "unsampled"
  if (options.captureStackTrace !== false || !fiber.getFiberRef(FiberRef.currentTracerEnabled)) return undefined
  const spanContext = options.context ?? Context.empty()
  if (Context.get(spanContext, Tracer.DisablePropagation)) return undefined
  const envLinks = fiber.getFiberRef(FiberRef.currentTracerSpanLinks)
  const links = Chunk.isEmpty(envLinks) ?
    options.links ?? [] :
    [...Chunk.toReadonlyArray(envLinks), ...(options.links ?? [])]
  const startTime = fiber.getFiberRef(FiberRef.currentTracerTimingEnabled) ?
    Context.get(services, Clock.Clock).unsafeCurrentTimeNanos() :
    noTime
  const span = tracer.span(
    name,
    parent,
    spanContext,
    links,
    startTime,
    options.kind ?? "internal",
    options
  )
  const annotations = fiber.getFiberRef(FiberRef.currentTracerSpanAnnotations)
  if (HashMap.size(annotations) > 0) HashMap.forEach(annotations, (value, key) => span.attribute(key, value))
  const attributes = options.attributes
  if (attributes !== undefined) {
    if ((options as PreRedactedOptions)[preRedacted] === true) {
      for (const key in attributes) setRedactedAttribute(span, key, attributes[key])
    } else {
      for (const key in attributes) span.attribute(key, attributes[key])
    }
  }
  return span
}

/** Ends `span` with `exit` (unless something ended it already), timed by the fiber's `Clock`. @internal */
export const endSpan = (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>, fiber: Fiber.RuntimeFiber<unknown, unknown>) => {
  if (span.status._tag === "Ended") return
  const timed = fiber.getFiberRef(FiberRef.currentTracerTimingEnabled)
  span.end(timed ? Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos() : noTime, exit)
}

/**
 * `Effect.makeSpan(name, options)` in one step where it can (see
 * {@link withSpan}), else effect's own; `undefined`, with no span made,
 * under an unsampled parent whose spans the tracer drops ({@link spanNow}).
 *
 * @internal
 */
export const makeSpan = (name: string, options: Tracer.SpanOptions): Effect.Effect<Tracer.Span | undefined> =>
  Effect.withFiberRuntime((fiber) => {
    const span = spanNow(fiber, name, options)
    return span === "unsampled" ? Effect.succeed(undefined) : span === undefined ? Effect.makeSpan(name, options) : Effect.succeed(span)
  })

/**
 * `Effect.withSpan(self, name, options)` for the agent's own spans, in one
 * masked step: the span is made on the fiber with effect's tracer, parent,
 * clock, annotations and links, installed as the parent span like
 * {@link locallyWith}, and ended with the exit. `annotate`, if given, adds
 * attributes from the exit just before the span ends. Several times cheaper
 * than `Effect.withSpan` (which makes the span in its own steps and
 * installs it through two `acquireUseRelease`s). Falls back to
 * `Effect.makeSpan` with {@link locallyWith} where the one-step path does not
 * apply (tracing disabled, stack traces asked for, a fiber without the
 * setter). Under an unsampled parent whose spans the tracer drops
 * ({@link spanNow}) it runs `self` with no span.
 *
 * @internal
 */
export const withSpan = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  options: Tracer.SpanOptions,
  annotate?: (exit: Exit.Exit<A, E>) => Record<string, unknown> | undefined
): Effect.Effect<A, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.withFiberRuntime<A, E, R>((fiber) => {
      const setter = fiber as unknown as FiberRefSetter
      const span = spanNow(fiber, name, options)
      if (span === "unsampled") return restore(self)
      const ended = (exit: Exit.Exit<A, E>, spanned: Tracer.Span, at: Fiber.RuntimeFiber<A, E>) => {
        if (annotate !== undefined && spanned.status._tag !== "Ended") {
          const extra = annotate(exit)
          if (extra !== undefined) {
            const trusted = (options as PreRedactedOptions)[preRedacted] === true
            for (const key in extra) trusted ? setRedactedAttribute(spanned, key, extra[key]) : spanned.attribute(key, extra[key])
          }
        }
        endSpan(spanned, exit, at)
      }
      if (span === undefined || typeof setter.setFiberRef !== "function") {
        return Effect.flatMap(Effect.makeSpan(name, options), (made) =>
          locallyWith(
            restore(self),
            FiberRef.currentContext,
            (context) => withParent(context, made),
            (exit, at) => ended(exit, made, at)
          ))
      }
      const previous = fiber.getFiberRef(FiberRef.currentContext)
      const before = refsOf(fiber)
      const installed = setRefs(fiber, FiberRef.currentContext, withParent(previous, span))
      return Effect.matchCauseEffect(restore(self), {
        onFailure: (cause) => {
          resetRefs(fiber, before, installed, FiberRef.currentContext, previous)
          ended(Exit.failCause(cause), span, fiber)
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          resetRefs(fiber, before, installed, FiberRef.currentContext, previous)
          ended(Exit.succeed(value), span, fiber)
          return Effect.succeed(value)
        }
      })
    })
  )

/** `Effect.withParentSpan` through {@link locallyWith}. @internal */
export const withParentSpan = <A, E, R>(self: Effect.Effect<A, E, R>, span: Tracer.AnySpan): Effect.Effect<A, E, R> =>
  locallyWith(self, FiberRef.currentContext, (context) => withParent(context, span))
