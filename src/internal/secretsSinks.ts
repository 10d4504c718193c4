/**
 * Redaction at the sinks: structured values, errors, causes, loggers and
 * tracers.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as HashMap from "effect/HashMap"
import * as List from "effect/List"
import type * as LogSpan from "effect/LogSpan"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as Tracer from "effect/Tracer"
import { withSamplingOf } from "./tracerSampling.js"

type Redact = (text: string) => string

const CIRCULAR = "[Circular]"

const isPlainObject = (value: object): boolean => {
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/**
 * Copies `value` with every string (and object key) passed through `redact`.
 * Plain objects and arrays keep their shape; errors keep their class (see
 * {@link redactError}); other objects become what `JSON.stringify` would
 * write (their `toJSON`, or their own enumerable properties), except `Map`
 * and `Set`, which stay a `Map` and a `Set`. `Redacted` values, numbers,
 * booleans and binary data are kept as they are.
 *
 * @internal
 */
export const redactDeep = <A>(value: A, redact: Redact): A => redactValue(value, redact) as A

/** A string or other primitive (most span attributes and annotations) needs no ancestor set. */
const redactValue = (value: unknown, redact: Redact): unknown =>
  typeof value === "string" ? redact(value) : typeof value !== "object" || value === null ? value : walk(value, redact, new Set())

const walk = (value: unknown, redact: Redact, ancestors: Set<object>): unknown => {
  if (typeof value === "string") return redact(value)
  if (typeof value !== "object" || value === null) return value
  if (Redacted.isRedacted(value) || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return value
  if (ancestors.has(value)) return CIRCULAR
  ancestors.add(value)
  try {
    if (Array.isArray(value)) return value.map((item) => walk(item, redact, ancestors))
    if (value instanceof Error) return cloneError(value, redact, ancestors)
    if (value instanceof Map) {
      const out = new Map<unknown, unknown>()
      value.forEach((item, key) => out.set(walk(key, redact, ancestors), walk(item, redact, ancestors)))
      return out
    }
    if (value instanceof Set) {
      const out = new Set<unknown>()
      value.forEach((item) => out.add(walk(item, redact, ancestors)))
      return out
    }
    if (!isPlainObject(value) && typeof (value as { toJSON?: unknown }).toJSON === "function") {
      return walk((value as { toJSON: () => unknown }).toJSON(), redact, ancestors)
    }
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value)) {
      const name = redact(key)
      const member = walk((value as Record<string, unknown>)[key], redact, ancestors)
      // An own "__proto__" member (JSON.parse makes one) stays a member, never the prototype.
      if (name === "__proto__") Object.defineProperty(out, name, { value: member, enumerable: true, writable: true, configurable: true })
      else out[name] = member
    }
    return out
  } finally {
    ancestors.delete(value)
  }
}

/** Whether `key` of `error` is a getter of its class (or a class above), not a data property. */
const inheritedAccessor = (error: Error, key: string): boolean => {
  for (let proto = Object.getPrototypeOf(error); proto !== null; proto = Object.getPrototypeOf(proto)) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, key)
    if (descriptor !== undefined) return !("value" in descriptor)
  }
  return false
}

/**
 * A copy of the error with the same prototype (so `instanceof` and `_tag`
 * still work), its `message` and `stack` redacted, and every own
 * string-keyed property (including `cause`) redacted deeply. An own
 * accessor (Node's `SystemError` keeps `path` and `dest` behind getters) is
 * read once through its getter and stored as a redacted data property: a
 * copied getter would still read the original's unredacted value.
 */
const cloneError = (error: Error, redact: Redact, ancestors: Set<object>): Error => {
  const copy = Object.create(Object.getPrototypeOf(error)) as Error
  for (const key of Reflect.ownKeys(error)) {
    const descriptor = Object.getOwnPropertyDescriptor(error, key)!
    // Symbol keys are runtime bookkeeping (effect keeps the failing span there): copied as they are.
    if (typeof key === "string") {
      if ("value" in descriptor) {
        descriptor.value = walk(descriptor.value, redact, ancestors)
      } else {
        const value = readAccessor(error, descriptor)
        // A setter-only accessor, or a getter that throws, has nothing to show: left off the copy.
        if (value === unreadable) continue
        Object.defineProperty(copy, key, {
          value: walk(value, redact, ancestors),
          enumerable: descriptor.enumerable ?? false,
          writable: true,
          configurable: true
        })
        continue
      }
    }
    Object.defineProperty(copy, key, descriptor)
  }
  // A platform error (DOMException: a fetch's abort or timeout) reads `name` and `code` from an internal
  // slot through getters on its class, which throw on a copy: pinned as the original has them.
  for (const key of ["name", "code"]) {
    if (Object.prototype.hasOwnProperty.call(copy, key) || !inheritedAccessor(error, key)) continue
    const value = readAccessor(error, { get: () => (error as unknown as Record<string, unknown>)[key] })
    if (value === unreadable) continue
    Object.defineProperty(copy, key, { value: walk(value, redact, ancestors), enumerable: false, writable: true, configurable: true })
  }
  // `message` may be a getter on the class (computed from fields); pin the redacted text.
  Object.defineProperty(copy, "message", {
    value: redact(String(error.message)),
    enumerable: false,
    writable: true,
    configurable: true
  })
  if (typeof error.stack === "string") {
    Object.defineProperty(copy, "stack", {
      value: redact(error.stack),
      enumerable: false,
      writable: true,
      configurable: true
    })
  }
  return copy
}

