import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../../", import.meta.url))
const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url))

/** Runs `examples/<name>` with tsx, offline; resolves with its exit code and output. */
export const runExample = (
  name: string,
  env: Readonly<Record<string, string | undefined>> = {}
): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    execFile(
      tsx,
      [`examples/${name}`],
      { cwd: root, env: { ...process.env, ANTHROPIC_API_KEY: "", ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resolve({ code, stdout, stderr })
      }
    )
  })
