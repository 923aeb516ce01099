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
/**
 * Entries are kept (and loaded) this much longer than the window, so that a
 * lookup whose clock is a little behind the last one's (a clock step, calls
 * timed in another order than queued) does not reload from the table.
 */
const SLACK_MS = 10_000;

/**
 * For every (session, payload hash), the latest report stored: exactly those
 * of every report created after a time `from` that this connection
 * committed or the open batch wrote (loaded from the `reports` table on
 * first use, then kept up to date as writes succeed), so that a lookup
 * whose window starts at or after `from` answers what `SELECT id FROM
 * reports WHERE usage_id = ? AND payload_hash = ? AND created_at > ? ORDER
 * BY created_at DESC LIMIT 1` would inside the transaction. A lookup
 * reaching further back reloads from the table.
 *
 * Entries live in two generations, newer and older, and leave a whole
 * generation at a time: the older one goes once all of it is older than the
 * window (with some slack), or when the newer one is full (half the
 * capacity). No entry is ever deleted on its own, which keeps every lookup
 * and insert at the cost of a small Map's (deleting from a Map of 100,000
 * keys and inserting again, oldest first, cost several times more).
 *
 * A report joins in two steps, like the storage's counts: {@linkcode stage}
 * while its write runs, {@linkcode commitWrite} when the write succeeded
 * (the batch's later writes see it). {@linkcode discardWrite} drops a
 * write that was undone, and {@linkcode rollbackBatch} everything.
 *
 * Limits: past the capacity the older half is dropped, so under a flood of
 * more distinct reports than that within one window, a repeat of a dropped
 * one is stored again instead of counted. It always keeps at least the
 * newest half of the capacity (at least one). The load reads reports in
 * arrival order from the newest and stops at the first created before the
 * window, so after the clock stepped back, earlier arrivals with later
 * times are missed. Reports stored by another connection after the load
 * are not seen (the collector has one writer).
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
  /** Entries of a generation at most: half the capacity. */
  #generationSize: number;
  /** Latest report per key: the newer generation. */
  #newer = new Map<string, DedupeEntry>();
  /** The older generation: a key's entry here is older than any in `#newer`. */
  #older = new Map<string, DedupeEntry>();
  /** The latest creation time in `#older`. */
  #olderLatest = -Infinity;
  /** The latest creation time in `#newer`. */
  #newerLatest = -Infinity;
  /** The entries hold every report created after this time. */
  #from = Infinity;
  /** The running write's report. */
  #staged: { key: string; entry: DedupeEntry } | undefined;

  /**
   * Prepares the load statement.
   *
   * @param db The open database (schema with `reports`).
   * @param capacity Entries kept at most (at least two).
   */
  constructor(db: DatabaseSync, capacity: number = DEFAULT_DEDUPE_CAPACITY) {
    this.#capacity = capacity;
    this.#generationSize = Math.max(1, Math.floor(capacity / 2));
    // The newest reports first (in arrival order), at most the capacity.
    this.#load = db.prepare(
      `SELECT id, usage_id, payload_hash, created_at FROM reports
       ORDER BY id DESC LIMIT ?`,
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
    else if (this.#older.size > 0 && this.#olderLatest <= cutoff - SLACK_MS) {
      // All of the older generation is past the window.
      this.#retireOlder(true);
    }
    const latest = this.#newer.get(key) ?? this.#older.get(key);
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
  }

  /** The running write succeeded: its report is seen by the next writes. */
  commitWrite(): void {
    const staged = this.#staged;
    if (staged === undefined) return;
    this.#staged = undefined;
    this.#put(staged.key, staged.entry);
  }

  /** The running write was undone. */
  discardWrite(): void {
    this.#staged = undefined;
  }

  /** The batch committed (its reports joined as their writes succeeded). */
  commitBatch(): void {
    this.#staged = undefined;
  }

  /** The batch rolled back: every entry is dropped (some are undone). */
  rollbackBatch(): void {
    this.#staged = undefined;
    this.forget();
  }

  /** Drops every entry: the next lookup reloads from the table. */
  forget(): void {
    this.#newer = new Map();
    this.#older = new Map();
    this.#newerLatest = -Infinity;
    this.#olderLatest = -Infinity;
    this.#from = Infinity;
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
   * Loads the reports (this connection's, open batch's included) created
   * after `cutoff` (less the slack), at most the capacity, newest kept:
   * read in arrival order from the newest, up to the first created before
   * (so one stored before it with a later time, after the clock stepped
   * back, is missed, and stored again instead of counted).
   */
  #reload(cutoff: number): void {
    this.forget();
    const from = cutoff - SLACK_MS;
    const rows: LoadedRow[] = [];
    for (const row of this.#load.iterate(this.#capacity)) {
      if ((row as unknown as LoadedRow).created_at <= from) break;
      rows.push(row as unknown as LoadedRow);
    }
    this.#from = from;
    for (let i = rows.length - 1; i >= 0; i--) {
      const row = rows[i]!;
      this.#put(DedupeWindow.key(row.usage_id, row.payload_hash), {
        id: row.id,
        createdAt: row.created_at,
      });
    }
  }

  /** Sets a key's entry unless it holds a newer one. */
  #put(key: string, entry: DedupeEntry): void {
    const held = this.#newer.get(key) ?? this.#older.get(key);
    if (held !== undefined && newer(held, entry)) return;
    if (this.#newer.size >= this.#generationSize && !this.#newer.has(key)) {
      // Past the capacity: the reports dropped are missed, not reloaded.
      this.#retireOlder(false);
    }
    this.#newer.set(key, entry);
    if (entry.createdAt > this.#newerLatest) {
      this.#newerLatest = entry.createdAt;
    }
  }

  /**
   * Drops the older generation, and the newer one becomes it. With
   * `expired`, every entry dropped is past the window, and so `from` moves
   * to the latest of them (every report created after it is still held).
   */
  #retireOlder(expired: boolean): void {
    if (expired && this.#olderLatest > this.#from) {
      this.#from = this.#olderLatest;
    }
    this.#older = this.#newer;
    this.#olderLatest = this.#newerLatest;
    this.#newer = new Map();
    this.#newerLatest = -Infinity;
  }
}

/** A report row as the duplicate finder loads it. */
interface LoadedRow {
  id: number;
  usage_id: number;
  payload_hash: string;
  created_at: number;
}

/** Whether `a` is the later report (by creation time, then id). */
function newer(a: DedupeEntry, b: DedupeEntry): boolean {
  return a.createdAt > b.createdAt ||
    (a.createdAt === b.createdAt && a.id > b.id);
}