const unreadable: unique symbol = Symbol("unreadable")

/** The value an own accessor's getter returns; {@link unreadable} when it has none or it throws. */
const readAccessor = (error: Error, descriptor: PropertyDescriptor): unknown => {
  if (descriptor.get === undefined) return unreadable
  try {
    return descriptor.get.call(error)
  } catch {
    return unreadable
  }
}

/**
 * Redacts an error for display or rethrowing: an `Error` becomes a copy of
 * the same class with `message`, `stack`, fields (accessors read through
 * their getters and stored as redacted values) and `cause` redacted
 * (symbol-keyed properties are copied untouched); any
 * other value goes through {@link redactDeep}.
 *
 * @internal
 */
export const redactError = <E>(error: E, redact: Redact): E => redactValue(error, redact) as E

/**
 * Redacts every failure and defect in a cause, keeping its structure.
 *
 * @internal
 */
export const redactCause = <E>(cause: Cause.Cause<E>, redact: Redact): Cause.Cause<E> =>
  Cause.isEmpty(cause) ? cause : Cause.match(cause, {
    onEmpty: Cause.empty as Cause.Cause<E>,
    onFail: (error) => Cause.fail(redactError(error, redact)),
    onDie: (defect) => Cause.die(redactError(defect, redact)),
    onInterrupt: (fiberId) => Cause.interrupt(fiberId),
    onSequential: (left, right) => Cause.sequential(left, right),
    onParallel: (left, right) => Cause.parallel(left, right)
  })

const redactingLoggers = new WeakSet<Logger.Logger<any, any>>()

/** Annotations with keys and values redacted (two keys that redact alike keep the last value). */
const redactAnnotations = (
  annotations: HashMap.HashMap<string, unknown>,
  redact: Redact
): HashMap.HashMap<string, unknown> =>
  HashMap.size(annotations) === 0 ? annotations : HashMap.mutate(HashMap.empty<string, unknown>(), (out) => {
    for (const [key, value] of annotations) HashMap.set(out, redact(key), redactDeep(value, redact))
  })

/** Log spans with labels redacted; the same list when no label changes (the usual case). */
const redactLogSpans = (spans: List.List<LogSpan.LogSpan>, redact: Redact): List.List<LogSpan.LogSpan> => {
  if (List.isNil(spans)) return spans
  let changed = false
  const out = List.map(spans, (span) => {
    const label = redact(span.label)
    if (label === span.label) return span
    changed = true
    return { label, startTime: span.startTime }
  })
  return changed ? out : spans
}

/**
 * Wraps a logger so the message, every annotation key and value, every log
 * span label and the cause pass through `redact` before it sees them.
 *
 * @internal
 */
export const redactingLogger = <Message, Output>(
  logger: Logger.Logger<Message, Output>,
  redact: Redact
): Logger.Logger<Message, Output> => {
  if (redactingLoggers.has(logger)) return logger
  const wrapped = Logger.mapInputOptions(logger, (options: Logger.Logger.Options<Message>) => ({
    ...options,
    message: redactDeep(options.message, redact),
    annotations: redactAnnotations(options.annotations, redact),
    spans: redactLogSpans(options.spans, redact),
    cause: redactCause(options.cause, redact)
  }))
  redactingLoggers.add(wrapped)
  return wrapped
}

const redactingTracers = new WeakSet<Tracer.Tracer>()

/**
 * Marks span options whose span name and attributes are redacted already
 * (the agent's own spans: their strings went through the run's `Secrets`
 * once, when the run or call began). A redacting tracer neither redacts
 * such a name again nor, through {@link setRedactedAttribute}, such an
 * attribute's key and value: a second pass is a pattern scan per string, a dozen spans per
 * turn. Attributes set through `span.attribute` are still redacted.
 *
 * @internal
 */
export const preRedacted: unique symbol = Symbol.for("jeevesagent/Secrets/preRedacted") as never

/** Span options carrying {@link preRedacted}. @internal */
export type PreRedactedOptions = Tracer.SpanOptions & { readonly [preRedacted]?: true }

