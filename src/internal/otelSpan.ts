/**
 * The OpenTelemetry side of a span made by the lean tracer (`otelTracer.ts`):
 * what the SDK's span processors and exporters get. It behaves as the SDK's
 * own `SpanImpl` (sdk-trace 2.x) does — the same attribute validation,
 * limits, truncation, event and link limits, status rules, `diag` messages
 * and processor calls — with fewer fields and no work an exporter never
 * asks for (the duration is computed when read, the event and link lists
 * are made when first read or added to).
 *
 * @internal
 */
import {
  type Attributes,
  type AttributeValue,
  diag,
  type Exception,
  type HrTime,
  type Link,
  type Span,
  type SpanContext,
  type SpanKind,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput
} from "@opentelemetry/api"
import type { ReadableSpan, SpanLimits, SpanProcessor, TimedEvent } from "@opentelemetry/sdk-trace-base"
import * as Inspectable from "effect/Inspectable"

/**
 * What every span of one tracer shares.
 *
 * @internal
 */
export interface Shared {
  readonly resource: ReadableSpan["resource"]
  readonly scope: ReadableSpan["instrumentationScope"]
  readonly limits: SpanLimits
  /** Every processor, in the provider's order: `onEnding` (where defined) and `onEnd` go to all. */
  readonly processors: ReadonlyArray<SpanProcessor>
}

const MILLIS_TO_NANOS = 1_000_000
const SECOND_TO_NANOS = 1_000_000_000

const millisToHrTime = (epochMillis: number): HrTime => {
  const epochSeconds = epochMillis / 1000
  return [Math.trunc(epochSeconds), Math.round((epochMillis % 1000) * MILLIS_TO_NANOS)]
}

const addHrTimes = (a: HrTime, b: HrTime): HrTime => {
  const out: HrTime = [a[0] + b[0], a[1] + b[1]]
  if (out[1] >= SECOND_TO_NANOS) {
    out[1] -= SECOND_TO_NANOS
    out[0] += 1
  }
  return out
}

const hrTimeDuration = (start: HrTime, end: HrTime): HrTime => {
  let seconds = end[0] - start[0]
  let nanos = end[1] - start[1]
  if (nanos < 0) {
    seconds -= 1
    nanos += SECOND_TO_NANOS
  }
  return [seconds, nanos]
}

/** Whether `a` is earlier than `b` (the SDK's negative `hrTimeDuration(b, a)`), without making the duration. */
const isBefore = (a: HrTime, b: HrTime): boolean => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1])

const isHrTime = (value: unknown): value is HrTime =>
  Array.isArray(value) && value.length === 2 && typeof value[0] === "number" && typeof value[1] === "number"

const isTimeInput = (value: unknown): value is TimeInput =>
  isHrTime(value) || typeof value === "number" || value instanceof Date

const isPrimitiveAttributeType = (type: string): boolean => type === "string" || type === "number" || type === "boolean"

/** `@opentelemetry/core`'s `isAttributeValue` (that package is not ours to import). @internal */
export const isAttributeValue = (value: unknown): value is AttributeValue => {
  if (value == null) return true
  if (!Array.isArray(value)) return isPrimitiveAttributeType(typeof value)
  let type: string | undefined
  for (const element of value) {
    if (element == null) continue
    const elementType = typeof element
    if (elementType === type) continue
    if (type === undefined && isPrimitiveAttributeType(elementType)) {
      type = elementType
      continue
    }
    return false
  }
  return true
}

/** `@opentelemetry/core`'s `sanitizeAttributes`: invalid keys and values dropped with its warnings, arrays copied. @internal */
export const sanitizeAttributes = (attributes: unknown): Attributes => {
  const out: Attributes = {}
  if (typeof attributes !== "object" || attributes == null) return out
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue
    if (key === "") {
      diag.warn(`Invalid attribute key: ${key}`)
      continue
    }
    const value = (attributes as Record<string, unknown>)[key]
    if (!isAttributeValue(value)) {
      diag.warn(`Invalid attribute value set for key: ${key}`)
      continue
    }
    out[key] = Array.isArray(value) ? value.slice() : value
  }
  return out
}

