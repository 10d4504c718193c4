/**
 * The part of the Memory service every backend shares: reading the user from
 * the RunContext, validating input, ids and time. A backend is a {@link Store}
 * that only ever sees an explicit, already validated user key.
 */
import * as Effect from "effect/Effect"
import type * as Memory from "../Memory.js"
import { MemoryError } from "../Memory.js"
import type * as Model from "../Model.js"
import * as RunContext from "../RunContext.js"
import { newId } from "./ids.js"
import { isWellFormed, wellFormed } from "./unicode.js"
import { withServiceSpan } from "./spans.js"

/** What a recall asks a store for. `terms` empty means "most recent". @internal */
export interface RecallQuery {
  readonly terms: ReadonlyArray<string>
  readonly limit: number
  readonly since: Date | undefined
  readonly until: Date | undefined
  readonly excludeSessionId: string | undefined
}

/** @internal */
export interface FactQuery {
  readonly terms: ReadonlyArray<string>
  readonly limit: number
  readonly validAt: Date
  /** The store's knowledge as of then (see {@link asKnownAt}); undefined: as of now. */
  readonly knownAt: Date | undefined
}

/**
 * `fact` as the store knew it at `knownAt`: undefined when it was recorded
 * later, open (no `validUntil`, no `supersededAt`) when it was closed later.
 *
 * @internal
 */
export const asKnownAt = (fact: Memory.Fact, knownAt: Date | undefined): Memory.Fact | undefined => {
  if (knownAt === undefined) return fact
  if (fact.recordedAt.getTime() > knownAt.getTime()) return undefined
  return fact.supersededAt === null || fact.supersededAt.getTime() <= knownAt.getTime() ?
    fact :
    { ...fact, validUntil: null, supersededAt: null }
}

/** @internal */
export interface ForgetFilter {
  readonly sessionId: string | undefined
  readonly before: Date | undefined
}

/** @internal */
export interface BlockWrite {
  readonly name: string
  readonly content: string
  readonly append: boolean
  readonly now: Date
}

/** @internal */
export type StoredProfile = Omit<Memory.MemoryProfile, "userId">

/**
 * A memory backend. `user` is the storage key of the user: the id itself, or
 * `RunContext.ANONYMOUS_USER`. Results are ordered as the Service documents.
 *
 * @internal
 */
export interface Store {
  /** The in-process store: the operations of every run, synchronous. */
  readonly sync?: SyncStore | undefined
  readonly working: (user: string) => Effect.Effect<ReadonlyArray<Memory.MemoryBlock>, MemoryError>
  /** Inserts or replaces (`append`: concatenates) a block; a new block goes last in the pinned order. */
  readonly writeBlock: (user: string, block: BlockWrite) => Effect.Effect<void, MemoryError>
  readonly insertEpisode: (user: string, episode: Memory.Episode) => Effect.Effect<void, MemoryError>
  readonly recall: (user: string, query: RecallQuery) => Effect.Effect<ReadonlyArray<Memory.Episode>, MemoryError>
  /**
   * Closes the user's open facts with the same subject and predicate and
   * another object that start no later than `fact` (at its `validFrom`), and
   * inserts it — closed at the start of the earliest such open fact that
   * starts after it, if any (a fact learnt late never closes a newer one).
   * Returns the inserted fact's `validUntil`.
   */
  readonly insertFact: (user: string, fact: Memory.Fact) => Effect.Effect<Date | null, MemoryError>
  readonly recallFacts: (user: string, query: FactQuery) => Effect.Effect<ReadonlyArray<Memory.Fact>, MemoryError>
  /** The newest `count` episodes of the session, oldest first. */
  readonly sessionEpisodes: (
    user: string,
    sessionId: string,
    count: number
  ) => Effect.Effect<ReadonlyArray<Memory.Episode>, MemoryError>
  readonly profile: (user: string) => Effect.Effect<StoredProfile, MemoryError>
  readonly forget: (user: string, filter: ForgetFilter) => Effect.Effect<number, MemoryError>
  readonly export: (user: string) => Effect.Effect<Omit<Memory.MemoryExport, "userId">, MemoryError>
}

