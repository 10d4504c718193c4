import { assert, describe, it } from "@effect/vitest"
import { FastCheck } from "effect"
import { Secrets } from "jeevesagent"

const { REDACTED, redactPatterns } = Secrets

const repeat = (chars: string, n: number) => chars.repeat(Math.ceil(n / chars.length)).slice(0, n)

/** Eight places a token turns up in logs (after gitleaks / detect-secrets test corpora). */
const contexts = (token: string): ReadonlyArray<string> => [
  JSON.stringify({ key: token, other: 1 }),
  `API_KEY=${token}\nDEBUG=true`,
  `https://api.example.com/v1/items?key=${token}&page=2`,
  `curl -H 'X-Api-Key: ${token}' https://example.com`,
  "```sh\nexport KEY=" + token + "\n```",
  `use \`${token}\` here`,
  JSON.stringify(`line one\n${token}\nline three`),
  `Error: request failed for ${token}\n    at fetch (client.js:10:5)\n    at main (index.js:3:1)`
]

const assertMasked = (text: string, secret: string) => {
  const out = redactPatterns(text)
  assert.notInclude(out, secret, `not masked in: ${text.slice(0, 200)}`)
  assert.include(out, REDACTED)
}

/** Tokens of each rule's documented shape (fixed samples; generated ones below). */
const tokens: Record<string, ReadonlyArray<string>> = {
  anthropic: [
    "sk-ant-api03-" + repeat("aB3_-xYz9", 93) + "AA",
    "sk-ant-admin01-" + repeat("Qw9-Er_t", 93) + "AA",
    "sk-ant-api03-shortbutreal"
  ],
  openai: [
    "sk-" + repeat("a1B2c3", 20) + "T3BlbkFJ" + repeat("d4E5f6", 20),
    "sk-proj-" + repeat("Ab-9_Cd", 74) + "T3BlbkFJ" + repeat("Ef_8-Gh", 74),
    "sk-svcacct-" + repeat("Zz09_-", 58),
    "sk-abcdefghijklmnopqrstuvwx"
  ],
  "aws-access-key-id": ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "ABIA1234567890ABCDEF", "A3TX1234567890ABCDEF"],
  "github-token": ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"].map((prefix) => prefix + repeat("R4nd0mT0k3nX", 36)),
  "github-fine-grained-pat": ["github_pat_11ABCDEFG0" + repeat("abc_XYZ_123", 72)],
  "slack-token": [
    "xoxb-1234567890123-1234567890123-" + repeat("AbCd", 24),
    "xoxp-1234567890-1234567890-1234567890-" + repeat("f0e1", 32),
    "xoxa-2-" + repeat("k9", 20),
    "xapp-1-A0123456789-1234567890123-" + repeat("ab12", 64)
  ],
  "slack-webhook": ["https://hooks.slack.com/services/T01234567/B01234567/" + repeat("aBc", 24)],
  "google-api-key": ["AIza" + repeat("SyB-x_9Q", 35)],
  jwt: [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ." +
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYWxpY2UifQ."
  ]
}

