/**
 * The collector's storage interface: one async contract that every engine
 * (embedded SQLite now, PostgreSQL for scale-out later) implements, so that
 * the HTTP routes never know which engine they talk to.
 *
 * Design notes for the engines that build on this:
 * - {@linkcode Storage.addReport} is the single write path of a report. It
 *   runs in one transaction (session lookup, per-session cap, duplicate
 *   check, insert, per-day count), and its promise resolves only after that
 *   transaction committed: the HTTP layer acknowledges a report only then.
 *   Grouping (fingerprint, group counts, outbox rows) attaches inside that
 *   same transaction.
 * - Timestamps cross the interface as milliseconds since the epoch, taken
 *   from the injected clock, never from the database's own clock.
 * - Per-day counts live apart from raw reports: retention and the size cap
 *   delete raw reports and keep the counts.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ErrorPayload } from "../types.ts";

/**
 * One notebook session (a "usage" in the original Python tool's words).
 *
 * @example Usage
 * ```ts
 * import type { StoredUsage } from "./storage.ts";
 *
 * const usage: StoredUsage = {
 *   id: 1,
 *   uuid: "0123456789abcdef0123456789abcdef",
 *   notebook: "demo",
 *   createdAt: Date.UTC(2026, 0, 1),
 *   reportCount: 0,
 * };
 * ```
 */
export interface StoredUsage {
  /** The session's row id. */
  id: number;
  /** The session's capability: 32 lowercase hex digits. */
  uuid: string;
  /** The notebook the session was opened for (scrubbed, bounded). */
  notebook: string;
  /** When the session was created, in ms since the epoch. */
  createdAt: number;
  /** How many reports the session sent that were accepted (duplicates included). */
  reportCount: number;
}

/**
 * One stored report: the scrubbed payload plus what the server knows about it.
 *
 * @example Usage
 * ```ts
 * import type { StoredReport } from "./storage.ts";
 *
 * const report: StoredReport = {
 *   id: 7,
 *   usageUuid: "0123456789abcdef0123456789abcdef",
 *   createdAt: Date.UTC(2026, 0, 1),
 *   lastSeenAt: Date.UTC(2026, 0, 1),
 *   occurrences: 1,
 *   error_name: "Error",
 *   error_message: "boom",
 *   traceback: [],
 *   first_line: "boom()",
 *   execution_count: 3,
 *   notebook: "demo",
 * };
 * ```
 */
export interface StoredReport extends ErrorPayload {
  /** The report's row id. */
  id: number;
  /** The uuid of the session that sent it. */
  usageUuid: string;
  /** When it was first received, in ms since the epoch. */
  createdAt: number;
  /** When an identical report from the same session was last counted. */
  lastSeenAt: number;
  /** How many identical reports it stands for (1 plus the duplicates counted). */
  occurrences: number;
}

/**
 * What {@linkcode Storage.addReport} stores.
 *
 * @example Usage
 * ```ts
 * import type { AddReportInput } from "./storage.ts";
 *
 * const input: AddReportInput = {
 *   usageUuid: "0123456789abcdef0123456789abcdef",
 *   payload: {
 *     error_name: "Error",
 *     error_message: "boom",
 *     traceback: [],
 *     first_line: "",
 *     execution_count: null,
 *     notebook: "demo",
 *   },
 *   now: Date.now(),
 *   dedupeWindowMs: 60_000,
 *   maxReportsPerSession: 100,
 * };
 * ```
 */
export interface AddReportInput {
  /** The session's uuid (32 lowercase hex digits). */
  usageUuid: string;
  /** The validated, scrubbed payload. Its `notebook` is replaced by the session's. */
  payload: ErrorPayload;
  /** The current time in ms since the epoch. */
  now: number;
  /** An identical payload from the same session stored less than this long ago is counted, not stored. */
  dedupeWindowMs: number;
  /** Reports accepted per session at most; `Infinity` for no cap. */
  maxReportsPerSession: number;
}

