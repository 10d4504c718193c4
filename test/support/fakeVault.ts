/**
 * A stand-in for HashiCorp Vault's KV v2 HTTP API, on 127.0.0.1, for the
 * vault example and the tests: `GET /v1/secret/data/<name>` reads
 * `{ data: { data: { value } } }`, `POST` (or `PUT`) with
 * `{ data: { value } }` writes a new version. Requests without the right
 * `X-Vault-Token` get 403. Offline, in memory, nothing persisted.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * Demo secrets of deliberately different shapes: a provider key, a password
 * with spaces and punctuation, a JSON document, a non-ASCII passphrase.
 * None is a real credential.
 */
export const DEMO_SECRETS: Readonly<Record<string, string>> = {
  ANTHROPIC_API_KEY: "sk-ant-api03-DEMOdemoDEMOdemo_0123456789-abcdefghijklmnopqrstuvwxyzABCDEFG",
  DB_PASSWORD: "correct horse \"battery\" staple #42",
  SERVICE_ACCOUNT: "{\"client_id\":\"svc-7\",\"client_secret\":\"p9/Qz+w==\"}",
  PASSPHRASE: "grüße aus Köln — 密码 🔑 2024"
}

/** The token the fake vault accepts. */
export const DEMO_VAULT_TOKEN = "hvs.demo-root-token"

export interface FakeVault {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** How many requests the vault has answered. */
  readonly requestCount: () => number
  readonly close: () => Promise<void>
}

const PREFIX = "/v1/secret/data/"

const send = (response: http.ServerResponse, status: number, body: unknown): void => {
  response.writeHead(status, { "content-type": "application/json" })
  response.end(JSON.stringify(body))
}

const readBody = (request: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    request.on("error", reject)
  })

/** Starts a fake vault on 127.0.0.1 (port 0: the system picks a free one). */
export const startFakeVault = async (options?: {
  readonly token?: string
  readonly secrets?: Readonly<Record<string, string>>
}): Promise<FakeVault> => {
  const token = options?.token ?? DEMO_VAULT_TOKEN
  const versions = new Map<string, Array<string>>(
    Object.entries(options?.secrets ?? DEMO_SECRETS).map(([name, value]) => [name, [value]])
  )
  let requests = 0

  const handle = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    requests++
    const url = new URL(request.url ?? "/", "http://127.0.0.1")
    if (!url.pathname.startsWith(PREFIX)) return send(response, 404, { errors: ["no handler for route"] })
    if (request.headers["x-vault-token"] !== token) return send(response, 403, { errors: ["permission denied"] })
    const name = decodeURIComponent(url.pathname.slice(PREFIX.length))
    if (request.method === "GET") {
      const history = versions.get(name)
      if (history === undefined) return send(response, 404, { errors: [] })
      return send(response, 200, {
        data: { data: { value: history[history.length - 1] }, metadata: { version: history.length } }
      })
    }
    if (request.method === "POST" || request.method === "PUT") {
      const body = JSON.parse(await readBody(request)) as { data?: { value?: unknown } }
      const value = body.data?.value
      if (typeof value !== "string") return send(response, 400, { errors: ["data.value must be a string"] })
      const history = versions.get(name) ?? []
      history.push(value)
      versions.set(name, history)
      return send(response, 200, { data: { version: history.length } })
    }
    return send(response, 405, { errors: ["method not allowed"] })
  }

  const server = http.createServer((request, response) => {
    handle(request, response).catch((error: unknown) => send(response, 500, { errors: [String(error)] }))
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requestCount: () => requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections()
        server.close((error) => (error === undefined ? resolve() : reject(error)))
      })
  }
}
