import { assert, describe, it } from "@effect/vitest"
import { Secrets } from "jeevesagent"

const { REDACTED, redactPatterns } = Secrets

// The userinfo of a URL is everything before the LAST `@` of the authority, and the
// authority ends at the first `/`, `?` or `#` (WHATWG URL; libpq, SQLAlchemy, nodemailer,
// amqplib parse it so): `new URL(...)` agrees with each case below.
describe("connection-string-password: userinfo as URL parsers read it", () => {
  it("masks the password when the user name is an e-mail address (SMTP, AMQP, Office 365 relays)", () => {
    const password = "S3cretPassw0rd-2024"
    const dsn = `smtp://alerts@example.com:${password}@smtp.office365.com:587`
    assert.strictEqual(new URL(dsn).password, password)
    const out = redactPatterns(`SMTP_URL=${dsn}`)
    assert.notInclude(out, password)
    assert.include(out, REDACTED)
  })

  it("masks the whole password when it holds a raw '@'", () => {
    const password = "p@ssw0rd-2024-prod"
    const dsn = `postgres://app:${password}@db.internal:5432/app`
    assert.strictEqual(decodeURIComponent(new URL(dsn).password), password)
    const out = redactPatterns(`DATABASE_URL=${dsn}`)
    // Before the fix: "postgres://app:[REDACTED]@ssw0rd-2024-prod@db.internal:5432/app"
    assert.notInclude(out, "ssw0rd-2024-prod")
  })

  it("masks a password longer than 256 characters (an RDS IAM auth token, percent-encoded)", () => {
    // What `rds.Signer.getAuthToken()` returns (about 900 characters), percent-encoded to sit in a URL.
    const token = "mydb.cluster-abc.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app" +
      "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAY34FZKBOKMUTVV7A/20240101/us-east-1/rds-db/aws4_request" +
      "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr" + "a1b2C3d4".repeat(40) +
      "&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    const password = encodeURIComponent(token)
    assert.isAbove(password.length, 256)
    const dsn = `postgres://app:${password}@mydb.cluster-abc.us-east-1.rds.amazonaws.com:5432/app`
    assert.strictEqual(new URL(dsn).password, password)
    const out = redactPatterns(dsn)
    assert.notInclude(out, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    assert.notInclude(out, "X-Amz-Security-Token")
  })

  it("leaves a URL with a port and a query holding an e-mail address unchanged (no userinfo there)", () => {
    const url = "https://api.example.com:8443?notify=ops@example.com"
    const parsed = new URL(url)
    assert.strictEqual(parsed.password, "")
    assert.strictEqual(parsed.username, "")
    // Before the fix: "https://api.example.com:[REDACTED]@example.com" — the host is kept as a "user",
    // the port and the query become a "password".
    assert.strictEqual(redactPatterns(`calling ${url}`), `calling ${url}`)
  })

  it("in JSON, the password ends at its own @, never running into the next string", () => {
    const text = `{"url":"postgres://app:pw-1234-secret@db","notify":"ops@example.com"}`
    assert.strictEqual(redactPatterns(text), `{"url":"postgres://app:${REDACTED}@db","notify":"ops@example.com"}`)
  })
})
