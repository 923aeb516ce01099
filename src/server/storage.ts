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
    /** The group the report was counted in (engines with grouping). */
    group?: GroupOutcome;
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
 * What grouping did with a report.
 *
 * @example Usage
 * ```ts
 * import type { GroupOutcome } from "./storage.ts";
 *
 * const outcome: GroupOutcome = { id: 3, created: true, reopened: false, notice: "new" };
 * ```
 */
export interface GroupOutcome {
  /** The group's id. */
  id: number;
  /** The report started a new group. */
  created: boolean;
  /** The group was resolved and the report reopened it (a regression). */
  reopened: boolean;
  /** The notice queued in the outbox for this report, if any. */
  notice?: NoticeKind;
}

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
  /**
   * When the newest raw report still stored (the last received) was
   * received, or `null`.
   */
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

  // Grouping (see grouping_types below and src/server/fingerprint.ts).
  /** A page of a notebook's groups, with the total that match. */
  listGroups(
    query: GroupQuery,
  ): Promise<{ total: number; groups: GroupSummary[] }>;
  /** One group with its latest payload, first lines and cell numbers, or `undefined`. */
  getGroup(id: number): Promise<GroupDetail | undefined>;
  /** Per-day counts of these groups from `fromDay` to `toDay` (UTC, inclusive), by group then day. */
  groupDailyCounts(
    groupIds: number[],
    fromDay: string,
    toDay: string,
  ): Promise<GroupDay[]>;
  /** Every notebook with its groups and its reports and sessions in the last 24 h, 7 d and 30 d. */
  notebookWindowStats(now: number): Promise<NotebookWindowStats[]>;
  /** Sets a group's state; `false` when there is no such group. */
  setGroupState(id: number, state: GroupState, now: number): Promise<boolean>;
  /** Deletes a group and its raw reports (aggregate counts stay); `false` when there is no such group. */
  deleteGroup(id: number): Promise<boolean>;

  // The Slack outbox (see src/server/slack_notifier.ts).
  /**
   * Takes due notices for sending under the server-wide hourly budget,
   * consistently across instances: rolls notices held in past hours into one
   * digest per hour, claims due notices while the hour's budget lasts (each
   * claim leased for `leaseMs`), and holds the rest for the digest.
   */
  claimNotices(options: ClaimNoticesOptions): Promise<OutboxNotice[]>;
  /** Records the outcome of sending a claimed notice. */
  settleNotice(
    id: number,
    outcome: NoticeOutcome,
    now: number,
  ): Promise<void>;
  /** Every notice in the outbox, oldest first (tests and diagnostics). */
  listNotices(): Promise<NoticeRecord[]>;
}

/**
 * The state of an error group: `open` (the default), `resolved` (a later
 * report reopens it: a regression) or `ignored` (counted, never notified).
 *
 * @example Usage
 * ```ts
 * import type { GroupState } from "./storage.ts";
 *
 * const state: GroupState = "resolved";
 * ```
 */
export type GroupState = "open" | "resolved" | "ignored";

/**
 * The valid {@linkcode GroupState} values.
 *
 * @example Usage
 * ```ts
 * import { GROUP_STATES } from "./storage.ts";
 *
 * GROUP_STATES.includes("open"); // true
 * ```
 */
export const GROUP_STATES: readonly GroupState[] = [
  "open",
  "resolved",
  "ignored",
];

/**
 * One error group: the reports that share a fingerprint.
 *
 * @example Usage
 * ```ts
 * import type { GroupSummary } from "./storage.ts";
 *
 * const group: GroupSummary = {
 *   id: 1, notebook: "demo", fingerprint: "0".repeat(64), errorName: "Error",
 *   errorMessage: "boom", count: 3, sessions: 2, firstSeen: 0, lastSeen: 0, state: "open",
 * };
 * ```
 */
export interface GroupSummary {
  /** The group's id. */
  id: number;
  /** The notebook. */
  notebook: string;
  /** The fingerprint, 64 hex digits. */
  fingerprint: string;
  /** The latest report's error name. */
  errorName: string;
  /** The latest report's error message. */
  errorMessage: string;
  /** Reports, duplicates included. */
  count: number;
  /** Distinct sessions affected. */
  sessions: number;
  /** When the first report arrived, ms since the epoch. */
  firstSeen: number;
  /** When the latest report arrived, ms since the epoch. */
  lastSeen: number;
  /** The group's state. */
  state: GroupState;
}

/**
 * A group with what the dashboard's group page shows.
 *
 * @example Usage
 * ```ts
 * import type { GroupDetail } from "./storage.ts";
 *
 * function lines(group: GroupDetail): string[] {
 *   return group.firstLines;
 * }
 * ```
 */
export interface GroupDetail extends GroupSummary {
  /** The latest payload as sent (scrubbed). */
  latest: ErrorPayload;
  /** Distinct first lines seen, oldest first, at most {@linkcode GROUP_LIMITS.firstLines}. */
  firstLines: string[];
  /** Distinct execution counts seen, oldest first, at most {@linkcode GROUP_LIMITS.cellNumbers}. */
  cellNumbers: number[];
}