/**
 * An effect attribute value as `@effect/opentelemetry` hands it to the SDK:
 * strings, numbers and booleans as they are, a bigint as its digits,
 * anything else as its JSON-like text.
 *
 * @internal
 */
export const attributeValue = (value: unknown): string | number | boolean => {
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return value
  if (typeof value === "bigint") return value.toString()
  return Inspectable.toStringUnknown(value)
}

// Shared until a span replaces them; frozen so that a processor writing into one cannot reach other spans.
const NOT_ENDED: HrTime = Object.freeze([0, 0]) as unknown as HrTime
const NO_DURATION: HrTime = Object.freeze([-1, -1]) as unknown as HrTime
const UNSET: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET })
const OK: SpanStatus = Object.freeze({ code: SpanStatusCode.OK })

/**
 * A span as the SDK's processors and exporters see it (`ReadableSpan`) and
 * as OpenTelemetry code sees it (the API's `Span`). The tracer hands it to
 * the processors' `onStart` once its links and first attributes are set.
 *
 * @internal
 */
export class RecordedSpan implements Span, ReadableSpan {
  endTime: HrTime = NOT_ENDED
  status: SpanStatus = UNSET
  readonly attributes: Attributes = {}
  droppedAttributesCount = 0
  droppedEventsCount = 0
  droppedLinksCount = 0
  ended = false
  /** Present (as `undefined`) on a root span too, as on the SDK's: one shape for every span. */
  readonly parentSpanContext?: SpanContext
  private attributeCount = 0
  /** {@link events} once made: most spans have none, and most of those are never asked for theirs. */
  private eventList: Array<TimedEvent> | undefined = undefined
  /** {@link links} once made. */
  private linkList: Array<Link> | undefined = undefined

  constructor(
    private readonly shared: Shared,
    public name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    parentSpanContext: SpanContext | undefined,
    readonly startTime: HrTime
  ) {
    ;(this as { parentSpanContext: SpanContext | undefined }).parentSpanContext = parentSpanContext
  }

  get resource(): ReadableSpan["resource"] {
    return this.shared.resource
  }

  get instrumentationScope(): ReadableSpan["instrumentationScope"] {
    return this.shared.scope
  }

  /** Known from `end()` on, as the SDK's: processors' `onEnding` read it before the span counts as ended. */
  get duration(): HrTime {
    return this.endTime === NOT_ENDED ? NO_DURATION : hrTimeDuration(this.startTime, this.endTime)
  }

  /**
   * The span's events, an ordinary array of its own as on the SDK's span
   * (a processor may push to it, splice or sort it), made when first read
   * and kept.
   */
  get events(): Array<TimedEvent> {
    return this.eventList ??= []
  }

  set events(events: Array<TimedEvent>) {
    this.eventList = events
  }

  /** The span's links, made when first read and kept, as {@link events}. */
  get links(): Array<Link> {
    return this.linkList ??= []
  }

  set links(links: Array<Link>) {
    this.linkList = links
  }

  spanContext(): SpanContext {
    return this.context
  }

  isRecording(): boolean {
    return !this.ended
  }

  setAttribute(key: string, value?: AttributeValue): this {
    if (value == null || this.isEnded()) return this
    if (key.length === 0) {
      diag.warn(`Invalid attribute key: ${key}`)
      return this
    }
    if (!isAttributeValue(value)) {
      diag.warn(`Invalid attribute value set for key: ${key}`)
      return this
    }
    this.putAttribute(key, value)
    return this
  }

  /** `setAttribute(key, attributeValue(value))`, without validating the converted value again. */
  setEffectAttribute(key: string, value: unknown): void {
    if (this.isEnded()) return
    if (key.length === 0) {
      diag.warn(`Invalid attribute key: ${key}`)
      return
    }
    this.putAttribute(key, attributeValue(value))
  }

  setAttributes(attributes: Attributes): this {
    for (const key in attributes) {
      if (Object.prototype.hasOwnProperty.call(attributes, key)) this.setAttribute(key, attributes[key])
    }
    return this
  }