/**
 * The outcome of {@linkcode Storage.addReport}.
 *
 * @example Usage
 * ```ts
 * import type { AddReportResult } from "./storage.ts";
 *
 * function describe(result: AddReportResult): string {
 *   return result.status === "stored" || result.status === "duplicate"
 *     ? `report ${result.report.id}`
 *     : result.status;
 * }
 * ```
 */
export type AddReportResult =
  | {
    /** `stored`: a new row; `duplicate`: an existing row's count went up. */
    status: "stored" | "duplicate";
    /** The stored report, after the write. */
    report: StoredReport;
  }
  | {
    /** No session has this uuid. */
    status: "unknown-session";
  }
  | {
    /** The session already reached its cap. */
    status: "session-limit";
    /** The cap that was reached. */
    limit: number;
  };

/**
 * A page of a list query.
 *
 * @example Usage
 * ```ts
 * import type { PageQuery } from "./storage.ts";
 *
 * const page: PageQuery = { skip: 0, limit: 100 };
 * ```
 */
export interface PageQuery {
  /** Rows to skip. */
  skip: number;
  /** Rows to return at most. */
  limit: number;
}

/**
 * Which reports {@linkcode Storage.listReports} returns.
 *
 * @example Usage
 * ```ts
 * import type { ReportQuery } from "./storage.ts";
 *
 * const query: ReportQuery = { skip: 0, limit: 50, notebook: "demo", order: "desc" };
 * ```
 */
export interface ReportQuery extends PageQuery {
  /** Only this notebook's reports. */
  notebook?: string;
  /** Only reports first received at or after this time (ms since the epoch). */
  since?: number;
  /** Only reports first received before this time (ms since the epoch). */
  until?: number;
  /** By id: `asc` (oldest first, the Python tool's order) or `desc`. @default {"asc"} */
  order?: "asc" | "desc";
}

/**
 * The reports and sessions counted for one notebook on one UTC day. Kept when
 * raw reports are pruned.
 *
 * @example Usage
 * ```ts
 * import type { DailyCount } from "./storage.ts";
 *
 * const count: DailyCount = { day: "2026-01-01", notebook: "demo", reports: 3, sessions: 1 };
 * ```
 */
export interface DailyCount {
  /** The UTC day, `YYYY-MM-DD`. */
  day: string;
  /** The notebook. */
  notebook: string;
  /** Reports received that day (duplicates included). */
  reports: number;
  /** Sessions opened that day. */
  sessions: number;
}

/**
 * Which per-day counts {@linkcode Storage.dailyCounts} returns.
 *
 * @example Usage
 * ```ts
 * import type { DailyCountQuery } from "./storage.ts";
 *
 * const query: DailyCountQuery = { fromDay: "2026-01-01", toDay: "2026-01-30" };
 * ```
 */
export interface DailyCountQuery {
  /** Only this notebook. */
  notebook?: string;
  /** The first UTC day included, `YYYY-MM-DD`. */
  fromDay: string;
  /** The last UTC day included, `YYYY-MM-DD`. */
  toDay: string;
}

/**
 * One notebook known to the collector, with its totals.
 *
 * @example Usage
 * ```ts
 * import type { NotebookSummary } from "./storage.ts";
 *
 * const summary: NotebookSummary = { notebook: "demo", reports: 4, sessions: 2, lastReportAt: null };
 * ```
 */
export interface NotebookSummary {
  /** The notebook's name. */
  notebook: string;
  /** Reports counted over the kept per-day counts. */
  reports: number;
  /** Sessions counted over the kept per-day counts. */
  sessions: number;
  /** When the newest raw report still stored was received, or `null`. */
  lastReportAt: number | null;
}

/**
 * How {@linkcode Storage.prune} bounds the store.
 *
 * @example Usage
 * ```ts
 * import type { PruneOptions } from "./storage.ts";
 *
 * const options: PruneOptions = { now: Date.now(), maxAgeMs: 90 * 86_400_000, maxBytes: 2 ** 30 };
 * ```
 */