/**
 * How many distinct first lines and cell numbers a group keeps.
 *
 * @example Usage
 * ```ts
 * import { GROUP_LIMITS } from "./storage.ts";
 *
 * console.log(GROUP_LIMITS.firstLines); // 20
 * ```
 */
export const GROUP_LIMITS = { firstLines: 20, cellNumbers: 50 } as const;

/**
 * Which groups {@linkcode Storage.listGroups} returns.
 *
 * @example Usage
 * ```ts
 * import type { GroupQuery } from "./storage.ts";
 *
 * const query: GroupQuery = { notebook: "demo", sort: "count", skip: 0, limit: 50, state: "open" };
 * ```
 */
export interface GroupQuery {
  /** The notebook. */
  notebook: string;
  /** Only groups in this state. @default {undefined} (all) */
  state?: GroupState;
  /** Only groups whose error name or message contains this, case-insensitively. @default {undefined} */
  text?: string;
  /** `lastSeen` (newest first) or `count` (largest first); ties by id, newest first. */
  sort: "lastSeen" | "count";
  /** Groups to skip. */
  skip: number;
  /** Groups to return at most. */
  limit: number;
}

/**
 * One group's reports on one UTC day.
 *
 * @example Usage
 * ```ts
 * import type { GroupDay } from "./storage.ts";
 *
 * const day: GroupDay = { groupId: 1, day: "2026-01-01", count: 4 };
 * ```
 */
export interface GroupDay {
  /** The group. */
  groupId: number;
  /** The UTC day, `YYYY-MM-DD`. */
  day: string;
  /** Reports that day, duplicates included. */
  count: number;
}

/**
 * A notebook's activity over the last 24 hours, 7 days and 30 days. Report
 * windows count whole UTC hours (the current hour and the 23, 167 or 719
 * before it); session windows count sessions whose latest report is within
 * the last 24 × 3600 s, 7 days or 30 days.
 *
 * @example Usage
 * ```ts
 * import type { NotebookWindowStats } from "./storage.ts";
 *
 * const stats: NotebookWindowStats = {
 *   notebook: "demo", groups: 2, reports24h: 5, reports7d: 9, reports30d: 12,
 *   sessions24h: 1, sessions7d: 3, sessions30d: 4,
 * };
 * ```
 */
export interface NotebookWindowStats {
  /** The notebook. */
  notebook: string;
  /** Its groups (any state). */
  groups: number;
  /** Reports in the last 24 hours. */
  reports24h: number;
  /** Reports in the last 7 days. */
  reports7d: number;
  /** Reports in the last 30 days. */
  reports30d: number;
  /** Sessions with a report in the last 24 hours. */
  sessions24h: number;
  /** Sessions with a report in the last 7 days. */
  sessions7d: number;
  /** Sessions with a report in the last 30 days. */
  sessions30d: number;
}

/**
 * When a report makes the storage queue a Slack notice, in the same
 * transaction that stores the report. Given to an engine at open time;
 * without it no notices are queued.
 *
 * @example Usage
 * ```ts
 * import type { NoticePolicy } from "./storage.ts";
 *
 * const policy: NoticePolicy = { minGroupIntervalMs: 30 * 60_000, spikeFactor: 10, spikeMinimum: 20 };
 * ```
 */
export interface NoticePolicy {
  /** A group queues at most one notice per this many ms. */
  minGroupIntervalMs: number;
  /** A spike: more than this many times the group's hourly average… */
  spikeFactor: number;
  /** …and at least this many reports in the current UTC hour. */
  spikeMinimum: number;
}

/**
 * What a notice is about: a new group, a resolved group that came back, a
 * spike, or the digest of the notices held back in one hour.
 *
 * @example Usage
 * ```ts
 * import type { NoticeKind } from "./storage.ts";
 *
 * const kind: NoticeKind = "regression";
 * ```
 */
export type NoticeKind = "new" | "regression" | "spike" | "digest";

/**
 * A notice's data, as stored in the outbox when it was queued.
 *
 * @example Usage
 * ```ts
 * import type { NoticeData } from "./storage.ts";
 *
 * const data: NoticeData = { kind: "digest", hour: 0, items: [] };
 * ```
 */
export type NoticeData =
  | {
    /** A group notice. */
    kind: "new" | "regression" | "spike";
    /** The group when the notice was queued. */
    group: GroupSummary;
    /** The report that triggered it. */
    latest: ErrorPayload;
    /** Spikes: reports in the current hour. */
    hourCount?: number;
    /** Spikes: the group's hourly average before this hour. */
    hourlyAverage?: number;
  }
  | {
    /** The digest of one hour. */
    kind: "digest";
    /** The UTC hour held back, in hours since the epoch. */
    hour: number;
    /** The notices held back that hour, oldest first. */
    items: DigestItem[];
  };

/**
 * One held-back notice in a digest.
 *
 * @example Usage
 * ```ts
 * import type { DigestItem } from "./storage.ts";
 *
 * const item: DigestItem = {
 *   kind: "new", groupId: 1, notebook: "demo", errorName: "Error", errorMessage: "boom", count: 1,
 * };
 * ```
 */
