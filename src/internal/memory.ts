import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Memory from "../Memory.js"
import type * as Model from "../Model.js"
import * as RunContext from "../RunContext.js"
import { newId } from "./ids.js"

interface UserState {
  readonly blocks: Map<string, Memory.MemoryBlock>
  readonly episodes: Array<Memory.Episode>
  readonly facts: Array<Memory.Fact>
}

const words = (text: string): Set<string> => new Set(text.toLowerCase().match(/[\p{L}\p{N}_]+/gu) ?? [])

const overlap = (query: Set<string>, text: string): number => {
  let score = 0
  for (const word of words(text)) if (query.has(word)) score++
  return score
}

/**
 * A plain in-process store: one entry per user, no bounds yet.
 *
 * @internal
 */
export const makeInMemory = (_options?: Memory.InMemoryOptions): Effect.Effect<Memory.Service> =>
  Effect.sync(() => {
    const users = new Map<string, UserState>()
    const stateOf = (userId: string | null): UserState => {
      const key = RunContext.userKey(userId)
      let state = users.get(key)
      if (state === undefined) {
        state = { blocks: new Map(), episodes: [], facts: [] }
        users.set(key, state)
      }
      return state
    }
    const withState = <A>(f: (state: UserState, context: RunContext.RunContext, now: Date) => A) =>
      Effect.flatMap(RunContext.current, (context) =>
        Effect.map(Clock.currentTimeMillis, (millis) => f(stateOf(context.userId), context, new Date(millis))))

    const setBlock = (name: string, f: (previous: string) => string) =>
      withState((state, _context, now) => {
        const previous = state.blocks.get(name)
        state.blocks.set(name, {
          name,
          content: f(previous?.content ?? ""),
          updatedAt: now,
          pinnedOrder: previous?.pinnedOrder ?? state.blocks.size
        })
      })

    const isValidAt = (fact: Memory.Fact, at: Date) =>
      fact.validFrom.getTime() <= at.getTime() && (fact.validUntil === null || fact.validUntil.getTime() > at.getTime())

    const service: Memory.Service = {
      working: withState((state) => [...state.blocks.values()].sort((a, b) => a.pinnedOrder - b.pinnedOrder)),
      updateBlock: (name, content) => setBlock(name, () => content),
      appendBlock: (name, content) => setBlock(name, (previous) => previous + content),
      remember: (episode) =>
        withState((state, context, now) => {
          const id = newId("ep")
          state.episodes.push({
            id,
            sessionId: episode.sessionId ?? context.sessionId,
            userId: context.userId,
            occurredAt: episode.occurredAt ?? now,
            input: episode.input,
            output: episode.output,
            toolCalls: episode.toolCalls ?? []
          })
          return id
        }),
      recall: (query, options) =>
        withState((state) => {
          const queryWords = words(query)
          return state.episodes
            .filter((episode) =>
              (options?.excludeSessionId === undefined || episode.sessionId !== options.excludeSessionId) &&
              (options?.since === undefined || episode.occurredAt >= options.since) &&
              (options?.until === undefined || episode.occurredAt <= options.until)
            )
            .map((episode, index) => ({ episode, index, score: overlap(queryWords, `${episode.input} ${episode.output}`) }))
            .filter((scored) => scored.score > 0)
            .sort((a, b) => b.score - a.score || b.index - a.index)
            .slice(0, options?.limit ?? 5)
            .map((scored) => scored.episode)
        }),
      recallFacts: (query, options) =>
        withState((state, _context, now) => {
          const at = options?.validAt ?? now
          const queryWords = words(query)
          return state.facts
            .filter((fact) => isValidAt(fact, at))
            .map((fact) => ({ fact, score: overlap(queryWords, `${fact.subject} ${fact.predicate} ${fact.object}`) }))
            .filter((scored) => scored.score > 0)
            .sort((a, b) => b.score - a.score)
            .slice(0, options?.limit ?? 5)
            .map((scored) => scored.fact)
        }),
      appendFact: (fact) =>
        withState((state, context, now) => {
          const validFrom = fact.validFrom ?? now
          for (let i = 0; i < state.facts.length; i++) {
            const open = state.facts[i]!
            if (
              open.validUntil === null && open.subject === fact.subject && open.predicate === fact.predicate &&
              open.object !== fact.object
            ) {
              state.facts[i] = { ...open, validUntil: validFrom }
            }
          }
          const stored: Memory.Fact = {
            id: newId("fact"),
            userId: context.userId,
            subject: fact.subject,
            predicate: fact.predicate,
            object: fact.object,
            confidence: fact.confidence ?? 1,
            validFrom,
            validUntil: null,
            recordedAt: now,
            sources: fact.sources ?? []
          }
          state.facts.push(stored)
          return stored
        }),
      sessionMessages: (sessionId, options) =>
        withState((state) => {
          const messages: Array<Model.Message> = []
          for (const episode of state.episodes) {
            if (episode.sessionId !== sessionId) continue
            messages.push({ role: "user", content: episode.input })
            messages.push({ role: "assistant", content: episode.output, toolCalls: [] })
          }
          return messages.slice(-(options?.limit ?? 20))
        }),
      profile: withState((state, context) => {
        const sessions: Array<string> = []
        for (let i = state.episodes.length - 1; i >= 0 && sessions.length < 10; i--) {
          const sessionId = state.episodes[i]!.sessionId
          if (!sessions.includes(sessionId)) sessions.push(sessionId)
        }
        const last = state.episodes.at(-1)
        return {
          userId: context.userId,
          blocks: state.blocks.size,
          episodes: state.episodes.length,
          facts: state.facts.length,
          lastSeen: last?.occurredAt ?? null,
          recentSessions: sessions,
          recentFacts: state.facts.slice(-10).reverse()
        }
      }),
      forget: (options) =>
        withState((state) => {
          const matches = (sessionId: string | undefined, at: Date) =>
            (options?.sessionId === undefined || sessionId === options.sessionId) &&
            (options?.before === undefined || at < options.before)
          const keptEpisodes = state.episodes.filter((episode) => !matches(episode.sessionId, episode.occurredAt))
          let removed = state.episodes.length - keptEpisodes.length
          state.episodes.splice(0, state.episodes.length, ...keptEpisodes)
          if (options?.sessionId === undefined) {
            const keptFacts = state.facts.filter((fact) => !matches(undefined, fact.recordedAt))
            removed += state.facts.length - keptFacts.length
            state.facts.splice(0, state.facts.length, ...keptFacts)
            if (options?.before === undefined) {
              removed += state.blocks.size
              state.blocks.clear()
            }
          }
          return removed
        }),
      export: withState((state, context) => ({
        userId: context.userId,
        blocks: [...state.blocks.values()],
        episodes: [...state.episodes],
        facts: [...state.facts]
      }))
    }
    return service
  })
