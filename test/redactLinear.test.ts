/**
 * ReDoS budget: every rule on 1 MB adversarial inputs. A quadratic rule
 * takes 16 times as long on 1 MB as on 256 KB (and seconds: a `\b`-anchored
 * JWT pattern takes about 48 s on 256 KB of "-eyJ", a lazy PEM pattern about
 * 5 s on 256 KB of BEGIN lines); a linear one about 4 times. The bound below
 * (10 times, plus slack for GC and timer noise on a shared machine) tells the
 * two apart; absolute speed is only held to a generous 2 s per MB.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Secrets } from "jeevesagent"

const KB = 1024
const MB = 1024 * KB

/** `unit` repeated to `size` characters, between `head` and `tail`. */
const fill = (unit: string, size: number, head = "", tail = "") =>
  head + unit.repeat(Math.ceil((size - head.length - tail.length) / unit.length)) + tail

/** Inputs built to make a backtracking engine rescan: prefixes with no end, runs with no terminator. */
const adversarial: Record<string, (size: number) => string> = {
  "sk- repeated": (n) => fill("sk-", n),
  "sk- then a long run": (n) => fill("a", n, "sk-"),
  "sk- then too-short runs": (n) => fill("sk-abcdefghijk ", n),
  "sk-ant- repeated": (n) => fill("sk-ant-", n),
  "AKIA repeated": (n) => fill("AKIA", n),
  "AKIA with 17 characters": (n) => fill("AKIAABCDEFGHIJKLMNOPQ ", n),
  "ghp_ repeated": (n) => fill("ghp_", n),
  "github_pat_ repeated": (n) => fill("github_pat_", n),
  "xoxb- repeated": (n) => fill("xoxb-", n),
  "AIza repeated": (n) => fill("AIza", n),
  "eyJ repeated": (n) => fill("eyJ", n),
  "-eyJ repeated": (n) => fill("-eyJ", n),
  "eyJ, a long run, a dot": (n) => fill("A", n, "eyJ", "."),
  "JWT parts with no third": (n) => fill("eyJaaaaa.eyJbbbbb", n),
  ".eyJ repeated": (n) => fill(".eyJaaaaa", n),
  "BEGIN PRIVATE KEY with no END": (n) => fill("-----BEGIN PRIVATE KEY-----", n),
  "BEGIN with no label end": (n) => fill("-----BEGIN ", n),
  "BEGIN then a long label": (n) => fill("A", n, "-----BEGIN "),
  "END repeated": (n) => fill("-----END ", n),
  "aws repeated": (n) => fill("aws", n),
  "aws_key_ repeated": (n) => fill("aws_key_", n),
  "aws secret name repeated": (n) => fill("aws_secret_access_key = ", n),
  "aws name with 39 characters": (n) => fill("aws_key: " + "a".repeat(39) + " ", n),
  "aws name then a long value": (n) => fill("A", n, "aws_key="),
  "scheme:// repeated": (n) => fill("a://", n),
  "scheme://user: repeated": (n) => fill("ab://user:", n),
  "scheme:// then a long user": (n) => fill("u", n, "http://"),
  "scheme://u: then a long password": (n) => fill("p", n, "http://u:"),
  "Bearer repeated": (n) => fill("Bearer ", n),
  "Bearer then spaces": (n) => fill(" ", n, "Bearer"),
  "Authorization: Basic repeated": (n) => fill("Authorization: Basic ", n),
  "slack webhook prefix repeated": (n) => fill("hooks.slack.com/services/", n),
  "escaped newlines before prefixes": (n) => fill("\\nsk-\\neyJ", n),
  "percent escapes before prefixes": (n) => fill("%22sk-%3DeyJ%2", n),
  "percent escape, eyJ, a long run, no dot": (n) => fill("A", n, "%22eyJ"),
  "percent-escaped JWT parts with no third": (n) => fill("%22eyJaaaaa.eyJbbbbb", n),
  "one line, no newline": (n) => fill("a", n),
  "prose": (n) => fill("lorem ipsum dolor sit amet ", n)
}

const timeOf = (redact: (text: string) => string, input: string): number => {
  let best = Infinity
  for (let run = 0; run < 2; run++) {
    const started = performance.now()
    redact(input)
    best = Math.min(best, performance.now() - started)
  }
  return best
}

const assertLinear = (name: string, redact: (text: string) => string, make: (size: number) => string) => {
  redact(make(16 * KB)) // warm up the JIT
  const small = timeOf(redact, make(256 * KB))
  const large = timeOf(redact, make(MB))
  assert.isBelow(large, 2_000, `${name}: ${large.toFixed(1)} ms for 1 MB`)
  assert.isBelow(large, 10 * small + 100, `${name}: 256 KB ${small.toFixed(1)} ms, 1 MB ${large.toFixed(1)} ms`)
}

describe("redaction runs in linear time", () => {
  it("every pattern rule, on 1 MB adversarial inputs", () => {
    for (const [name, make] of Object.entries(adversarial)) assertLinear(name, Secrets.redactPatterns, make)
  }, 120_000)

  it.effect("known values, on inputs that almost match them", () =>
    Effect.gen(function*() {
      const values = ["a".repeat(1000) + "b", "a".repeat(500) + "c", "ab".repeat(300) + "x", "aaaaaaaaab"]
      const secrets = Secrets.make({ resolve: (ref) => Effect.succeed(values[Number(ref)]!) })
      for (let i = 0; i < values.length; i++) yield* secrets.resolve(String(i))
      assertLinear("a repeated", secrets.redact, (n) => fill("a", n))
      assertLinear("ab repeated", secrets.redact, (n) => fill("ab", n))
      assertLinear("every value, back to back", secrets.redact, (n) => fill(values.join(""), n))
      // and the service still masks them in the large input
      assert.notInclude(secrets.redact(fill(values[0]! + " ", MB)), values[0]!)
    }), 120_000)
})
