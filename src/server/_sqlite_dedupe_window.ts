/**
 * The SQLite engine's duplicate finder: which report a session stored with
 * the same payload hash within the dedupe window, kept in memory instead of
 * an index keyed by the (random) hash, whose leaf pages every report would
 * write at commit. Used only by `sqlite_storage.ts`.
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";

/** A session's latest report with one payload hash. */
export interface DedupeEntry {
  /** The report's row id. */
  id: number;
  /** When it was stored (ms since the epoch). */
  createdAt: number;
}

/** Entries kept at most, by default. */
export const DEFAULT_DEDUPE_CAPACITY = 100_000;
/** Expired entries are dropped at most this often (ms of window time). */
const EXPIRE_STEP_MS = 1_000;
/**
 * Entries are kept (and loaded) this much longer than the window, so that a
 * lookup whose clock is a little behind the last one's (a clock step, calls
 * timed in another order than queued) does not reload from the table.
 */
const SLACK_MS = 10_000;

/**
 * For every (session, payload hash), the latest report stored: exactly those
 * of every committed report created after a time `from` (loaded from the
 * `reports` table on first use, then kept up to date as writes commit), so
 * that a lookup whose window starts at or after `from` answers what
 * `SELECT id FROM reports WHERE usage_id = ? AND payload_hash = ? AND
 * created_at > ? ORDER BY created_at DESC LIMIT 1` would. A lookup reaching
 * further back reloads from the table.
 *
 * A report joins in three steps, like the storage's counts: {@linkcode stage}
 * while its write runs, {@linkcode commitWrite} when the write succeeded
 * (the batch's later writes see it), {@linkcode commitBatch} once COMMIT
 * returned. {@linkcode discardWrite} and {@linkcode rollbackBatch} drop what
 * was undone.
 *
 * Limits: entries past `capacity` are dropped oldest first, so under a flood
 * of more distinct reports than that within one window, a repeat of a
 * dropped one is stored again instead of counted. Reports stored by another
 * connection after the load are not seen (the collector has one writer).
 *
 * @example Usage
 * ```ts ignore
 * import { DedupeWindow } from "./_sqlite_dedupe_window.ts";
 * import { DatabaseSync } from "node:sqlite";
 *
 * const window = new DedupeWindow(new DatabaseSync("errors.db"));
 * window.find(DedupeWindow.key(1, "0123456789abcdef"), Date.now() - 60_000);
 * ```
 */
export class DedupeWindow {
  #load: StatementSync;
  #capacity: number;
  /** Latest report per key, oldest first (by when it joined). */
  #entries = new Map<string, DedupeEntry>();
  /**
   * The order entries joined in, oldest first from `#head`, for expiring and
   * trimming. An item whose entry was replaced or dropped is stale and
   * skipped. (Deleting from the front of the Map itself and iterating it
   * again scans every deleted slot before V8 compacts the table: at
   * capacity that cost more than the lookups.)
   */
  #order: { key: string; entry: DedupeEntry }[] = [];
  #head = 0;
  /** `#entries` holds every committed report created after this time. */
  #from = Infinity;
  /** The window start entries were last expired to. */
  #expiredTo = -Infinity;
  /** The open batch's succeeded writes' reports. */
  #batch = new Map<string, DedupeEntry>();
  /** The running write's report. */
  #staged: { key: string; entry: DedupeEntry } | undefined;
  /** The smallest report id the open batch stored: later rows are its own. */
  #batchMinId = Infinity;

