import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import { Secrets } from "jeevesagent"

const { REDACTED } = Secrets

/** A service that has handed out `values` (they were resolved). */
const handedOut = (values: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const secrets = Secrets.make({
      resolve: (ref) => Effect.succeed(values[Number(ref)]!)
    })
    for (let i = 0; i < values.length; i++) yield* secrets.resolve(String(i))
    return secrets
  })

const oddShapes = [
  "correct horse battery staple",
  "quo\"te and back\\slash",
  "two\nlines\tand a tab",
  "grüße 密码 🔑 key",
  "a.*b+c?(d)[e]{f}|^$ regex",
  "100% of $HOME & ~user",
  "{\"client_secret\":\"p9/Qz+w==\"}",
  "-----BEGIN OPAQUE BLOB-----\nabc\n-----END OPAQUE BLOB-----"
]

describe("known values", () => {
  it.effect("values of any shape are masked once handed out, and not before", () =>
    Effect.gen(function*() {
      const secrets = Secrets.make({ resolve: (ref) => Effect.succeed(oddShapes[Number(ref)]!) })
      for (let i = 0; i < oddShapes.length; i++) {
        const value = oddShapes[i]!
        assert.strictEqual(secrets.redact(`x ${value} y`), `x ${value} y`)
        yield* secrets.resolve(String(i))
        assert.strictEqual(secrets.redact(`x ${value} y`), `x ${REDACTED} y`)
      }
    }))

  it.effect("the usual encodings of a value are masked too", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut(oddShapes)
      for (const value of oddShapes) {
        const bytes = Buffer.from(value, "utf8")
        const forms = [
          JSON.stringify({ v: value }),
          `https://example.com/?p=${encodeURIComponent(value)}&q=1`,
          `Basic ${bytes.toString("base64")}`,
          `token=${bytes.toString("base64url")}`,
          `hex ${bytes.toString("hex")} HEX ${bytes.toString("hex").toUpperCase()}`
        ]
        for (const text of forms) {
          const out = secrets.redact(text)
          assert.notInclude(out, value)
          assert.notInclude(out, JSON.stringify(value).slice(1, -1))
          assert.notInclude(out, encodeURIComponent(value))
          assert.notInclude(out, bytes.toString("hex"))
          assert.notInclude(out, bytes.toString("base64url"))
          assert.include(out, REDACTED)
        }
      }
    }))

  it.effect("overlapping values leave no fragment: the union of every occurrence is masked", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut(["abcdef123456", "123456ghijkl", "inner-secret", "outer-inner-secret-end"])
      assert.strictEqual(secrets.redact("<abcdef123456ghijkl>"), `<${REDACTED}>`)
      assert.strictEqual(secrets.redact("<outer-inner-secret-end>"), `<${REDACTED}>`)
      assert.strictEqual(secrets.redact("<inner-secret>"), `<${REDACTED}>`)
      assert.strictEqual(
        secrets.redact("abcdef123456 and inner-secret"),
        `${REDACTED} and ${REDACTED}`
      )
    }))

  it.effect("a value containing a shorter one is masked whole, whatever the order they were handed out", () =>
    Effect.gen(function*() {
      for (const order of [["s3cr3t", "prefix-s3cr3t-suffix"], ["prefix-s3cr3t-suffix", "s3cr3t"]]) {
        const secrets = yield* handedOut(order)
        assert.strictEqual(secrets.redact("=prefix-s3cr3t-suffix="), `=${REDACTED}=`)
      }
    }))

  it.effect("short values are not masked; values inside the marker are not registered", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut(["abc", "12345", "REDACT", "ACTED]"])
      const text = "abc 12345 REDACT ACTED] [REDACTED]"
      assert.strictEqual(secrets.redact(text), text)
      assert.strictEqual(Secrets.minKnownValueLength, 6)
    }))

  it.effect("masking is idempotent with known values", () =>
    Effect.gen(function*() {
      const value = "hunter2-but-longer"
      const secrets = yield* handedOut([value])
      FastCheck.assert(
        FastCheck.property(FastCheck.string(), FastCheck.string(), (before, after) => {
          const once = secrets.redact(before + value + after)
          return secrets.redact(once) === once && !once.includes(value)
        })
      )
    }))

  it.effect("two thousand values are masked in one pass over a large text", () =>
    Effect.gen(function*() {
      const values = FastCheck.sample(FastCheck.stringMatching(/^[A-Za-z0-9_-]{16,40}$/), { numRuns: 2000, seed: 7 })
      const secrets = yield* handedOut(values)
      const filler = "lorem ipsum dolor sit amet, ".repeat(10)
      const text = values.map((value) => filler + value).join("\n")
      const started = performance.now()
      const out = secrets.redact(text)
      const elapsed = performance.now() - started
      for (const value of values) assert.notInclude(out, value)
      assert.isBelow(elapsed, 5_000, `${(text.length / 1e6).toFixed(1)} MB with 2000 values took ${elapsed} ms`)
    }))
})
