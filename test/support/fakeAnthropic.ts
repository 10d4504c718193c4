/**
 * A local stand-in for the Anthropic Messages API (`POST /v1/messages`) on
 * 127.0.0.1, for testing the real SDK end to end. Each request takes the next
 * scripted reply: a JSON message, the same message as server-sent events, an
 * Anthropic error body with a status, or a hang that lasts until the client
 * aborts. Every request is recorded, and so is every connection the client
 * closed before the response ended.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Deferred, Effect, Exit, type Scope } from "effect"

// ---- message bodies -----------------------------------------------------------

/** A content block of a response. */
export type ContentBlock =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "tool_use"; readonly id: string; readonly name: string; readonly input: unknown }

/** A response body of the Messages API. */
export interface MessageBody {
  readonly id: string
  readonly type: "message"
  readonly role: "assistant"
  readonly model: string
  readonly content: ReadonlyArray<ContentBlock>
  readonly stop_reason: string | null
  readonly stop_sequence: null
  readonly usage: {
    readonly input_tokens: number
    readonly output_tokens: number
    readonly cache_creation_input_tokens: number | null
    readonly cache_read_input_tokens: number | null
  }
}

export const text = (value: string): ContentBlock => ({ type: "text", text: value })

export const toolUse = (id: string, name: string, input: unknown): ContentBlock => ({ type: "tool_use", id, name, input })

let messageCounter = 0

export const message = (
  content: ReadonlyArray<ContentBlock>,
  options?: {
    readonly inputTokens?: number
    readonly outputTokens?: number
    readonly cacheWriteTokens?: number
    readonly cacheReadTokens?: number
    readonly stopReason?: string
    readonly model?: string
  }
): MessageBody => ({
  id: `msg_fake_${++messageCounter}`,
  type: "message",
  role: "assistant",
  model: options?.model ?? "claude-sonnet-4-6",
  content,
  stop_reason: options?.stopReason ?? (content.some((block) => block.type === "tool_use") ? "tool_use" : "end_turn"),
  stop_sequence: null,
  usage: {
    input_tokens: options?.inputTokens ?? 10,
    output_tokens: options?.outputTokens ?? 5,
    cache_creation_input_tokens: options?.cacheWriteTokens ?? null,
    cache_read_input_tokens: options?.cacheReadTokens ?? null
  }
})

// ---- replies ------------------------------------------------------------------

export interface SseEvent {
  readonly event: string
  readonly data: unknown
}

export type Reply =
  | { readonly _tag: "Json"; readonly body: MessageBody }
  | { readonly _tag: "Sse"; readonly events: ReadonlyArray<SseEvent>; readonly then: "end" | "hang" | "drop" }
  | {
    readonly _tag: "Error"
    readonly status: number
    readonly type: string
    readonly message: string
    readonly headers?: Readonly<Record<string, string>> | undefined
  }
  | { readonly _tag: "Hang" }

export const json = (body: MessageBody): Reply => ({ _tag: "Json", body })

export const error = (
  status: number,
  type: string,
  message: string,
  headers?: Readonly<Record<string, string>>
): Reply => ({ _tag: "Error", status, type, message, headers })

/** Answers nothing until the client goes away. */
export const hang: Reply = { _tag: "Hang" }

/**
 * Raw events, then the response ends (`"end"`, the default), stays open
 * (`"hang"`) or its connection is destroyed (`"drop"`).
 */
export const sseEvents = (
  events: ReadonlyArray<SseEvent>,
  options?: { readonly then?: "end" | "hang" | "drop" }
): Reply => ({ _tag: "Sse", events, then: options?.then ?? "end" })

const chunks = (value: string, size: number): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < value.length; i += size) out.push(value.slice(i, i + size))
  return out
}

/**
 * The events the API streams for `body`, as it streams them: `message_start`
 * with the input usage, a `ping`, per block a start, deltas (text in
 * `textChunk`-character pieces, tool input as `input_json_delta` pieces of its
 * JSON, none for an empty input) and a stop, then `message_delta` with the
 * stop reason and output usage, and `message_stop`.
 */
export const streamEvents = (
  body: MessageBody,
  options?: { readonly textChunk?: number; readonly jsonChunk?: number }
): Array<SseEvent> => {
  const events: Array<SseEvent> = [
    {
      event: "message_start",
      data: {
        type: "message_start",
        message: {
          ...body,
          content: [],
          stop_reason: null,
          usage: { ...body.usage, output_tokens: 1 }
        }
      }
    },
    { event: "ping", data: { type: "ping" } }
  ]
  body.content.forEach((block, index) => {
    if (block.type === "text") {
      events.push({ event: "content_block_start", data: { type: "content_block_start", index, content_block: { type: "text", text: "" } } })
      for (const piece of chunks(block.text, options?.textChunk ?? 4)) {
        events.push({ event: "content_block_delta", data: { type: "content_block_delta", index, delta: { type: "text_delta", text: piece } } })
      }
    } else {
      events.push({
        event: "content_block_start",
        data: { type: "content_block_start", index, content_block: { type: "tool_use", id: block.id, name: block.name, input: {} } }
      })
      const input = JSON.stringify(block.input)
      for (const piece of input === "{}" ? [] : chunks(input, options?.jsonChunk ?? 5)) {
        events.push({
          event: "content_block_delta",
          data: { type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: piece } }
        })
      }
    }
    events.push({ event: "content_block_stop", data: { type: "content_block_stop", index } })
  })
  events.push(
    {
      event: "message_delta",
      data: {
        type: "message_delta",
        delta: { stop_reason: body.stop_reason, stop_sequence: null },
        usage: { output_tokens: body.usage.output_tokens }
      }
    },
    { event: "message_stop", data: { type: "message_stop" } }
  )
  return events
}