/** The span's own `attribute`, before a redacting tracer patched it. */
const rawAttribute = Symbol.for("jeevesagent/Secrets/rawAttribute")

/**
 * `span.attribute(key, value)` for a key and value redacted already (or
 * known to hold no secret): not redacted again when a redacting tracer
 * made the span.
 *
 * @internal
 */
export const setRedactedAttribute = (span: Tracer.Span, key: string, value: unknown): void => {
  const raw = (span as Partial<Patched>)[rawAttribute]
  if (raw === undefined) span.attribute(key, value)
  else raw.call(span, key, value)
}
/**
 * Marks a span already patched, and holds the `redact` it was patched
 * with. A property on the span rather than a `WeakSet`: a dozen spans per
 * agent turn would each cost the collector an ephemeron entry.
 */
const patched = Symbol.for("jeevesagent/Secrets/redactingSpan")

/** The span's own `event`, `end` and `addLinks`, before a redacting tracer patched them. */
const rawEvent = Symbol.for("jeevesagent/Secrets/rawEvent")
const rawEnd = Symbol.for("jeevesagent/Secrets/rawEnd")
const rawAddLinks = Symbol.for("jeevesagent/Secrets/rawAddLinks")

/**
 * A patched span: its own methods kept under symbols and its `redact`
 * under {@link patched}, so the patched methods are four functions shared
 * by every span (called as methods) rather than four closures per span.
 */
type Patched = Tracer.Span & {
  [patched]: Redact
  [rawAttribute]: Tracer.Span["attribute"]
  [rawEvent]: Tracer.Span["event"]
  [rawEnd]: Tracer.Span["end"]
  [rawAddLinks]: Tracer.Span["addLinks"]
}

/**
 * Links with their attribute keys and values redacted (the linked span is
 * kept: ids only). No links, the usual case, costs nothing.
 */
const redactLinks = (links: ReadonlyArray<Tracer.SpanLink>, redact: Redact): ReadonlyArray<Tracer.SpanLink> =>
  links.length === 0 ? links : links.map((link) => ({ ...link, attributes: redactDeep(link.attributes, redact) }))

function redactedAttribute(this: Patched, key: string, value: unknown): void {
  const redact = this[patched]
  this[rawAttribute].call(this, redact(key), redactDeep(value, redact))
}

function redactedAddLinks(this: Patched, links: ReadonlyArray<Tracer.SpanLink>): void {
  this[rawAddLinks].call(this, redactLinks(links, this[patched]))
}

function redactedEvent(this: Patched, name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
  const redact = this[patched]
  this[rawEvent].call(this, redact(name), startTime, attributes === undefined ? undefined : redactDeep(attributes, redact))
}

function redactedEnd(this: Patched, endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
  this[rawEnd].call(this, endTime, Exit.isFailure(exit) ? Exit.failCause(redactCause(exit.cause, this[patched])) : exit)
}

/**
 * Wraps a tracer so span names, attribute keys and values, event names and
 * attributes, link attributes (given at the start or through `addLinks`,
 * as `Effect.linkSpanCurrent` does) and the failure a span ends with pass
 * through `redact`. The spans are the inner
 * tracer's own objects (patched, not proxied), so exporters that inspect
 * parent spans keep working. Wrapping a wrapped tracer returns it unchanged.
 *
 * @internal
 */
export const redactingTracer = (tracer: Tracer.Tracer, redact: Redact): Tracer.Tracer => {
  if (redactingTracers.has(tracer)) return tracer
  const wrapped = Tracer.make({
    context: (f, fiber) => tracer.context(f, fiber),
    span: (name, parent, context, links, startTime, kind, options) => {
      const trusted = (options as PreRedactedOptions | undefined)?.[preRedacted] === true
      const span = tracer.span(
        trusted ? name : redact(name),
        parent,
        context,
        redactLinks(links, redact),
        startTime,
        kind,
        options
      )
      // A tracer may hand out one shared (no-op) span: patch it once, not once per call.
      const marked = span as Patched
      if (marked[patched] !== undefined) return span
      marked[patched] = redact
      marked[rawAttribute] = span.attribute
      marked[rawEvent] = span.event
      marked[rawEnd] = span.end
      span.attribute = redactedAttribute
      span.event = redactedEvent
      span.end = redactedEnd
      // Spans from tracers written before `addLinks` existed may lack it.
      if (typeof span.addLinks === "function") {
        marked[rawAddLinks] = span.addLinks
        span.addLinks = redactedAddLinks
      }
      return span
    }
  })
  redactingTracers.add(wrapped)
  // It hands every span to `tracer`: it drops the children of an unsampled parent if `tracer` does.
  return withSamplingOf(tracer, wrapped)
}