export interface PruneOptions {
  /** The current time in ms since the epoch. */
  now: number;
  /** Raw reports and sessions older than this are deleted. */
  maxAgeMs: number;
  /** Past this many bytes of data the oldest raw reports are deleted first. */
  maxBytes: number;
}

/**
 * What {@linkcode Storage.prune} deleted.
 *
 * @example Usage
 * ```ts
 * import type { PruneResult } from "./storage.ts";
 *
 * const result: PruneResult = { expiredReports: 0, expiredUsages: 0, evictedReports: 0, bytes: 4096 };
 * ```
 */
export interface PruneResult {
  /** Reports deleted for their age. */
  expiredReports: number;
  /** Sessions deleted for their age. */
  expiredUsages: number;
  /** Reports deleted, oldest first, to get under the size cap. */
  evictedReports: number;
  /** The data size after pruning, in bytes. */
  bytes: number;
}

/**
 * The storage engine behind the collector. Every method is async so that a
 * networked engine fits; every write resolves only after it committed.
 *
 * @example Usage
 * ```ts
 * import type { Storage } from "./storage.ts";
 *
 * async function countReports(storage: Storage): Promise<number> {
 *   const reports = await storage.listReports({ skip: 0, limit: 1000 });
 *   return reports.length;
 * }
 * ```
 */
export interface Storage {
  /** The engine's name, such as `sqlite`. */
  readonly engine: string;
  /** Creates a session for a notebook and counts it for the day. */
  createUsage(notebook: string, now: number): Promise<StoredUsage>;
  /** The session with this uuid, or `undefined`. */
  getUsage(uuid: string): Promise<StoredUsage | undefined>;
  /** A page of sessions, oldest first. */
  listUsages(query: PageQuery): Promise<StoredUsage[]>;
  /** Stores a report (or counts a duplicate) in one transaction. */
  addReport(input: AddReportInput): Promise<AddReportResult>;
  /** The reports of the sessions with these uuids, oldest first. */
  listUsageReports(uuids: string[]): Promise<StoredReport[]>;
  /** A page of reports. */
  listReports(query: ReportQuery): Promise<StoredReport[]>;
  /** Per-day counts, ordered by day then notebook. */
  dailyCounts(query: DailyCountQuery): Promise<DailyCount[]>;
  /** Every notebook with its totals, by name. */
  notebooks(): Promise<NotebookSummary[]>;
  /** Deletes old raw reports and enforces the size cap; per-day counts stay. */
  prune(options: PruneOptions): Promise<PruneResult>;
  /** Resolves when the engine answers a trivial query; rejects otherwise. */
  ping(): Promise<void>;
  /** Commits pending writes and releases the engine. */
  close(): Promise<void>;
}

/**
 * The UTC day of a time, `YYYY-MM-DD`.
 *
 * @param ms Milliseconds since the epoch.
 * @returns The day.
 *
 * @example Usage
 * ```ts
 * import { utcDay } from "./storage.ts";
 *
 * utcDay(Date.UTC(2026, 0, 2, 23, 59)); // "2026-01-02"
 * ```
 */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * A stable hash of a payload's content, used to recognise identical reports.
 *
 * @param payload The payload.
 * @returns 64 hex digits.
 *
 * @example Usage
 * ```ts
 * import { payloadHash } from "./storage.ts";
 *
 * const payload = {
 *   error_name: "Error",
 *   error_message: "boom",
 *   traceback: [],
 *   first_line: "",
 *   execution_count: 1,
 *   notebook: "demo",
 * };
 * payloadHash(payload) === payloadHash({ ...payload }); // true
 * ```
 */
export function payloadHash(payload: ErrorPayload): string {
  const canonical = JSON.stringify([
    payload.error_name,
    payload.error_message,
    payload.traceback.map((f) => [f.filename, f.fun_name, f.lineno]),
    payload.first_line,
    payload.execution_count,
  ]);
  return createHash("sha256").update(canonical).digest("hex");
}
