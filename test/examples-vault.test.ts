import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { DEMO_SECRETS, DEMO_VAULT_TOKEN } from "./support/fakeVault.js"

const root = fileURLToPath(new URL("..", import.meta.url))

const run = (command: string, args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(command, args, { cwd: root, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr }))
  })

describe("examples/vault-secrets.ts", () => {
  it("runs offline, pre-warms the cache, and never prints a secret", async () => {
    const { code, stdout, stderr } = await run("npx", ["tsx", "examples/vault-secrets.ts"])
    assert.strictEqual(code, 0, stderr)
    const lines = stdout.split("\n")
    const expected = [
      /^fake vault listening on http:\/\/127\.0\.0\.1:\d+$/,
      /^construction-time lookupSync\(ANTHROPIC_API_KEY\): hit$/,
      /^vault requests so far: 2 /,
      /^lookupSync\(DB_PASSWORD\) after pre-warm: hit$/,
      /^lookupSync\(PASSPHRASE\) before resolve: miss$/,
      /^resolve\(PASSPHRASE\) prints as <redacted>$/,
      /^lookupSync\(PASSPHRASE\) after resolve: hit$/,
      /^redacted: connecting as app with password \[REDACTED\]$/,
      /^redacted JSON: \{"password":"\[REDACTED\]"\}$/,
      /^redacted passphrase: unlock with \[REDACTED\]$/,
      /^redacted payload: \{"tool":"db\.connect","args":\{"dsn":"postgres:\/\/app:\[REDACTED\]@db\/prod"\}\}$/,
      /^redacted stored: signing with \[REDACTED\]$/,
      /^resolve\(NOT_IN_VAULT\) fails with SecretNotFound$/,
      /db password is \[REDACTED\]/,
      /dsn.*app:\[REDACTED\]@db/,
      /^done$/
    ]
    let at = 0
    for (const pattern of expected) {
      const found = lines.findIndex((line, i) => i >= at && pattern.test(line))
      assert.isAtLeast(found, 0, `no line matching ${pattern} (in order) in:\n${stdout}`)
      at = found + 1
    }
    const output = stdout + stderr
    for (const value of [...Object.values(DEMO_SECRETS), DEMO_VAULT_TOKEN, "whsec/7::rotated at start-up::"]) {
      assert.notInclude(output, value)
      assert.notInclude(output, JSON.stringify(value).slice(1, -1))
    }
  }, 90_000)
})
