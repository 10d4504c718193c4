/**
 * What the checks found: a count per check and the first few details of
 * each, mergeable across worker processes.
 */
import { isDeepStrictEqual } from "node:util"

/** The checks, grouped as the report prints them. */
export const CHECKS = {
  isolation: [
    "tool-user",
    "model-context",
    "run-result",
    "recall",
    "session-history",
    "cross-session",
    "working-blocks",
    "audit-attribution"
  ],
  budget: ["budget-user", "budget-global", "budget-model-tally", "over-quota"],
  audit: ["audit-verify", "audit-runs"],
  episodes: ["episodes", "run-error"]
} as const

export type Check = (typeof CHECKS)[keyof typeof CHECKS][number]

const SAMPLES_PER_CHECK = 3

export interface ViolationsJson {
  readonly counts: Partial<Record<Check, number>>
  readonly samples: Partial<Record<Check, ReadonlyArray<string>>>
}

export class Violations {
  private readonly counts = new Map<Check, number>()
  private readonly samples = new Map<Check, Array<string>>()

  add(check: Check, detail: string): void {
    this.counts.set(check, (this.counts.get(check) ?? 0) + 1)
    let list = this.samples.get(check)
    if (list === undefined) this.samples.set(check, (list = []))
    if (list.length < SAMPLES_PER_CHECK) list.push(detail)
  }

  /** Adds a violation unless `actual` deep-equals `expected` (exact equality, never a substring test). */
  expectEqual(check: Check, what: string, actual: unknown, expected: unknown): boolean {
    if (isDeepStrictEqual(actual, expected)) return true
    this.add(check, `${what}: expected ${show(expected)}, got ${show(actual)}`)
    return false
  }

  count(check: Check): number {
    return this.counts.get(check) ?? 0
  }

  total(checks: ReadonlyArray<Check>): number {
    return checks.reduce((sum, check) => sum + this.count(check), 0)
  }

  get any(): boolean {
    return this.counts.size > 0
  }

  toJSON(): ViolationsJson {
    return { counts: Object.fromEntries(this.counts), samples: Object.fromEntries(this.samples) }
  }

  merge(other: ViolationsJson): void {
    for (const [check, count] of Object.entries(other.counts) as Array<[Check, number]>) {
      this.counts.set(check, (this.counts.get(check) ?? 0) + count)
      const list = this.samples.get(check) ?? []
      for (const detail of other.samples[check] ?? []) if (list.length < SAMPLES_PER_CHECK) list.push(detail)
      this.samples.set(check, list)
    }
  }

  /** `[check, count, samples]` for every check that found something, in report order. */
  found(): Array<readonly [Check, number, ReadonlyArray<string>]> {
    const all = Object.values(CHECKS).flat() as Array<Check>
    return all.filter((check) => this.count(check) > 0).map((check) =>
      [check, this.count(check), this.samples.get(check) ?? []] as const
    )
  }
}

const show = (value: unknown): string => {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 400 ? `${text.slice(0, 400)}...` : text
}