/**
 * A store's per-run operations done synchronously, at `now` (epoch ms). The
 * Memory service over such a store offers them to the agent
 * ({@link syncMemoryOf}), which then seeds and records a run in its own steps.
 *
 * @internal
 */
export interface SyncStore {
  readonly working: (user: string, now: number) => ReadonlyArray<Memory.MemoryBlock>
  readonly recall: (user: string, query: RecallQuery, now: number) => ReadonlyArray<Memory.Episode>
  readonly recallFacts: (user: string, query: FactQuery, now: number) => ReadonlyArray<Memory.Fact>
  readonly sessionEpisodes: (user: string, sessionId: string, count: number, now: number) => ReadonlyArray<Memory.Episode>
  readonly insertEpisode: (user: string, episode: Memory.Episode, now: number) => void
}

// ---- users -----------------------------------------------------------------

/** @internal */
export const decodeUser = (key: string): string | null => key === RunContext.ANONYMOUS_USER ? null : key

/**
 * Blocks in pinned order; ties (from concurrent creation) by name.
 *
 * @internal
 */
export const orderBlocks = (blocks: Iterable<Memory.MemoryBlock>): Array<Memory.MemoryBlock> =>
  [...blocks].sort((a, b) => a.pinnedOrder - b.pinnedOrder || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))

// ---- search terms ----------------------------------------------------------

const STOP_WORDS = new Set([
  "a", "about", "an", "and", "are", "as", "at", "be", "but", "by", "can", "did", "do", "does", "for", "from",
  "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on",
  "or", "our", "so", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to",
  "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your"
])

const MAX_TERMS = 32

const ASCII = /^[\x00-\x7f]*$/
const MARKS = /\p{M}+/gu
const WORD = /[\p{L}\p{N}]+/gu

/**
 * The words of `text` as every backend indexes and queries them: runs of
 * letters and digits (so `user_10` is `user` and `10`), lower-cased, in
 * compatibility decomposition (NFKD) with every combining mark removed
 * (`𝐋𝐢𝐬𝐛𝐨𝐧` is `lisbon`).
 *
 * So accents and other marks fold away: `Café`, `cafe\u0301` and `cafe` are
 * all `cafe`, `İstanbul` and `Istanbul` are `istanbul`, `ﬁ` is `fi`. Folding
 * happens on both sides, so a search finds the very word it was given, and
 * a word never breaks apart at a mark (the lower case of `İ` carries one).
 * Backends never tokenize text themselves: SQLite and Postgres index the
 * words this returns.
 *
 * @internal
 */
export const words = (text: string): Array<string> => {
  const lower = text.toLowerCase()
  // Lower-cased again after the decomposition: letters with no lower case of their own (the styled
  // mathematical ones, `𝐋`, `ℍ`) decompose to capitals.
  const folded = ASCII.test(lower) ? lower : lower.normalize("NFKD").replace(MARKS, "").toLowerCase()
  return folded.match(WORD) ?? []
}

/**
 * The distinct {@link words} of `text`, in order of first occurrence: what the
 * SQL backends index. Search counts matching words, not occurrences.
 *
 * @internal
 */
export const distinctWords = (text: string): Array<string> => [...new Set(words(text))]

/**
 * The words of a query that take part in a search: distinct, at least two
 * characters, not a stop word. None left means "most recent".
 *
 * @internal
 */
export const searchTerms = (query: string): ReadonlyArray<string> => {
  const terms = new Set<string>()
  for (const word of words(query)) {
    if (word.length >= 2 && !STOP_WORDS.has(word)) terms.add(word)
    if (terms.size === MAX_TERMS) break
  }
  return [...terms]
}

// ---- validation ------------------------------------------------------------

const invalid = (method: string, description: string) => new MemoryError({ method, description })

/**
 * A rejected argument, thrown by the synchronous validators below and turned
 * into a typed failure by `withUser` — validation costs no effect operations
 * on the (usual) valid path.
 */
class Rejected {
  constructor(readonly error: MemoryError | RunContext.InvalidUserId) {}
}

const reject = (method: string, description: string): never => {
  throw new Rejected(invalid(method, description))
}

/**
 * The storage key of `userId`. The sentinel and every other invalid id are
 * rejected with `InvalidUserId`, whatever put them in the RunContext.
 */
