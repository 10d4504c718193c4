import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashSet from "effect/HashSet"
import * as Runtime from "effect/Runtime"
import { installRefs, refsOf } from "./locally.js"

/**
 * `Effect.forEach(items, f, { concurrency: "unbounded" })` for items that
 * usually complete at once (the agent's tool calls), at well under its
 * cost: effect's version starts a coordinating fiber and a fiber per item,
 * and pays for its request-batching machinery even when batching is off.
 *
 * - The items run in the calling fiber, one after another, for as long as
 *   each completes without suspending; as soon as one suspends (or the
 *   fiber yields), every item not yet started is forked. The items still
 *   run concurrently, each exactly once, with results in input order; items
 *   that never wait cost no fork at all. No input succeeds with `[]`.
 * - Items start in input order, except when the caller yields on its op
 *   budget right after taking an item: the items forked then may start
 *   before it.
 * - Forked items start with the services and FiberRefs the caller had
 *   before the first item ran (as if forked then), are supervised by the
 *   caller's supervisor, and are interrupted and awaited on every way out;
 *   but they are root fibers, not in the caller's `children`. As in
 *   effect's forEach, fibers an item forks are grafted onto the caller's
 *   fork scope, so they outlive the item, and on success the forked items'
 *   FiberRefs are joined into the caller in completion order.
 * - Every item starts from the caller's FiberRefs as they were before the
 *   first item, wherever it runs: an item run in the caller never sees what
 *   an earlier one set (the caller's FiberRefs are put back after it), so
 *   what a sibling sees does not depend on timing. On success the changes
 *   of the items run in the caller are applied to the caller, in the order
 *   they ran, then the forked items' are joined; on failure they are
 *   dropped, as effect's forEach drops its children's.
 * - The first forked item to fail (error, defect or its own interruption)
 *   gets the other forked items interrupted and no further item started;
 *   once all are done the whole fails with every failed item's cause, in
 *   input order, combined with `Cause.parallel`: the cause effect's forEach
 *   gives.
 * - Nothing can interrupt an item running in the caller but the caller's
 *   own interruption: when a forked item fails, the failure reaches the
 *   caller only once that item has finished. Hence items that fail only in
 *   exceptional cases: the agent's tool calls turn every failure into a
 *   result except an interruption.
 * - If the caller is interrupted, the forked items are interrupted and
 *   awaited before the interruption goes on, alone.
 *
 * @internal
 */
export const forEachConcurrent = <A, B, E, R>(
  items: ReadonlyArray<A>,
  f: (item: A, index: number) => Effect.Effect<B, E, R>
): Effect.Effect<Array<B>, E, R> =>
  Effect.suspend(() => {
    switch (items.length) {
      case 0:
        return Effect.succeed([])
      case 1: {
        const item = items[0]!
        return Effect.map(Effect.suspend(() => f(item, 0)), (value) => [value])
      }
      default:
        return forkAll(Array.from(items), f)
    }
  })

