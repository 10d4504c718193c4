/**
 * The fiber-local context of one agent run: who the run is for, which session
 * it continues, and its id.
 *
 * `Agent.run` installs it; every service, tool and hook reads the current
 * user from it. Forked fibers (parallel tool calls) inherit it, and it is
 * only ever changed with `Effect.locally`, so nothing leaks between runs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RunContext } from "jeevesagent"
 *
 * const whoAmI = Effect.map(RunContext.current, (ctx) => ctx.userId ?? "anonymous")
 *
 * // "alice"
 * Effect.runSync(whoAmI.pipe(RunContext.withUser("alice"), Effect.orDie))
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"
import * as Schema from "effect/Schema"
import { newId } from "./internal/ids.js"
import { locally as installLocally } from "./internal/locally.js"

/**
 * The reserved id of the anonymous bucket. Storage backends write it where a
 * run has no user; it can never be used as a real user id.
 *
 * @since 0.1.0
 * @category constants
 */
export const ANONYMOUS_USER = "__jeeves_anon_user__" as const

/**
 * The longest user id accepted, in UTF-16 code units.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_USER_ID_LENGTH = 256

/**
 * The context of one run.
 *
 * `userId` is `null` for an anonymous run.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunContext {
  readonly userId: string | null
  readonly sessionId: string
  readonly runId: string
  readonly metadata: Readonly<Record<string, unknown>>
}

/**
 * The rule a rejected user id broke.
 *
 * @since 0.1.0
 * @category models
 */
export type UserIdRule = "not_a_string" | "empty" | "too_long" | "control_characters" | "lone_surrogate" | "reserved"

/**
 * A user id was rejected. `rule` names the rule it broke. For an id that is
 * not a string (`not_a_string`, a JavaScript caller's number, say), `userId`
 * shows it as text.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidUserId extends Schema.TaggedError<InvalidUserId>("jeevesagent/InvalidUserId")(
  "InvalidUserId",
  {
    rule: Schema.Literal("not_a_string", "empty", "too_long", "control_characters", "lone_surrogate", "reserved"),
    userId: Schema.String
  }
) {
  override get message(): string {
    switch (this.rule) {
      case "not_a_string":
        return `Invalid user id ${this.userId}: user ids are strings (pass String(id) for a numeric id)`
      case "empty":
        return "Invalid user id: it is empty (omit the user id for an anonymous run)"
      case "too_long":
        return `Invalid user id: it is ${this.userId.length} characters long; the limit is ${MAX_USER_ID_LENGTH}`
      case "control_characters":
        return `Invalid user id ${JSON.stringify(this.userId.slice(0, 64))}: it contains control characters`
      case "lone_surrogate":
        return `Invalid user id ${
          JSON.stringify(this.userId.slice(0, 64))
        }: it contains a lone surrogate (not well-formed Unicode, so stores that encode it as UTF-8 would merge it with another id)`
      case "reserved":
        return `Invalid user id: ${JSON.stringify(ANONYMOUS_USER)} is reserved for the anonymous bucket`
    }
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

/**
 * Returns the rule `userId` breaks, or `undefined` when it is a valid id.
 *
 * @since 0.1.0
 * @category validation
 */
export const checkUserId = (userId: string): UserIdRule | undefined => {
  if (typeof userId !== "string") return "not_a_string"
  if (userId.length === 0) return "empty"
  if (userId.length > MAX_USER_ID_LENGTH) return "too_long"
  if (CONTROL_CHARACTERS.test(userId)) return "control_characters"
  if (!(userId as unknown as { isWellFormed(): boolean }).isWellFormed()) return "lone_surrogate"
  if (userId === ANONYMOUS_USER) return "reserved"
  return undefined
}

/**
 * Validates a user id. `undefined` and `null` mean anonymous and succeed with
 * `null`.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateUserId = (userId: string | null | undefined): Effect.Effect<string | null, InvalidUserId> => {
  if (userId === undefined || userId === null) return Effect.succeed(null)
  const rule = checkUserId(userId)
  return rule === undefined ? Effect.succeed(userId) : Effect.fail(invalidUserId(rule, userId))
}

/**
 * The error for `userId`, which broke `rule`; an id that is not a string is
 * shown as text (a number as is, anything else by its type).
 *
 * @internal
 */
export const invalidUserId = (rule: UserIdRule, userId: unknown): InvalidUserId =>
  new InvalidUserId({
    rule,
    userId: typeof userId === "string" ?
      userId :
      typeof userId === "number" || typeof userId === "bigint" || typeof userId === "boolean" ?
      `${String(userId)} (a ${typeof userId})` :
      `(a value of type ${userId === null ? "null" : typeof userId})`
  })

/**
 * The storage key of a user: the id itself, or {@link ANONYMOUS_USER} for the
 * anonymous bucket. Valid ids can never collide with the sentinel.
 *
 * @since 0.1.0
 * @category utils
 */
export const userKey = (userId: string | null): string => userId ?? ANONYMOUS_USER

/**
 * The context outside of any run: anonymous, with empty ids.
 *
 * @since 0.1.0
 * @category constants
 */
export const empty: RunContext = Object.freeze({ userId: null, sessionId: "", runId: "", metadata: Object.freeze({}) })

/**
 * The FiberRef holding the current {@link RunContext}. Change it only with
 * `Effect.locally` (or {@link withUser} / {@link locally}): `FiberRef.set` in a
 * forked fiber leaks into its parent on join.
 *
 * @since 0.1.0
 * @category fiber refs
 */
export const ref: FiberRef.FiberRef<RunContext> = globalValue(
  Symbol.for("jeevesagent/RunContext/ref"),
  () => FiberRef.unsafeMake<RunContext>(empty)
)

/**
 * The current run context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const current: Effect.Effect<RunContext> = FiberRef.get(ref)

/**
 * The current user id (`null` when anonymous).
 *
 * @since 0.1.0
 * @category accessors
 */
export const currentUserId: Effect.Effect<string | null> = Effect.map(current, (ctx) => ctx.userId)

/**
 * Runs `self` with exactly `context` installed.
 *
 * @since 0.1.0
 * @category combinators
 */
export const locally =
  (context: RunContext) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    installLocally(self, ref, context)

/**
 * Options for {@link withUser}.
 *
 * @since 0.1.0
 * @category models
 */
export interface WithUserOptions {
  /** `""` counts as not given. */
  readonly sessionId?: string | undefined
  readonly runId?: string | undefined
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
}

/**
 * Runs `self` as `userId` (`null` or `undefined` for anonymous). Fields not
 * given keep the current context's value (the session only for the same
 * user); a missing session id becomes a new `sess_...` id. An invalid id fails with {@link InvalidUserId}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withUser =
  (userId: string | null | undefined, options?: WithUserOptions) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | InvalidUserId, R> =>
    Effect.flatMap(validateUserId(userId), (validated) =>
      Effect.flatMap(current, (outer) => {
        // Frozen: whatever the context is handed to (a hook, a tool written in JavaScript) cannot switch its user.
        const context: RunContext = Object.freeze({
          userId: validated,
          // An empty session id is no session (as in `empty`).
          sessionId: options?.sessionId ||
            (outer.sessionId !== "" && outer.userId === validated ? outer.sessionId : newId("sess")),
          runId: options?.runId ?? outer.runId,
          metadata: options?.metadata ?? outer.metadata
        })
        return installLocally(self, ref, context)
      }))
