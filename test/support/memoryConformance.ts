/**
 * One behavioural suite for every Memory backend.
 *
 * `fresh()` must return a layer with a store nobody else uses (a new file, a
 * new namespace, a new in-memory instance), so tests never see each other's
 * data — the anonymous bucket included.
 */
import { assert, type Vitest } from "@effect/vitest"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Clock, Effect, FastCheck, Layer, TestClock } from "effect"
import { Agent, Memory, Model, RunContext } from "jeevesagent"

type Fresh<R> = () => Layer.Layer<Memory.Memory, unknown, R>

const as = (userId: string | null, sessionId = "s1") => RunContext.withUser(userId, { sessionId })

const memory = Memory.Memory

// ---- the model of the isolation property --------------------------------------

const USERS = ["user_1", "user_10", "USER_1", null] as const
const SESSIONS = ["s1", "s2"] as const
const BLOCKS = ["notes", "prefs", "todo"] as const
const WORDS = ["apple", "berry", "cherry", "delta", "echo"] as const
const SUBJECTS = ["user", "sky"] as const
const PREDICATES = ["likes", "is"] as const

type User = typeof USERS[number]

type Command =
  | { readonly kind: "updateBlock" | "appendBlock"; readonly user: User; readonly name: string; readonly content: string }
  | {
    readonly kind: "remember"
    readonly user: User
    readonly session: string
    readonly input: string
    readonly output: string
  }
  | {
    readonly kind: "appendFact"
    readonly user: User
    readonly subject: string
    readonly predicate: string
    readonly object: string
  }
  | { readonly kind: "forgetSession"; readonly user: User; readonly session: string }

const user = FastCheck.constantFrom(...USERS)
const word = FastCheck.constantFrom(...WORDS)
const phrase = FastCheck.array(word, { minLength: 1, maxLength: 3 }).map((words) => words.join(" "))

const command: FastCheck.Arbitrary<Command> = FastCheck.oneof(
  FastCheck.record({
    kind: FastCheck.constantFrom("updateBlock" as const, "appendBlock" as const),
    user,
    name: FastCheck.constantFrom(...BLOCKS),
    content: word
  }),
  FastCheck.record({
    kind: FastCheck.constant("remember" as const),
    user,
    session: FastCheck.constantFrom(...SESSIONS),
    input: phrase,
    output: phrase
  }),
  FastCheck.record({
    kind: FastCheck.constant("appendFact" as const),
    user,
    subject: FastCheck.constantFrom(...SUBJECTS),
    predicate: FastCheck.constantFrom(...PREDICATES),
    object: word
  }),
  FastCheck.record({ kind: FastCheck.constant("forgetSession" as const), user, session: FastCheck.constantFrom(...SESSIONS) })
)

interface ModelState {
  readonly blocks: Array<{ name: string; content: string }>
  episodes: Array<{ session: string; input: string; output: string }>
  readonly facts: Array<{ subject: string; predicate: string; object: string; open: boolean }>
}

const emptyModel = (): ModelState => ({ blocks: [], episodes: [], facts: [] })

/** Applies `command` to the model; returns what the real call must return, when it returns a number. */
const applyToModel = (state: ModelState, command: Command): number | undefined => {
  switch (command.kind) {
    case "updateBlock":
    case "appendBlock": {
      const block = state.blocks.find((b) => b.name === command.name)
      if (block === undefined) state.blocks.push({ name: command.name, content: command.content })
      else block.content = command.kind === "appendBlock" ? block.content + command.content : command.content
      return undefined
    }
    case "remember":
      state.episodes.push({ session: command.session, input: command.input, output: command.output })
      return undefined
    case "appendFact":
      for (const fact of state.facts) {
        if (fact.open && fact.subject === command.subject && fact.predicate === command.predicate && fact.object !== command.object) {
          fact.open = false
        }
      }
      state.facts.push({ subject: command.subject, predicate: command.predicate, object: command.object, open: true })
      return undefined
    case "forgetSession": {
      const before = state.episodes.length
      state.episodes = state.episodes.filter((e) => e.session !== command.session)
      return before - state.episodes.length
    }
  }
}

const runCommand = (command: Command) =>
  Effect.gen(function*() {
    const m = yield* memory
    switch (command.kind) {
      case "updateBlock":
        return yield* m.updateBlock(command.name, command.content).pipe(Effect.as(undefined))
      case "appendBlock":
        return yield* m.appendBlock(command.name, command.content).pipe(Effect.as(undefined))
      case "remember":
        return yield* m.remember({ sessionId: command.session, input: command.input, output: command.output }).pipe(
          Effect.as(undefined)
        )
      case "appendFact":
        return yield* m.appendFact(command).pipe(Effect.as(undefined))
      case "forgetSession":
        return yield* m.forget({ sessionId: command.session })
    }
  }).pipe(as(command.user))

