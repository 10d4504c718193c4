/**
 * The multi-tenant load bench: N users x M turns through one shared Agent,
 * with every governance layer on, and exact checks that nothing leaked
 * between users.
 *
 * Run:
 *   npm run bench:multi-tenant -- --users 500 --turns 5 [--latency-ms 1000]
 *     [--backend memory|sqlite|postgres] [--processes N]
 *     [--audit-durability fsync|none] [--audit-signing worker|inline] [--telemetry otel|effect]
 *     [--trace-sample-ratio R] [--user-id-attribute hashed|omit|raw] [--no-bare] [--inject NAME] [--verbose]
 *     [--worker-cpu-prof DIR]
 *   (that is: node --expose-gc --import tsx bench/multi-tenant.ts ...; without
 *   --expose-gc the memory figures include garbage)
 *
 * The shared Agent has: a per-user token cap (Budget.layer; one designated
 * over-quota user, user_1, whose first call reports more tokens than the
 * cap), per-user permissions (Permissions.perUser: users user_..7 may not run
 * the destructive `purge_cache` tool, everybody else must get approval), an
 * approval handler approving by rule (only a purge of the caller's own
 * cache, so every third turn's purge of "all" is declined), a file audit log
 * with a secret (AuditLog.layerFile, fsync durability: why is printed),
 * memory (in memory, SQLite, or Postgres in a scratch database), telemetry
 * (Telemetry.layerOtel through the OpenTelemetry SDK, with exporters that
 * discard; `--telemetry effect` for Telemetry.layer()) and a scripted model.
 * Each turn is one `agent.run` with two model calls, each waiting
 * `--latency-ms` (default 1000) and reporting a usage fixed per user and
 * turn: the first asks for `whoami` (which reads the user from the
 * RunContext) and `purge_cache`; the second answers. Everything stored or
 * shown for a user carries a marker unique to the user. Users run
 * concurrently; each user's turns run one after another in one session.
 *
 * It prints p50 / p99 turn latency (and each turn's p99), turns per second, RSS growth, heap
 * growth per user, and the framework's own memory per user (the heap grown
 * by up to 2 000 more users run after the checks, with memory content
 * erased and the bench's records dropped); with zero latency also the same
 * turns in a bare loop. It exits 1 with FAIL on any violation — all
 * compared by exact equality, never substrings:
 * - isolation: the users the tools saw equal the run's user; each RunResult
 *   equals the plan; what the model was shown holds only the user's marker
 *   and exactly the user's history; recall, session history, working blocks
 *   and the export hold exactly the user's data; reading another user's
 *   session returns nothing; every audit entry's user and session are those
 *   of the run it names;
 * - budget: each user's `usageFor` equals the usage the model reported for
 *   the user's calls (and the plan); the global total equals the sum; the
 *   over-quota user was stopped with `budget:per_user_max_tokens` and
 *   charged exactly what its allowed call reported;
 * - audit: the chain verifies (`AuditLog.verifyFile`), and every run has its
 *   start, completion, tool, approval and budget entries;
 * - episodes: each user has exactly `turns` episodes, in order.
 * Otherwise it prints PASS.
 *
 * `--processes N --backend postgres`: N worker processes share one scratch
 * database (PgBudget ledger, PgMemory, one PgAuditLog chain), split the
 * users, start together, and the parent runs the same checks on the shared
 * state. The server is JEEVES_BENCH_PG_URL (default the local server at
 * 127.0.0.1:5432); the bench creates a fresh database and drops it.
 *
 * `--inject NAME` plants one violation (tool-wrong-user, skip-charge,
 * leak-episode, lose-episode, misattribute-audit, tamper-audit) to show the
 * checks catch it.
 */
import { parseArgs, UsageError } from "./multiTenant/options.js"
import { format, runBench } from "./multiTenant/bench.js"
import { isWorker, runWorker } from "./multiTenant/processes.js"

const main = async (): Promise<number> => {
  if (isWorker()) {
    await runWorker()
    return 0
  }
  const options = parseArgs(process.argv.slice(2))
  const report = await runBench(options)
  console.log(format(report))
  return report.status === "PASS" ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) console.error(`bench:multi-tenant: ${error.message}`)
    else console.error(error instanceof Error ? error.stack ?? error.message : error)
    process.exit(1)
  }
)
