#!/usr/bin/env node
/**
 * The `jeevesagent` command line.
 *
 * `audit verify FILE --secret-env NAME` verifies an audit file with the key
 * in the environment variable NAME; exit code 0 when valid (a torn final line
 * from a crash is reported as a warning), 1 when tampered, 2 when the file
 * cannot be read, the key is missing or the arguments are wrong. With a
 * rotated keyring, repeat `--secret-env KEY_ID=NAME` for each key.
 *
 * With `--checkpoints FILE` (the log's `AuditLog.checkpointFile`), the file
 * must also still hold every checkpointed entry: cutting entries off its end,
 * or rolling it back to an older copy, is reported as tampering.
 *
 * `audit query FILE [--user ID | --anonymous] [--action A] [--session S]
 * [--run R] [--json]` prints matching entries without verifying them.
 *
 * @example
 * ```sh
 * AUDIT_KEY=... jeevesagent audit verify var/audit.jsonl --secret-env AUDIT_KEY
 * jeevesagent audit verify var/audit.jsonl --secret-env 2024=AUDIT_KEY_2024 --secret-env 2025=AUDIT_KEY_2025
 * jeevesagent audit query var/audit.jsonl --user alice --action tool_call --json
 * ```
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as AuditLog from "./AuditLog.js"
import { canonicalize } from "./internal/auditJcs.js"

const EXIT_OK = 0
const EXIT_TAMPERED = 1
const EXIT_UNUSABLE = 2

const exitWith = (code: number) =>
  Effect.sync(() => {
    process.exitCode = code
  })

/** Fails with a message and exit code 2: a usage problem or an unreadable input. */
class Unusable {
  readonly _tag = "Unusable"
  constructor(readonly message: string) {}
}

const file = Args.text({ name: "FILE" }).pipe(Args.withDescription("the audit log (JSON lines)"))
const json = Options.boolean("json").pipe(Options.withDescription("print JSON instead of text"))

// ---- verify -------------------------------------------------------------------

const secretEnv = Options.text("secret-env").pipe(
  Options.repeated,
  Options.withDescription(
    "the environment variable holding the key (NAME), or KEY_ID=NAME once per key of a rotated keyring"
  )
)
const logId = Options.text("log-id").pipe(
  Options.optional,
  Options.withDescription("require every entry to belong to this log id")
)

const checkpointsFile = Options.text("checkpoints").pipe(
  Options.optional,
  Options.withDescription(
    "a file of the log's checkpoints (AuditLog.checkpointFile): the log must still hold every checkpointed entry"
  )
)

/** What a variable name looks like; anything else may be the secret itself, typed where its name belongs. */
const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

const readEnv = (name: string): Effect.Effect<Redacted.Redacted<string>, Unusable> => {
  const value = process.env[name]
  if (value !== undefined && value !== "") return Effect.succeed(Redacted.make(value))
  return Effect.fail(
    new Unusable(
      VARIABLE_NAME.test(name) ?
        `the environment variable ${name} (given by --secret-env) is not set` :
        "--secret-env takes the name of an environment variable that holds the key, not the key itself " +
          "(what was given is not a variable name, so it is not printed)"
    )
  )
}

/** One bare NAME gives a secret; KEY_ID=NAME pairs give a keyring. */
const keysFrom = (specs: ReadonlyArray<string>): Effect.Effect<AuditLog.Secret | AuditLog.Keyring, Unusable> =>
  Effect.gen(function*() {
    if (specs.length === 0) return yield* Effect.fail(new Unusable("--secret-env NAME is required"))
    const pairs = specs.map((spec) => {
      const at = spec.indexOf("=")
      return at === -1 ? { keyId: undefined, name: spec } : { keyId: spec.slice(0, at), name: spec.slice(at + 1) }
    })
    if (pairs.length === 1 && pairs[0]!.keyId === undefined) return yield* readEnv(pairs[0]!.name)
    const keys: Record<string, Redacted.Redacted<string>> = {}
    for (const { keyId, name } of pairs) {
      if (keyId === undefined || keyId === "" || name === "") {
        return yield* Effect.fail(new Unusable(`with several keys, write each as --secret-env KEY_ID=NAME (got ${JSON.stringify(specs)})`))
      }
      if (Object.hasOwn(keys, keyId)) {
        return yield* Effect.fail(new Unusable(`the key id ${JSON.stringify(keyId)} is given twice to --secret-env`))
      }
      keys[keyId] = yield* readEnv(name)
    }
    return { current: pairs[0]!.keyId!, keys }
  })

const fileExists = (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.exists(path)).pipe(Effect.mapError((error) => new Unusable(error.message)))