/** `body` streamed as the API streams it. */
export const sse = (body: MessageBody, options?: { readonly textChunk?: number; readonly jsonChunk?: number }): Reply =>
  sseEvents(streamEvents(body, options))

// ---- the server ---------------------------------------------------------------

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly body: any
  /** The key the client sent, as `x-api-key` or as a bearer token. */
  readonly apiKey: string | undefined
}

export interface FakeAnthropic {
  /** The base URL to give the SDK. */
  readonly baseURL: string
  /** The requests received so far, in order. */
  readonly requests: ReadonlyArray<RecordedRequest>
  /** Queues replies for the next requests (one each, in order). */
  readonly enqueue: (...replies: ReadonlyArray<Reply>) => void
  /** How many responses the client abandoned (closed the connection) before they ended. */
  readonly clientAborts: () => number
  /** Waits until at least `count` requests have arrived. */
  readonly awaitRequests: (count: number) => Effect.Effect<void>
  /** Waits until the client has abandoned a response. */
  readonly awaitClientAbort: Effect.Effect<void>
}

const apiKeyOf = (headers: Http.IncomingHttpHeaders): string | undefined => {
  const header = headers["x-api-key"]
  if (typeof header === "string") return header
  const authorization = headers.authorization
  return authorization?.startsWith("Bearer ") ? authorization.slice("Bearer ".length) : undefined
}

const writeSse = (res: Http.ServerResponse, events: ReadonlyArray<SseEvent>) => {
  for (const { data, event } of events) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
}

/** Starts the server on 127.0.0.1 (a free port); it stops when the scope closes. */
export const make: Effect.Effect<FakeAnthropic, never, Scope.Scope> = Effect.gen(function*() {
  const requests: Array<RecordedRequest> = []
  const queue: Array<Reply> = []
  const requestWaiters: Array<{ readonly count: number; readonly done: Deferred.Deferred<void> }> = []
  const aborted = yield* Deferred.make<void>()
  let aborts = 0
  const dropped = new WeakSet<Http.ServerResponse>()

  const handle = (req: Http.IncomingMessage, res: Http.ServerResponse, raw: string) => {
    let body: unknown
    try {
      body = raw === "" ? undefined : JSON.parse(raw)
    } catch {
      body = raw
    }
    requests.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body, apiKey: apiKeyOf(req.headers) })
    for (const waiter of requestWaiters) {
      if (requests.length >= waiter.count) Deferred.unsafeDone(waiter.done, Exit.void)
    }
    res.on("close", () => {
      if (!res.writableFinished && !dropped.has(res)) {
        aborts++
        Deferred.unsafeDone(aborted, Exit.void)
      }
    })
    const reply = req.method === "POST" && req.url?.split("?")[0] === "/v1/messages" ?
      queue.shift() ?? error(500, "api_error", "fake server: no scripted reply left") :
      error(404, "not_found_error", `fake server: ${req.method} ${req.url} is not the Messages API`)
    switch (reply._tag) {
      case "Json":
        res.writeHead(200, { "content-type": "application/json", "request-id": `req_${requests.length}` })
        res.end(JSON.stringify(reply.body))
        return
      case "Error":
        res.writeHead(reply.status, {
          "content-type": "application/json",
          "request-id": `req_${requests.length}`,
          ...reply.headers
        })
        res.end(JSON.stringify({ type: "error", error: { type: reply.type, message: reply.message } }))
        return
      case "Sse":
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
        writeSse(res, reply.events)
        if (reply.then === "end") res.end()
        // Destroyed by the server, so not counted as a client abort.
        else if (reply.then === "drop") {
          dropped.add(res)
          setTimeout(() => res.socket?.destroy(), 20)
        }
        return
      case "Hang":
        // Headers are not even sent: the client waits for them until it aborts.
        return
    }
  }

  const server = Http.createServer((req, res) => {
    let raw = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => (raw += chunk))
    req.on("end", () => handle(req, res, raw))
  })

  const port = yield* Effect.acquireRelease(
    Effect.async<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
    }),
    () =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

  return {
    baseURL: `http://127.0.0.1:${port}`,
    requests,
    enqueue: (...replies) => void queue.push(...replies),
    clientAborts: () => aborts,
    awaitRequests: (count) =>
      Effect.suspend(() => {
        if (requests.length >= count) return Effect.void
        return Effect.flatMap(Deferred.make<void>(), (done) => {
          requestWaiters.push({ count, done })
          return Deferred.await(done)
        })
      }),
    awaitClientAbort: Deferred.await(aborted)
  }
})
