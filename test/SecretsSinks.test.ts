import { assert, describe, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Effect, Exit, HashMap, Layer, Logger, Option, Redacted, Schema, Tracer } from "effect"
import type { Context, Logger as LoggerNs } from "effect"
import { Secrets, Telemetry } from "jeevesagent"
import { preRedacted, type PreRedactedOptions, setRedactedAttribute } from "../src/internal/secretsSinks.js"

const SECRET = "vault-value with spaces & \"quotes\""
const TOKEN = "ghp_" + "Zx9".repeat(12)
const secretsLayer = Secrets.layerDict({ DB_PASSWORD: SECRET })
const redact = Secrets.makeDict({ DB_PASSWORD: SECRET }).redact

/** No secret anywhere in `value`'s JSON or `String` form. */
const assertClean = (value: unknown) => {
  for (const shown of [JSON.stringify(value) ?? "", String(value)]) {
    assert.notInclude(shown, SECRET)
    assert.notInclude(shown, JSON.stringify(SECRET).slice(1, -1))
    assert.notInclude(shown, TOKEN)
  }
}

class VaultError extends Schema.TaggedError<VaultError>()("VaultError", { detail: Schema.String }) {
  override get message() {
    return `vault said: ${this.detail}`
  }
}

describe("redactDeep", () => {
  it("keeps a member named __proto__ a member, never the prototype", () => {
    const out = Secrets.redactDeep(JSON.parse(`{"__proto__":{"isAdmin":true},"a":"x"}`) as Record<string, unknown>, (text) => text)
    assert.deepStrictEqual(Object.keys(out), ["__proto__", "a"])
    assert.strictEqual(Object.getPrototypeOf(out), Object.prototype)
    assert.isUndefined((out as { isAdmin?: unknown }).isAdmin)
  })
  it("redacts every string and key, keeps shape and other values", () => {
    const input = {
      [SECRET]: [SECRET, { deep: `dsn=${TOKEN}` }],
      n: 1,
      b: true,
      nil: null,
      missing: undefined,
      list: [1, "plain", TOKEN]
    }
    const out = Secrets.redactDeep(input, redact)
    assert.deepStrictEqual(out, {
      "[REDACTED]": ["[REDACTED]", { deep: "dsn=[REDACTED]" }],
      n: 1,
      b: true,
      nil: null,
      missing: undefined,
      list: [1, "plain", "[REDACTED]"]
    } as unknown as typeof input)
    assert.strictEqual(input.list[2], TOKEN, "the input is not changed")
  })

  it("Maps and Sets stay Maps and Sets; Redacted and binary values are kept as they are", () => {
    const redacted = Redacted.make(SECRET)
    const bytes = new Uint8Array([1, 2, 3])
    const out = Secrets.redactDeep({ map: new Map([[TOKEN, SECRET]]), set: new Set([SECRET]), redacted, bytes }, redact)
    assert.deepStrictEqual([...out.map.entries()], [["[REDACTED]", "[REDACTED]"]])
    assert.deepStrictEqual([...out.set], ["[REDACTED]"])
    assert.strictEqual(out.redacted, redacted)
    assert.strictEqual(out.bytes, bytes)
  })

  it("other objects become what JSON would write; cycles become [Circular]; shared objects are not cycles", () => {
    class Connection {
      constructor(readonly dsn: string) {}
    }
    const shared = { password: SECRET }
    const cyclic: Record<string, unknown> = { name: TOKEN }
    cyclic.self = cyclic
    const out = Secrets.redactDeep({
      connection: new Connection(`postgres://app:${SECRET}@db`),
      option: Option.some(TOKEN),
      when: new Date(0),
      a: shared,
      b: shared,
      cyclic
    }, redact)
    assert.deepStrictEqual(out.connection as unknown, { dsn: "postgres://app:[REDACTED]@db" })
    assert.deepStrictEqual(out.option as unknown, { _id: "Option", _tag: "Some", value: "[REDACTED]" })
    assert.strictEqual(out.when as unknown, "1970-01-01T00:00:00.000Z")
    assert.deepStrictEqual(out.a, { password: "[REDACTED]" })
    assert.deepStrictEqual(out.b, { password: "[REDACTED]" })
    assert.deepStrictEqual(out.cyclic, { name: "[REDACTED]", self: "[Circular]" })
    assertClean(out)
  })
})