const verify = Command.make("verify", { file, secretEnv, logId, checkpoints: checkpointsFile, json }, (args) =>
  Effect.gen(function*() {
    const keys = yield* keysFrom(args.secretEnv)
    // A checkpoints file asked for but missing (a typo, a volume not mounted) would verify a cut log against
    // no checkpoints at all: unusable, not valid.
    if (Option.isSome(args.checkpoints) && !(yield* fileExists(args.checkpoints.value))) {
      return yield* Effect.fail(new Unusable(`the checkpoints file ${args.checkpoints.value} does not exist`))
    }
    const checkpoints = Option.isSome(args.checkpoints) ?
      yield* AuditLog.readCheckpoints(args.checkpoints.value).pipe(Effect.mapError((error) => new Unusable(error.message))) :
      undefined
    const report = yield* AuditLog.verifyFile(args.file, keys, { logId: Option.getOrUndefined(args.logId), checkpoints }).pipe(
      Effect.mapError((error) => new Unusable(error.message))
    )
    // Set before any output: a reader closing the pipe early must not turn a tampered log into success.
    process.exitCode = report.valid ? EXIT_OK : EXIT_TAMPERED
    if (args.json) {
      yield* Console.log(JSON.stringify(report))
    } else if (report.valid) {
      yield* Console.log(
        `OK: ${report.validCount} entries verified` +
          (report.logId === undefined ? "" : ` (log ${report.logId}, last seq ${report.lastSeq})`) +
          (report.anchoredSeq === undefined ? "" : `, anchored by checkpoints up to seq ${report.anchoredSeq}`)
      )
      if (report.unanchoredTail !== undefined) {
        const { fromSeq, toSeq } = report.unanchoredTail
        yield* Console.error(
          `warning: entries ${fromSeq} to ${toSeq} come after the newest checkpoint: nothing shows the log did not go on past them`
        )
      }
      if (report.tornTail !== undefined) yield* Console.error(`warning: torn tail: ${report.detail}`)
      if (report.validCount === 0) yield* Console.error("warning: the file holds no entries (a log cut to nothing verifies too)")
    } else {
      yield* Console.log(
        `TAMPERED: ${report.failure} at seq ${report.firstBadSeq} (line ${report.line}): ${report.detail}\n` +
          `${report.validCount} entries verified before it`
      )
      if (report.failure === "signature" && report.validCount === 0) {
        yield* Console.error("hint: the very first entry does not verify; if the file is intact, the key is not the one it was written with")
      }
    }
    yield* exitWith(report.valid ? EXIT_OK : EXIT_TAMPERED)
  })).pipe(Command.withDescription("verify an audit file: signatures, hash chain and sequence"))

// ---- query --------------------------------------------------------------------

const optionalText = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

const queryOptions = {
  file,
  user: optionalText("user", "only this user's entries"),
  anonymous: Options.boolean("anonymous").pipe(Options.withDescription("only the anonymous runs' entries")),
  action: optionalText("action", "only entries with this action"),
  session: optionalText("session", "only entries of this session"),
  run: optionalText("run", "only entries of this run"),
  json
}

/** Control characters escaped: an entry's text cannot move the cursor, recolour the terminal or fake a line. */
const printable = (text: string): string =>
  text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

const describeEntry = (entry: AuditLog.AuditEntry): string =>
  [
    String(entry.seq).padStart(6),
    printable(String(entry.timestamp)),
    entry.userId === null ? "(anonymous)" : printable(String(entry.userId)),
    printable(String(entry.actor)),
    printable(String(entry.action)),
    printable(JSON.stringify(entry.payload))
  ].join("  ")

const query = Command.make("query", queryOptions, (args) =>
  Effect.gen(function*() {
    if (args.anonymous && Option.isSome(args.user)) {
      return yield* Effect.fail(new Unusable("--user and --anonymous exclude each other"))
    }
    const filter: AuditLog.QueryFilter = {
      userId: args.anonymous ? null : Option.getOrUndefined(args.user),
      action: Option.getOrUndefined(args.action),
      sessionId: Option.getOrUndefined(args.session),
      runId: Option.getOrUndefined(args.run)
    }
    yield* AuditLog.streamFile(args.file, filter).pipe(
      // --json: each entry as the file holds it (its JCS form), so an export verifies as the log does.
      Stream.runForEach((entry) => Console.log(args.json ? canonicalize(entry) : describeEntry(entry))),
      Effect.mapError((error) => new Unusable(error.message))
    )
    yield* exitWith(EXIT_OK)
  })).pipe(Command.withDescription("print the entries of an audit file that match the filters"))

// ---- main ---------------------------------------------------------------------

const audit = Command.make("audit").pipe(
  Command.withDescription("verify and query tamper-evident audit logs"),
  Command.withSubcommands([verify, query])
)

const command = Command.make("jeevesagent").pipe(Command.withSubcommands([audit]))

const cli = Command.run(command, { name: "jeevesagent", version: "0.1.0" })

const main = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.catchAll((error) =>
    ValidationError.isValidationError(error)
      ? exitWith(EXIT_UNUSABLE) // @effect/cli has printed the usage problem
      : Effect.zipRight(Console.error(`error: ${error.message}`), exitWith(EXIT_UNUSABLE))
  ),
  Effect.catchAllCause((cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.zipRight(Console.error(Cause.pretty(cause)), exitWith(EXIT_UNUSABLE))
  ),
  Effect.provide(NodeContext.layer)
)

// A reader that closes the pipe (`... | head -1`) ends the output: stop quietly, as Unix tools do.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") process.stderr.write(`error: cannot write the output: ${error.message}\n`)
  // The outcome already decided (a tampered log) stands.
  process.exit(error.code === "EPIPE" ? (typeof process.exitCode === "number" ? process.exitCode : EXIT_OK) : EXIT_UNUSABLE)
})

NodeRuntime.runMain(main, { disableErrorReporting: true })
