/**
 * Per-user memory: pinned working blocks, remembered episodes, session
 * history and bi-temporal facts.
 *
 * Every method is scoped to the user of the current `RunContext`; the
 * anonymous bucket is its own partition and never sees named users' data,
 * nor they its.
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
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as internal from "./internal/memory.js"
import type * as Model from "./Model.js"

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
 * A bi-temporal fact: valid from `validFrom` until `validUntil` (open when
 * `null`), recorded at `recordedAt`.
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
 * `RunContext`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly working: Effect.Effect<ReadonlyArray<MemoryBlock>, MemoryError>
  readonly updateBlock: (name: string, content: string) => Effect.Effect<void, MemoryError>
  readonly appendBlock: (name: string, content: string) => Effect.Effect<void, MemoryError>
  /** Stores an episode; returns its id. */
  readonly remember: (episode: NewEpisode) => Effect.Effect<string, MemoryError>
  /** Episodes relevant to `query`, best first (default limit 5). */
  readonly recall: (
    query: string,
    options?: {
      readonly limit?: number | undefined
      readonly since?: Date | undefined
      readonly until?: Date | undefined
      readonly excludeSessionId?: string | undefined
    }
  ) => Effect.Effect<ReadonlyArray<Episode>, MemoryError>
  /** Facts relevant to `query`, valid at `validAt` (default: now). */
  readonly recallFacts: (
    query: string,
    options?: { readonly limit?: number | undefined; readonly validAt?: Date | undefined }
  ) => Effect.Effect<ReadonlyArray<Fact>, MemoryError>
  /** Appends a fact, closing the user's open facts with the same subject and predicate and another object. */
  readonly appendFact: (fact: NewFact) => Effect.Effect<Fact, MemoryError>
  /** The most recent `limit` (default 20) messages of this user's session, oldest first. */
  readonly sessionMessages: (
    sessionId: string,
    options?: { readonly limit?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<Model.Message>, MemoryError>
  readonly profile: Effect.Effect<MemoryProfile, MemoryError>
  /** Deletes the user's data (filters AND); facts only when no `sessionId` is given. Returns the count. */
  readonly forget: (
    options?: { readonly sessionId?: string | undefined; readonly before?: Date | undefined }
  ) => Effect.Effect<number, MemoryError>
  readonly export: Effect.Effect<MemoryExport, MemoryError>
}

/**
 * The memory service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Memory extends Context.Tag("jeevesagent/Memory")<Memory, Service>() {}

/**
 * Bounds of in-process per-user state. `null` disables a bound.
 *
 * @since 0.1.0
 * @category models
 */
export interface InMemoryOptions {
  /** Most users kept (LRU). Default 100 000. */
  readonly maxUsers?: number | null | undefined
  /** Idle time after which a user's data is dropped. Default 24 hours. */
  readonly userIdleTtl?: import("effect/Duration").DurationInput | null | undefined
}

/**
 * In-process memory. Recall ranks episodes by shared words with the query,
 * then recency.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeInMemory: (options?: InMemoryOptions) => Effect.Effect<Service> = internal.makeInMemory

/**
 * The layer of {@link makeInMemory}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerInMemory = (options?: InMemoryOptions): Layer.Layer<Memory> =>
  Layer.effect(Memory, makeInMemory(options))
