import { ToolDenied } from "../Approval.js"

/**
 * A `ToolDenied` made by the library's own gates. A denial is an outcome,
 * not a bug: it gets no stack trace (capturing one through the fiber's
 * frames costs about three times the rest of the decision) and its fields,
 * which the library wrote, are not validated again.
 *
 * @internal
 */
export const denial = (fields: { readonly tool: string; readonly reason: string; readonly policyReason?: string }): ToolDenied => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new ToolDenied(fields, true)
  } finally {
    Error.stackTraceLimit = limit
  }
}
