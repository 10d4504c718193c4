/**
 * RFC 8785 JSON Canonicalization (JCS) and the conversion of arbitrary
 * payloads into the JSON values JCS accepts.
 *
 * JCS serializes strings and numbers exactly as ECMAScript's `JSON.stringify`
 * does, and orders object members by the UTF-16 code units of their names —
 * which is what `Array.prototype.sort` does by default.
 *
 * @internal
 */

/** A JSON value as stored in an audit entry. @internal */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/**
 * The canonical form of a JSON value. Throws on values JSON cannot hold
 * (non-finite numbers, `undefined`, functions, bigint): callers pass values
 * produced by {@link toJson} or by `JSON.parse`.
 *
 * @internal
 */
export const canonicalize = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value)
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`JCS: ${value} is not a JSON number`)
      // JSON.stringify writes -0 as "0", as JCS requires.
      return JSON.stringify(value)
    case "boolean":
      return value ? "true" : "false"
    case "object": {
      if (value === null) return "null"
      if (Array.isArray(value)) return `[${value.map(canonicalize).join(",")}]`
      const record = value as Record<string, unknown>
      const keys = Object.keys(record).sort()
      let out = "{"
      let first = true
      for (const key of keys) {
        const member = record[key]
        if (member === undefined) continue
        out += `${first ? "" : ","}${JSON.stringify(key)}:${canonicalize(member)}`
        first = false
      }
      return `${out}}`
    }
    default:
      throw new TypeError(`JCS: a ${typeof value} is not a JSON value`)
  }
}

// Lone surrogates are not I-JSON (RFC 7493); other languages' verifiers would
// decode them as U+FFFD and compute a different signature.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

const MAX_DEPTH = 64

/**
 * Converts `value` into a JSON value the way `JSON.stringify` would (`toJSON`,
 * dropped `undefined` / functions / symbols, non-finite numbers as `null`),
 * but never throws: a bigint becomes its decimal string, a cycle
 * `"[Circular]"`, nesting deeper than 64 `"[Truncated]"`. Every string,
 * object keys included, passes through `redact`.
 *
 * @internal
 */
export const toJson = (value: unknown, redact: (text: string) => string): Json => {
  const ancestors = new Set<object>()
  const text = (s: string) => redact(s.replace(LONE_SURROGATE, "\uFFFD"))
  const convert = (input: unknown, depth: number): Json | undefined => {
    let current = input
    if (current !== null && typeof current === "object" && typeof (current as { toJSON?: unknown }).toJSON === "function") {
      try {
        current = (current as { toJSON: () => unknown }).toJSON()
      } catch {
        return "[Unserializable]"
      }
    }
    switch (typeof current) {
      case "string":
        return text(current)
      case "number":
        return Number.isFinite(current) ? current : null
      case "boolean":
        return current
      case "bigint":
        return current.toString()
      case "undefined":
      case "function":
      case "symbol":
        return undefined
    }
    if (current === null) return null
    const object = current as object
    if (ancestors.has(object)) return "[Circular]"
    if (depth >= MAX_DEPTH) return "[Truncated]"
    ancestors.add(object)
    try {
      if (Array.isArray(object)) {
        return object.map((item) => convert(item, depth + 1) ?? null)
      }
      const out: Record<string, Json> = {}
      for (const key of Object.keys(object)) {
        const member = convert((object as Record<string, unknown>)[key], depth + 1)
        if (member !== undefined) out[text(key)] = member
      }
      return out
    } finally {
      ancestors.delete(object)
    }
  }
  return convert(value, 0) ?? null
}
