/** JSON with bigints as their decimal digits (a driver's row count, say), which `JSON.stringify` refuses. */
const bigintsAsText = (_key: string, value: unknown): unknown => (typeof value === "bigint" ? value.toString() : value)

/** `String(value)`, or the object's tag when even that throws (a null-prototype object has no `toString`). */
const asString = (value: unknown): string => {
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

const stringify = (value: unknown): string => {
  if (typeof value === "string") return value
  if (value === undefined || value === null) return ""
  try {
    return JSON.stringify(value) ?? asString(value)
  } catch {
    // A bigint inside (the first attempt is the plain one: it is the common case), or a cycle.
    try {
      return JSON.stringify(value, bigintsAsText) ?? asString(value)
    } catch {
      return asString(value)
    }
  }
}

/**
 * A tool result as text: a string as is, nothing as "", anything else as
 * JSON (bigints as their digits), or as `String(value)` when it is not JSON.
 * Never throws.
 *
 * @internal
 */
export const stringifyOutput = stringify

/** The fields of an error without a message of its own (a `Data.TaggedError`'s), as JSON; "" when none. */
const fieldsOf = (error: object): string => {
  const fields: Record<string, unknown> = {}
  let any = false
  for (const key of Object.keys(error)) {
    if (key === "_tag" || key === "stack" || key === "cause" || key === "message" || key === "name") continue
    fields[key] = (error as Record<string, unknown>)[key]
    any = true
  }
  return any ? stringify(fields) : ""
}

/** An error that says nothing by its message: its tag (or class name) and its fields. */
const describeUnnamed = (error: object): string => {
  const tag = (error as { _tag?: unknown })._tag
  const name = typeof tag === "string" && tag !== "" ?
    tag :
    error instanceof Error && error.name !== "" ? error.name : "unknown error"
  const fields = fieldsOf(error)
  return fields === "" || fields === "{}" ? name : `${name}: ${fields}`
}

/**
 * A readable message for whatever a user callback (tool, hook, approval
 * handler) failed or died with; never empty (an error without a message, a
 * `Data.TaggedError` say, is described by its tag and fields), never throws.
 *
 * @internal
 */
export const describeFailure = (error: unknown): string => {
  if (typeof error === "string") return error === "" ? "unknown error" : error
  if (error === undefined || error === null) return "unknown error"
  if (typeof error === "object") {
    try {
      const message = (error as { message?: unknown }).message
      if (typeof message === "string" && message !== "") return message
      if (error instanceof Error || typeof message === "string" || "_tag" in error) return describeUnnamed(error)
    } catch {
      // A getter that throws, a revoked Proxy: described below as far as possible.
    }
  }
  const text = stringify(error)
  return text === "" ? "unknown error" : text
}