  addEvent(name: string, attributesOrStartTime?: Attributes | TimeInput, timeStamp?: TimeInput): this {
    if (this.isEnded() || !this.makeRoomForEvent()) return this
    let attributes: unknown = attributesOrStartTime
    if (isTimeInput(attributesOrStartTime)) {
      if (!isTimeInput(timeStamp)) timeStamp = attributesOrStartTime
      attributes = undefined
    }
    this.pushEvent(name, sanitizeAttributes(attributes), this.time(timeStamp))
    return this
  }

  /**
   * `addEvent(name, attributes && recordToAttributes(attributes), time)` as
   * `@effect/opentelemetry` calls it, without the two intermediate copies
   * of the attributes (converted, then sanitised).
   */
  addEffectEvent(name: string, attributes: Record<string, unknown> | undefined, time: HrTime): void {
    if (this.isEnded() || !this.makeRoomForEvent()) return
    const limit = this.shared.limits.attributePerEventCountLimit
    const kept: Attributes = {}
    let count = 0
    let droppedAttributesCount = 0
    if (attributes !== undefined) {
      for (const key of Object.keys(attributes)) {
        if (key === "") {
          diag.warn(`Invalid attribute key: ${key}`)
          continue
        }
        if (limit !== undefined && count >= limit) {
          droppedAttributesCount++
          continue
        }
        kept[key] = this.truncated(attributeValue(attributes[key]))
        count++
      }
    }
    this.events.push({ name, attributes: kept, time, droppedAttributesCount })
  }

  addLink(link: Link): this {
    if (this.isEnded()) return this
    const { linkCountLimit } = this.shared.limits
    if (linkCountLimit === 0) {
      this.droppedLinksCount++
      return this
    }
    if (linkCountLimit !== undefined && this.links.length >= linkCountLimit) {
      if (this.droppedLinksCount === 0) diag.debug("Dropping extra links.")
      this.links.shift()
      this.droppedLinksCount++
    }
    const [attributes, count, dropped] = this.limitedCopy(
      sanitizeAttributes(link.attributes),
      this.shared.limits.attributePerLinkCountLimit
    )
    const processed: Link = { context: link.context }
    if (count > 0) processed.attributes = attributes
    if (dropped > 0) processed.droppedAttributesCount = dropped
    this.links.push(processed)
    return this
  }

  addLinks(links: Array<Link>): this {
    for (const link of links) this.addLink(link)
    return this
  }

  setStatus(status: SpanStatus): this {
    if (this.isEnded()) return this
    if (status.code === SpanStatusCode.UNSET) return this
    if (this.status.code === SpanStatusCode.OK) return this
    if (status.code === SpanStatusCode.OK) {
      this.status = OK
      return this
    }
    const next: SpanStatus = { code: status.code }
    if (status.code === SpanStatusCode.ERROR) {
      if (typeof status.message === "string") next.message = status.message
      else if (status.message != null) {
        diag.warn(`Dropping invalid status.message of type '${typeof status.message}', expected 'string'`)
      }
    }
    this.status = next
    return this
  }

  updateName(name: string): this {
    if (this.isEnded()) return this
    this.name = name
    return this
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {}
    if (typeof exception === "string") {
      attributes["exception.message"] = exception
    } else if (exception) {
      if (exception.code) attributes["exception.type"] = exception.code.toString()
      else if (exception.name) attributes["exception.type"] = exception.name
      if (exception.message) attributes["exception.message"] = exception.message
      if (exception.stack) attributes["exception.stacktrace"] = exception.stack
    }
    if (attributes["exception.type"] || attributes["exception.message"]) {
      this.addEvent("exception", attributes, time)
    } else {
      diag.warn(`Failed to record an exception ${exception}`)
    }
  }

  end(endTime?: TimeInput): void {
    if (this.isEnded()) {
      diag.error(`${this.name} ${this.context.traceId}-${this.context.spanId} - You can only call end() on a span once.`)
      return
    }
    this.endTime = this.time(endTime)
    if (isBefore(this.endTime, this.startTime)) {
      diag.warn(
        "Inconsistent start and end time, startTime > endTime. Setting span duration to 0ms.",
        this.startTime,
        this.endTime
      )
      this.endTime = this.startTime.slice() as HrTime
    }
    if (this.droppedEventsCount > 0) diag.warn(`Dropped ${this.droppedEventsCount} events because eventCountLimit reached`)
    if (this.droppedLinksCount > 0) diag.warn(`Dropped ${this.droppedLinksCount} links because linkCountLimit reached`)
    const processors = this.shared.processors
    for (let i = 0; i < processors.length; i++) processors[i]!.onEnding?.(this)
    this.ended = true
    for (let i = 0; i < processors.length; i++) processors[i]!.onEnd(this)
  }

