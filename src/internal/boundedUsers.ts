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
 * microseconds of effect operations, paid on every memory call of every run.
 *
 * The touch order is a doubly linked list beside the `Map`, so a touch moves
 * a node and leaves the `Map` alone. Re-inserting the key instead (delete,
 * then set, to use the `Map`'s insertion order) is O(n) in V8: a deleted
 * entry stays in its hash chain until the table is rebuilt, so the chain of
 * a key touched over and over grows with every touch — about 1 µs per touch
 * at 1 000 users, over 20 µs at 10 000 (`test/boundedUsers.test.ts`).
 *
 * Touch times only grow along the list, so the idle entries are always its
 * oldest end and the time-to-live sweep stops at the first live entry:
 * amortized O(1), no background fiber. Time comes from the caller (read
 * through effect's `Clock`).
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

/** One key's place in the touch order. */
interface Node<V> {
  readonly key: string
  value: V
  /** The entry's `lastTouched`, kept here too so the sweep reads only the node. */
  touched: number
  older: Node<V> | undefined
  newer: Node<V> | undefined
}

/** @internal */
export class BoundedUsers<V extends Entry> {
  private readonly nodes = new Map<string, Node<V>>()
  /** The least recently touched node: the next to expire or be evicted. */
  private oldest: Node<V> | undefined = undefined
  private newest: Node<V> | undefined = undefined

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
    const node = this.nodes.get(key)
    if (node === undefined) return undefined
    this.moveToNewest(node, now)
    return node.value
  }

  /**
   * Inserts a new entry for `key` (absent by contract), evicting the least
   * recently used past `maxUsers`. Never the new entry itself: when every
   * older one is pinned, the table holds more than `maxUsers` until they are
   * released (the caller is about to write into the entry it gets back).
   */
  insert(key: string, entry: V, now: number): V {
    this.sweep(now)
    this.touch(key, entry, now)
    if (this.maxUsers !== null) {
      let guard = this.nodes.size
      while (this.nodes.size > this.maxUsers && guard-- > 0) {
        const oldest = this.oldest!
        if (oldest.key === key) break
        if (oldest.value.pinned) this.moveToNewest(oldest, now)
        else this.evict(oldest)
      }
    }
    return entry
  }

  /** The entries held, least recently touched first (idle ones included until the next access sweeps them). */
  *values(): IterableIterator<V> {
    for (let node = this.oldest; node !== undefined; node = node.newer) yield node.value
  }

  /** Marks `key` as just used, holding `entry`. */
  touch(key: string, entry: V, now: number): void {
    const node = this.nodes.get(key)
    if (node === undefined) {
      const added: Node<V> = { key, value: entry, touched: now, older: undefined, newer: undefined }
      this.nodes.set(key, added)
      this.moveToNewest(added, now)
    } else {
      node.value = entry
      this.moveToNewest(node, now)
    }
  }

  /** Drops idle entries: the oldest end of the list. */
  private sweep(now: number): void {
    const ttl = this.idleTtlMillis
    let node = this.oldest
    if (ttl === null || node === undefined || now - node.touched < ttl) return
    let guard = this.nodes.size
    while (node !== undefined && guard-- > 0 && now - node.touched >= ttl) {
      const next: Node<V> | undefined = node.newer
      // A pinned entry is in use, not idle: it moves to the newest end (behind the entries still to check).
      if (node.value.pinned) this.moveToNewest(node, now)
      else this.evict(node)
      node = next
    }
  }

  private evict(node: Node<V>): void {
    this.unlink(node)
    this.nodes.delete(node.key)
    Metrics.unsafeRecordEvictions(this.store)
  }

  /** Stamps `node` with `now` and links it at the newest end (unlinking it first when linked). */
  private moveToNewest(node: Node<V>, now: number): void {
    node.touched = now
    node.value.lastTouched = now
    if (node === this.newest) return
    this.unlink(node)
    node.older = this.newest
    if (this.newest === undefined) this.oldest = node
    else this.newest.newer = node
    this.newest = node
  }

  private unlink(node: Node<V>): void {
    const { newer, older } = node
    if (older === undefined) {
      if (this.oldest === node) this.oldest = newer
    } else older.newer = newer
    if (newer === undefined) {
      if (this.newest === node) this.newest = older
    } else newer.older = older
    node.older = undefined
    node.newer = undefined
  }
}
