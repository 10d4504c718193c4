import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Memory from "../Memory.js"
import * as store from "./memoryStore.js"
import { BoundedUsers } from "./boundedUsers.js"

interface StoredEpisode {
  readonly seq: number
  readonly episode: Memory.Episode
  /** The episode's words as `" w1 w2 ... "`, for matching whole words. */
  readonly words: string
}

interface StoredFact {
  readonly seq: number
  fact: Memory.Fact
  readonly words: string
}

/** Everything held for one user. Replaced wholesale when the user is idle past the TTL. */
interface UserState {
  lastTouched: number
  /** Agent runs of the user in flight ({@link RunHold}): while there are any, the state is in use. */
  runs: number
  /** `runs > 0`, kept as a plain field (an accessor per state would cost every user a closure). */
  pinned: boolean
  nextSeq: number
  blocks: Map<string, Memory.MemoryBlock>
  episodes: Array<StoredEpisode>
  facts: Array<StoredFact>
}

const emptyState = (now: number, runs = 0): UserState => ({
  lastTouched: now,
  runs,
  pinned: runs > 0,
  nextSeq: 0,
  blocks: new Map(),
  episodes: [],
  facts: []
})

const hasData = (state: UserState) => state.blocks.size > 0 || state.episodes.length > 0 || state.facts.length > 0

const wordString = (text: string) => ` ${store.words(text).join(" ")} `

/** How many of `padded` (terms as `" term "`) occur in `wordsOf` (a {@link wordString}). */
const score = (padded: ReadonlyArray<string>, wordsOf: string): number => {
  let n = 0
  for (const term of padded) if (wordsOf.includes(term)) n++
  return n
}

const newestFirst = (a: { seq: number; at: number }, b: { seq: number; at: number }) => b.at - a.at || b.seq - a.seq

interface Ranked<A> {
  readonly item: A
  readonly seq: number
  readonly at: number
  readonly score: number
}

const better = <A>(a: Ranked<A>, b: Ranked<A>) => b.score - a.score || newestFirst(a, b)

/**
 * The best `limit` items: most matching terms first, then newest (with no
 * terms: newest). One pass keeping a small sorted top list — recall is on
 * every run's path, so no scoring objects for non-matches and no full sort.
 */
const byRelevance = <A extends { readonly seq: number }>(
  items: ReadonlyArray<A>,
  terms: ReadonlyArray<string>,
  wordsOf: (item: A) => string,
  timeOf: (item: A) => Date,
  limit: number,
  include: (item: A) => boolean = () => true
): Array<A> => {
  const padded = terms.map((term) => ` ${term} `)
  const top: Array<Ranked<A>> = []
  for (const item of items) {
    if (!include(item)) continue
    const points = padded.length === 0 ? 0 : score(padded, wordsOf(item))
    if (padded.length > 0 && points === 0) continue
    const entry: Ranked<A> = { item, seq: item.seq, at: timeOf(item).getTime(), score: points }
    if (top.length === limit && better(entry, top[limit - 1]!) >= 0) continue
    let index = top.length
    while (index > 0 && better(entry, top[index - 1]!) < 0) index--
    top.splice(index, 0, entry)
    if (top.length > limit) top.pop()
  }
  return top.map((entry) => entry.item)
}

const oldestFirst = (a: StoredEpisode, b: StoredEpisode) =>
  a.episode.occurredAt.getTime() - b.episode.occurredAt.getTime() || a.seq - b.seq

const factsNewestFirst = (facts: ReadonlyArray<StoredFact>) =>
  [...facts].sort((a, b) => b.fact.recordedAt.getTime() - a.fact.recordedAt.getTime() || b.seq - a.seq)

const isValidAt = (fact: Memory.Fact, at: Date) =>
  fact.validFrom.getTime() <= at.getTime() && (fact.validUntil === null || at.getTime() < fact.validUntil.getTime())

const orderedBlocks = (state: UserState) => store.orderBlocks(state.blocks.values())