const userKeyOf = (userId: string | null): string => {
  if (userId === null) return RunContext.ANONYMOUS_USER
  const rule = RunContext.checkUserId(userId)
  if (rule !== undefined) throw new Rejected(RunContext.invalidUserId(rule, userId))
  return userId
}

const positiveInt = (method: string, name: string, value: number | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  return Number.isSafeInteger(value) && value > 0 ? value : reject(method, `${name} must be a positive integer, got ${value}`)
}

const validDate = (method: string, name: string, value: Date | undefined): Date | undefined =>
  value === undefined || (value instanceof Date && !Number.isNaN(value.getTime())) ?
    value :
    reject(method, `${name} must be a valid Date, got ${String(value)}`)

const nonEmpty = (method: string, name: string, value: unknown): string =>
  typeof value === "string" && value.trim() !== "" ?
    wellFormed(value) :
    reject(method, `${name} must be a non-empty string, got ${JSON.stringify(value)}`)

/**
 * Text as every backend stores it: a lone surrogate (text cut inside an
 * emoji) becomes U+FFFD, as a UTF-8 database would decode it, so the three
 * backends give back the same text (and Postgres's JSON accepts it).
 */
const text = (method: string, name: string, value: unknown): string =>
  typeof value === "string" ? wellFormed(value) : reject(method, `${name} must be a string, got ${typeof value}`)

/**
 * The most characters of a session id, block name, fact subject or
 * predicate: the databases index them (with the user id, at most 256
 * characters too), and Postgres cannot index an entry over 2 704 bytes.
 *
 * @internal
 */
export const MAX_KEY_CHARS = 256

/** A key of up to {@link MAX_KEY_CHARS} characters (non-empty unless `empty` is allowed). */
const keyText = (method: string, name: string, value: unknown, empty = false): string => {
  if (typeof value !== "string") return reject(method, `${name} must be a string, got ${typeof value}`)
  if (!empty && value.trim() === "") return reject(method, `${name} must be a non-empty string, got ${JSON.stringify(value)}`)
  if (value.length > MAX_KEY_CHARS) {
    return reject(method, `${name} must be at most ${MAX_KEY_CHARS} characters, got ${value.length}`)
  }
  return value
}

/**
 * A session id or block name: a key (see {@link keyText}) that also names
 * something, so one with a lone surrogate is refused rather than changed
 * (two ids differing only there would become one), as user ids are.
 */
const identifier = (method: string, name: string, value: unknown, empty = false): string => {
  const key = keyText(method, name, value, empty)
  return isWellFormed(key) ? key : reject(method, `${name} has a lone surrogate (not well-formed Unicode)`)
}

/** An optional session id of a query: absent, or an {@link identifier}. */
const optionalSessionId = (method: string, name: string, value: unknown): string | undefined =>
  value === undefined ? undefined : identifier(method, name, value, true)

const NOT_PLAIN: unique symbol = Symbol("not plain JSON")
const MAX_PLAIN_DEPTH = 64

/**
 * A copy of `value` equal to `JSON.parse(JSON.stringify(value))` when it is
 * plain JSON data — strings, finite numbers other than -0, booleans, null,
 * dense arrays and plain objects without `toJSON` or a `__proto__` member,
 * at most 64 deep — and `NOT_PLAIN` otherwise (where JSON would drop,
 * replace or throw, the caller takes the round trip itself). Model-given
 * tool arguments are plain data, and the copy costs a fraction of the round
 * trip.
 *
 * @internal
 */
export const plainJsonCopy = (value: unknown, depth = 0): unknown => {
  switch (typeof value) {
    case "string":
      return wellFormed(value)
    case "boolean":
      return value
    case "number":
      return Number.isFinite(value) && !Object.is(value, -0) ? value : NOT_PLAIN
    case "object": {
      if (value === null) return null
      if (depth >= MAX_PLAIN_DEPTH) return NOT_PLAIN
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) return NOT_PLAIN
        const out = new Array(value.length)
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) return NOT_PLAIN
          const item = plainJsonCopy(value[i], depth + 1)
          if (item === NOT_PLAIN) return NOT_PLAIN
          out[i] = item
        }
        return out
      }
      const proto = Object.getPrototypeOf(value)
      if ((proto !== Object.prototype && proto !== null) || "toJSON" in value) return NOT_PLAIN
      const out: Record<string, unknown> = {}
      for (const key of Object.keys(value)) {
        if (key === "__proto__") return NOT_PLAIN
        const member = plainJsonCopy((value as Record<string, unknown>)[key], depth + 1)
        if (member === NOT_PLAIN) return NOT_PLAIN
        out[wellFormed(key)] = member
      }
      return out
    }
    default:
      return NOT_PLAIN
  }
}