/** Everything `userId` can observe equals the model, and nothing of anybody else shows up. */
const checkUser = (userId: User, expected: ModelState, owned: ReadonlyMap<string, User>) =>
  Effect.gen(function*() {
    const m = yield* memory
    const label = `user ${userId}`
    const blocks = yield* m.working
    assert.deepStrictEqual(blocks.map((b) => ({ name: b.name, content: b.content })), expected.blocks, `${label} blocks`)
    assert.deepStrictEqual(blocks.map((b) => b.pinnedOrder), expected.blocks.map((_, i) => i), `${label} pinned order`)

    const exported = yield* m.export
    assert.strictEqual(exported.userId, userId)
    assert.deepStrictEqual(
      exported.episodes.map((e) => ({ session: e.sessionId, input: e.input, output: e.output })),
      expected.episodes,
      `${label} episodes`
    )
    assert.deepStrictEqual(
      exported.facts.map((f) => ({ subject: f.subject, predicate: f.predicate, object: f.object, open: f.validUntil === null })),
      expected.facts,
      `${label} facts`
    )
    for (const item of [...exported.episodes, ...exported.facts]) {
      assert.strictEqual(item.userId, userId, `${label} export carries another user's item`)
      assert.strictEqual(owned.get(item.id), userId, `${label} export holds an item written by someone else`)
    }

    for (const term of WORDS) {
      const recalled = yield* m.recall(term)
      const matching = exported.episodes.filter((e) => `${e.input} ${e.output}`.split(" ").includes(term))
      assert.strictEqual(recalled.length, Math.min(5, matching.length), `${label} recall ${term}`)
      for (const episode of recalled) {
        assert.strictEqual(owned.get(episode.id), userId, `${label} recalled another user's episode`)
        assert.include(`${episode.input} ${episode.output}`, term)
      }
      const facts = yield* m.recallFacts(term)
      const open = expected.facts.filter((f) => f.open && f.object === term)
      assert.strictEqual(facts.length, Math.min(5, open.length), `${label} recallFacts ${term}`)
      for (const fact of facts) assert.strictEqual(owned.get(fact.id), userId, `${label} recalled another user's fact`)
    }

    for (const session of SESSIONS) {
      const messages = yield* m.sessionMessages(session, { limit: 100 })
      const turns = expected.episodes.filter((e) => e.session === session)
      assert.deepStrictEqual(
        messages.map((message) => message.content),
        turns.flatMap((e) => [e.input, e.output]),
        `${label} session ${session}`
      )
    }

    const profile = yield* m.profile
    assert.deepStrictEqual(
      { blocks: profile.blocks, episodes: profile.episodes, facts: profile.facts },
      { blocks: expected.blocks.length, episodes: expected.episodes.length, facts: expected.facts.length },
      `${label} profile`
    )
  }).pipe(as(userId))

// ---- the suite -------------------------------------------------------------------

/** One call of every method of `memory`, by method name. */
export const everyOperation = (
  memory: Memory.Service
): Record<keyof Memory.Service, Effect.Effect<unknown, Memory.MemoryError | RunContext.InvalidUserId>> => ({
  working: memory.working,
  updateBlock: memory.updateBlock("a", "b"),
  appendBlock: memory.appendBlock("a", "c"),
  remember: memory.remember({ input: "i", output: "o" }),
  recall: memory.recall("i"),
  recallFacts: memory.recallFacts("i"),
  appendFact: memory.appendFact({ subject: "s", predicate: "p", object: "o" }),
  sessionMessages: memory.sessionMessages("s1"),
  profile: memory.profile,
  forget: memory.forget(),
  export: memory.export
})

/**
 * Registers the conformance tests with `it` (the top-level `it`, or the one
 * an `it.layer` block hands out when `fresh` needs services).
 */
