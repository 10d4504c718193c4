const stringify = (value: unknown): string => {
  if (typeof value === "string") return value
  if (value === undefined || value === null) return ""
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * A tool result as text: a string as is, nothing as "", anything else as JSON.
 *
 * @internal
 */
export const stringifyOutput = stringify

/**
 * A readable message for whatever a user callback (tool, hook, approval
 * handler) failed or died with.
 *
 * @internal
 */
export const describeFailure = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "string") return error
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
    return error.message
  }
  return stringify(error)
}
