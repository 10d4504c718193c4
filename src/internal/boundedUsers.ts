import * as Metrics from "./metrics.js"

/**
 * The bounded per-user table of the in-memory budget and memory:
 * least-recently-used eviction at `maxUsers`, idle time-to-live, both
 * optional.
 *
 * Why not effect's `Cache`: in effect 3.22 a `Cache` entry loaded through
 * its lookup is tracked under two access-order nodes (the pending one and the
 * completed one), so the stale first node evicts a key that was just read —
 * `get("a"), get("b"), get("a"), get("c")` at capacity 2 evicts `"a"`, not
 * `"b"`. `set` and `invalidate` leave stale nodes the same way. The budget
 * needs exact LRU order (a wrongly evicted user gets their totals reset,
 * i.e. fresh budget) and a check-and-reserve that is atomic, which is easiest
 * as one synchronous step over plain data. And a `Cache` lookup costs several
 * microseconds of effect operations, paid on every memory call of every run;
 * this table costs a `Map` delete and set.
 *
 * A JavaScript `Map` iterates in insertion order; re-inserting on every touch
 * makes that the touch order. Touch times only grow along that order, so the
 * idle entries are always a prefix and the time-to-live sweep stops at the
 * first live entry: amortized O(1), no background fiber. Time comes from the
 * caller (read through effect's `Clock`).
 *
 * @internal
 */

/** What the table needs to know about an entry. */
export interface Entry {
  /** Clock millis of the last touch. */
  lastTouched: number
  /** An entry with work in flight (an outstanding reservation) is never evicted or expired. */
  readonly pinned: boolean
}

/** @internal */
export class BoundedUsers<V extends Entry> {
  private readonly entries = new Map<string, V>()

  constructor(
    /** The store name evictions are counted under (`jeeves.state.evictions`). */
    readonly store: string,
    /** `null` = unbounded. */
    readonly maxUsers: number | null,
    /** `null` = entries never expire. */
    readonly idleTtlMillis: number | null
  ) {}

  /** The entry for `key`, touched; `undefined` when absent, evicted or expired. */
  get(key: string, now: number): V | undefined {
    this.sweep(now)
    const entry = this.entries.get(key)
    if (entry !== undefined) this.touch(key, entry, now)
    return entry
  }

  /** Inserts a new entry for `key` (absent by contract), evicting the least recently used past `maxUsers`. */
  insert(key: string, entry: V, now: number): V {
    this.sweep(now)
    this.touch(key, entry, now)
    if (this.maxUsers !== null) {
      let guard = this.entries.size
      while (this.entries.size > this.maxUsers && guard-- > 0) {
        const [oldestKey, oldest] = this.entries.entries().next().value!
        if (oldest.pinned) this.touch(oldestKey, oldest, now)
        else {
          this.entries.delete(oldestKey)
          Metrics.unsafeRecordEvictions(this.store)
        }
      }
    }
    return entry
  }

  /** The entries held (idle ones included until the next access sweeps them). */
  values(): IterableIterator<V> {
    return this.entries.values()
  }

  /** Marks `key` as just used. */
  touch(key: string, entry: V, now: number): void {
    this.entries.delete(key)
    entry.lastTouched = now
    this.entries.set(key, entry)
  }

  /** Drops idle entries: a prefix of the map, since touches re-insert at the end. */
  private sweep(now: number): void {
    const ttl = this.idleTtlMillis
    if (ttl === null) return
    let guard = this.entries.size
    for (const [key, entry] of this.entries) {
      if (guard-- <= 0 || now - entry.lastTouched < ttl) return
      // A pinned entry is in use, not idle: it moves to the end (after this loop's remaining items).
      if (entry.pinned) this.touch(key, entry, now)
      else {
        this.entries.delete(key)
        Metrics.unsafeRecordEvictions(this.store)
      }
    }
  }
}