export const memoryConformance = <R>(
  it: Vitest.MethodsNonLive<R>,
  fresh: Fresh<R>,
  options?: { readonly numRuns?: number }
) => {
  const numRuns = options?.numRuns ?? 25
  const test = (name: string, body: () => Effect.Effect<unknown, unknown, Memory.Memory | R>) =>
    it.effect(name, () => Effect.provide(body(), fresh()))

  it.effect.prop(
    "isolation: random interleaved operations by prefix-related users and anonymous never cross",
    [FastCheck.array(command, { minLength: 1, maxLength: 30 })],
    ([commands]) =>
      Effect.gen(function*() {
        const models = new Map<User, ModelState>(USERS.map((u) => [u, emptyModel()]))
        for (const c of commands) {
          const expected = applyToModel(models.get(c.user)!, c)
          const actual = yield* runCommand(c)
          if (expected !== undefined) assert.strictEqual(actual, expected, `${c.kind} count`)
        }
        // Who wrote each stored item, as every user's export tells it.
        const owned = new Map<string, User>()
        for (const u of USERS) {
          const exported = yield* Effect.flatMap(memory, (m) => m.export).pipe(as(u))
          for (const item of [...exported.episodes, ...exported.facts]) {
            assert.isFalse(owned.has(item.id), `item ${item.id} is visible to two users`)
            owned.set(item.id, u)
          }
        }
        for (const u of USERS) yield* checkUser(u, models.get(u)!, owned)
      }).pipe(Effect.provide(fresh())),
    { fastCheck: { numRuns } }
  )

  test("the same block name holds each user's own content", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.updateBlock("prefs", "alice likes tea").pipe(as("alice"))
      yield* m.updateBlock("prefs", "bob likes coffee").pipe(as("bob"))
      yield* m.updateBlock("prefs", "anonymous likes water").pipe(as(null))
      const alice = yield* m.working.pipe(as("alice"))
      const bob = yield* m.working.pipe(as("bob"))
      const anonymous = yield* m.working.pipe(as(null))
      assert.deepStrictEqual(alice.map((b) => b.content), ["alice likes tea"])
      assert.deepStrictEqual(bob.map((b) => b.content), ["bob likes coffee"])
      assert.deepStrictEqual(anonymous.map((b) => b.content), ["anonymous likes water"])
      assert.deepStrictEqual(yield* m.working.pipe(as("carol")), [])
    }))

  test("long and non-ASCII user ids are partitions of their own", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const users = ["é".repeat(256), "e".repeat(256), "E".repeat(256), "用户_1", "用户_10", "🙂".repeat(128)]
      for (const u of users) {
        yield* m.remember({ input: `lisbon trip of ${u}`, output: "ok" }).pipe(as(u))
        yield* m.appendFact({ subject: "user", predicate: "visited", object: `lisbon ${u}` }).pipe(as(u))
      }
      for (const u of users) {
        const episodes = yield* m.recall("Lisbon trip").pipe(as(u))
        assert.deepStrictEqual(episodes.map((e) => [e.userId, e.input]), [[u, `lisbon trip of ${u}`]])
        const facts = yield* m.recallFacts("lisbon").pipe(as(u))
        assert.deepStrictEqual(facts.map((f) => f.object), [`lisbon ${u}`])
      }
    }))

  test("blocks: pinned order per user, updates keep their place, append concatenates", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.updateBlock("a", "1").pipe(as("alice"))
      yield* m.updateBlock("only", "x").pipe(as("bob"))
      yield* m.appendBlock("b", "2").pipe(as("alice"))
      yield* m.updateBlock("a", "3").pipe(as("alice"))
      yield* m.appendBlock("b", "4").pipe(as("alice"))
      const alice = yield* m.working.pipe(as("alice"))
      assert.deepStrictEqual(alice.map((b) => [b.name, b.content, b.pinnedOrder]), [["a", "3", 0], ["b", "24", 1]])
      const bob = yield* m.working.pipe(as("bob"))
      assert.deepStrictEqual(bob.map((b) => [b.name, b.pinnedOrder]), [["only", 0]])
    }))

  test("sessionMessages: only this user and this session, oldest first, the most recent turns", () =>
    Effect.gen(function*() {
      const m = yield* memory
      for (let i = 1; i <= 4; i++) yield* m.remember({ input: `q${i}`, output: `a${i}` }).pipe(as("alice", "shared"))
      yield* m.remember({ input: "other session", output: "x" }).pipe(as("alice", "other"))
      yield* m.remember({ input: "bob's turn", output: "y" }).pipe(as("bob", "shared"))
      yield* m.remember({ input: "", output: "only output" }).pipe(as("carol", "shared"))

      const all = yield* m.sessionMessages("shared").pipe(as("alice"))
      assert.deepStrictEqual(all.map((msg) => [msg.role, msg.content]), [
        ["user", "q1"], ["assistant", "a1"], ["user", "q2"], ["assistant", "a2"],
        ["user", "q3"], ["assistant", "a3"], ["user", "q4"], ["assistant", "a4"]
      ])
      const recent = yield* m.sessionMessages("shared", { limit: 4 }).pipe(as("alice"))
      assert.deepStrictEqual(recent.map((msg) => msg.content), ["q3", "a3", "q4", "a4"])
      const one = yield* m.sessionMessages("shared", { limit: 1 }).pipe(as("alice"))
      assert.deepStrictEqual(one.map((msg) => msg.content), ["q4", "a4"])
      assert.deepStrictEqual((yield* m.sessionMessages("shared").pipe(as("bob"))).map((msg) => msg.content), [
        "bob's turn",
        "y"
      ])
      assert.deepStrictEqual(yield* m.sessionMessages("shared").pipe(as(null)), [])
      assert.deepStrictEqual(yield* m.sessionMessages("unknown").pipe(as("alice")), [])
      // Empty text is skipped.
      assert.deepStrictEqual((yield* m.sessionMessages("shared").pipe(as("carol"))).map((msg) => msg.role), ["assistant"])
    }))

  test("recall: words, limit, time range, excluded session, newest first without words", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const t0 = yield* Clock.currentTimeMillis
      yield* m.remember({ input: "I moved to Lisbon", output: "Noted." }).pipe(as("alice", "s1"))
      yield* TestClock.adjust("1 minute")
      yield* m.remember({ input: "Lisbon has trams", output: "Yes, yellow ones." }).pipe(as("alice", "s2"))
      yield* TestClock.adjust("1 minute")
      yield* m.remember({ input: "what about Porto", output: "Porto is north of Lisbon." }).pipe(as("alice", "s3"))
      yield* m.remember({ input: "Lisbon for bob", output: "bob's" }).pipe(as("bob", "s1"))

      const all = yield* m.recall("lisbon").pipe(as("alice"))
      assert.strictEqual(all.length, 3)
      assert.isTrue(all.every((e) => e.userId === "alice"))
      assert.strictEqual((yield* m.recall("Lisbon", { limit: 2 }).pipe(as("alice"))).length, 2)
      // Two matching words rank above one.
      assert.strictEqual((yield* m.recall("Porto Lisbon").pipe(as("alice")))[0]!.input, "what about Porto")
      assert.deepStrictEqual((yield* m.recall("trams").pipe(as("alice"))).map((e) => e.sessionId), ["s2"])
      assert.deepStrictEqual(yield* m.recall("Madrid").pipe(as("alice")), [])
      const excluded = yield* m.recall("Lisbon", { excludeSessionId: "s2" }).pipe(as("alice"))
      assert.deepStrictEqual(excluded.map((e) => e.sessionId).sort(), ["s1", "s3"])
      const minute = new Date(t0 + 60_000)
      const ranged = yield* m.recall("Lisbon", { since: minute, until: minute }).pipe(as("alice"))
      assert.deepStrictEqual(ranged.map((e) => e.sessionId), ["s2"])
      const recent = yield* m.recall("", { limit: 2 }).pipe(as("alice"))
      assert.deepStrictEqual(recent.map((e) => e.sessionId), ["s3", "s2"])
      // Stop words alone are no query: the newest come back.
      assert.strictEqual((yield* m.recall("what is the").pipe(as("alice"))).length, 3)
      assert.deepStrictEqual((yield* m.recall("Lisbon").pipe(as("bob"))).map((e) => e.output), ["bob's"])
      assert.deepStrictEqual(yield* m.recall("Lisbon").pipe(as(null)), [])
    }))

  test("remember keeps tool calls and an explicit time", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const at = new Date("2024-05-01T10:00:00.123Z")
      const id = yield* m.remember({
        input: "search",
        output: "found",
        occurredAt: at,
        toolCalls: [{ name: "search", args: { q: "x", n: 2, nested: [true, null] } }]
      }).pipe(as("alice"))
      const [episode] = (yield* m.export.pipe(as("alice"))).episodes
      assert.strictEqual(episode!.id, id)
      assert.strictEqual(episode!.occurredAt.getTime(), at.getTime())
      assert.deepStrictEqual(episode!.toolCalls, [{ name: "search", args: { q: "x", n: 2, nested: [true, null] } }])
    }))

  test("facts: appending closes the same user's open fact with another object, never another user's", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const t0 = yield* Clock.currentTimeMillis
      const porto = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Porto", sources: ["ep_1"] })
        .pipe(as("alice"))
      const bobs = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Berlin" }).pipe(as("bob"))
      yield* TestClock.adjust("1 hour")
      const lisbon = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon", confidence: 0.5 })
        .pipe(as("alice"))
      // Same object again: the open fact stays open, the new one is added too.
      yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon" }).pipe(as("alice"))

      const facts = (yield* m.export.pipe(as("alice"))).facts
      assert.deepStrictEqual(facts.map((f) => [f.object, f.validUntil?.getTime() ?? null]), [
        ["Porto", lisbon.validFrom.getTime()],
        ["Lisbon", null],
        ["Lisbon", null]
      ])
      assert.strictEqual(facts[0]!.id, porto.id)
      assert.deepStrictEqual(facts[0]!.sources, ["ep_1"])
      assert.strictEqual(facts[1]!.confidence, 0.5)
      const bob = (yield* m.export.pipe(as("bob"))).facts
      assert.deepStrictEqual(bob.map((f) => [f.id, f.validUntil]), [[bobs.id, null]])

      // validAt: before, during and after Porto's validity.
      const at = (millis: number) =>
        m.recallFacts("lives", { validAt: new Date(t0 + millis) }).pipe(as("alice"), Effect.map((fs) => fs.map((f) => f.object)))
      assert.deepStrictEqual(yield* at(-1), [])
      assert.deepStrictEqual(yield* at(0), ["Porto"])
      assert.deepStrictEqual(yield* at(3_600_000 - 1), ["Porto"])
      assert.deepStrictEqual(yield* at(3_600_000), ["Lisbon", "Lisbon"])
      assert.deepStrictEqual((yield* m.recallFacts("Lisbon").pipe(as("alice"))).length, 2)
      assert.deepStrictEqual(yield* m.recallFacts("Porto").pipe(as("alice")), [])
      assert.deepStrictEqual((yield* m.recallFacts("").pipe(as("bob"))).map((f) => f.object), ["Berlin"])
    }))

  test("facts: validFrom in the past, and the anonymous bucket is its own", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const t0 = yield* Clock.currentTimeMillis
      yield* TestClock.adjust("10 days")
      yield* m.appendFact({ subject: "team", predicate: "uses", object: "Rust", validFrom: new Date(1000) }).pipe(as(null))
      yield* m.appendFact({ subject: "team", predicate: "uses", object: "Go", validFrom: new Date(5000) }).pipe(as(null))
      yield* m.appendFact({ subject: "team", predicate: "uses", object: "Zig" }).pipe(as("alice"))
      const at = (millis: number) =>
        m.recallFacts("team", { validAt: new Date(millis) }).pipe(as(null), Effect.map((fs) => fs.map((f) => f.object)))
      assert.deepStrictEqual(yield* at(999), [])
      assert.deepStrictEqual(yield* at(4999), ["Rust"])
      assert.deepStrictEqual(yield* at(5000), ["Go"])
      assert.deepStrictEqual((yield* m.recallFacts("team").pipe(as("alice"))).map((f) => f.object), ["Zig"])
      const [fact] = (yield* m.export.pipe(as(null))).facts
      assert.strictEqual(fact!.userId, null)
      assert.strictEqual(fact!.recordedAt.getTime(), t0 + 10 * 86_400_000)
    }))

  test("facts: knownAt recalls them as the store knew them then; a closed fact keeps when it was closed", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const t0 = yield* Clock.currentTimeMillis
      const porto = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Porto" }).pipe(as("alice"))
      yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Berlin" }).pipe(as("bob"))
      yield* TestClock.adjust("1 hour")
      // Learnt an hour later: she had moved half an hour after t0 (a correction, back-dated in valid time).
      const lisbon = yield* m.appendFact({ subject: "user", predicate: "lives in", object: "Lisbon", validFrom: new Date(t0 + 1_800_000) })
        .pipe(as("alice"))
      yield* TestClock.adjust("1 hour")
      const recalled = (options: { validAt?: Date; knownAt?: Date }, userId = "alice") =>
        m.recallFacts("lives", options).pipe(
          as(userId),
          Effect.map((facts) => facts.map((f) => [f.object, f.validUntil?.getTime() ?? null, f.supersededAt?.getTime() ?? null]))
        )
      const at = (millis: number) => new Date(t0 + millis)

      // Now: Lisbon since t0 + 30 min, Porto before.
      assert.deepStrictEqual(yield* recalled({ validAt: at(2_700_000) }), [["Lisbon", null, null]])
      assert.deepStrictEqual(yield* recalled({ validAt: at(60_000) }), [["Porto", t0 + 1_800_000, t0 + 3_600_000]])
      // What was believed ten minutes in: Porto, open, even for a time it has since been corrected for.
      assert.deepStrictEqual(yield* recalled({ validAt: at(2_700_000), knownAt: at(600_000) }), [["Porto", null, null]])
      assert.deepStrictEqual(yield* recalled({ knownAt: at(600_000) }), [["Porto", null, null]])
      // Known from the moment it was recorded; nothing before the first fact.
      assert.deepStrictEqual(yield* recalled({ validAt: at(2_700_000), knownAt: at(3_600_000) }), [["Lisbon", null, null]])
      assert.deepStrictEqual(yield* recalled({ validAt: at(2_700_000), knownAt: at(3_599_999) }), [["Porto", null, null]])
      assert.deepStrictEqual(yield* recalled({ knownAt: at(-1) }), [])
      // Another user's facts are their own, at any time.
      assert.deepStrictEqual(yield* recalled({ knownAt: at(7_200_000) }, "bob"), [["Berlin", null, null]])

      const facts = (yield* m.export.pipe(as("alice"))).facts
      assert.deepStrictEqual(facts.map((f) => [f.id, f.supersededAt?.getTime() ?? null]), [
        [porto.id, lisbon.recordedAt.getTime()],
        [lisbon.id, null]
      ])
      assert.strictEqual(lisbon.supersededAt, null)
    }))

  // ---- ranking and words: the same on every backend -----------------------------

  test("recall: with as many matching words, newer first (repetition and length do not count)", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.remember({ input: "Lisbon, Lisbon, Lisbon!", output: "ok" }).pipe(as("alice"))
      yield* TestClock.adjust("1 minute")
      yield* m.remember({ input: "I finally moved to Lisbon with my whole family last year", output: "ok" }).pipe(as("alice"))
      const recalled = yield* m.recall("lisbon").pipe(as("alice"))
      assert.deepStrictEqual(recalled.map((e) => e.input.slice(0, 9)), ["I finally", "Lisbon, L"])
      // Same time: the later insert first.
      yield* m.remember({ input: "lisbon lisbon", output: "ok" }).pipe(as("bob"))
      yield* m.remember({ input: "a long sentence about lisbon and nothing else", output: "ok" }).pipe(as("bob"))
      assert.deepStrictEqual((yield* m.recall("lisbon", { limit: 1 }).pipe(as("bob"))).map((e) => e.input), [
        "a long sentence about lisbon and nothing else"
      ])
    }))

  test("recallFacts: with as many matching words, newer first", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.appendFact({ subject: "lisbon", predicate: "is", object: "lisbon" }).pipe(as("alice"))
      yield* TestClock.adjust("1 minute")
      yield* m.appendFact({ subject: "user", predicate: "visited", object: "lisbon in the spring" }).pipe(as("alice"))
      const recalled = yield* m.recallFacts("lisbon").pipe(as("alice"))
      assert.deepStrictEqual(recalled.map((f) => f.subject), ["user", "lisbon"])
    }))

  test("recall: more matching words first, whatever other users store", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.remember({ input: "madrid", output: "ok" }).pipe(as("alice"))
      yield* m.remember({ input: "lisbon porto", output: "ok" }).pipe(as("alice"))
      yield* m.remember({ input: "madrid again", output: "ok" }).pipe(as("alice"))
      for (let i = 0; i < 10; i++) yield* m.remember({ input: "lisbon porto trip", output: "ok" }).pipe(as("bob"))
      const recalled = yield* m.recall("lisbon porto madrid").pipe(as("alice"))
      assert.deepStrictEqual(recalled.map((e) => e.input), ["lisbon porto", "madrid again", "madrid"])
    }))

  test("recall and recallFacts: one user's writes never change another user's order", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.remember({ input: "lisbon", output: "ok" }).pipe(as("alice"))
      yield* m.appendFact({ subject: "lisbon", predicate: "is", object: "far" }).pipe(as("alice"))
      yield* TestClock.adjust("1 minute")
      yield* m.remember({ input: "madrid", output: "ok" }).pipe(as("alice"))
      yield* m.appendFact({ subject: "madrid", predicate: "is", object: "near" }).pipe(as("alice"))
      const observe = Effect.all([
        m.recall("lisbon madrid", { limit: 1 }),
        m.recall("lisbon madrid"),
        m.recallFacts("lisbon madrid", { limit: 1 }),
        m.recallFacts("lisbon madrid")
      ]).pipe(as("alice"), Effect.map((results) => results.map((items) => items.map((item) => item.id))))
      const before = yield* observe
      for (let i = 0; i < 10; i++) {
        yield* m.remember({ input: "madrid again", output: "madrid" }).pipe(as("bob"))
        yield* m.appendFact({ subject: "madrid", predicate: "is", object: `madrid ${i}` }).pipe(as("bob"))
        yield* m.remember({ input: "lisbon", output: "ok" }).pipe(as(null))
      }
      assert.deepStrictEqual(yield* observe, before, "other users' writes changed what alice recalls")
      assert.deepStrictEqual((yield* m.recall("lisbon madrid", { limit: 1 }).pipe(as("alice"))).map((e) => e.input), ["madrid"])
    }))

  it.effect.prop(
    "recall and recallFacts order: most distinct matching words, then newest, then last written",
    [
      FastCheck.array(FastCheck.tuple(phrase, FastCheck.boolean()), { minLength: 1, maxLength: 12 }),
      FastCheck.array(word, { minLength: 1, maxLength: 4 }),
      FastCheck.integer({ min: 1, max: 6 })
    ],
    ([writes, queryWords, limit]) =>
      Effect.gen(function*() {
        const m = yield* memory
        const written: Array<{ text: string; at: number; index: number }> = []
        for (const [index, [text, later]] of writes.entries()) {
          if (later) yield* TestClock.adjust("1 second")
          yield* m.remember({ input: text, output: "" }).pipe(as("alice"))
          yield* m.appendFact({ subject: `s${index}`, predicate: "is", object: text }).pipe(as("alice"))
          yield* m.remember({ input: `${text} ${queryWords.join(" ")}`, output: "" }).pipe(as("bob"))
          written.push({ text, at: yield* Clock.currentTimeMillis, index })
        }
        const query = queryWords.join(" ")
        const expected = written
          .map((w) => ({ ...w, score: new Set(queryWords.filter((q) => w.text.split(" ").includes(q))).size }))
          .filter((w) => w.score > 0)
          .sort((a, b) => b.score - a.score || b.at - a.at || b.index - a.index)
          .slice(0, limit)
          .map((w) => w.index)
        const episodes = yield* m.recall(query, { limit }).pipe(as("alice"))
        const byText = (text: string) => written.filter((w) => w.text === text).map((w) => w.index)
        // Episodes of equal text are interchangeable: compare texts.
        assert.deepStrictEqual(episodes.map((e) => e.input), expected.map((i) => written[i]!.text), "recall")
        assert.isTrue(episodes.every((e) => byText(e.input).length > 0))
        const facts = yield* m.recallFacts(query, { limit }).pipe(as("alice"))
        assert.deepStrictEqual(facts.map((f) => f.subject), expected.map((i) => `s${i}`), "recallFacts")
      }).pipe(Effect.provide(fresh())),
    { fastCheck: { numRuns } }
  )

  test("words: an item is found by the very words it holds, whatever their Unicode form", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* m.remember({ input: "I moved to İstanbul", output: "ok" }).pipe(as("alice"))
      yield* m.remember({ input: "cafe\u0301 au lait", output: "ok" }).pipe(as("alice"))
      yield* m.remember({ input: "हिन्दी सीखना", output: "ok" }).pipe(as("alice"))
      yield* m.appendFact({ subject: "user", predicate: "lives in", object: "İzmir" }).pipe(as("alice"))
      const recall = (query: string) => m.recall(query).pipe(as("alice"), Effect.map((es) => es.map((e) => e.input)))
      assert.deepStrictEqual(yield* recall("İstanbul"), ["I moved to İstanbul"])
      assert.deepStrictEqual(yield* recall("cafe\u0301"), ["cafe\u0301 au lait"])
      assert.deepStrictEqual(yield* recall("हिन्दी"), ["हिन्दी सीखना"])
      const facts = yield* m.recallFacts("İzmir").pipe(as("alice"))
      assert.deepStrictEqual(facts.map((f) => f.object), ["İzmir"])
      // Case, accents and compatibility forms fold on both sides.
      assert.deepStrictEqual(yield* recall("ISTANBUL"), ["I moved to İstanbul"])
      assert.deepStrictEqual(yield* recall("istanbul"), ["I moved to İstanbul"])
      assert.deepStrictEqual(yield* recall("Café"), ["cafe\u0301 au lait"])
      assert.deepStrictEqual(yield* recall("cafe"), ["cafe\u0301 au lait"])
      assert.deepStrictEqual(yield* recall("ｃａｆｅ"), ["cafe\u0301 au lait"])
      assert.deepStrictEqual((yield* m.recallFacts("izmir").pipe(as("alice"))).map((f) => f.object), ["İzmir"])
      // A folded word is one word: no stray "i" or "stanbul".
      assert.deepStrictEqual(yield* recall("stanbul"), [])
    }))

  test("remember: a very large episode is stored and found by its first words", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const input = Array.from({ length: 150_000 }, (_, i) => `w${i.toString(36)}x`).join(" ")
      yield* m.remember({ input, output: "stored" }).pipe(as("alice"))
      const found = yield* m.recall("w0x w1x").pipe(as("alice"))
      assert.deepStrictEqual(found.map((e) => [e.input.length, e.output]), [[input.length, "stored"]])
    }))

  test("GDPR: profile, export and forget are per user", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const t0 = yield* Clock.currentTimeMillis
      for (let i = 0; i < 12; i++) {
        yield* m.remember({ input: `turn ${i}`, output: "ok" }).pipe(as("alice", `sess${i}`))
        yield* TestClock.adjust("1 second")
      }
      yield* m.updateBlock("prefs", "tea").pipe(as("alice"))
      yield* m.appendFact({ subject: "alice", predicate: "likes", object: "tea" }).pipe(as("alice"))
      yield* m.remember({ input: "bob here", output: "hi" }).pipe(as("bob", "sess0"))
      yield* m.updateBlock("prefs", "coffee").pipe(as("bob"))
      yield* m.remember({ input: "anonymous", output: "hi" }).pipe(as(null, "sess0"))

      const profile = yield* m.profile.pipe(as("alice"))
      assert.strictEqual(profile.userId, "alice")
      assert.deepStrictEqual([profile.blocks, profile.episodes, profile.facts], [1, 12, 1])
      assert.deepStrictEqual(profile.recentSessions, ["sess11", "sess10", "sess9", "sess8", "sess7", "sess6", "sess5", "sess4", "sess3", "sess2"])
      assert.strictEqual(profile.lastSeen?.getTime(), t0 + 11_000)
      assert.deepStrictEqual(profile.recentFacts.map((f) => f.object), ["tea"])

      const exported = yield* m.export.pipe(as("alice"))
      assert.deepStrictEqual(exported.episodes.map((e) => e.input), Array.from({ length: 12 }, (_, i) => `turn ${i}`))
      assert.deepStrictEqual(exported.blocks.map((b) => b.content), ["tea"])

      // One session: only its episodes; facts and blocks stay.
      assert.strictEqual(yield* m.forget({ sessionId: "sess0" }).pipe(as("alice")), 1)
      // Before a time: older episodes, facts recorded and blocks updated before it.
      assert.strictEqual(yield* m.forget({ before: new Date(t0 + 5_000) }).pipe(as("alice")), 4)
      assert.deepStrictEqual((yield* m.profile.pipe(as("alice"))).episodes, 7)
      assert.deepStrictEqual((yield* m.profile.pipe(as("alice"))).facts, 1)
      // Everything.
      assert.strictEqual(yield* m.forget().pipe(as("alice")), 9)
      const gone = yield* m.export.pipe(as("alice"))
      assert.deepStrictEqual([gone.blocks, gone.episodes, gone.facts], [[], [], []])
      assert.deepStrictEqual(yield* m.profile.pipe(as("alice")), {
        userId: "alice", blocks: 0, episodes: 0, facts: 0, lastSeen: null, recentSessions: [], recentFacts: []
      })

      // Forgetting the anonymous bucket leaves the named users alone.
      assert.strictEqual(yield* m.forget().pipe(as(null)), 1)
      const bob = yield* m.export.pipe(as("bob"))
      assert.deepStrictEqual([bob.userId, bob.episodes.length, bob.blocks.length], ["bob", 1, 1])
    }))

  test("the anonymous sentinel and other invalid ids in the context fail with InvalidUserId", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const operations = Object.values(everyOperation(m))
      for (const [userId, rule] of [[RunContext.ANONYMOUS_USER, "reserved"], ["", "empty"], ["a\nb", "control_characters"]]) {
        // Installed behind withUser's back, as a misbehaving caller could.
        const context = { ...RunContext.empty, userId, sessionId: "s1" }
        for (const operation of operations) {
          const error = yield* Effect.flip(RunContext.locally(context)(operation))
          if (!(error instanceof RunContext.InvalidUserId)) return assert.fail(`expected InvalidUserId, got ${error._tag}`)
          assert.deepStrictEqual([error.rule, error.userId], [rule, userId])
        }
      }
      // Nothing was written for anybody.
      assert.strictEqual((yield* m.profile.pipe(as(null))).episodes, 0)
    }))

  test("bad arguments fail with a MemoryError naming the method", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const failures: ReadonlyArray<
        readonly [Effect.Effect<unknown, Memory.MemoryError | RunContext.InvalidUserId>, string, string]
      > = [
        [m.recall("x", { limit: 0 }), "recall", "limit must be a positive integer, got 0"],
        [m.recallFacts("x", { limit: 1.5 }), "recallFacts", "limit must be a positive integer, got 1.5"],
        [m.sessionMessages("s1", { limit: -1 }), "sessionMessages", "limit must be a positive integer, got -1"],
        [m.updateBlock("", "x"), "updateBlock", "block name must be a non-empty string, got \"\""],
        [m.appendFact({ subject: "s", predicate: "p", object: "o", confidence: 2 }), "appendFact", "confidence must be a number in [0, 1], got 2"],
        [m.appendFact({ subject: " ", predicate: "p", object: "o" }), "appendFact", "subject must be a non-empty string, got \" \""],
        [m.forget({ before: new Date(Number.NaN) }), "forget", "before must be a valid Date, got Invalid Date"],
        [m.recallFacts("x", { knownAt: new Date(Number.NaN) }), "recallFacts", "knownAt must be a valid Date, got Invalid Date"],
        [m.remember({ input: "i", output: "o", toolCalls: [{ name: "t", args: 1n }] }), "remember", "toolCalls are not JSON-serializable"]
      ]
      for (const [operation, method, description] of failures) {
        const error = yield* Effect.flip(operation.pipe(as("alice")))
        if (error._tag !== "MemoryError") return assert.fail(`expected MemoryError, got ${error._tag}`)
        assert.strictEqual(error.method, method)
        assert.strictEqual(error.description, description)
      }
      const outside = yield* Effect.flip(m.remember({ input: "i", output: "o" }))
      assert.include(outside.message, "no session id")
    }))

  test("concurrent users: each sees exactly their own writes", () =>
    Effect.gen(function*() {
      const m = yield* memory
      const users = Array.from({ length: 8 }, (_, i) => `user_${i}`)
      yield* Effect.forEach(users, (u) =>
        Effect.forEach(
          Array.from({ length: 5 }, (_, i) => i),
          (i) => Effect.zipRight(m.remember({ input: `${u} turn ${i}`, output: "ok" }), m.appendBlock("log", `${i}`)),
          { discard: true }
        ).pipe(as(u)), { concurrency: "unbounded", discard: true })
      for (const u of users) {
        const exported = yield* m.export.pipe(as(u))
        assert.deepStrictEqual(exported.episodes.map((e) => e.input), [0, 1, 2, 3, 4].map((i) => `${u} turn ${i}`))
        assert.deepStrictEqual(exported.blocks.map((b) => b.content), ["01234"])
      }
    }))

  test("concurrent appends for one subject and predicate leave exactly one open fact", () =>
    Effect.gen(function*() {
      const m = yield* memory
      yield* Effect.forEach(
        Array.from({ length: 24 }, (_, i) => i),
        (i) => m.appendFact({ subject: "status", predicate: "is", object: `v${i}` }).pipe(as(i % 2 === 0 ? "alice" : null)),
        { concurrency: "unbounded", discard: true }
      )
      for (const userId of ["alice", null]) {
        const facts = (yield* m.export.pipe(as(userId))).facts
        assert.strictEqual(facts.length, 12)
        assert.strictEqual(facts.filter((f) => f.validUntil === null).length, 1, `${userId} has one open fact`)
      }
    }))

  it.effect("agent: a second run in the same session sees the first; another user does not", () =>
    Effect.gen(function*() {
      const seen: Array<{ user: string | null; messages: ReadonlyArray<string> }> = []
      const MemoryLive = fresh()
      const AgentLive = Agent.layer().pipe(
        Layer.provide(Model.layerScripted((request, context) => {
          seen.push({ user: context.userId, messages: request.messages.map((m) => `${m.role}:${m.content}`) })
          return { text: `answer ${seen.length}` }
        })),
        Layer.provide(MemoryLive),
        Layer.provide(Agent.layerDefaults)
      )
      yield* Effect.gen(function*() {
        const agent = yield* Agent.Agent
        yield* agent.run("my favourite colour is teal", { userId: "alice", sessionId: "chat" })
        yield* agent.run("what is my favourite colour?", { userId: "alice", sessionId: "chat" })
        yield* agent.run("what is my favourite colour?", { userId: "mallory", sessionId: "chat" })
        yield* agent.run("what is my favourite colour?", { sessionId: "chat" })
        const exported = yield* Effect.flatMap(memory, (m) => m.export).pipe(as("alice"))
        assert.deepStrictEqual(exported.episodes.map((e) => [e.sessionId, e.input, e.output]), [
          ["chat", "my favourite colour is teal", "answer 1"],
          ["chat", "what is my favourite colour?", "answer 2"]
        ])
      }).pipe(Effect.provide(Layer.merge(AgentLive, MemoryLive)))
      assert.deepStrictEqual(seen[1]!.messages, [
        "user:my favourite colour is teal",
        "assistant:answer 1",
        "user:what is my favourite colour?"
      ])
      for (const other of [seen[2]!, seen[3]!]) {
        assert.isFalse(other.messages.some((m) => m.includes("teal")), `${other.user} saw alice's history`)
      }
    }))
}