describe("redactPatterns: token shapes", () => {
  for (const [rule, samples] of Object.entries(tokens)) {
    it(`${rule}: masked alone and in eight contexts`, () => {
      assert.include(Secrets.patternNames, rule)
      for (const token of samples) {
        assert.strictEqual(redactPatterns(token), REDACTED)
        for (const text of contexts(token)) assertMasked(text, token)
      }
    })
  }

  it("GitHub tokens may grow to 255 characters", () => {
    for (let length = 36; length <= 255; length += 17) {
      const token = "ghp_" + repeat("A1b2C3_", length)
      assert.strictEqual(redactPatterns(`token: ${token}.`), `token: ${REDACTED}.`)
    }
  })

  it("a token right after an escaped newline in JSON text is masked", () => {
    const token = "sk-abcdefghijklmnopqrstuvwx"
    const json = JSON.stringify({ message: `oops\n${token}` })
    assert.strictEqual(redactPatterns(json), JSON.stringify({ message: "oops\n" + REDACTED }))
  })

  it("a token right after a percent escape (URL-encoded text) is masked", () => {
    const anthropic = tokens.anthropic![0]!
    assert.strictEqual(
      redactPatterns(`GET /proxy?cfg=%7B%22key%22%3A%22${anthropic}%22%7D`),
      `GET /proxy?cfg=%7B%22key%22%3A%22${REDACTED}%22%7D`
    )
    for (const samples of Object.values(tokens)) {
      for (const token of samples) {
        for (const escape of ["%22", "%3D", "%3d", "%20", "%0A"]) {
          assertMasked(`q=${encodeURIComponent(`{"k":"`)}${escape}${token}%22`, token)
        }
      }
    }
  })

  it("a prefix inside a word is still left alone when the characters before it are no percent escape", () => {
    for (
      const text of [
        "task-abcdefghijklmnopqrstuvwxyz",
        "%2Gsk-abcdefghijklmnopqrstuvwx",
        "50%2xghp_abcdefghijklmnopqrstuvwxyz",
        "xeyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYWxpY2UifQ."
      ]
    ) assert.strictEqual(redactPatterns(text), text)
  })
})

describe("redactPatterns: secrets in context", () => {
  const awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

  it("AWS secret access keys next to their name", () => {
    const cases = [
      `aws_secret_access_key = ${awsSecret}`,
      `AWS_SECRET_ACCESS_KEY: ${awsSecret}`,
      `AWS_SECRET_ACCESS_KEY="${awsSecret}"`,
      `export AWS_SECRET_ACCESS_KEY='${awsSecret}'`,
      JSON.stringify({ SecretAccessKey: awsSecret, AccessKeyId: "ASIAY34FZKBOKMUTVV7A" }),
      `aws.secret.key => "${awsSecret}"`,
      `MY_APP_AWS_TOKEN := ${awsSecret}`
    ]
    for (const text of cases) assertMasked(text, awsSecret)
    assert.strictEqual(redactPatterns(`aws_secret_access_key = ${awsSecret}\n`), `aws_secret_access_key = ${REDACTED}\n`)
  })

  it("40 characters without an AWS key name, or under a non-secret name, are left alone", () => {
    for (
      const text of [
        `checksum = ${awsSecret}`,
        `aws_account_id: ${awsSecret}`,
        `aws_secret_access_key = ${awsSecret}EXTRA`, // 45 characters: not an AWS secret key
        "sha1 0123456789abcdef0123456789abcdef01234567"
      ]
    ) assert.strictEqual(redactPatterns(text), text)
  })

  it("Bearer tokens keep the scheme and lose the token", () => {
    assert.strictEqual(
      redactPatterns("Authorization: Bearer abc.DEF-ghi_jkl~mno+pqr/stu=="),
      `Authorization: Bearer ${REDACTED}`
    )
    assert.strictEqual(redactPatterns("authorization: bearer 0123456789abcdef0123"), `authorization: bearer ${REDACTED}`)
    assert.strictEqual(
      redactPatterns(`{"Authorization":"Basic dXNlcjpodW50ZXIy"}`),
      `{"Authorization":"Basic ${REDACTED}"}`
    )
  })

  it("passwords in connection strings keep the user and host", () => {
    assert.strictEqual(
      redactPatterns("DATABASE_URL=postgres://app:s3cr3t!pw@db.internal:5432/prod"),
      `DATABASE_URL=postgres://app:${REDACTED}@db.internal:5432/prod`
    )
    assert.strictEqual(redactPatterns("redis://:hunter22@cache:6379"), `redis://:${REDACTED}@cache:6379`)
  })
})

const pem = (label: string, body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyji") =>
  `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----`

describe("redactPatterns: PEM private keys", () => {
  it("masks each private key block and keeps the text around it", () => {
    for (
      const label of [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK"
      ]
    ) {
      const block = pem(label)
      assert.strictEqual(redactPatterns(`key:\n${block}\nafter`), `key:\n${REDACTED}\nafter`)
      // JSON-escaped, as in a log line
      assert.strictEqual(redactPatterns(JSON.stringify({ key: block })), `{"key":"${REDACTED}"}`)
    }
    const two = `${pem("RSA PRIVATE KEY")}\nmiddle ${pem("CERTIFICATE")}\n${pem("EC PRIVATE KEY")}`
    assert.strictEqual(redactPatterns(two), `${REDACTED}\nmiddle ${pem("CERTIFICATE")}\n${REDACTED}`)
  })

  it("a block with no END line is masked to the end of the text", () => {
    assert.strictEqual(
      redactPatterns("before -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA... (truncated)"),
      `before ${REDACTED}`
    )
  })

  it("public material is left alone", () => {
    for (const label of ["CERTIFICATE", "PUBLIC KEY", "RSA PUBLIC KEY"]) {
      assert.strictEqual(redactPatterns(pem(label)), pem(label))
    }
  })
})

describe("redactPatterns: clean text", () => {
  const clean = [
    "The quick brown fox jumps over the lazy dog.",
    "task-management-system-overview and risk-assessment-framework-v2",
    "sk-short, sk-learn, AKIA, eyJ, ghp_, xoxb-, AIza: prefixes alone",
    "AKIAIOSFODNN7EXAMP (15 after the prefix) and ghp_tooShortToBeAToken1",
    "The Bearer of this letter; bearer bonds",
    "See https://example.com:8080/path?q=1 and mailto:someone@example.com",
    "postgres://localhost:5432/prod and user@example.com",
    "2024-05-01T12:00:00.000Z 550e8400-e29b-41d4-a716-446655440000",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "const x = await fetch(`${base}/v1/items`, { method: 'POST' })",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg",
    "grüße aus Köln — 密码 🔑",
    ""
  ]
  it("is returned unchanged", () => {
    for (const text of clean) assert.strictEqual(redactPatterns(text), text)
  })

  it("the marker matches no rule", () => {
    assert.strictEqual(redactPatterns(REDACTED), REDACTED)
    assert.strictEqual(redactPatterns(`Bearer ${REDACTED} sk-${REDACTED} eyJ${REDACTED}`), `Bearer ${REDACTED} sk-${REDACTED} eyJ${REDACTED}`)
  })
})

// Generated positives: random tokens of each documented alphabet and length.
const generated: Record<string, FastCheck.Arbitrary<string>> = {
  anthropic: FastCheck.stringMatching(/^sk-ant-api03-[A-Za-z0-9_-]{93}AA$/),
  openai: FastCheck.stringMatching(/^sk-(proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,80}$/),
  "aws-access-key-id": FastCheck.stringMatching(/^(AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}$/),
  "github-token": FastCheck.stringMatching(/^(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36,255}$/),
  "github-fine-grained-pat": FastCheck.stringMatching(/^github_pat_[A-Za-z0-9_]{82}$/),
  "slack-token": FastCheck.stringMatching(/^xox[bpe]-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24,34}$/),
  "google-api-key": FastCheck.stringMatching(/^AIza[A-Za-z0-9_-]{35}$/),
  jwt: FastCheck.stringMatching(/^eyJ[A-Za-z0-9_-]{10,60}\.eyJ[A-Za-z0-9_-]{10,60}\.[A-Za-z0-9_-]{10,60}$/)
}

describe("redactPatterns: generated tokens", () => {
  for (const [rule, arbitrary] of Object.entries(generated)) {
    it.prop(`${rule}: every generated token is masked in every context`, [arbitrary], ([token]) => {
      for (const text of contexts(token)) {
        const out = redactPatterns(text)
        if (out.includes(token)) return false
      }
      return true
    }, { fastCheck: { numRuns: 150 } })
  }

  const anyToken = FastCheck.oneof(...Object.values(generated))
  it.prop(
    "idempotent: redacting twice changes nothing more",
    [FastCheck.string(), anyToken, FastCheck.fullUnicodeString(), FastCheck.boolean()],
    ([before, token, after, newline]) => {
      const text = before + (newline ? "\n" : " ") + token + " " + after
      const once = redactPatterns(text)
      return redactPatterns(once) === once && !once.includes(token)
    },
    { fastCheck: { numRuns: 300 } }
  )

  it.prop("arbitrary text never throws and stays idempotent", [FastCheck.fullUnicodeString({ maxLength: 400 })], ([text]) => {
    const once = redactPatterns(text)
    return redactPatterns(once) === once
  })
})