const DEFAULT_MAX_USERS = 100_000
const DEFAULT_IDLE_TTL = Duration.hours(24)

const resolveBounds = (options: Memory.InMemoryOptions | undefined) => {
  const maxUsers = options?.maxUsers === undefined ? DEFAULT_MAX_USERS : options.maxUsers
  if (maxUsers !== null && !(Number.isSafeInteger(maxUsers) && maxUsers >= 1)) {
    return Effect.dieMessage(`Memory.layerInMemory: maxUsers must be a positive integer or null, got ${maxUsers}`)
  }
  let idleTtl: number | null = null
  if (options?.userIdleTtl !== null) {
    const decoded = Duration.decodeUnknown(options?.userIdleTtl ?? DEFAULT_IDLE_TTL)
    if (decoded._tag === "None" || !Duration.isFinite(decoded.value) || Duration.toMillis(decoded.value) <= 0) {
      return Effect.dieMessage(
        `Memory.layerInMemory: userIdleTtl must be a positive finite duration or null, got ${String(options?.userIdleTtl)}`
      )
    }
    idleTtl = Duration.toMillis(decoded.value)
  }
  return Effect.succeed({ maxUsers, idleTtl })
}

/**
 * Marks a user (their storage key) as having an agent run in flight from
 * `now`, and returns the function that ends the mark, at its own `now`.
 * Calling that function again does nothing.
 *
 * @internal
 */
export type RunHold = (user: string, now: number) => (now: number) => void

/**
 * The {@link RunHold} of each in-memory service, keyed by the service's own
 * `remember`: the write a run ends with. A copy of the service that keeps it
 * (`{ ...memory, recall: mine }`) still stores the run's episode here, so
 * still holds; one that replaces it stores elsewhere as far as we know.
 */
const runHolds = new WeakMap<Memory.Service["remember"], RunHold>()

/**
 * The {@link RunHold} of `service`, if it is an in-memory service made by
 * {@link makeInMemory}; other backends keep nothing that could be evicted.
 *
 * @internal
 */
export const runHoldOf = (service: Memory.Service): RunHold | undefined => runHolds.get(service.remember)

/**
 * Gives `wrapper` the {@link RunHold} of `inner`: for a wrapper that
 * replaces `remember` but still stores every episode through `inner`'s
 * (`Memory.autoExtract`). Returns `wrapper`.
 *
 * @internal
 */
export const withRunHoldOf = (inner: Memory.Service, wrapper: Memory.Service): Memory.Service => {
  const hold = runHoldOf(inner)
  if (hold !== undefined) runHolds.set(wrapper.remember, hold)
  return wrapper
}

/**
 * The in-process store and a view of its residency, for tests and benchmarks.
 *
 * Every user's state is one entry of a {@link BoundedUsers} table: at most
 * `maxUsers` users, the least recently touched dropped first, and users idle
 * past the TTL dropped by the next access (no background fiber). Dropping a
 * user frees all their blocks, episodes and facts. (Not effect's `Cache`: see
 * `boundedUsers.ts` for why.)
 *
 * A user with an agent run in flight is in use, however long the run takes
 * (a slow tool, a wait for an approver): `holdRun` pins their state, so
 * neither the TTL nor `maxUsers` drops it under the run, and the run's end
 * counts as a touch.
 *
 * @internal
 */