// ---- child writers -----------------------------------------------------------

const writerScript = fileURLToPath(new URL("./memoryWriterChild.ts", import.meta.url))

/** One line of the writer child: an acknowledged write. */
export interface Ack {
  readonly id: string
  readonly input: string
}

interface WriterResult {
  readonly acks: ReadonlyArray<Ack>
  readonly code: number | null
  readonly signal: string | null
  readonly stderr: string
}

const startWriter = (args: ReadonlyArray<string>, killAfterAcks: number | undefined) => {
  const child = spawn(process.execPath, ["--import", "tsx", writerScript, ...args], {
    stdio: ["pipe", "pipe", "pipe"]
  })
  const acks: Array<Ack> = []
  let stderr = ""
  let onReady: () => void = () => undefined
  const ready = new Promise<void>((resolve) => (onReady = resolve))
  child.stderr.on("data", (chunk) => (stderr += String(chunk)))
  createInterface({ input: child.stdout }).on("line", (line) => {
    const [kind, id, input] = line.split(" ")
    if (kind === "ready") onReady()
    if (kind !== "ack") return
    acks.push({ id: id!, input: input! })
    if (killAfterAcks !== undefined && acks.length === killAfterAcks) child.kill("SIGKILL")
  })
  const done = new Promise<WriterResult>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code, signal) => {
      onReady()
      resolve({ acks, code, signal, stderr })
    })
  })
  return { ready, done, go: () => child.stdin.end("go\n") }
}

