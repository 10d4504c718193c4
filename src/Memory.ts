/**
 * Per-user memory: pinned working blocks, remembered episodes, session
 * history and bi-temporal facts.
 *
 * Every method is scoped to the user of the current `RunContext`; the
 * anonymous bucket is its own partition and never sees named users' data,
 * nor they its. Backends: {@link layerInMemory} (bounded, in process),
 * `jeevesagent/SqliteMemory` and `jeevesagent/PgMemory`; {@link autoExtract}
 * wraps any of them to pull facts out of every remembered episode.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Memory, RunContext } from "jeevesagent"
 *
 * const program = Effect.gen(function*() {
 *   const memory = yield* Memory.Memory
 *   yield* memory.updateBlock("preferences", "likes tea")
 *   return yield* memory.working
 * }).pipe(RunContext.withUser("alice"), Effect.provide(Memory.layerInMemory()))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Budget from "./Budget.js"
import * as internalAutoExtract from "./internal/autoExtract.js"
import * as internal from "./internal/memory.js"
import * as Model from "./Model.js"
import * as RunContext from "./RunContext.js"
import type { InvalidUserId } from "./RunContext.js"

/**
 * A pinned block of working memory, shown to the model on every run.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryBlock {
  readonly name: string
  readonly content: string
  readonly updatedAt: Date
  readonly pinnedOrder: number
}

/**
 * One remembered exchange.
 *
 * @since 0.1.0
 * @category models
 */
export interface Episode {
  readonly id: string
  readonly sessionId: string
  readonly userId: string | null
  readonly occurredAt: Date
  readonly input: string
  readonly output: string
  readonly toolCalls: ReadonlyArray<{ readonly name: string; readonly args: unknown }>
}

/**
 * What {@link Service.remember} takes. The user is the current one; the
 * session defaults to the current one.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewEpisode {
  readonly sessionId?: string | undefined
  readonly input: string
  readonly output: string
  readonly toolCalls?: ReadonlyArray<{ readonly name: string; readonly args: unknown }> | undefined
  readonly occurredAt?: Date | undefined
}

/**
 * A bi-temporal fact. Valid time: true in the world from `validFrom` until
 * `validUntil` (open when `null`). Transaction time: known to the store from
 * `recordedAt`, and closed by a later fact at `supersededAt` (the later
 * fact's `recordedAt`; `null` while open). A closed fact is never deleted, so
 * {@link Service.recallFacts} can answer both "what was true then" (`validAt`)
 * and "what did we know then" (`knownAt`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Fact {
  readonly id: string
  readonly userId: string | null
  readonly subject: string
  readonly predicate: string
  readonly object: string
  readonly confidence: number
  readonly validFrom: Date
  readonly validUntil: Date | null
  readonly recordedAt: Date
  /** When a later fact closed this one (its `recordedAt`); `null` while the fact is open. */
  readonly supersededAt: Date | null
  readonly sources: ReadonlyArray<string>
}

