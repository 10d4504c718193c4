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
import * as unicode from "./unicode.js"

/** A JSON value as stored in an audit entry. @internal */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** A character `JSON.stringify` escapes: a quote, a backslash, a control character, a surrogate. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/

/**
 * `JSON.stringify` of a string, without the call for the common string that
 * needs no escape (it writes those as they are, between quotes).
 *
 * @internal
 */
export const quote = (text: string): string => NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`

/**
 * Sorts names in place by UTF-16 code units, as the default `sort` does. A
 * payload object has a handful of members: an insertion sort of those
 * allocates nothing (the built-in sort copies the array first).
 */
const sortKeys = (keys: Array<string>): void => {
  if (keys.length > 16) {
    keys.sort()
    return
  }
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i]!
    let j = i - 1
    while (j >= 0 && keys[j]! > key) {
      keys[j + 1] = keys[j]!
      j--
    }
    keys[j + 1] = key
  }
}

/** `value`, or its masked text when `redact` masks its digits. */
const maskedNumber = (value: number, redact: (text: string) => string): Json => {
  const text = String(value)
  const masked = redact(text)
  return masked === text ? value : masked
}

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
      return quote(value)
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`JCS: ${value} is not a JSON number`)
      // What JSON.stringify writes for a finite number (-0 as "0", as JCS requires).
      return String(value)
    case "boolean":
      return value ? "true" : "false"
    case "object": {
      if (value === null) return "null"
      if (Array.isArray(value)) {
        let out = "["
        for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ",") + canonicalize(value[i])
        return `${out}]`
      }
      const record = value as Record<string, unknown>
      const keys = Object.keys(record)
      sortKeys(keys)
      let out = "{"
      let first = true
      for (const key of keys) {
        const member = record[key]
        if (member === undefined) continue
        out += (first ? "" : ",") + quote(key) + ":" + canonicalize(member)
        first = false
      }
      return `${out}}`
    }
    default:
      throw new TypeError(`JCS: a ${typeof value} is not a JSON value`)
  }
}

/**
 * Lone surrogates become U+FFFD: they are not I-JSON (RFC 7493), and other
 * languages' verifiers would decode them as U+FFFD and compute a different
 * signature.
 *
 * @internal
 */
export const wellFormed: (text: string) => string = unicode.wellFormed

const MAX_DEPTH = 64

/**
 * Converts `value` into a JSON value the way `JSON.stringify` would (`toJSON`,
 * dropped `undefined` / functions / symbols, non-finite numbers as `null`),
 * but never throws: a bigint becomes its decimal string, a cycle
 * `"[Circular]"`, nesting deeper than 64 `"[Truncated]"`, and a value that
 * throws when read (a throwing `toJSON` or getter, a revoked Proxy)
 * `"[Unserializable]"`. Every string, object keys included, passes through
 * `redact`.
 *
 * @internal
 */
export const toJson = (value: unknown, redact: (text: string) => string): Json =>
  convert(value, 0, redact, []) ?? null

/** A member, or a marker when reading it throws (a getter, a Proxy trap). */
const UNREADABLE: unique symbol = Symbol("unreadable")

const read = (object: object, key: string | number): unknown => {
  try {
    return (object as Record<string | number, unknown>)[key]
  } catch {
    return UNREADABLE
  }
}

/** `ancestors` is the path from the root: at most 64 objects, so a linear search is cheap. */
const convert = (
  input: unknown,
  depth: number,
  redact: (text: string) => string,
  ancestors: Array<object>
): Json | undefined => {
  let current = input
  if (current !== null && typeof current === "object") {
    try {
      const toJSON = (current as { toJSON?: unknown }).toJSON
      if (typeof toJSON === "function") current = toJSON.call(current)
      // Boxed primitives are their values, as JSON.stringify has them (`new Number(5)` is 5, not {}).
      if (current instanceof Number) current = Number(current)
      else if (current instanceof String) current = String(current)
      else if (current instanceof Boolean || current instanceof BigInt) current = current.valueOf()
    } catch {
      return "[Unserializable]"
    }
  }
  switch (typeof current) {
    case "string":
      return redact(wellFormed(current))
    case "number":
      if (!Number.isFinite(current)) return null
      // A secret of digits (a PIN, a code) passed as a number: masked as its text would be.
      return Number.isInteger(current) && Math.abs(current) >= 100_000 ? maskedNumber(current, redact) : current
    case "boolean":
      return current
    case "bigint":
      return redact(current.toString())
    case "undefined":
    case "function":
      return undefined
    case "symbol":
      return current === UNREADABLE ? "[Unserializable]" : undefined
  }
  if (current === null) return null
  const object = current as object
  if (ancestors.includes(object)) return "[Circular]"
  if (depth >= MAX_DEPTH) return "[Truncated]"
  ancestors.push(object)
  try {
    let keys: Array<string>
    try {
      if (Array.isArray(object)) {
        const out: Array<Json> = new Array(object.length)
        for (let i = 0; i < object.length; i++) out[i] = convert(read(object, i), depth + 1, redact, ancestors) ?? null
        return out
      }
      keys = Object.keys(object)
    } catch {
      // A revoked Proxy: even asking what it is throws.
      return "[Unserializable]"
    }
    const out: Record<string, Json> = {}
    for (const key of keys) {
      const member = convert(read(object, key), depth + 1, redact, ancestors)
      if (member === undefined) continue
      const name = redact(wellFormed(key))
      // An own "__proto__" member (JSON.parse makes one) stays a member, never the prototype.
      if (name === "__proto__") Object.defineProperty(out, name, { value: member, enumerable: true, writable: true, configurable: true })
      else out[name] = member
    }
    return out
  } finally {
    ancestors.pop()
  }
}