  /** Whether the span has ended, with the SDK's warning when it has (every mutator checks this first). */
  private isEnded(): boolean {
    if (this.ended) {
      const { spanId, traceId } = this.context
      const error = new Error(`Operation attempted on ended Span {traceId: ${traceId}, spanId: ${spanId}}`)
      diag.warn(`Cannot execute the operation on ended Span {traceId: ${traceId}, spanId: ${spanId}}`, error)
    }
    return this.ended
  }

  private putAttribute(key: string, value: AttributeValue): void {
    const { attributeCountLimit } = this.shared.limits
    const isNewKey = !Object.prototype.hasOwnProperty.call(this.attributes, key)
    if (attributeCountLimit !== undefined && this.attributeCount >= attributeCountLimit && isNewKey) {
      this.droppedAttributesCount++
      return
    }
    this.attributes[key] = this.truncated(value)
    if (isNewKey) this.attributeCount++
  }

  /** Makes room for one more event under `eventCountLimit`; `false` when no event may be kept at all. */
  private makeRoomForEvent(): boolean {
    const { eventCountLimit } = this.shared.limits
    if (eventCountLimit === 0) {
      diag.warn("No events allowed.")
      this.droppedEventsCount++
      return false
    }
    if (eventCountLimit !== undefined && this.events.length >= eventCountLimit) {
      if (this.droppedEventsCount === 0) diag.debug("Dropping extra events.")
      this.events.shift()
      this.droppedEventsCount++
    }
    return true
  }

  private pushEvent(name: string, sanitized: Attributes | undefined, time: HrTime): void {
    const [attributes, , droppedAttributesCount] = this.limitedCopy(
      sanitized,
      this.shared.limits.attributePerEventCountLimit
    )
    this.events.push({ name, attributes, time, droppedAttributesCount })
  }

  /** The first `limit` attributes, truncated; with how many were kept and dropped. */
  private limitedCopy(attributes: Attributes | undefined, limit: number | undefined): [Attributes, number, number] {
    const out: Attributes = {}
    let kept = 0
    let dropped = 0
    for (const key in attributes) {
      if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue
      if (limit !== undefined && kept >= limit) {
        dropped++
        continue
      }
      out[key] = this.truncated(attributes[key]!)
      kept++
    }
    return [out, kept, dropped]
  }

  private truncated(value: AttributeValue): AttributeValue {
    const limit = this.shared.limits.attributeValueLengthLimit ?? 0
    if (limit <= 0) {
      diag.warn(`Attribute value limit must be positive, got ${limit}`)
      return value
    }
    if (typeof value === "string") return value.length <= limit ? value : value.substring(0, limit)
    if (Array.isArray(value)) {
      return (value as Array<unknown>).map((item) =>
        typeof item === "string" && item.length > limit ? item.substring(0, limit) : item
      ) as AttributeValue
    }
    return value
  }

  /**
   * The SDK's `_getTime`. A span here always has a start time given, so no
   * time means now by `Date.now()`; a number no later than
   * `performance.now()` is a performance timestamp, moved onto the epoch by
   * the offset between the two clocks (read now, not at the span's start as
   * the SDK does: the clocks drift apart by far less than a millisecond in
   * a span's life).
   */
  private time(input: TimeInput | undefined): HrTime {
    if (typeof input === "number") {
      const now = performance.now()
      if (input > now) return millisToHrTime(input)
      const offset = Date.now() - (now + performance.timeOrigin)
      return addHrTimes(millisToHrTime(performance.timeOrigin), millisToHrTime(input + offset))
    }
    if (input instanceof Date) return millisToHrTime(input.getTime())
    if (isHrTime(input)) return input
    return millisToHrTime(Date.now())
  }
}
