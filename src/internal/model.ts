import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Model from "../Model.js"
import * as RunContext from "../RunContext.js"

/**
 * `error` with some fields changed: its `usage`, its `description`, or its
 * `cause` dropped.
 *
 * @internal
 */
export const modelErrorWith = (
  error: Model.ModelError,
  changes: { readonly usage?: Model.Usage; readonly description?: string; readonly dropCause?: boolean }
): Model.ModelError => {
  const usage = changes.usage ?? error.usage
  const cause = changes.dropCause === true ? undefined : error.cause
  return new Model.ModelError({
    reason: error.reason,
    retryable: error.retryable,
    ...(error.status === undefined ? {} : { status: error.status }),
    ...(error.retryAfterMillis === undefined ? {} : { retryAfterMillis: error.retryAfterMillis }),
    ...(usage === undefined ? {} : { usage }),
    description: changes.description ?? error.description,
    ...(cause === undefined ? {} : { cause })
  })
}

const toResponse = (turn: Model.ScriptedTurn, callIds: () => string): Model.ModelResponse => {
  const calls = turn.toolCalls ?? []
  // A generated id never repeats an id the script gave another call of the same answer.
  const explicit = calls.some((call) => call.id !== undefined) ? new Set(calls.map((call) => call.id)) : undefined
  const freshId = () => {
    let id = callIds()
    while (explicit?.has(id)) id = callIds()
    return id
  }
  const toolCalls = calls.map((call) => ({ id: call.id ?? freshId(), name: call.name, args: call.args }))
  return {
    text: turn.text ?? "",
    toolCalls,
    usage: {
      inputTokens: turn.usage?.inputTokens ?? 0,
      outputTokens: turn.usage?.outputTokens ?? 0,
      costUsd: turn.usage?.costUsd ?? 0
    },
    stopReason: toolCalls.length > 0 ? "tool_use" : "end_turn"
  }
}

const EXHAUSTED: Model.ScriptedTurn = {}

/** @internal */
export const responseParts = (response: Model.ModelResponse): Array<Model.StreamPart> => {
  const parts: Array<Model.StreamPart> = []
  if (response.text !== "") parts.push({ _tag: "TextDelta", text: response.text })
  for (const call of response.toolCalls) parts.push({ _tag: "ToolCallPart", call })
  parts.push({ _tag: "Finish", response })
  return parts
}

/** @internal */
export const makeScripted = (script: Model.Script, options?: { readonly name?: string | undefined }): Model.Service => {
  let position = 0
  let callCounter = 0
  const callIds = () => `call_${++callCounter}`

  const nextTurn = (script: ReadonlyArray<Model.ScriptedTurn>): Effect.Effect<Model.ScriptedTurn> =>
    Effect.sync(() => (position < script.length ? script[position++]! : EXHAUSTED))

  const play = (turn: Model.ScriptedTurn): Effect.Effect<Model.ModelResponse, Model.ModelError> => {
    const answer = turn.error !== undefined ? Effect.fail(turn.error) : Effect.succeed(toResponse(turn, callIds))
    return turn.latency === undefined ? answer : Effect.zipRight(Effect.sleep(turn.latency), answer)
  }

  const complete = (request: Model.ModelRequest): Effect.Effect<Model.ModelResponse, Model.ModelError> =>
    typeof script === "function" ?
      // Called per execution (not per construction), so a retried call asks the script again; the
      // run context read and the script called in one step.
      Effect.withFiberRuntime((fiber) => {
        const turn = script(request, fiber.getFiberRef(RunContext.ref))
        return Effect.isEffect(turn) ? Effect.flatMap(turn, play) : play(turn)
      }) :
      Effect.flatMap(nextTurn(script), play)

  return {
    name: options?.name ?? "scripted",
    price: undefined,
    complete,
    stream: (request) =>
      Stream.flatMap(Stream.fromEffect(complete(request)), (response) => Stream.fromIterable(responseParts(response)))
  }
}

const words = (text: string): Array<string> => text.split(/\s+/).filter((word) => word !== "")

const messageText = (message: Model.Message): string => message.content

/** @internal */
export const makeEcho = (options?: Model.EchoOptions): Model.Service => {
  const prefix = options?.prefix ?? "Echo: "
  const costPerToken = options?.costPerToken ?? 0
  const chunkDelay = options?.chunkDelay === undefined ? undefined : Duration.decode(options.chunkDelay)

  const answer = (request: Model.ModelRequest) => {
    let lastUser = ""
    let inputTokens = 0
    for (const message of request.messages) {
      inputTokens += words(messageText(message)).length
      if (message.role === "user") lastUser = message.content
    }
    const text = prefix + lastUser
    return { text, inputTokens }
  }

  const respond = (text: string, inputTokens: number, outputTokens: number): Model.ModelResponse => ({
    text,
    toolCalls: [],
    usage: { inputTokens, outputTokens, costUsd: (inputTokens + outputTokens) * costPerToken },
    stopReason: "end_turn"
  })

  return {
    name: "echo",
    price: costPerToken === 0 ? undefined : { inputPerMillion: costPerToken * 1e6, outputPerMillion: costPerToken * 1e6 },
    complete: (request) =>
      Effect.sync(() => {
        const { inputTokens, text } = answer(request)
        return respond(text, inputTokens, Math.max(1, words(text).length))
      }),
    stream: (request) =>
      Stream.suspend(() => {
        const { inputTokens, text } = answer(request)
        const pieces = text.split(" ").map((piece, i) => (i === 0 ? piece : " " + piece))
        const deltas = Stream.fromIterable(pieces).pipe(
          Stream.map((piece): Model.StreamPart => ({ _tag: "TextDelta", text: piece }))
        )
        const delayed = chunkDelay === undefined ? deltas : Stream.tap(deltas, () => Effect.sleep(chunkDelay))
        return Stream.concat(
          delayed,
          // The same count as `complete`: the words of the reply (the pieces split on single spaces are not words).
          Stream.succeed<Model.StreamPart>({ _tag: "Finish", response: respond(text, inputTokens, Math.max(1, words(text).length)) })
        )
      })
  }
}