/**
 * Runs `memoryWriterChild.ts` with `args`; with `killAfterAcks`, SIGKILLs it
 * as soon as that many writes were acknowledged. Resolves with the acks it
 * printed and how it ended.
 */
export const runWriter = (
  args: ReadonlyArray<string>,
  options?: { readonly killAfterAcks?: number }
): Promise<WriterResult> => {
  const writer = startWriter(args, options?.killAfterAcks)
  writer.go()
  return writer.done
}

/** Runs several writers, releasing them together once every one has its store open. */
export const runWritersTogether = async (argsList: ReadonlyArray<ReadonlyArray<string>>): Promise<Array<WriterResult>> => {
  const writers = argsList.map((args) => startWriter(args, undefined))
  await Promise.all(writers.map((writer) => writer.ready))
  for (const writer of writers) writer.go()
  return Promise.all(writers.map((writer) => writer.done))
}

/**
 * What a store opened over a schema-1 database (the episodes ep_1..ep_4 of
 * alice — Lisbon twice, İstanbul, a café in Lisbon — ep_5 of bob, and the
 * fact fact_1 "user lives in İzmir") must find after its upgrade: the new
 * ranking, folded words, other users left out, and a new episode indexed.
 */
export const upgradedSearchHolds = Effect.gen(function*() {
  const m = yield* Memory.Memory
  const as = (userId: string) => RunContext.withUser(userId, { sessionId: "s1" })
  const recall = (query: string, userId = "alice") => m.recall(query).pipe(as(userId), Effect.map((es) => es.map((e) => e.id)))
  assert.deepStrictEqual(yield* recall("lisbon"), ["ep_4", "ep_2", "ep_1"])
  assert.deepStrictEqual(yield* recall("lisbon cafe"), ["ep_4", "ep_2", "ep_1"])
  assert.deepStrictEqual(yield* recall("İstanbul"), ["ep_3"])
  assert.deepStrictEqual(yield* recall("Istanbul"), ["ep_3"])
  assert.deepStrictEqual(yield* recall("café"), ["ep_4"])
  assert.deepStrictEqual(yield* recall("lisbon", "bob"), ["ep_5"])
  const facts = yield* m.recallFacts("izmir", { validAt: new Date(1) }).pipe(as("alice"))
  assert.deepStrictEqual(facts.map((f) => f.id), ["fact_1"])
  yield* m.remember({ input: "back to İstanbul", output: "ok", sessionId: "s2" }).pipe(as("alice"))
  assert.deepStrictEqual((yield* recall("istanbul")).length, 2)
  return recall
})