export const makeInMemoryStore = (options?: Memory.InMemoryOptions) =>
  Effect.gen(function*() {
    const { idleTtl, maxUsers } = yield* resolveBounds(options)
    const users = new BoundedUsers<UserState>("memory", maxUsers, idleTtl)

    /** The user's state, touched (created when absent, evicted or expired). */
    const touch = (user: string, now: number): UserState =>
      users.get(user, now) ?? users.insert(user, emptyState(now), now)

    const using = <A>(user: string, f: (state: UserState) => A): Effect.Effect<A> =>
      Effect.clockWith((clock) => Effect.sync(() => f(touch(user, clock.unsafeCurrentTimeMillis()))))

    // The operations the agent calls on every run, synchronous: the Memory service
    // built over this store runs them inside the agent's own step (`store.SyncStore`).
    const recallNow = (state: UserState, query: store.RecallQuery) => {
      const since = query.since?.getTime() ?? -Infinity
      const until = query.until?.getTime() ?? Infinity
      const inRange = ({ episode }: StoredEpisode) =>
        episode.occurredAt.getTime() >= since && episode.occurredAt.getTime() <= until &&
        episode.sessionId !== query.excludeSessionId
      return byRelevance(state.episodes, query.terms, (e) => e.words, (e) => e.episode.occurredAt, query.limit, inRange)
        .map((e) => e.episode)
    }
    /** The user's facts as the store knew them at `knownAt` (see `asKnownAt`). */
    const factsKnownAt = (state: UserState, knownAt: Date | undefined): ReadonlyArray<StoredFact> =>
      knownAt === undefined ? state.facts : state.facts.flatMap((stored) => {
        const fact = store.asKnownAt(stored.fact, knownAt)
        return fact === undefined ? [] : [fact === stored.fact ? stored : { ...stored, fact }]
      })
    const recallFactsNow = (state: UserState, query: store.FactQuery) =>
      byRelevance(
        factsKnownAt(state, query.knownAt).filter((stored) => isValidAt(stored.fact, query.validAt)),
        query.terms,
        (f) => f.words,
        (f) => f.fact.recordedAt,
        query.limit
      ).map((f) => f.fact)
    const sessionEpisodesNow = (state: UserState, sessionId: string, count: number) =>
      state.episodes.filter((e) => e.episode.sessionId === sessionId).sort(oldestFirst).slice(-count).map((e) => e.episode)
    const insertEpisodeNow = (state: UserState, episode: Memory.Episode) => {
      state.episodes.push({ seq: state.nextSeq++, episode, words: wordString(`${episode.input} ${episode.output}`) })
    }

    const sync: store.SyncStore = {
      working: (user, now) => orderedBlocks(touch(user, now)),
      recall: (user, query, now) => recallNow(touch(user, now), query),
      recallFacts: (user, query, now) => recallFactsNow(touch(user, now), query),
      sessionEpisodes: (user, sessionId, count, now) => sessionEpisodesNow(touch(user, now), sessionId, count),
      insertEpisode: (user, episode, now) => insertEpisodeNow(touch(user, now), episode)
    }

    const memoryStore: store.Store = {
      sync,
      working: (user) => using(user, orderedBlocks),
      writeBlock: (user, block) =>
        using(user, (state) => {
          const previous = state.blocks.get(block.name)
          let pinnedOrder = previous?.pinnedOrder
          if (pinnedOrder === undefined) {
            pinnedOrder = 0
            for (const other of state.blocks.values()) pinnedOrder = Math.max(pinnedOrder, other.pinnedOrder + 1)
          }
          state.blocks.set(block.name, {
            name: block.name,
            content: block.append ? (previous?.content ?? "") + block.content : block.content,
            updatedAt: block.now,
            pinnedOrder
          })
        }),
      insertEpisode: (user, episode) => using(user, (state) => insertEpisodeNow(state, episode)),
      recall: (user, query) => using(user, (state) => recallNow(state, query)),
      insertFact: (user, fact) =>
        using(user, (state) => {
          // The facts it contradicts: one valid when it starts ends there (an open one is closed; a closed
          // one, when a fact learnt late falls inside it, is cut short and keeps when it was closed); the
          // earliest open one that starts after it closes it instead.
          let closedBy: Date | null = null
          const from = fact.validFrom.getTime()
          for (const stored of state.facts) {
            const other = stored.fact
            if (other.subject !== fact.subject || other.predicate !== fact.predicate || other.object === fact.object) continue
            const start = other.validFrom.getTime()
            if (start <= from) {
              if (other.validUntil === null) {
                stored.fact = { ...other, validUntil: fact.validFrom, supersededAt: fact.recordedAt }
              } else if (other.validUntil.getTime() > from) {
                stored.fact = { ...other, validUntil: fact.validFrom }
              }
            } else if (other.validUntil === null && (closedBy === null || start < closedBy.getTime())) {
              closedBy = other.validFrom
            }
          }
          state.facts.push({
            seq: state.nextSeq++,
            fact: closedBy === null ? fact : { ...fact, validUntil: closedBy, supersededAt: fact.recordedAt },
            words: wordString(`${fact.subject} ${fact.predicate} ${fact.object}`)
          })
          return closedBy
        }),
      recallFacts: (user, query) => using(user, (state) => recallFactsNow(state, query)),
      sessionEpisodes: (user, sessionId, count) => using(user, (state) => sessionEpisodesNow(state, sessionId, count)),
      profile: (user) =>
        using(user, (state) => {
          const episodes = [...state.episodes].sort(oldestFirst)
          const recentSessions: Array<string> = []
          for (let i = episodes.length - 1; i >= 0 && recentSessions.length < 10; i--) {
            const sessionId = episodes[i]!.episode.sessionId
            if (!recentSessions.includes(sessionId)) recentSessions.push(sessionId)
          }
          return {
            blocks: state.blocks.size,
            episodes: episodes.length,
            facts: state.facts.length,
            lastSeen: episodes.at(-1)?.episode.occurredAt ?? null,
            recentSessions,
            recentFacts: factsNewestFirst(state.facts).slice(0, 10).map((f) => f.fact)
          }
        }),
      forget: (user, filter) =>
        using(user, (state) => {
          const before = filter.before?.getTime() ?? Infinity
          const countBefore = state.episodes.length + state.facts.length + state.blocks.size
          state.episodes = state.episodes.filter(({ episode }) =>
            !((filter.sessionId === undefined || episode.sessionId === filter.sessionId) &&
              episode.occurredAt.getTime() < before)
          )
          if (filter.sessionId === undefined) {
            state.facts = state.facts.filter((f) => !(f.fact.recordedAt.getTime() < before))
            for (const [name, block] of state.blocks) {
              if (block.updatedAt.getTime() < before) state.blocks.delete(name)
            }
          }
          return countBefore - (state.episodes.length + state.facts.length + state.blocks.size)
        }),
      export: (user) =>
        using(user, (state) => ({
          blocks: orderedBlocks(state),
          episodes: [...state.episodes].sort(oldestFirst).map((e) => e.episode),
          facts: factsNewestFirst(state.facts).reverse().map((f) => f.fact)
        }))
    }

    const holdRun: RunHold = (user, now) => {
      // A new state is inserted already held: making room never evicts it.
      const existing = users.get(user, now)
      const state = existing ?? users.insert(user, emptyState(now, 1), now)
      if (existing !== undefined) {
        state.runs++
        state.pinned = true
      }
      let released = false
      return (end) => {
        if (released) return
        released = true
        // Touched before the count drops, so this access's sweep cannot take it. `get` touches
        // whatever state the table holds for the user now: an old one is never put back.
        if (state.runs === 1) users.get(user, end)
        state.runs--
        state.pinned = state.runs > 0
      }
    }

    /** Users held, and how many of them hold any data. */
    const residency = Effect.sync(() => {
      const states = [...users.values()]
      return { users: states.length, usersWithData: states.filter(hasData).length }
    })

    return { store: memoryStore, residency, holdRun }
  })

/**
 * The in-process Memory service.
 *
 * @internal
 */
export const makeInMemory = (options?: Memory.InMemoryOptions): Effect.Effect<Memory.Service> =>
  Effect.map(makeInMemoryStore(options), ({ holdRun, store: memoryStore }) => {
    const service = store.makeService(memoryStore)
    runHolds.set(service.remember, holdRun)
    return service
  })