/** `NOT_PLAIN`, for tests. @internal */
export const notPlain = NOT_PLAIN

/** Tool calls as every backend returns them: a JSON round trip (a plain copy when that gives the same). */
const jsonToolCalls = (toolCalls: NonNullable<Memory.NewEpisode["toolCalls"]>): Memory.Episode["toolCalls"] => {
  if (toolCalls.length === 0) return []
  const copied: Array<{ name: string; args: unknown }> = []
  for (const call of toolCalls) {
    const args = plainJsonCopy(call.args ?? null)
    if (typeof call.name !== "string" || args === NOT_PLAIN) {
      copied.length = 0
      break
    }
    copied.push({ name: call.name, args })
  }
  if (copied.length === toolCalls.length) return copied as Memory.Episode["toolCalls"]
  try {
    const encoded = JSON.stringify(toolCalls.map((call) => ({ name: call.name, args: call.args ?? null })))
    return JSON.parse(encoded, (_key, value) => (typeof value === "string" ? wellFormed(value) : value)) as Memory.Episode["toolCalls"]
  } catch (cause) {
    throw new Rejected(new MemoryError({ method: "remember", description: "toolCalls are not JSON-serializable", cause }))
  }
}

// ---- the service -----------------------------------------------------------

const DEFAULT_RECALL_LIMIT = 5
const DEFAULT_SESSION_LIMIT = 20

/**
 * The messages of a session's episodes: a user / assistant pair each,
 * skipping empty text.
 */
const toMessages = (episodes: ReadonlyArray<Memory.Episode>): Array<Model.Message> => {
  const messages: Array<Model.Message> = []
  for (const episode of episodes) {
    if (episode.input !== "") messages.push({ role: "user", content: episode.input })
    if (episode.output !== "") messages.push({ role: "assistant", content: episode.output, toolCalls: [] })
  }
  return messages
}

/**
 * The Memory service over `store`: every method reads the user from the
 * RunContext, validates its input and delegates.
 *
 * @internal
 */