  /**
   * Prepares the load statement.
   *
   * @param db The open database (schema with `reports`).
   * @param capacity Entries kept at most.
   */
  constructor(db: DatabaseSync, capacity: number = DEFAULT_DEDUPE_CAPACITY) {
    this.#capacity = capacity;
    // The newest reports first, at most the capacity.
    this.#load = db.prepare(
      `SELECT id, usage_id, payload_hash, created_at FROM reports
       WHERE created_at > ? ORDER BY created_at DESC, id DESC LIMIT ?`,
    );
  }

  /**
   * The key of a session's payload hash.
   *
   * @param usageId The session's row id.
   * @param hash The payload hash.
   * @returns The key.
   */
  static key(usageId: number, hash: string): string {
    return `${usageId}:${hash}`;
  }

  /**
   * The latest report with this key created after `cutoff`, or `undefined`.
   * Runs inside the write transaction.
   *
   * @param key From {@linkcode DedupeWindow.key}.
   * @param cutoff The window's start: reports created at or before it do not count.
   * @returns The report.
   */
  find(key: string, cutoff: number): DedupeEntry | undefined {
    if (cutoff < this.#from) this.#reload(cutoff);
    else if (cutoff - this.#expiredTo >= EXPIRE_STEP_MS) this.#expire(cutoff);
    const held = this.#entries.get(key);
    const mine = this.#batch.get(key);
    const latest =
      mine === undefined || (held !== undefined && newer(held, mine))
        ? held
        : mine;
    return latest !== undefined && latest.createdAt > cutoff
      ? latest
      : undefined;
  }

  /**
   * Records the report the running write stored.
   *
   * @param key From {@linkcode DedupeWindow.key}.
   * @param id The report's row id.
   * @param createdAt When it was stored.
   */
  stage(key: string, id: number, createdAt: number): void {
    this.#staged = { key, entry: { id, createdAt } };
    if (id < this.#batchMinId) this.#batchMinId = id;
  }

  /** The running write succeeded: its report is seen by the batch's next writes. */
  commitWrite(): void {
    const staged = this.#staged;
    if (staged === undefined) return;
    this.#staged = undefined;
    const other = this.#batch.get(staged.key);
    if (other === undefined || newer(staged.entry, other)) {
      this.#batch.set(staged.key, staged.entry);
    }
  }

  /** The running write was undone. */
  discardWrite(): void {
    this.#staged = undefined;
  }

  /** The batch committed: its reports join the entries. */
  commitBatch(): void {
    this.#staged = undefined;
    this.#batchMinId = Infinity;
    if (this.#batch.size === 0) return;
    for (const [key, entry] of this.#batch) this.#put(key, entry);
    this.#batch.clear();
    this.#trim();
  }

  /**
   * The batch rolled back: its reports are dropped, and so is everything
   * else (a reload within the batch may have seen its uncommitted deletes).
   */
  rollbackBatch(): void {
    this.#staged = undefined;
    this.#batchMinId = Infinity;
    this.#batch.clear();
    this.forget();
  }

  /** Drops every entry: the next lookup reloads from the table. */
  forget(): void {
    this.#clear();
    this.#from = Infinity;
    this.#expiredTo = -Infinity;
  }

  /**
   * Reports created before `time` were deleted: drops the entries unless
   * none of them could be one.
   *
   * @param time Every deleted report was created before it.
   */
  forgetBefore(time: number): void {
    if (time - 1 > this.#from) this.forget();
  }

  /**
   * Loads every committed report created after `cutoff` (less the slack),
   * oldest first.
   */
  #reload(cutoff: number): void {
    this.#clear();
    const from = cutoff - SLACK_MS;
    const rows = this.#load.all(from, this.#capacity) as unknown as {
      id: number;
      usage_id: number;
      payload_hash: string;
      created_at: number;
    }[];
    for (let i = rows.length - 1; i >= 0; i--) {
      const row = rows[i]!;
      // The open batch's own rows are in #batch (or undone).
      if (row.id >= this.#batchMinId) continue;
      this.#put(DedupeWindow.key(row.usage_id, row.payload_hash), {
        id: row.id,
        createdAt: row.created_at,
      });
    }
    this.#from = from;
    this.#expiredTo = cutoff;
    this.#trim();
  }

  /** Drops entries created at or before `cutoff` (less the slack), oldest first. */
  #expire(cutoff: number): void {
    const horizon = cutoff - SLACK_MS;
    while (this.#head < this.#order.length) {
      const { key, entry } = this.#order[this.#head]!;
      if (this.#entries.get(key) === entry) {
        if (entry.createdAt > horizon) break;
        this.#entries.delete(key);
      }
      this.#head++;
    }
    this.#compactOrder();
    this.#expiredTo = cutoff;
    if (horizon > this.#from) this.#from = horizon;
  }

  /** Sets a key's entry unless it holds a newer one, moving it last. */
  #put(key: string, entry: DedupeEntry): void {
    const held = this.#entries.get(key);
    if (held !== undefined) {
      if (newer(held, entry)) return;
      this.#entries.delete(key);
    }
    this.#entries.set(key, entry);
    this.#order.push({ key, entry });
  }

  #trim(): void {
    let excess = this.#entries.size - this.#capacity;
    while (excess > 0 && this.#head < this.#order.length) {
      const { key, entry } = this.#order[this.#head++]!;
      if (this.#entries.get(key) !== entry) continue;
      this.#entries.delete(key);
      excess--;
    }
    this.#compactOrder();
  }

  #clear(): void {
    this.#entries.clear();
    this.#order = [];
    this.#head = 0;
  }

  /** Drops the consumed front of `#order` once it is most of the array. */
  #compactOrder(): void {
    if (this.#head > 1024 && this.#head * 2 > this.#order.length) {
      this.#order = this.#order.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** Whether `a` is the later report (by creation time, then id). */
function newer(a: DedupeEntry, b: DedupeEntry): boolean {
  return a.createdAt > b.createdAt ||
    (a.createdAt === b.createdAt && a.id > b.id);
}
