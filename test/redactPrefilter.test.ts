/**
 * The prefilter in front of the pattern rules (a length floor, one combined
 * marker test, a marker test per rule) must never skip a rule that would
 * have changed the text: `redactPatterns` always equals every rule applied
 * in order.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import { Secrets } from "jeevesagent"
import { MIN_PATTERN_MATCH_LENGTH, RULES } from "../src/internal/redact.js"

const { REDACTED, redactPatterns } = Secrets

/** Every rule, in order, with no prefilter. */
const unfiltered = (text: string): string => RULES.reduce((out, rule) => rule.apply(out), text)

const assertSame = (text: string) => assert.strictEqual(redactPatterns(text), unfiltered(text), JSON.stringify(text.slice(0, 200)))

/** One match of each rule. */
const samples: Record<string, string> = {
  "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
  "aws-secret-access-key": "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "connection-string-password": "postgres://app:s3cr3t@db",
  "bearer-token": "Bearer abcdefghijklmnop",
  "basic-auth": "Authorization: Basic dXNlcjpodW50ZXIy",
  anthropic: "sk-ant-abcdefgh",
  openai: "sk-abcdefghijklmnop",
  "aws-access-key-id": "AKIAIOSFODNN7EXAMPLE",
  "github-token": "ghp_abcdefghijklmnopqrst",
  "github-fine-grained-pat": "github_pat_abcdefghijklmnopqrstuv",
  "slack-token": "xoxb-1234567890",
  "slack-webhook": "hooks.slack.com/services/abcdefghijklmnopqrst",
  "google-api-key": "AIza" + "a".repeat(35),
  jwt: "eyJhbGci.eyJzdWIi.c2lnbmF0"
}

/** More matches, in the other spellings the rules accept. */
const variants = [
  "\"SecretAccessKey\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
  "secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "MY_AWS_TOKEN := wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "-----BEGIN PGP PRIVATE KEY BLOCK-----",
  "redis://:hunter22@cache",
  "bearer\tabcdefghijklmnop==",
  "Authorization=\"Basic abcd\"",
  "sk-proj-abcdefghijklmnop",
  "A3TX1234567890ABCDEF",
  "xapp-1234567890",
  "https://hooks.slack.com/workflows/abcdefghijklmnopqrst",
  "eyJa_-bc.eyJd-_ef.",
  "\\nghs_abcdefghijklmnopqrst"
]

/** Pieces that make rules match, almost match, or sit next to each other. */
const fragments = [
  ...Object.values(samples),
  ...variants,
  "sk-", "sk-ant-", "sk-proj-", "SK-", "AKIA", "A3TX", "akia", "ghp_", "github_pat_", "xoxb-", "xapp-",
  "hooks.slack.com/services/", "https://", "ab://", "://", "AIza", "eyJ", "EYJ", ".", "-----BEGIN ",
  "PRIVATE KEY", "RSA PRIVATE KEY", "-----", "-----END ", "Bearer ", "BEARER ", "bearer\t", "Authorization: Basic ",
  "AUTHORIZATION=basic ", "aws_secret_access_key = ", "AWS_KEY=", "SecretAccessKey\": \"", "secret", ":", "@", "u",
  "\\n", "\n", " ", "=", "\"", "'", "abcdefgh", "ABCDEFGHIJKLMNOP", "0123456789", "ab/+", "_-", "A".repeat(20),
  "x".repeat(40), REDACTED
]
const fragmentText = FastCheck.array(
  FastCheck.oneof(FastCheck.constantFrom(...fragments), FastCheck.string({ maxLength: 6 })),
  { maxLength: 24 }
).map((parts) => parts.join(""))

describe("redactPatterns prefilter", () => {
  it("the shortest possible match is exactly MIN_PATTERN_MATCH_LENGTH long, and is masked", () => {
    const shortest = "ab://:p@"
    assert.strictEqual(shortest.length, MIN_PATTERN_MATCH_LENGTH)
    assert.strictEqual(redactPatterns(shortest), `ab://:${REDACTED}@`)
    assert.strictEqual(unfiltered(shortest), `ab://:${REDACTED}@`)
    // one character less is no match for any rule
    assert.strictEqual(unfiltered("b://:p@"), "b://:p@")
  })

  it.prop(
    "no rule changes a text shorter than MIN_PATTERN_MATCH_LENGTH",
    [FastCheck.array(FastCheck.constantFrom(...fragments, "a", "b", "p", "/"), { maxLength: 8 }).map((parts) => parts.join(""))],
    ([text]) => text.length >= MIN_PATTERN_MATCH_LENGTH || unfiltered(text) === text,
    { fastCheck: { numRuns: 2000 } }
  )

  it("a match alone, at the start, at the very end and between other matches is masked", () => {
    assert.deepStrictEqual(Object.keys(samples).sort(), RULES.map((rule) => rule.name).sort())
    const cases = [...Object.entries(samples), ...variants.map((variant) => ["variant", variant] as const)]
    for (const [name, sample] of cases) {
      const placements = [sample, `${sample} and more`, `text then ${sample}`, `x\n${sample}`, `${samples.openai} ${sample} ${samples.jwt}`]
      for (const text of placements) {
        const out = redactPatterns(text)
        assert.include(out, REDACTED, `${name}: ${text}`)
        assertSame(text)
      }
    }
  })

  it("case-insensitive rules match markers in any case; case-sensitive ones do not", () => {
    assert.strictEqual(redactPatterns("BEARER abcdefghijklmnop"), `BEARER ${REDACTED}`)
    assert.strictEqual(redactPatterns("aUtHoRiZaTiOn: bAsIc dXNlcjpodW50ZXIy"), `aUtHoRiZaTiOn: bAsIc ${REDACTED}`)
    assert.strictEqual(redactPatterns("HTTPS://u:pw@host"), `HTTPS://u:${REDACTED}@host`)
    for (const text of ["SK-abcdefghijklmnopqrstuvwx", "akiaiosfodnn7example", "EYJhbGci.eyJzdWIi.c2lnbmF0"]) {
      assert.strictEqual(redactPatterns(text), text)
      assertSame(text)
    }
  })

  it.prop("each rule changes only texts that hold its marker", [fragmentText], ([text]) => {
    for (const rule of RULES) {
      if (rule.apply(text) !== text && !rule.marker.test(text)) return false
    }
    return true
  }, { fastCheck: { numRuns: 2000 } })

  it.prop("equals every rule applied in order, on texts made of markers and tokens", [fragmentText], ([text]) =>
    redactPatterns(text) === unfiltered(text), { fastCheck: { numRuns: 2000 } })

  it.prop("equals every rule applied in order, on arbitrary text", [FastCheck.fullUnicodeString({ maxLength: 200 })], ([text]) =>
    redactPatterns(text) === unfiltered(text))

  it.effect("known values are masked in texts too short for any pattern, and at the very end", () =>
    Effect.gen(function*() {
      const value = "zxcvbq"
      assert.strictEqual(value.length, Secrets.minKnownValueLength)
      const secrets = Secrets.makeDict({ SHORT: value })
      assert.strictEqual(secrets.redact(value), REDACTED)
      assert.strictEqual(secrets.redact(`${value}!`), `${REDACTED}!`)
      assert.strictEqual(secrets.redact(`x ${value}`), `x ${REDACTED}`)
      assert.strictEqual(secrets.redact("x zxcvb"), "x zxcvb")
      // a value and a pattern match side by side
      assert.strictEqual(secrets.redact(`${value} ${samples.openai}`), `${REDACTED} ${REDACTED}`)
    }))
})