/**
 * What {@link Service.appendFact} takes.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewFact {
  readonly subject: string
  readonly predicate: string
  readonly object: string
  readonly confidence?: number | undefined
  readonly validFrom?: Date | undefined
  readonly sources?: ReadonlyArray<string> | undefined
}

/**
 * A summary of what is stored for a user.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryProfile {
  readonly userId: string | null
  readonly blocks: number
  readonly episodes: number
  readonly facts: number
  readonly lastSeen: Date | null
  readonly recentSessions: ReadonlyArray<string>
  readonly recentFacts: ReadonlyArray<Fact>
}

/**
 * Everything stored for a user.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryExport {
  readonly userId: string | null
  readonly blocks: ReadonlyArray<MemoryBlock>
  readonly episodes: ReadonlyArray<Episode>
  readonly facts: ReadonlyArray<Fact>
}

/**
 * The memory backend failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class MemoryError extends Schema.TaggedError<MemoryError>("jeevesagent/MemoryError")("MemoryError", {
  method: Schema.String,
  description: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `Memory.${this.method} failed: ${this.description}`
  }
}

/**
 * The memory service. Every method acts for the user of the current
 * `RunContext` (the anonymous bucket when it has none). A context holding an
 * invalid user id — such as the reserved `RunContext.ANONYMOUS_USER` — fails
 * every method with `InvalidUserId`; bad arguments fail with a
 * {@link MemoryError} naming the method.
 *
 * Every backend stores and refuses the same things: session ids, block
 * names and fact subjects and predicates are at most 256 characters (the
 * databases index them); a session id or block name with a lone surrogate
 * (not well-formed Unicode) is refused, as such user ids are; in any other
 * text a lone surrogate (text cut inside an emoji) is stored as U+FFFD.
 *
 * Search (`recall`, `recallFacts`) matches whole words: lower-cased runs of
 * letters and digits of at least two characters, stop words left out, with
 * accents and other marks folded away (`Café` finds `cafe`, `İstanbul`
 * finds `Istanbul`). An item matches when it holds any query word; more
 * distinct matching words rank higher, then newer first — on every backend,
 * from the item and the query alone (no other user's data weighs in). A
 * query without such words returns the newest.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The user's blocks in pinned order (a new block goes last; updates keep their place). */
  readonly working: Effect.Effect<ReadonlyArray<MemoryBlock>, MemoryError | InvalidUserId>
  /** Sets a block's content, creating it if needed. */
  readonly updateBlock: (name: string, content: string) => Effect.Effect<void, MemoryError | InvalidUserId>
  /** Appends to a block's content with no separator, creating it if needed. */
  readonly appendBlock: (name: string, content: string) => Effect.Effect<void, MemoryError | InvalidUserId>
  /** Stores an episode; returns its id. */
  readonly remember: (episode: NewEpisode) => Effect.Effect<string, MemoryError | InvalidUserId>
  /**
   * Episodes matching `query`, best first (default limit 5), optionally
   * within `since`..`until` (inclusive) and outside one session.
   */
  readonly recall: (
    query: string,
    options?: {
      readonly limit?: number | undefined
      readonly since?: Date | undefined
      readonly until?: Date | undefined
      readonly excludeSessionId?: string | undefined
    }
  ) => Effect.Effect<ReadonlyArray<Episode>, MemoryError | InvalidUserId>
  /**
   * Facts matching `query` that are valid at `validAt` (default: now):
   * `validFrom <= validAt < validUntil`.
   *
   * With `knownAt`, as the store knew them at that time: only facts recorded
   * by then, each with the `validUntil` it had then — a fact closed later
   * counts as open, and comes back with `validUntil` and `supersededAt`
   * `null`. Without it, as the store knows them now.
   */
  readonly recallFacts: (
    query: string,
    options?: {
      readonly limit?: number | undefined
      readonly validAt?: Date | undefined
      readonly knownAt?: Date | undefined
    }
  ) => Effect.Effect<ReadonlyArray<Fact>, MemoryError | InvalidUserId>
  /**
   * Appends a fact. The user's facts with the same subject and predicate
   * and another object that are valid at the new fact's `validFrom` end
   * there (an open one is closed, a closed one cut short; never deleted); an
   * open one that starts after it (the new fact was learnt late) stays open,
   * and the new fact comes back closed where that one starts. Other users'
   * facts are never touched.
   */
  readonly appendFact: (fact: NewFact) => Effect.Effect<Fact, MemoryError | InvalidUserId>
  /**
   * The user's history in one session, oldest first: a user / assistant
   * message pair for each of the latest `max(1, limit / 2)` episodes
   * (default limit 20), skipping empty text.
   */
  readonly sessionMessages: (
    sessionId: string,
    options?: { readonly limit?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<Model.Message>, MemoryError | InvalidUserId>
  /** Counts, last episode time, up to 10 recent sessions (newest first) and up to 10 recent facts. */
  readonly profile: Effect.Effect<MemoryProfile, MemoryError | InvalidUserId>
  /**
   * Deletes the user's data and returns how many items went. The filters
   * AND together: `sessionId` limits it to that session's episodes; `before`
   * to episodes that occurred, facts recorded and blocks updated before it.
   * No filter erases everything the user has.
   */
  readonly forget: (
    options?: { readonly sessionId?: string | undefined; readonly before?: Date | undefined }
  ) => Effect.Effect<number, MemoryError | InvalidUserId>
  /** Everything stored for the user: blocks in pinned order, episodes and facts oldest first. */
  readonly export: Effect.Effect<MemoryExport, MemoryError | InvalidUserId>
}

/**
 * The memory service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Memory extends Context.Tag("jeevesagent/Memory")<Memory, Service>() {}

/**
 * A memory that keeps nothing: reads are empty, writes are discarded. For
 * stateless agents; the agent skips seeding and remembering entirely when it
 * sees this service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({
  working: Effect.succeed([]),
  updateBlock: () => Effect.void,
  appendBlock: () => Effect.void,
  remember: () => Effect.succeed(""),
  recall: () => Effect.succeed([]),
  recallFacts: () => Effect.succeed([]),
  appendFact: (fact: NewFact) =>
    Effect.fail(new MemoryError({ method: "appendFact", description: `Memory.none keeps no facts (${fact.subject})` })),
  sessionMessages: () => Effect.succeed([]),
  profile: Effect.flatMap(RunContext.currentUserId, (userId) =>
    Effect.succeed({ userId, blocks: 0, episodes: 0, facts: 0, lastSeen: null, recentSessions: [], recentFacts: [] })),
  forget: () => Effect.succeed(0),
  export: Effect.map(RunContext.currentUserId, (userId) => ({ userId, blocks: [], episodes: [], facts: [] }))
})

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<Memory> = Layer.succeed(Memory, none)

/**
 * Bounds of in-process per-user state. `null` disables a bound.
 *
 * @since 0.1.0
 * @category models
 */
export interface InMemoryOptions {
  /** Most users kept; the least recently touched is dropped first. Default 100 000. */
  readonly maxUsers?: number | null | undefined
  /** Idle time after which a user's data is dropped. Default 24 hours. */
  readonly userIdleTtl?: Duration.DurationInput | null | undefined
}

/**
 * In-process memory. All of a user's state — blocks, episodes and facts — is
 * one entry of a table bounded by `maxUsers` (least recently touched dropped
 * first) and `userIdleTtl` (idle users dropped on the next access, no
 * background fiber); dropping the entry drops all of it. A user with an
 * agent run in flight is in use however long the run takes (a slow tool, a
 * wait for an approver): neither bound drops them under the run, and the
 * run's end counts as a touch.
 * Invalid bounds are a defect with a message naming the option.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeInMemory = (options?: InMemoryOptions): Effect.Effect<Service> => internal.makeInMemory(options)

/**
 * The layer of {@link makeInMemory}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerInMemory = (options?: InMemoryOptions): Layer.Layer<Memory> =>
  Layer.effect(Memory, makeInMemory(options))

// ---- auto-extraction ---------------------------------------------------------

/**
 * How one extraction ended: `ok`, `error` (the episode is still remembered),
 * or `skipped_budget` (the user's budget blocked the extraction call).
 *
 * @since 0.1.0
 * @category models
 */
export type AutoExtractStatus = "ok" | "error" | "skipped_budget"

/**
 * An extraction failed. `remember` still succeeded; this goes to the log and
 * to {@link AutoExtractOptions.onError}.
 *
 * @since 0.1.0
 * @category errors
 */
export class AutoExtractError extends Schema.TaggedError<AutoExtractError>("jeevesagent/AutoExtractError")(
  "AutoExtractError",
  {
    episodeId: Schema.String,
    userId: Schema.NullOr(Schema.String),
    reason: Schema.Literal("model", "budget", "invalid_output", "store"),
    description: Schema.String,
    cause: Schema.optional(Schema.Defect)
  }
) {
  override get message(): string {
    return `auto-extract failed for episode ${this.episodeId} (user_id=${this.userId}): ${this.description}`
  }
}

/**
 * Options of {@link autoExtract}.
 *
 * @since 0.1.0
 * @category models
 */
export interface AutoExtractOptions {
  /** Most facts kept from one episode. Default 20. */
  readonly maxFacts?: number | undefined
  /** `maxTokens` of the extraction call. Default 1024. */
  readonly maxTokens?: number | undefined
  /** Replaces {@link extractionPrompt}. */
  readonly systemPrompt?: string | undefined
  /**
   * Called with every failure, redacted as the warning log is (its message,
   * fields and cause pass through the `Secrets` service's `redact`, or the
   * pattern rules without one); whatever it throws is ignored.
   */
  readonly onError?: ((error: AutoExtractError) => void) | undefined
  /**
   * Logs {@link autoExtractNotice} at INFO, once per process, when the layer
   * is built. For auto-extraction turned on by default rather than asked for.
   */
  readonly announce?: boolean | undefined
}

/**
 * The system prompt of the extraction call.
 *
 * @since 0.1.0
 * @category constants
 */
export const extractionPrompt: string = `You extract semantic facts from one episode of a conversation between a user and an assistant.
A fact is a stable claim worth remembering later — about the user, their preferences, their circumstances or the world — written as a (subject, predicate, object) triple.
Skip greetings, small talk, questions, and transient state (what is happening right now, what the assistant is about to do).
Return a JSON array of objects with exactly these keys: "subject", "predicate", "object" (strings) and "confidence" (a number from 0 to 1).
Example:
[{"subject": "user", "predicate": "lives in", "object": "Lisbon", "confidence": 0.9}]
Return ONLY the JSON array, with no other text. Return [] if there is nothing worth keeping.`

/**
 * The one-time notice of {@link AutoExtractOptions.announce}.
 *
 * @since 0.1.0
 * @category constants
 */
export const autoExtractNotice: string = "AutoExtractMemory enabled by default for this model class. Each remembered episode " +
  "triggers a small extraction call to pull (subject, predicate, object) facts. Pass autoExtract: false " +
  "to disable, or autoExtract: true to silence this notice."

/**
 * Wraps the Memory in context so that every remembered episode is followed
 * by one extraction call to the Model, whose (subject, predicate, object)
 * facts — at most `maxFacts`, valid from the episode's time, sourced to it —
 * are appended for the same user. The model's answer is a JSON array of
 * facts (code fences and a sentence before it allowed) or an object whose
 * `facts` is that array.
 *
 * The call is reserved against and settled to the same user's Budget; when
 * the budget blocks it, it is skipped (status `skipped_budget`). A failure
 * never fails `remember`: status `error`, a warning log and `onError`.
 * Records the histogram `jeeves.auto_extract.duration_ms` and the counter
 * `jeeves.auto_extract.invocations`, tagged `status` and `user_id` (as the
 * `Telemetry` service in context says; none when there is none). Its span,
 * `Memory.autoExtract`, is a service span: off unless `serviceSpans: true`.
 *
 * ```ts
 * const MemoryLive = Memory.autoExtract().pipe(Layer.provide(Memory.layerInMemory()))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const autoExtract = (
  options?: AutoExtractOptions
): Layer.Layer<Memory, never, Memory | Model.Model | Budget.Budget> =>
  Layer.effect(
    Memory,
    Effect.gen(function*() {
      const inner = yield* Memory
      const model = yield* Model.Model
      const budget = yield* Budget.Budget
      return yield* internalAutoExtract.make(inner, model, budget, options)
    })
  )