export const makeService = (store: Store): Memory.Service => {
  /** Reads the user and the time, validates synchronously, and runs `f` in a span. */
  const withUser = <A, E>(
    span: string,
    f: (user: string, context: RunContext.RunContext, now: Date) => Effect.Effect<A, E>
  ): Effect.Effect<A, E | MemoryError | RunContext.InvalidUserId> =>
    Effect.flatMap(RunContext.current, (context) =>
      Effect.clockWith((clock): Effect.Effect<A, E | MemoryError | RunContext.InvalidUserId> => {
        try {
          return f(userKeyOf(context.userId), context, new Date(clock.unsafeCurrentTimeMillis()))
        } catch (error) {
          if (error instanceof Rejected) return Effect.fail(error.error)
          throw error
        }
      })).pipe(withServiceSpan(span, { captureStackTrace: false }))

  const writeBlock = (method: string, name: string, content: string, append: boolean) =>
    withUser(`Memory.${method}`, (user, _context, now) =>
      store.writeBlock(user, {
        name: identifier(method, "block name", name),
        content: text(method, "content", content),
        append,
        now
      }))

  const recallQuery = (query: string, options: Parameters<Memory.Service["recall"]>[1]): RecallQuery => ({
    terms: searchTerms(text("recall", "query", query)),
    limit: positiveInt("recall", "limit", options?.limit, DEFAULT_RECALL_LIMIT),
    since: validDate("recall", "since", options?.since),
    until: validDate("recall", "until", options?.until),
    excludeSessionId: optionalSessionId("recall", "excludeSessionId", options?.excludeSessionId)
  })
  const factQuery = (query: string, options: Parameters<Memory.Service["recallFacts"]>[1], now: Date): FactQuery => ({
    terms: searchTerms(text("recallFacts", "query", query)),
    limit: positiveInt("recallFacts", "limit", options?.limit, DEFAULT_RECALL_LIMIT),
    validAt: validDate("recallFacts", "validAt", options?.validAt) ?? now,
    knownAt: validDate("recallFacts", "knownAt", options?.knownAt)
  })
  const sessionCount = (options: Parameters<Memory.Service["sessionMessages"]>[1]): number =>
    Math.max(1, Math.floor(positiveInt("sessionMessages", "limit", options?.limit, DEFAULT_SESSION_LIMIT) / 2))
  const episodeOf = (user: string, context: RunContext.RunContext, now: Date, episode: Memory.NewEpisode): Memory.Episode => {
    const given = episode.sessionId ?? context.sessionId
    if (given === "") reject("remember", "no session id: pass sessionId or run inside RunContext.withUser")
    const sessionId = identifier("remember", "sessionId", given)
    return {
      id: newId("ep"),
      sessionId,
      userId: decodeUser(user),
      occurredAt: validDate("remember", "occurredAt", episode.occurredAt) ?? now,
      input: text("remember", "input", episode.input),
      output: text("remember", "output", episode.output),
      toolCalls: jsonToolCalls(episode.toolCalls ?? [])
    }
  }

  const service: Memory.Service = {
    working: withUser("Memory.working", (user) => store.working(user)),
    updateBlock: (name, content) => writeBlock("updateBlock", name, content, false),
    appendBlock: (name, content) => writeBlock("appendBlock", name, content, true),
    remember: (episode) =>
      withUser("Memory.remember", (user, context, now) => {
        const stored = episodeOf(user, context, now, episode)
        return Effect.as(store.insertEpisode(user, stored), stored.id)
      }),
    recall: (query, options) => withUser("Memory.recall", (user) => store.recall(user, recallQuery(query, options))),
    recallFacts: (query, options) =>
      withUser("Memory.recallFacts", (user, _context, now) => store.recallFacts(user, factQuery(query, options, now))),
    appendFact: (fact) =>
      withUser("Memory.appendFact", (user, _context, recordedAt) => {
        const confidence = fact.confidence ?? 1
        if (typeof confidence !== "number" || !(confidence >= 0 && confidence <= 1)) {
          reject("appendFact", `confidence must be a number in [0, 1], got ${confidence}`)
        }
        const sources = fact.sources ?? []
        if (!Array.isArray(sources) || Array.from(sources).some((source) => typeof source !== "string")) {
          reject("appendFact", "sources must be an array of strings")
        }
        const stored: Memory.Fact = {
          id: newId("fact"),
          userId: decodeUser(user),
          subject: wellFormed(keyText("appendFact", "subject", fact.subject)),
          predicate: wellFormed(keyText("appendFact", "predicate", fact.predicate)),
          object: nonEmpty("appendFact", "object", fact.object),
          confidence,
          validFrom: validDate("appendFact", "validFrom", fact.validFrom) ?? recordedAt,
          validUntil: null,
          recordedAt,
          supersededAt: null,
          sources: sources.map(wellFormed)
        }
        return Effect.map(
          store.insertFact(user, stored),
          (validUntil): Memory.Fact => validUntil === null ? stored : { ...stored, validUntil, supersededAt: recordedAt }
        )
      }),
    sessionMessages: (sessionId, options) =>
      withUser("Memory.sessionMessages", (user) =>
        Effect.map(
          store.sessionEpisodes(user, identifier("sessionMessages", "sessionId", sessionId, true), sessionCount(options)),
          toMessages
        )),
    profile: withUser("Memory.profile", (user) =>
      Effect.map(store.profile(user), (profile) => ({ userId: decodeUser(user), ...profile }))),
    forget: (options) =>
      withUser("Memory.forget", (user) =>
        store.forget(user, {
          sessionId: optionalSessionId("forget", "sessionId", options?.sessionId),
          before: validDate("forget", "before", options?.before)
        })),
    export: withUser("Memory.export", (user) =>
      Effect.map(store.export(user), (data) => ({ userId: decodeUser(user), ...data })))
  }
  const sync = store.sync
  if (sync === undefined) return service
  const unsafe: SyncMemory["unsafe"] = {
    working: (context, now) => sync.working(userKeyOf(context.userId), now),
    recall: (context, now, query, options) => sync.recall(userKeyOf(context.userId), recallQuery(query, options), now),
    recallFacts: (context, now, query, options) =>
      sync.recallFacts(userKeyOf(context.userId), factQuery(query, options, new Date(now)), now),
    sessionMessages: (context, now, sessionId, options) =>
      toMessages(sync.sessionEpisodes(
        userKeyOf(context.userId),
        identifier("sessionMessages", "sessionId", sessionId, true),
        sessionCount(options),
        now
      )),
    remember: (context, now, episode) => {
      const user = userKeyOf(context.userId)
      const stored = episodeOf(user, context, new Date(now), episode)
      sync.insertEpisode(user, stored, now)
      return stored.id
    }
  }
  const marker: SyncMemory = {
    of: {
      working: service.working,
      recall: service.recall,
      recallFacts: service.recallFacts,
      sessionMessages: service.sessionMessages,
      remember: service.remember
    },
    unsafe
  }
  return Object.assign(service, { [syncMemoryKey]: marker })
}

