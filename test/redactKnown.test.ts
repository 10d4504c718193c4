import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import { Secrets } from "jeevesagent"
import { KnownValues } from "../src/internal/redact.js"

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

  it.effect("a value read with a trailing newline (a secret file, a vault's text) is masked once the caller trims it too", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut(["s3cr3t-token-value\n", "\t padded-api-key-77 \r\n"])
      assert.strictEqual(secrets.redact("token=s3cr3t-token-value;"), `token=${REDACTED};`)
      assert.strictEqual(secrets.redact("key padded-api-key-77 end"), `key ${REDACTED} end`)
      assert.strictEqual(secrets.redact(`auth ${Buffer.from("s3cr3t-token-value").toString("base64")}`), `auth ${REDACTED}`)
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

describe("known values: encodings inside larger texts", () => {
  const password = "correct horse battery staple"
  const token = "vault-token-3f9a1c77e2b84d05"

  it.effect("form encoding (URLSearchParams: a space is '+') is masked", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut([password, "it's (almost) ~free!"])
      const body = new URLSearchParams({ user: "app", password, note: "it's (almost) ~free!" }).toString()
      assert.strictEqual(secrets.redact(body), `user=app&password=${REDACTED}&note=${REDACTED}`)
    }))

  it.effect("base64 and base64url of a text holding the value anywhere are masked (docker config `auth`)", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut([token, password])
      for (const value of [token, password]) {
        for (const before of ["", "a", "ap", "app:", "user@example.com:", "ü"]) {
          for (const after of ["", "x", "\n", "?>"]) {
            for (const encoding of ["base64", "base64url"] as const) {
              const encoded = Buffer.from(before + value + after).toString(encoding)
              const out = secrets.redact(JSON.stringify({ auths: { "registry.example": { auth: encoded } } }))
              assert.include(out, REDACTED, `${encoding} of ${before}<value>${after}`)
              assert.notInclude(out, encoded)
              // What is left of the encoded text decodes to at most a few bits of the value.
              const left = out.match(/"auth":"([^"]*)"/)![1]!.replace(REDACTED, "")
              assert.isAtMost(left.length, Math.ceil(((before.length + after.length + 2) * 8) / 6) + 4)
            }
          }
        }
      }
    }))

  it.effect("shifted base64 forms are only used for values long enough not to mask by chance", () =>
    Effect.gen(function*() {
      const secrets = yield* handedOut(["sixsix"])
      // base64("xsixsix") holds "sixsix" at a shifted alignment; its 6 inner characters are too few to mask.
      const encoded = Buffer.from("xsixsix").toString("base64")
      assert.strictEqual(secrets.redact(encoded), encoded)
      assert.strictEqual(secrets.redact(Buffer.from("sixsix").toString("base64")), REDACTED)
    }))
})

describe("known values: cost of adding a value", () => {
  // Timing lives here, not in an assertion: before, each of the 50 adds below rebuilt one automaton
  // over all 2 050 values (about 30 ms each); now they cost about 0.1 ms on average.
  it("per-user values arriving one per run rebuild O(log n) values each, never the whole set each time", () => {
    const known = new KnownValues()
    for (let i = 0; i < 2000; i++) known.add(`oauth-warm-${i}-9f8e7d6c5b4a3928`)
    assert.strictEqual(known.redact("warm up"), "warm up")
    const before = { ...known.builds }
    const values: Array<string> = []
    for (let i = 0; i < 50; i++) {
      const value = `oauth-user-${i}-9f8e7d6c5b4a3928`
      values.push(value)
      known.add(value)
      // each run redacts its own output right after resolving its value
      assert.strictEqual(known.redact(`tool output: ${value}`), `tool output: ${REDACTED}`)
    }
    const rebuiltValues = known.builds.values - before.values
    // A rebuild of everything on each add would be 50 × 2 000 values.
    assert.isAtMost(rebuiltValues, 50 * (Math.log2(2050) + 2))
    // Every value stays masked, the old ones and the new ones, and overlapping ones as one stretch.
    const text = ["oauth-warm-0-9f8e7d6c5b4a3928", ...values, "oauth-warm-1999-9f8e7d6c5b4a3928"].join(" ")
    assert.strictEqual(known.redact(text), Array(52).fill(REDACTED).join(" "))
  })

  it("the whole set is rebuilt O(log n) times over n adds, each followed by a redact", () => {
    const known = new KnownValues()
    let largeRebuilds = 0
    for (let i = 0; i < 4096; i++) {
      const before = known.builds.values
      known.add(`per-user-${i}-token`)
      known.redact("x")
      if (known.builds.values - before > known.size / 2) largeRebuilds++
    }
    // Each value is rebuilt when its batch grows by half at least: log1.5(4096) ≈ 20.5 times.
    assert.isAtMost(known.builds.values, 4096 * 22)
    assert.isAtMost(largeRebuilds, 22)
  })

  it("a text longer than every form together is scanned once: the batches are merged first", () => {
    const known = new KnownValues()
    const values = Array.from({ length: 100 }, (_, i) => `merge-me-${i}-token`)
    for (const value of values) {
      known.add(value)
      known.redact("x")
    }
    const text = values.join(" ").repeat(2) + " " + "lorem ipsum ".repeat(20_000)
    const before = known.builds.automata
    assert.notInclude(known.redact(text), "merge-me")
    assert.strictEqual(known.builds.automata - before, 1)
    known.redact(text)
    assert.strictEqual(known.builds.automata - before, 1)
  })

  it("values in different batches overlapping each other are masked as their union", () => {
    const known = new KnownValues()
    for (let i = 0; i < 40; i++) known.add(`filler-value-${i}`)
    known.add("abcdef123456")
    known.redact("x")
    known.add("123456ghijkl")
    assert.strictEqual(known.redact("<abcdef123456ghijkl>"), `<${REDACTED}>`)
    known.add("zzabcdef12")
    assert.strictEqual(known.redact("<zzabcdef123456ghijkl> abcdef123456"), `<${REDACTED}> ${REDACTED}`)
  })
})
