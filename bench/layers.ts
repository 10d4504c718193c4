/**
 * What each layer costs per turn at scale: the multi-tenant bench's shared
 * agent (per-user budget, per-user permissions with the approval gate, a
 * file audit log with fsync durability, in-memory memory, OpenTelemetry
 * telemetry) on a zero-latency scripted model, with every layer on, with
 * each layer in turn replaced by its no-op (`Telemetry.layerNone`,
 * `AuditLog.layerNone`, `Budget.layerNone`, `Permissions.allowAll`,
 * `Memory.layerNone`), and with all five off. Each turn is one `agent.run`
 * with two model calls and two tool calls (one destructive, approved).
 * Prints µs per turn (median of the rounds, alternating variants), what
 * each layer saves, turns per second, and the same turns in a bare loop.
 * It checks nothing (`bench:multi-tenant` does); it reports failed runs.
 *
 * Run: npm run bench:layers [-- --users 10000 --rounds 3 --concurrency unbounded|N]
 *   (`unbounded`, the default, starts every user at once, as bench:multi-tenant does)
 */
import { formatLayers, type LayerOptions, measureLayers } from "./multiTenant/layers.js"

const argValue = (name: string): string | undefined => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? process.argv[index + 1] : undefined
}

const positive = (name: string, fallback: number): number => {
  const text = argValue(name)
  const value = text === undefined ? fallback : Number(text)
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--${name} needs a positive integer, got ${JSON.stringify(text)}`)
  return value
}

const main = async () => {
  const concurrencyText = argValue("concurrency") ?? "unbounded"
  const options: LayerOptions = {
    users: positive("users", 10_000),
    rounds: positive("rounds", 3),
    concurrency: concurrencyText === "unbounded" ? "unbounded" : positive("concurrency", 0)
  }
  const report = await measureLayers(options)
  console.log(formatLayers(report))
  return report.variants.some((figures) => figures.failures > 0) ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`bench:layers: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(1)
  }
)
