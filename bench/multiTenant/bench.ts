/**
 * `runBench(options)`: the multi-tenant load bench as a function, for the
 * command line (`bench/multi-tenant.ts`) and the smoke test.
 */
import { type BenchOptions, validate } from "./options.js"
import { runParent } from "./processes.js"
import type { BenchReport } from "./report.js"
import { runLocal } from "./run.js"

export { type BenchOptions, defaults, type Injection, INJECTIONS } from "./options.js"
export { type BenchReport, format } from "./report.js"

/** Runs the bench: in this process, or (`processes` > 1) in workers sharing one Postgres database. */
export const runBench = (options: BenchOptions): Promise<BenchReport> => {
  validate(options)
  return options.processes > 1 ? runParent(options) : runLocal(options)
}