export interface DigestItem {
  /** What the held notice was about. */
  kind: "new" | "regression" | "spike";
  /** The group. */
  groupId: number;
  /** The group's notebook. */
  notebook: string;
  /** The error name. */
  errorName: string;
  /** The error message. */
  errorMessage: string;
  /** The group's report count when the notice was queued. */
  count: number;
}

/**
 * A notice claimed for sending.
 *
 * @example Usage
 * ```ts
 * import type { OutboxNotice } from "./storage.ts";
 *
 * function groupOf(notice: OutboxNotice): number | null {
 *   return notice.groupId;
 * }
 * ```
 */
export interface OutboxNotice {
  /** The notice's id. */
  id: number;
  /** What it is about. */
  kind: NoticeKind;
  /** The group, or `null` for a digest. */
  groupId: number | null;
  /** When it was queued, ms since the epoch. */
  createdAt: number;
  /** Send attempts so far, this one included. */
  attempts: number;
  /** What it says. */
  data: NoticeData;
}

/**
 * Where a notice is: `pending` (due at `nextAttemptAt`), `sending` (claimed,
 * leased), `held` (over the hourly budget, waiting for its digest), `sent`,
 * `digested` (went out in a digest) or `failed` (given up).
 *
 * @example Usage
 * ```ts
 * import type { NoticeStatus } from "./storage.ts";
 *
 * const status: NoticeStatus = "held";
 * ```
 */
export type NoticeStatus =
  | "pending"
  | "sending"
  | "held"
  | "sent"
  | "digested"
  | "failed";

/**
 * A notice with its delivery state.
 *
 * @example Usage
 * ```ts
 * import type { NoticeRecord } from "./storage.ts";
 *
 * function delivered(notices: NoticeRecord[]): number {
 *   return notices.filter((n) => n.status === "sent").length;
 * }
 * ```
 */
export interface NoticeRecord extends OutboxNotice {
  /** Where it is. */
  status: NoticeStatus;
  /** When it is due (pending) or was last tried. */
  nextAttemptAt: number;
  /** When it was sent, or `null`. */
  sentAt: number | null;
  /** The last failure, or `null`. */
  lastError: string | null;
}

/**
 * Options of {@linkcode Storage.claimNotices}.
 *
 * @example Usage
 * ```ts
 * import type { ClaimNoticesOptions } from "./storage.ts";
 *
 * const options: ClaimNoticesOptions = { now: Date.now(), hourlyCap: 20, limit: 10, leaseMs: 30_000 };
 * ```
 */
export interface ClaimNoticesOptions {
  /** The current time, ms since the epoch. */
  now: number;
  /** Messages the whole server sends per UTC hour at most (digests included). */
  hourlyCap: number;
  /** Notices claimed at most. */
  limit: number;
  /** How long a claim lasts; an unsettled claim is retried after it. */
  leaseMs: number;
}

/**
 * The outcome of sending a notice: `sent`; `retry` at a time (and, for a
 * Slack 429, pause every send until `pauseUntil`); or `failed` for good.
 *
 * @example Usage
 * ```ts
 * import type { NoticeOutcome } from "./storage.ts";
 *
 * const outcome: NoticeOutcome = { status: "retry", at: Date.now() + 5000, error: "HTTP 500" };
 * ```
 */
export type NoticeOutcome =
  | { status: "sent" }
  | { status: "retry"; at: number; error: string; pauseUntil?: number }
  | { status: "failed"; error: string };

/**
 * The UTC hour of a time, in hours since the epoch.
 *
 * @param ms Milliseconds since the epoch.
 * @returns The hour number.
 *
 * @example Usage
 * ```ts
 * import { utcHour } from "./storage.ts";
 *
 * utcHour(3 * 3_600_000 + 59_000); // 3
 * ```
 */
export function utcHour(ms: number): number {
  return Math.floor(ms / 3_600_000);
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
  if (ms >= dayCache.start && ms < dayCache.start + 86_400_000) {
    return dayCache.day;
  }
  const day = new Date(ms).toISOString().slice(0, 10);
  dayCache.start = Math.floor(ms / 86_400_000) * 86_400_000;
  dayCache.day = day;
  return day;
}

/** The last day computed by {@linkcode utcDay} (every report asks for the same one). */
const dayCache = { start: NaN, day: "" };

/**
 * A stable hash of a payload's content, used to recognise identical reports.
 *
 * @param payload The payload.
 * @returns 16 hex digits.
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
  // Two independent 32-bit FNV-1a-style lanes (64 bits): enough to tell a
  // session's reports of one minute apart, and much cheaper per report than
  // a cryptographic hash (a collision could only merge one session's own reports).
  let h1 = 0x811c9dc5 ^ canonical.length;
  let h2 = 0x9747b28c;
  for (let i = 0; i < canonical.length; i++) {
    const c = canonical.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b) ^ h2;
  h2 = Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35) ^ h1;
  return (h1 >>> 0).toString(16).padStart(8, "0") +
    (h2 >>> 0).toString(16).padStart(8, "0");
}
