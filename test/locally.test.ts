import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, FiberRef, Option, Tracer } from "effect"
import { RunContext } from "jeevesagent"
import { canSetRefs, locally, makeSpan, refsOf, setRefs, withParent, withParentSpan, withSpan } from "../src/internal/locally.js"
import { markDropsUnsampledChildren } from "../src/internal/tracerSampling.js"

const ref = FiberRef.unsafeMake("outer")

/** Ended spans by name, with their exits, from effect's native tracer. */
const recording = Effect.map(Effect.tracer, (inner) => {
  const ended = new Map<string, Exit.Exit<unknown, unknown>>()
  const tracer = Tracer.make({
    span: (name, ...rest) => {
      const span = inner.span(name, ...rest)
      const end = span.end.bind(span)
      span.end = (time, exit) => {
        ended.set(name, exit)
        end(time, exit)
      }
      return span
    },
    context: inner.context
  })
  return { ended, tracer }
})

describe("internal/locally", () => {
  it.effect("locally behaves as Effect.locally on success, failure and interruption", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* locally(FiberRef.get(ref), ref, "inner"), "inner")
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      const failed = yield* Effect.exit(locally(Effect.fail("no"), ref, "inner"))
      assert.isTrue(Exit.isFailure(failed))
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      const seen: Array<string> = []
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        locally(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never), ref, "inner").pipe(
          Effect.onExit(() => Effect.map(FiberRef.get(ref), (value) => void seen.push(value)))
        )
      )
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(seen, ["outer"])
      const child = yield* Effect.fork(FiberRef.get(ref)).pipe((self) => locally(self, ref, "inner"))
      assert.strictEqual(yield* Fiber.join(child), "inner")
    }))

  it.effect("setRefs writes one or two FiberRefs as setFiberRef does, for this fiber, its children and joins", () =>
    Effect.gen(function*() {
      const other = FiberRef.unsafeMake(0)
      const set = <X, Y = never>(a: FiberRef.FiberRef<X>, x: X, b?: FiberRef.FiberRef<Y>, y?: Y) =>
        Effect.withFiberRuntime<void>((fiber) => {
          assert.isTrue(canSetRefs(fiber))
          setRefs(fiber, a, x, b, y)
          return Effect.void
        })
      yield* set(ref, "one", other, 1)
      assert.strictEqual(yield* FiberRef.get(ref), "one")
      assert.strictEqual(yield* FiberRef.get(other), 1)
      // The same value again changes nothing.
      yield* set(ref, "one")
      assert.strictEqual(yield* FiberRef.get(ref), "one")
      // A child starts with the parent's values, and what it sets comes back when it is joined.
      const child = yield* Effect.fork(
        Effect.zipRight(set(other, 2), Effect.zip(FiberRef.get(ref), FiberRef.get(other)))
      )
      assert.deepStrictEqual(yield* Fiber.join(child), ["one", 2])
      assert.strictEqual(yield* FiberRef.get(other), 2)
      // The child's value is stacked over the parent's: a later write here replaces it, as setFiberRef's does.
      yield* set(other, 3)
      assert.strictEqual(yield* FiberRef.get(other), 3)
      yield* set(ref, "outer", other, 0)
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      assert.strictEqual(yield* FiberRef.get(other), 0)
    }))

  it.effect("locally puts back the very FiberRefs it replaced when nothing else changed, else keeps the other changes", () =>
    Effect.gen(function*() {
      const other = FiberRef.unsafeMake(0)
      const refs = Effect.withFiberRuntime((fiber) => Effect.succeed(refsOf(fiber)))
      // The fiber's own entry for the ref (without one, see the next test).
      yield* FiberRef.set(ref, "outer")
      const before = yield* refs
      // A body that changes nothing else, nested locals included.
      assert.strictEqual(yield* locally(locally(FiberRef.get(ref), ref, "two"), ref, "one"), "two")
      assert.strictEqual(yield* refs, before)
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      // A body that sets another FiberRef: that change stays, the local one is undone.
      yield* locally(FiberRef.set(other, 5), ref, "inner")
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      assert.strictEqual(yield* FiberRef.get(other), 5)
      // So does one a joined child made.
      yield* locally(Effect.flatMap(Effect.fork(FiberRef.set(other, 6)), Fiber.join), ref, "inner")
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      assert.strictEqual(yield* FiberRef.get(other), 6)
      // Nested, and on failure.
      const failed = yield* Effect.exit(locally(locally(Effect.fail("no"), ref, "two"), ref, "one"))
      assert.isTrue(Exit.isFailure(failed))
      assert.strictEqual(yield* FiberRef.get(ref), "outer")
      assert.strictEqual(yield* FiberRef.get(other), 6)
    }))

  it.effect("a child forked under locally and joined after it does not bring its value back (as Effect.locally does not)", () =>
    Effect.gen(function*() {
      // This fiber has no entry of its own for the ref: its value is inherited (here, the initial one).
      type Local = <A>(self: Effect.Effect<A>, r: typeof ref, value: string) => Effect.Effect<A>
      const effects: Local = (self, r, value) => Effect.locally(self, r, value)
      const ours: Local = (self, r, value) => locally(self, r, value)
      for (const local of [ours, effects]) {
        const child = yield* local(Effect.fork(local(FiberRef.get(ref), ref, "carol")), ref, "bob")
        assert.strictEqual(yield* Fiber.join(child), "carol")
        assert.strictEqual(yield* FiberRef.get(ref), "outer")
      }
    }))

  it.effect("RunContext.withUser: a job forked for bob and joined later leaves this fiber anonymous", () =>
    Effect.gen(function*() {
      const userOf = Effect.map(RunContext.current, (context) => context.userId)
      const job = yield* Effect.fork(userOf.pipe(Effect.withSpan("job"), RunContext.withUser("carol"))).pipe(RunContext.withUser("bob"))
      assert.strictEqual(yield* Fiber.join(job), "carol")
      assert.strictEqual(yield* userOf, null)
    }))

  for (const fast of [false, true]) {
  const extra = fast ? { captureStackTrace: false } as const : {}
  it.effect(`withSpan parents the inner spans, ends with the exit, and restores the outer span (${fast ? "one-step" : "fallback"} path)`, () =>
    Effect.gen(function*() {
      const { ended, tracer } = yield* recording
      const program = Effect.gen(function*() {
        const inner = yield* withSpan(
          Effect.flatMap(Effect.currentSpan, (parent) =>
            Effect.map(Effect.makeSpan("child"), (child) => ({ parent, child }))),
          "outer-span",
          { attributes: { turn: 1 }, ...extra }
        )
        assert.strictEqual(inner.parent.name, "outer-span")
        assert.strictEqual(Option.getOrThrow(inner.child.parent).spanId, inner.parent.spanId)
        assert.strictEqual(inner.parent.attributes.get("turn"), 1)
        assert.isTrue(Option.isNone(yield* Effect.option(Effect.currentSpan)))
        assert.isTrue(Exit.isSuccess(ended.get("outer-span")!))

        const failed = yield* Effect.exit(withSpan(Effect.fail("boom"), "failing", extra))
        assert.isTrue(Exit.isFailure(failed))
        assert.isTrue(Exit.isFailure(ended.get("failing")!))

        const started = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(withSpan(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never), "interrupted", extra))
        yield* Deferred.await(started)
        yield* Fiber.interrupt(fiber)
        const exit = ended.get("interrupted")
        assert.isTrue(exit !== undefined && Exit.isInterrupted(exit))
      })
      yield* Effect.withTracer(program, tracer)
    }))
  }

  it.effect("the one-step span matches Effect.makeSpan: parent, annotations, links, kind, attributes, timing", () =>
    Effect.gen(function*() {
      const link = yield* Effect.makeSpan("linked")
      const hidden = yield* Effect.makeSpan("hidden", { context: Context.make(Tracer.DisablePropagation, true) })
      const compare = Effect.gen(function*() {
        const options = { attributes: { a: 1, b: "x" }, kind: "client", captureStackTrace: false } as const
        const reference = yield* Effect.makeSpan("s", options)
        const fast = (yield* makeSpan("s", options))!
        const annotated = yield* withSpan(Effect.currentSpan, "t", options, () => ({ late: true }))
        return { reference, fast, annotated }
      })
      const check = (label: string, spans: { reference: Tracer.Span; fast: Tracer.Span }) => {
        const { reference, fast } = spans
        assert.notStrictEqual(fast, reference, label)
        assert.strictEqual(fast.name, reference.name, label)
        assert.deepStrictEqual(Option.map(fast.parent, (p) => p.spanId), Option.map(reference.parent, (p) => p.spanId), label)
        assert.deepStrictEqual([...fast.attributes], [...reference.attributes], label)
        assert.deepStrictEqual(fast.links.map((l) => l.span.spanId), reference.links.map((l) => l.span.spanId), label)
        assert.strictEqual(fast.kind, reference.kind, label)
        assert.strictEqual(fast.status.startTime === BigInt(0), reference.status.startTime === BigInt(0), label)
      }
      const parent = yield* Effect.makeSpan("parent")
      check("under a parent, with annotations and links", yield* compare.pipe(
        Effect.annotateSpans({ env: "on" }),
        Effect.linkSpans(link),
        (self) => withParentSpan(self, parent)
      ))
      check("under a span that disables propagation", yield* withParentSpan(compare, hidden))
      check("without timing", yield* Effect.locally(compare, FiberRef.currentTracerTimingEnabled, false))
      const annotated = (yield* compare).annotated
      assert.strictEqual(annotated.attributes.get("late"), true)
      assert.strictEqual(annotated.status._tag, "Ended")
    }))

  it.effect("under an unsampled parent, with a tracer that drops its children, no span is made and the effect runs under that parent", () =>
    Effect.gen(function*() {
      const { ended, tracer } = yield* recording
      const program = Effect.gen(function*() {
        const unsampled = Tracer.externalSpan({ spanId: "s1", traceId: "t1", sampled: false })
        const options = { captureStackTrace: false } as const
        const seen = yield* withParentSpan(withSpan(Effect.currentParentSpan, "skipped", options), unsampled)
        assert.strictEqual(seen.spanId, "s1")
        assert.isUndefined(yield* withParentSpan(makeSpan("skipped-too", options), unsampled))
        const sampled = Tracer.externalSpan({ spanId: "s2", traceId: "t2", sampled: true })
        const made = yield* withParentSpan(withSpan(Effect.currentParentSpan, "made", options), sampled)
        assert.strictEqual(made.spanId === "s2", false)
        assert.deepStrictEqual([...ended.keys()], ["made"])
      })
      yield* Effect.withTracer(program, markDropsUnsampledChildren(tracer))
    }))

  it.effect("under an unsampled parent, any other tracer (effect's own) makes the span, as Effect.withSpan does", () =>
    Effect.gen(function*() {
      const { ended, tracer } = yield* recording
      const program = Effect.gen(function*() {
        const unsampled = Tracer.externalSpan({ spanId: "s1", traceId: "t1", sampled: false })
        const options = { captureStackTrace: false } as const
        const reference = yield* Effect.withSpan(Effect.currentSpan, "reference", options).pipe((self) => withParentSpan(self, unsampled))
        const made = yield* withParentSpan(withSpan(Effect.currentSpan, "made", options), unsampled)
        const madeToo = (yield* withParentSpan(makeSpan("made-too", options), unsampled))!
        for (const span of [reference, made, madeToo]) {
          assert.strictEqual(Option.getOrThrow(span.parent).spanId, "s1", span.name)
          assert.strictEqual(span.sampled, reference.sampled, span.name)
        }
        assert.deepStrictEqual([...ended.keys()], ["reference", "made"])
      })
      yield* Effect.withTracer(program, tracer)
    }))

  it("withParent gives the context Context.add gives: every service, in order, and the span as the parent", () => {
    class A extends Context.Tag("A")<A, number>() {}
    class B extends Context.Tag("B")<B, string>() {}
    const span = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" })
    const other = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "00f067aa0ba902b7" })
    for (const base of [Context.empty(), Context.make(A, 1).pipe(Context.add(B, "b")), Context.make(Tracer.ParentSpan, other).pipe(Context.add(A, 2))]) {
      const mine = withParent(base, span)
      const theirs = Context.add(base, Tracer.ParentSpan, span)
      assert.deepStrictEqual([...mine.unsafeMap], [...theirs.unsafeMap])
      assert.isTrue(Context.isContext(mine))
      assert.strictEqual(mine.unsafeMap.get(Tracer.ParentSpan.key), span)
      assert.notStrictEqual(mine.unsafeMap, base.unsafeMap, "a copy: the base is left as it was")
    }
  })

  it.effect("withParentSpan parents spans under the given span", () =>
    Effect.gen(function*() {
      const parent = yield* Effect.makeSpan("parent")
      const child = yield* withParentSpan(Effect.makeSpan("child"), parent)
      assert.strictEqual(Option.getOrThrow(child.parent).spanId, parent.spanId)
      assert.isTrue(Option.isNone(yield* Effect.option(Effect.currentSpan)))
    }))
})
