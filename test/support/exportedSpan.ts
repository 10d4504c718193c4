/**
 * What an exporter sends of a span, for tests that check nothing in it
 * leaks (a raw user id, a secret).
 */
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"

/** Everything an exporter sends of a span that could carry text. */
export const exported = (span: ReadableSpan) =>
  JSON.stringify({
    name: span.name,
    attributes: span.attributes,
    events: span.events.map((event) => ({ name: event.name, attributes: event.attributes })),
    status: span.status,
    links: span.links.map((link) => link.attributes)
  })