const forkAll = <A, B, E, R>(
  items: ReadonlyArray<A>,
  f: (item: A, index: number) => Effect.Effect<B, E, R>
): Effect.Effect<Array<B>, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.transplant((graft) =>
      Effect.withFiberRuntime<Array<B>, E, R>((parent, status) => {
        const parentId = parent.id()
        const fibers: Array<Fiber.RuntimeFiber<B, E>> = []
        const joinOrder: Array<Fiber.RuntimeFiber<B, E>> = []
        const results = new Array<B>(items.length)
        const failures: Array<{ readonly index: number; readonly cause: Cause.Cause<E> }> = []
        let running = 0
        let wake: (() => void) | undefined

        const interruptRunning = () => {
          for (const fiber of fibers) {
            if (fiber.unsafePoll() === null) fiber.unsafeInterruptAsFork(parentId)
          }
        }

        /** Resumes the caller waiting for the children once none is running. */
        const wakeIfIdle = () => {
          if (running === 0 && wake !== undefined) {
            const resume = wake
            wake = undefined
            resume()
          }
        }

        const observe = (fiber: Fiber.RuntimeFiber<B, E>, index: number) => (exit: Exit.Exit<B, E>) => {
          running--
          if (exit._tag === "Success") {
            results[index] = exit.value
            joinOrder.push(fiber)
          } else {
            failures.push({ index, cause: exit.cause })
            if (failures.length === 1) interruptRunning()
          }
          wakeIfIdle()
        }

        const awaitChildren = Effect.async<void>((resume) => {
          if (running === 0) resume(Effect.void)
          else wake = () => resume(Effect.void)
        })

        const done = Effect.suspend((): Effect.Effect<Array<B>, E> => {
          if (failures.length > 0) {
            failures.sort((a, b) => a.index - b.index)
            let cause = failures[0]!.cause
            for (let i = 1; i < failures.length; i++) cause = Cause.parallel(cause, failures[i]!.cause)
            return Effect.failCause(cause)
          }
          if (changedInCaller.length > 0) applyChanged()
          return joinOrder.length === 0 ?
            Effect.succeed(results) :
            Effect.as(Effect.forEach(joinOrder, (fiber) => fiber.inheritAll, { discard: true }), results)
        })

        const awaitAll = Effect.matchCauseEffect(restore(awaitChildren), {
          // Only the caller's interruption gets here.
          onFailure: (cause) =>
            running === 0 ? Effect.failCause(cause) : Effect.zipRight(
              Effect.suspend(() => {
                interruptRunning()
                return awaitChildren
              }),
              Effect.failCause(cause)
            ),
          onSuccess: () => done
        })

        // The caller as it is now: what every item starts with.
        const base = refsOf(parent) ?? parent.getFiberRefs()
        const runtime = Runtime.make<R>({
          // The context the items would run in here: it holds their `R`.
          context: parent.getFiberRef(FiberRef.currentContext) as Context.Context<R>,
          fiberRefs: base,
          runtimeFlags: status.runtimeFlags
        })
        /** The caller's FiberRefs after each item run in it that changed them, in the order they ran. */
        const changedInCaller: Array<FiberRefs.FiberRefs> = []
        /** After an item run in the caller: its changes are kept aside, and the caller's FiberRefs put back. */
        const isolate = () => {
          const after = refsOf(parent) ?? base
          if (after !== base && installRefs(parent, base)) changedInCaller.push(after)
        }
        /** Applies the changes of the items run in the caller, each ref to the value the item left it at. */
        const applyChanged = () => {
          let refs = refsOf(parent) ?? parent.getFiberRefs()
          for (const after of changedInCaller) {
            for (const ref of FiberRefs.fiberRefs(after)) {
              const value = FiberRefs.getOrDefault(after, ref)
              if (value !== FiberRefs.getOrDefault(base, ref)) refs = FiberRefs.updateAs(refs, { fiberId: parentId, fiberRef: ref, value })
            }
          }
          installRefs(parent, refs)
        }
        let next = 0
        // Set once the call is failing: no item starts after that.
        let stopped = false
        const stop = () => {
          stopped = true
          interruptRunning()
        }
        // A task on this fiber's own scheduler, so it runs once the fiber
        // has stopped running synchronously: it has suspended inside an item,
        // or yielded, so the items not yet started are forked now. They are
        // scheduled rather than started here, so the caller's item usually
        // goes first. A no-op once every item has started.
        const forkRest = () => {
          while (next < items.length && !stopped && failures.length === 0) {
            const index = next++
            const item = items[index]!
            let fiber: Fiber.RuntimeFiber<B, E>
            try {
              fiber = Runtime.runFork(runtime, graft(restore(Effect.suspend(() => f(item, index)))), { immediate: false })
            } catch (defect) {
              // A supervisor that throws on start, say: the call fails with it, as a failed fork would.
              failures.push({ index, cause: Cause.die(defect) })
              stop()
              wakeIfIdle()
              return
            }
            fibers.push(fiber)
            running++
            fiber.addObserver(observe(fiber, index))
          }
        }
        parent.currentScheduler.scheduleTask(forkRest, parent.getFiberRef(FiberRef.currentSchedulingPriority), parent)

        const inCaller: Effect.Effect<Array<B>, E, R> = Effect.suspend(() => {
          // Nothing forked (every item ran here): nothing to await or join.
          if (next >= items.length || stopped || failures.length > 0) return fibers.length === 0 ? done : awaitAll
          const index = next++
          return Effect.matchCauseEffect(restore(Effect.suspend(() => f(items[index]!, index))), {
            onFailure: (cause) => {
              isolate()
              stop()
              // The caller interrupted by someone else: that interruption alone, once the others are done
              // (as when it is interrupted while awaiting them). Else the item's own failure, with the others'.
              if (Cause.isInterruptedOnly(cause) && !HashSet.has(Cause.interruptors(cause), parentId)) {
                return Effect.zipRight(awaitChildren, Effect.failCause(cause))
              }
              failures.push({ index, cause })
              return Effect.zipRight(awaitChildren, done)
            },
            onSuccess: (value) => {
              isolate()
              results[index] = value
              return inCaller
            }
          })
        })
        return inCaller
      })
    )
  )