describe("redactError / redactCause", () => {
  it("keeps the error class, redacts message, fields, stack and cause; the original is unchanged", () => {
    const error = new VaultError({ detail: `token ${TOKEN} for ${SECRET}` })
    const out = Secrets.redactError(error, redact)
    assert.instanceOf(out, VaultError)
    assert.strictEqual(out._tag, "VaultError")
    assert.strictEqual(out.message, "vault said: token [REDACTED] for [REDACTED]")
    assert.strictEqual(out.detail, "token [REDACTED] for [REDACTED]")
    assert.notInclude(out.stack ?? "", TOKEN)
    assert.include(error.detail, TOKEN)

    const plain = new Error(`outer ${SECRET}`, { cause: new VaultError({ detail: TOKEN }) })
    const redactedPlain = Secrets.redactError(plain, redact)
    assert.instanceOf(redactedPlain, Error)
    assert.strictEqual(redactedPlain.message, "outer [REDACTED]")
    assert.instanceOf(redactedPlain.cause, VaultError)
    assert.strictEqual((redactedPlain.cause as VaultError).message, "vault said: [REDACTED]")

    const notFound = Secrets.redactError(new Secrets.SecretNotFound({ ref: "K", description: `saw ${SECRET}` }), redact)
    assert.instanceOf(notFound, Secrets.SecretNotFound)
    assert.strictEqual(notFound.message, "Secret not found: K (saw [REDACTED])")
    assert.deepStrictEqual(Secrets.redactError({ reason: TOKEN }, redact), { reason: "[REDACTED]" })
    assert.strictEqual(Secrets.redactError(`thrown ${TOKEN}`, redact), "thrown [REDACTED]")
  })

  it("reads own accessors through their getters and stores them redacted; a throwing getter is left off", () => {
    const error = new Error("failed")
    Object.defineProperty(error, "path", { get: () => `/srv/${TOKEN}`, enumerable: true, configurable: true })
    Object.defineProperty(error, "broken", {
      get: () => {
        throw new Error(`getter ${TOKEN}`)
      },
      enumerable: true
    })
    Object.defineProperty(error, "sink", { set: () => undefined, enumerable: true })
    const out = Secrets.redactError(error, redact) as Error & { path?: string }
    assert.strictEqual(out.path, "/srv/[REDACTED]")
    assert.isUndefined(Object.getOwnPropertyDescriptor(out, "path")!.get)
    assert.isFalse(Object.hasOwn(out, "broken"))
    assert.isFalse(Object.hasOwn(out, "sink"))
    assertClean(out)
  })

  it("a Node SystemError (its path is a getter) is redacted in its fields and JSON form", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sinks-${TOKEN}-`))
    let thrown: unknown
    try {
      // Copying a directory into itself fails with a SystemError naming both paths.
      fs.cpSync(dir, path.join(dir, "sub"), { recursive: true })
    } catch (error) {
      thrown = error
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
    assert.instanceOf(thrown, Error)
    assert.include(JSON.stringify(thrown), TOKEN, "control: the original leaks")
    const out = Secrets.redactError(thrown, redact) as Error & { path?: string }
    assert.include(out.path ?? "", "[REDACTED]")
    assertClean(out)
  })

  it("redacts every failure and defect of a cause, keeping its structure", () => {
    const cause = Cause.sequential(
      Cause.fail(new VaultError({ detail: SECRET })),
      Cause.parallel(Cause.die(new Error(`defect ${TOKEN}`)), Cause.interrupt(Cause.empty as never))
    )
    const out = Secrets.redactCause(cause, redact)
    assert.notInclude(Cause.pretty(out), TOKEN)
    assert.notInclude(Cause.pretty(out), SECRET)
    assert.include(Cause.pretty(out), "[REDACTED]")
    assert.strictEqual(Cause.failures(out).length, 1)
    assert.strictEqual(Cause.defects(out).length, 1)
    assert.instanceOf(Cause.squash(out), VaultError)
  })
})

describe("layerRedactingLogger", () => {
  const captured: Array<LoggerNs.Logger.Options<unknown>> = []
  const lines: Array<string> = []
  const capture = Logger.make((options) => void captured.push(options))
  const logfmt = Logger.map(Logger.logfmtLogger, (line) => void lines.push(line))
  const installed = Layer.merge(Logger.replace(Logger.defaultLogger, capture), Logger.add(logfmt))
  const layer = Secrets.layerRedactingLogger.pipe(Layer.provide(installed), Layer.provideMerge(secretsLayer))

  it.effect("annotation keys and log span labels reach every logger redacted", () =>
    Effect.gen(function*() {
      captured.length = 0
      lines.length = 0
      const secrets = yield* Secrets.Secrets
      const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
      yield* Effect.logInfo("calling vault").pipe(
        Effect.annotateLogs(`header.${password}`, "present"),
        Effect.withLogSpan(`vault ${TOKEN}`),
        Effect.withLogSpan("outer")
      )
      const [info] = captured
      assert.deepStrictEqual([...HashMap.keys(info!.annotations)], ["header.[REDACTED]"])
      assert.deepStrictEqual([...info!.spans].map((span) => span.label), ["vault [REDACTED]", "outer"])
      assertClean([...HashMap.keys(info!.annotations)])
      assert.strictEqual(lines.length, 1)
      assert.notInclude(lines[0]!, TOKEN)
      assert.notInclude(lines[0]!, "vault-value")
    }).pipe(Effect.provide(layer)))

  it.effect("messages, annotation values and causes reach every logger redacted", () =>
    Effect.gen(function*() {
      captured.length = 0
      lines.length = 0
      const secrets = yield* Secrets.Secrets
      const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
      yield* Effect.logInfo(`connecting with ${password}`, { token: TOKEN }).pipe(
        Effect.annotateLogs({ dsn: `app:${password}@db`, count: 3 })
      )
      yield* Effect.logError("failed", Cause.fail(new VaultError({ detail: TOKEN })))
      assert.strictEqual(captured.length, 2)
      const [info, error] = captured
      assert.deepStrictEqual(info!.message, ["connecting with [REDACTED]", { token: "[REDACTED]" }])
      assert.deepStrictEqual(HashMap.get(info!.annotations, "dsn"), Option.some("app:[REDACTED]@db"))
      assert.deepStrictEqual(HashMap.get(info!.annotations, "count"), Option.some(3))
      assert.notInclude(Cause.pretty(error!.cause), TOKEN)
      assert.strictEqual(lines.length, 2)
      for (const line of lines) {
        assert.notInclude(line, TOKEN)
        assert.notInclude(line, "vault-value")
      }
      assert.include(lines[0]!, "[REDACTED]")
      assert.include(lines[0]!, "count=3")
    }).pipe(Effect.provide(layer)))

  it("wrapping twice does not redact twice", () => {
    const once = Secrets.redactingLogger(capture, redact)
    assert.strictEqual(Secrets.redactingLogger(once, redact), once)
  })
})

describe("layerRedactingTracer", () => {
  interface Recorded {
    readonly name: string
    readonly attributes: Map<string, unknown>
    readonly events: Array<readonly [string, Record<string, unknown> | undefined]>
    readonly links: Array<Tracer.SpanLink>
    exit: Exit.Exit<unknown, unknown> | undefined
  }
  const recorded: Array<Recorded> = []
  const recordingTracer = Tracer.make({
    context: (f) => f(),
    span: (name, parent, context: Context.Context<never>, links, startTime, kind) => {
      const record: Recorded = { name, attributes: new Map(), events: [], links: [...links], exit: undefined }
      recorded.push(record)
      let status: Tracer.SpanStatus = { _tag: "Started", startTime }
      return {
        _tag: "Span",
        name,
        spanId: `span-${recorded.length}`,
        traceId: "trace-1",
        parent,
        context,
        get status() {
          return status
        },
        attributes: record.attributes,
        links,
        sampled: true,
        kind,
        end: (endTime, exit) => {
          record.exit = exit
          status = { _tag: "Ended", startTime, endTime, exit }
        },
        attribute: (key, value) => void record.attributes.set(key, value),
        event: (eventName, _time, attributes) => void record.events.push([eventName, attributes]),
        addLinks: (added) => void record.links.push(...added)
      }
    }
  })
  // Telemetry.layer({ serviceSpans: true }) turns the services' own spans (Secrets.resolve) on.
  const layer = Layer.merge(Secrets.layerRedactingTracer, Telemetry.layer({ serviceSpans: true })).pipe(
    Layer.provide(Layer.setTracer(recordingTracer)),
    Layer.provideMerge(secretsLayer)
  )

  it.effect("span names, attributes, events and the failure a span ends with are redacted", () =>
    Effect.gen(function*() {
      recorded.length = 0
      const secrets = yield* Secrets.Secrets
      const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
      const exit = yield* Effect.gen(function*() {
        yield* Effect.annotateCurrentSpan("annotated", `pw ${password}`)
        yield* Effect.log(`inside the span ${TOKEN}`)
        return yield* new VaultError({ detail: password })
      }).pipe(
        Effect.withSpan(`db.connect ${TOKEN}`, { attributes: { dsn: `app:${password}@db`, nested: { token: TOKEN } } }),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(recorded.map((span) => span.name), ["Secrets.resolve", "db.connect [REDACTED]"])
      const span = recorded[1]
      assert.strictEqual(span!.name, "db.connect [REDACTED]")
      assert.strictEqual(span!.attributes.get("dsn"), "app:[REDACTED]@db")
      assert.deepStrictEqual(span!.attributes.get("nested"), { token: "[REDACTED]" })
      assert.strictEqual(span!.attributes.get("annotated"), "pw [REDACTED]")
      assert.isAbove(span!.events.length, 0)
      assertClean(span!.events.map(([name, attributes]) => ({ name, attributes })))
      const ended = span!.exit!
      assert.isTrue(Exit.isFailure(ended))
      if (Exit.isFailure(ended)) {
        const error = Cause.squash(ended.cause)
        assert.instanceOf(error, VaultError)
        assert.strictEqual((error as VaultError).detail, "[REDACTED]")
      }
    }).pipe(Effect.provide(layer)))

  it.effect("attribute keys and link attributes (at the start and through addLinks) are redacted", () =>
    Effect.gen(function*() {
      recorded.length = 0
      const other = Tracer.externalSpan({ spanId: "0000000000000001", traceId: "00000000000000000000000000000001" })
      yield* Effect.gen(function*() {
        yield* Effect.annotateCurrentSpan(`arg.${TOKEN}`, 1)
        yield* Effect.linkSpanCurrent(other, { token: `later ${TOKEN}` })
      }).pipe(
        Effect.withSpan("linked", {
          links: [{ _tag: "SpanLink", span: other, attributes: { [`key ${TOKEN}`]: { nested: TOKEN } } }]
        })
      )
      const span = recorded.find((s) => s.name === "linked")!
      assert.deepStrictEqual([...span.attributes.keys()], ["arg.[REDACTED]"])
      assert.deepStrictEqual(span.links.map((link) => link.attributes), [
        { "key [REDACTED]": { nested: "[REDACTED]" } },
        { token: "later [REDACTED]" }
      ])
      assert.strictEqual(span.links[0]!.span, other, "the linked span is kept")
    }).pipe(Effect.provide(layer)))

  it("a span with no links gets the same (empty) links array", () => {
    const wrapped = Secrets.redactingTracer(recordingTracer, redact)
    const none: ReadonlyArray<Tracer.SpanLink> = []
    const span = wrapped.span("plain", Option.none(), {} as Context.Context<never>, none, 0n, "internal")
    assert.strictEqual(span.links, none)
  })

  it.effect("under Telemetry.layerOtel, link attributes reach the exporter redacted", () => {
    const exporter = new InMemorySpanExporter()
    const otel = Telemetry.layerOtel({ serviceName: "sinks", spanProcessor: new SimpleSpanProcessor(exporter) }).pipe(
      Layer.provideMerge(secretsLayer)
    )
    return Effect.gen(function*() {
      const secrets = yield* Secrets.Secrets
      const password = Redacted.value(yield* secrets.resolve("DB_PASSWORD"))
      const other = Tracer.externalSpan({ spanId: "0000000000000001", traceId: "00000000000000000000000000000001" })
      yield* Effect.linkSpanCurrent(other, { added: password }).pipe(
        Effect.withSpan("linked", { links: [{ _tag: "SpanLink", span: other, attributes: { [password]: TOKEN } }] })
      )
      const span = exporter.getFinishedSpans().find((s) => s.name === "linked")!
      assert.deepStrictEqual(span.links.map((link) => link.attributes), [
        { "[REDACTED]": "[REDACTED]" },
        { added: "[REDACTED]" }
      ])
    }).pipe(Effect.provide(otel))
  })

  it("options marked preRedacted: the name and setRedactedAttribute values pass as they are, span.attribute still redacts", () => {
    const wrapped = Secrets.redactingTracer(recordingTracer, redact)
    const options: PreRedactedOptions = { captureStackTrace: false, [preRedacted]: true }
    const trusted = wrapped.span(`agent ${TOKEN}`, Option.none(), {} as Context.Context<never>, [], 0n, "internal", options)
    assert.strictEqual(recorded.at(-1)!.name, `agent ${TOKEN}`, "the caller vouches for the name")
    setRedactedAttribute(trusted, "done", "already [REDACTED]")
    assert.strictEqual(recorded.at(-1)!.attributes.get("done"), "already [REDACTED]")
    trusted.attribute("later", TOKEN)
    assert.strictEqual(recorded.at(-1)!.attributes.get("later"), "[REDACTED]")
    // Without the mark, the name is redacted; setRedactedAttribute on a span no redacting tracer made is span.attribute.
    wrapped.span(`user ${TOKEN}`, Option.none(), {} as Context.Context<never>, [], 0n, "internal")
    assert.strictEqual(recorded.at(-1)!.name, "user [REDACTED]")
    const plain = recordingTracer.span("plain", Option.none(), {} as Context.Context<never>, [], 0n, "internal")
    setRedactedAttribute(plain, "k", "v")
    assert.strictEqual(recorded.at(-1)!.attributes.get("k"), "v")
  })

  it("wraps a tracer once, and patches a shared span once", () => {
    const shared = recordingTracer.span("shared", Option.none(), {} as Context.Context<never>, [], 0n, "internal")
    const sharing = Tracer.make({ context: (f) => f(), span: () => shared })
    const wrapped = Secrets.redactingTracer(sharing, redact)
    assert.strictEqual(Secrets.redactingTracer(wrapped, redact), wrapped)
    const first = wrapped.span("a", Option.none(), {} as Context.Context<never>, [], 0n, "internal")
    const patched = first.attribute
    wrapped.span("b", Option.none(), {} as Context.Context<never>, [], 0n, "internal")
    assert.strictEqual(first.attribute, patched)
    first.attribute("k", TOKEN)
    assert.strictEqual(recorded.at(-1)!.attributes.get("k"), "[REDACTED]")
  })
})