const syncMemoryKey = Symbol.for("jeevesagent/Memory/sync")

type PerRun = Pick<Memory.Service, "working" | "recall" | "recallFacts" | "sessionMessages" | "remember">

/**
 * The per-run operations of a Memory service over a synchronous store, as
 * plain functions of the run's context and the time (epoch ms). They throw
 * on invalid input: {@link rejection} turns that into the service's typed
 * failure. Not for use while service spans are on (the service's own
 * methods record those).
 *
 * @internal
 */
export interface SyncMemory {
  /** The service methods these stand for: a copy of the service with one replaced is not synchronous any more. */
  readonly of: PerRun
  readonly unsafe: {
    readonly working: (context: RunContext.RunContext, now: number) => ReadonlyArray<Memory.MemoryBlock>
    readonly recall: (
      context: RunContext.RunContext,
      now: number,
      query: string,
      options: Parameters<Memory.Service["recall"]>[1]
    ) => ReadonlyArray<Memory.Episode>
    readonly recallFacts: (
      context: RunContext.RunContext,
      now: number,
      query: string,
      options: Parameters<Memory.Service["recallFacts"]>[1]
    ) => ReadonlyArray<Memory.Fact>
    readonly sessionMessages: (
      context: RunContext.RunContext,
      now: number,
      sessionId: string,
      options: Parameters<Memory.Service["sessionMessages"]>[1]
    ) => ReadonlyArray<Model.Message>
    readonly remember: (context: RunContext.RunContext, now: number, episode: Memory.NewEpisode) => string
  }
}

/** The synchronous per-run operations of `service`, if it has them and none was replaced. @internal */
export const syncMemoryOf = (service: Memory.Service): SyncMemory["unsafe"] | undefined => {
  const marker = (service as { readonly [syncMemoryKey]?: SyncMemory })[syncMemoryKey]
  if (marker === undefined) return undefined
  const { of } = marker
  return of.working === service.working && of.recall === service.recall && of.recallFacts === service.recallFacts &&
      of.sessionMessages === service.sessionMessages && of.remember === service.remember ?
    marker.unsafe :
    undefined
}

/** The typed failure a synchronous operation threw, or undefined for anything else (a defect). @internal */
export const rejection = (error: unknown): MemoryError | RunContext.InvalidUserId | undefined =>
  error instanceof Rejected ? error.error : undefined

/**
 * A {@link MemoryError} of method `open` for a backend that could not be
 * opened or migrated, naming the underlying cause of a wrapped failure.
 *
 * @internal
 */
export const openFailure = (failure: unknown): MemoryError => {
  const describe = (value: unknown): string =>
    typeof value === "object" && value !== null && "message" in value && typeof value.message === "string" ?
      value.message :
      String(value)
  const cause = typeof failure === "object" && failure !== null && "cause" in failure ? failure.cause : undefined
  const description = cause === undefined ? describe(failure) : `${describe(failure)}: ${describe(cause)}`
  return new MemoryError({ method: "open", description, cause: failure })
}

