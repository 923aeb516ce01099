/**
 * Grouping and the Slack outbox on SQLite: the schema (migration 2), the
 * grouping of each report inside {@linkcode SqliteStorage}'s write
 * transaction (each group read once, changed in memory by succeeded writes,
 * and written once when the storage writes its counts), the dashboard's
 * group queries, and the outbox's claim and settle steps. Used only by
 * `sqlite_storage.ts`.
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { ErrorPayload } from "../types.ts";
import { errorFingerprint } from "./fingerprint.ts";
import type { Migration } from "./sqlite_storage.ts";
import {
  type ClaimNoticesOptions,
  type DigestItem,
  GROUP_LIMITS,
  type GroupDay,
  type GroupDetail,
  type GroupOutcome,
  type GroupQuery,
  type GroupState,
  type GroupSummary,
  type NotebookWindowStats,
  type NoticeData,
  type NoticeKind,
  type NoticeOutcome,
  type NoticePolicy,
  type NoticeRecord,
  type OutboxNotice,
  utcDay,
  utcHour,
} from "./storage.ts";

/**
 * The SQLite migration that adds groups, their per-day and per-hour counts,
 * per-notebook hourly counts, sessions' latest report time and the outbox.
 *
 * @example Usage
 * ```ts
 * import { SQLITE_GROUPING_MIGRATION } from "./sqlite_grouping.ts";
 *
 * console.log(SQLITE_GROUPING_MIGRATION.version); // 2
 * ```
 */
export const SQLITE_GROUPING_MIGRATION: Migration = {
  version: 2,
  name: "error groups, hourly counts and the Slack outbox",
  sql: `
    CREATE TABLE groups (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      notebook TEXT NOT NULL,
      fingerprint TEXT NOT NULL,
      error_name TEXT NOT NULL,
      error_message TEXT NOT NULL,
      latest TEXT NOT NULL,
      count INTEGER NOT NULL DEFAULT 0,
      sessions INTEGER NOT NULL DEFAULT 0,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER NOT NULL,
      state TEXT NOT NULL DEFAULT 'open',
      state_changed_at INTEGER,
      first_lines TEXT NOT NULL DEFAULT '[]',
      cell_numbers TEXT NOT NULL DEFAULT '[]',
      last_notice_at INTEGER,
      last_spike_hour INTEGER,
      UNIQUE (notebook, fingerprint)
    );
    CREATE INDEX groups_notebook_last_seen ON groups (notebook, last_seen DESC, id DESC);
    CREATE INDEX groups_notebook_count ON groups (notebook, count DESC, id DESC);
    CREATE INDEX groups_notebook_state_last_seen ON groups (notebook, state, last_seen DESC, id DESC);
    CREATE TABLE group_sessions (
      group_id INTEGER NOT NULL,
      usage_id INTEGER NOT NULL,
      PRIMARY KEY (group_id, usage_id)
    ) WITHOUT ROWID;
    CREATE TABLE group_days (
      group_id INTEGER NOT NULL,
      day TEXT NOT NULL,
      count INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (group_id, day)
    ) WITHOUT ROWID;
    CREATE TABLE group_hours (
      group_id INTEGER NOT NULL,
      hour INTEGER NOT NULL,
      count INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (group_id, hour)
    ) WITHOUT ROWID;
    CREATE INDEX group_hours_hour ON group_hours (hour);
    CREATE TABLE notebook_hours (
      notebook TEXT NOT NULL,
      hour INTEGER NOT NULL,
      reports INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (notebook, hour)
    ) WITHOUT ROWID;
    ALTER TABLE usages ADD COLUMN last_report_at INTEGER;
    CREATE INDEX usages_notebook_last_report ON usages (notebook, last_report_at);
    ALTER TABLE reports ADD COLUMN group_id INTEGER;
    CREATE INDEX reports_group ON reports (group_id);
    CREATE TABLE notices (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      kind TEXT NOT NULL,
      group_id INTEGER,
      created_at INTEGER NOT NULL,
      status TEXT NOT NULL DEFAULT 'pending',
      hour INTEGER,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at INTEGER NOT NULL,
      lease_until INTEGER,
      claimed_hour INTEGER,
      sent_at INTEGER,
      last_error TEXT,
      data TEXT NOT NULL
    );
    CREATE INDEX notices_status_due ON notices (status, next_attempt_at);
    CREATE INDEX notices_claimed_hour ON notices (claimed_hour);
    CREATE UNIQUE INDEX notices_digest_hour ON notices (hour) WHERE kind = 'digest';
    CREATE TABLE slack_state (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      paused_until INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO slack_state (id, paused_until) VALUES (1, 0);
  `,
};

/**
 * The SQLite migration that keeps every report's writes off secondary
 * indexes: a group's count and last-seen time change with each report, so
 * indexes sorted by them cost more per report than sorting one notebook's
 * groups per page view (the `(notebook, fingerprint)` key still finds them);
 * sessions are found by notebook, their latest report time read per row.
 *
 * @example Usage
 * ```ts
 * import { SQLITE_GROUPING_INDEX_MIGRATION } from "./sqlite_grouping.ts";
 *
 * console.log(SQLITE_GROUPING_INDEX_MIGRATION.version); // 3
 * ```
 */
export const SQLITE_GROUPING_INDEX_MIGRATION: Migration = {
  version: 3,
  name: "no per-report index updates on groups and sessions",
  sql: `
    DROP INDEX groups_notebook_last_seen;
    DROP INDEX groups_notebook_count;
    DROP INDEX groups_notebook_state_last_seen;
    DROP INDEX usages_notebook_last_report;
    CREATE INDEX usages_notebook ON usages (notebook);
  `,
};

/** Hours of per-group hourly counts kept (spike averages look back 7 days). */
export const GROUP_HOURS_KEPT = 8 * 24;
/** Hours of per-notebook hourly counts kept (the 30-day window). */
export const NOTEBOOK_HOURS_KEPT = 31 * 24;
/** How far back a spike's hourly average looks, in hours. */
export const SPIKE_LOOKBACK_HOURS = 7 * 24;

interface GroupRow {
  id: number;
  notebook: string;
  fingerprint: string;
  error_name: string;
  error_message: string;
  count: number;
  sessions: number;
  first_seen: number;
  last_seen: number;
  state: GroupState;
}

interface GroupDetailRow extends GroupRow {
  latest: string;
  first_lines: string;
  cell_numbers: string;
}

interface NoticeRow {
  id: number;
  kind: NoticeKind;
  group_id: number | null;
  created_at: number;
  status: NoticeRecord["status"];
  attempts: number;
  next_attempt_at: number;
  sent_at: number | null;
  last_error: string | null;
  data: string;
  hour: number | null;
}

/** One report's share of the batch's counts, until its write succeeded. */
interface StagedReport {
  groupId: number;
  notebook: string;
  now: number;
  hour: number;
  hourKey: string;
  /** The `group:usage` pair whose group_sessions row the write added. */
  sessionKey: string | undefined;
  /** The group the write created (with its first report), to cache. */
  created: BatchGroup | undefined;
  /** The cached group the report counts in, when it existed. */
  group: BatchGroup | undefined;
  /** 1 when the write added the group's session row. */
  newSession: number;
  /** The report's payload, with the session's notebook. */
  latest: ErrorPayload;
  /** The notice the write queued, if any. */
  notice: { at: number; spikeHour: number | null } | undefined;
}

/**
 * A group as the open batch's succeeded writes left it: read once per batch
 * (or created by it), changed in memory by each report, and written once
 * before COMMIT (or before a write that changes groups otherwise).
 */
interface BatchGroup extends GroupSummary {
  firstLines: unknown[];
  /** `first_lines` as stored, while unchanged. */
  firstLinesJson: string | undefined;
  cellNumbers: unknown[];
  /** `cell_numbers` as stored, while unchanged. */
  cellNumbersJson: string | undefined;
  lastNoticeAt: number | null;
  lastSpikeHour: number | null;
  /** The stored per-hour count of `hour` (the batch's own are in `#hours`). */
  hour: number;
  hourCount: number | undefined;
  /** What the batch changed and has not written yet. */
  dirty: boolean;
  addCount: number;
  addSessions: number;
  latest: ErrorPayload | undefined;
  /** When a report reopened it, the latest such time. */
  reopenedAt: number | null;
}

const GROUP_COLUMNS = `id, notebook, fingerprint, error_name, error_message,
  count, sessions, first_seen, last_seen, state`;

/** The columns of a {@linkcode FoundGroupRow}. */
const FOUND_GROUP_COLUMNS = `id, error_name, error_message, count, sessions,
  first_seen, last_seen, state, first_lines, cell_numbers, last_notice_at,
  last_spike_hour`;

/** What {@linkcode SqliteGrouping.record} needs to know about a report. */
export interface GroupingInput {
  /** The session's row id. */
  usageId: number;
  /** The session's notebook. */
  notebook: string;
  /** The scrubbed payload. */
  payload: ErrorPayload;
  /** The current time. */
  now: number;
}

/**
 * Grouping, group queries and the outbox on one SQLite connection. Every
 * write method must run inside the storage's write transaction.
 *
 * @example Usage
 * ```ts ignore
 * import { SqliteGrouping } from "./sqlite_grouping.ts";
 * import { DatabaseSync } from "node:sqlite";
 *
 * const grouping = new SqliteGrouping(new DatabaseSync(":memory:"));
 * ```
 */
export class SqliteGrouping {
  #db: DatabaseSync;
  #policy: NoticePolicy | undefined;
  #enabled: boolean;
  #st: Record<string, StatementSync> = {};
  /**
   * Per-day, per-hour and per-notebook-hour counts of the open batch's
   * succeeded writes, written before COMMIT.
   */
  #days = new Map<string, { groupId: number; day: string; n: number }>();
  #hours = new Map<string, { groupId: number; hour: number; n: number }>();
  /** `group:usage` pairs known to be in group_sessions (skips the insert). */
  #sessions = new Set<string>();
  #notebookHours = new Map<
    string,
    { notebook: string; hour: number; n: number }
  >();
  /**
   * What the running write's reports add to the batch's counts and to the
   * known sessions: merged by {@linkcode commitWrite} once the write
   * succeeded, dropped by {@linkcode discardWrite} when it was undone.
   */
  #staged: StagedReport[] = [];
  /** The open batch's groups by `notebook \0 fingerprint`. */
  #groups = new Map<string, BatchGroup>();
  /**
   * A succeeded write since the last {@linkcode flushCounts} did something
   * {@linkcode recount} cannot redo from its report row: created a group,
   * added a group's session, or reopened a group.
   */
  #mustWrite = false;

  /**
   * Prepares the statements; the schema must be at version 2 or later.
   *
   * @param db The open database.
   * @param policy When set, reports queue notices in the outbox.
   * @param enabled `false`: {@linkcode record} does nothing (benchmarks).
   */
  constructor(db: DatabaseSync, policy?: NoticePolicy, enabled = true) {
    this.#db = db;
    this.#policy = policy;
    this.#enabled = enabled;
    const sql: Record<string, string> = {
      findGroup:
        `SELECT ${FOUND_GROUP_COLUMNS} FROM groups WHERE notebook = ? AND fingerprint = ?`,
      findGroupById:
        `SELECT fingerprint, ${FOUND_GROUP_COLUMNS} FROM groups WHERE id = ?`,
      insertGroup:
        `INSERT INTO groups (notebook, fingerprint, error_name, error_message,
        latest, count, sessions, first_seen, last_seen, first_lines, cell_numbers)
        VALUES (?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?) RETURNING id`,
      updateGroup:
        `UPDATE groups SET count = count + ?, sessions = sessions + ?,
        last_seen = max(last_seen, ?), error_name = ?, error_message = ?, latest = ?,
        first_lines = ?, cell_numbers = ?, state = ?,
        state_changed_at = coalesce(?, state_changed_at)
        WHERE id = ?`,
      addSession:
        "INSERT OR IGNORE INTO group_sessions (group_id, usage_id) VALUES (?, ?)",
      countDay:
        `INSERT INTO group_days (group_id, day, count) VALUES (?1, ?2, ?3)
        ON CONFLICT (group_id, day) DO UPDATE SET count = count + ?3`,
      countHour:
        `INSERT INTO group_hours (group_id, hour, count) VALUES (?1, ?2, ?3)
        ON CONFLICT (group_id, hour) DO UPDATE SET count = count + ?3`,
      countNotebookHour:
        `INSERT INTO notebook_hours (notebook, hour, reports) VALUES (?1, ?2, ?3)
        ON CONFLICT (notebook, hour) DO UPDATE SET reports = reports + ?3`,
      hourCount:
        "SELECT count FROM group_hours WHERE group_id = ? AND hour = ?",
      pastHours:
        "SELECT coalesce(sum(count), 0) AS n FROM group_hours WHERE group_id = ? AND hour >= ? AND hour < ?",
      markNotice:
        "UPDATE groups SET last_notice_at = ?, last_spike_hour = coalesce(?, last_spike_hour) WHERE id = ?",
      insertNotice:
        `INSERT INTO notices (kind, group_id, created_at, next_attempt_at, data)
        VALUES (?, ?, ?, ?, ?)`,
      groupById: `SELECT ${GROUP_COLUMNS}, latest, first_lines, cell_numbers
        FROM groups WHERE id = ?`,
    };
    for (const [name, text] of Object.entries(sql)) {
      this.#st[name] = db.prepare(text);
    }
  }

  /**
   * Counts a report in its group (creating or reopening it) and queues a
   * notice when the policy says so. Runs inside the write transaction; its
   * counts join the batch's at {@linkcode commitWrite}, once the write
   * succeeded.
   *
   * @param input The report.
   * @returns What happened to the group; `undefined` when grouping is off.
   */
  record(input: GroupingInput): GroupOutcome | undefined {
    if (!this.#enabled) return undefined;
    const { payload, now, notebook } = input;
    const latest: ErrorPayload = { ...payload, notebook };
    const fingerprint = errorFingerprint(latest);
    const hour = utcHour(now);
    const groupKey = `${notebook}\u0000${fingerprint}`;
    let group = this.#groups.get(groupKey);
    if (group === undefined) {
      const row = this.#st.findGroup!.get(notebook, fingerprint) as
        | FoundGroupRow
        | undefined;
      if (row !== undefined) {
        group = batchGroupFromRow(row, notebook, fingerprint);
        this.#groups.set(groupKey, group);
      }
    }
    let id: number;
    /** The `group:usage` pair when this write inserted (or met) its row. */
    let sessionKey: string | undefined;
    let created: BatchGroup | undefined;
    let newSession = 0;
    let reopened = false;
    let state: GroupState = "open";
    if (group === undefined) {
      const firstLines = [payload.first_line];
      const cellNumbers = payload.execution_count === null
        ? []
        : [payload.execution_count];
      const firstLinesJson = JSON.stringify(firstLines);
      const cellNumbersJson = JSON.stringify(cellNumbers);
      id = (this.#st.insertGroup!.get(
        notebook,
        fingerprint,
        payload.error_name,
        payload.error_message,
        JSON.stringify(latest),
        now,
        now,
        firstLinesJson,
        cellNumbersJson,
      ) as { id: number }).id;
      this.#st.addSession!.run(id, input.usageId);
      sessionKey = `${id}:${input.usageId}`;
      created = {
        id,
        notebook,
        fingerprint,
        errorName: payload.error_name,
        errorMessage: payload.error_message,
        count: 1,
        sessions: 1,
        firstSeen: now,
        lastSeen: now,
        state: "open",
        firstLines,
        firstLinesJson,
        cellNumbers,
        cellNumbersJson,
        lastNoticeAt: null,
        lastSpikeHour: null,
        hour,
        hourCount: 0,
        dirty: false,
        addCount: 0,
        addSessions: 0,
        latest: undefined,
        reopenedAt: null,
      };
    } else {
      id = group.id;
      const key = `${id}:${input.usageId}`;
      if (!this.#sessions.has(key)) {
        newSession = Number(
          this.#st.addSession!.run(id, input.usageId).changes,
        );
        sessionKey = key;
      }
      reopened = group.state === "resolved";
      state = reopened ? "open" : group.state;
    }
    // Counted in the batch (and in the cached group) only once the write
    // succeeded (commitWrite).
    const hourKey = `${id}\u0000${hour}`;
    const staged: StagedReport = {
      groupId: id,
      notebook,
      now,
      hour,
      hourKey,
      sessionKey,
      created,
      group,
      newSession,
      latest,
      notice: undefined,
    };
    this.#staged.push(staged);

    const outcome: GroupOutcome = {
      id,
      created: created !== undefined,
      reopened,
    };
    const policy = this.#policy;
    if (!policy || state === "ignored") return outcome;
    let stored = 0;
    if (group !== undefined) {
      if (group.hourCount === undefined || group.hour !== hour) {
        group.hour = hour;
        group.hourCount = (this.#st.hourCount!.get(id, hour) as
          | { count: number }
          | undefined)?.count ?? 0;
      }
      stored = group.hourCount;
    }
    // Stored, plus the batch's earlier writes, plus this report.
    const hourCount = stored + (this.#hours.get(hourKey)?.n ?? 0) + 1;
    let kind: "new" | "regression" | "spike" | undefined;
    let hourlyAverage: number | undefined;
    if (created) kind = "new";
    else if (reopened) kind = "regression";
    else if (
      hourCount >= policy.spikeMinimum && group!.lastSpikeHour !== hour
    ) {
      const from = Math.max(
        hour - SPIKE_LOOKBACK_HOURS,
        utcHour(group!.firstSeen),
      );
      const hours = hour - from;
      if (hours > 0) {
        const past =
          (this.#st.pastHours!.get(id, from, hour) as { n: number }).n +
          this.#unwrittenHours(id, from, hour);
        hourlyAverage = past / hours;
        if (hourCount > policy.spikeFactor * hourlyAverage) kind = "spike";
      }
    }
    if (kind === undefined) return outcome;
    const lastNotice = group?.lastNoticeAt ?? null;
    if (lastNotice !== null && now - lastNotice < policy.minGroupIntervalMs) {
      return outcome;
    }
    const summary: GroupSummary = created ? summaryOf(created) : {
      ...summaryOf(group!),
      errorName: payload.error_name,
      errorMessage: payload.error_message,
      count: group!.count + 1,
      sessions: group!.sessions + newSession,
      lastSeen: Math.max(group!.lastSeen, now),
      state,
    };
    const data: NoticeData = {
      kind,
      group: summary,
      latest,
      ...(kind === "spike" ? { hourCount, hourlyAverage } : {}),
    };
    const spikeHour = kind === "spike" ? hour : null;
    this.#st.insertNotice!.run(kind, id, now, now, JSON.stringify(data));
    this.#st.markNotice!.run(now, spikeHour, id);
    staged.notice = { at: now, spikeHour };
    outcome.notice = kind;
    return outcome;
  }

  /**
   * Whether a succeeded write since the last {@linkcode flushCounts} did
   * something {@linkcode recount} cannot redo from its report row (created
   * a group, added a group's session, reopened a group): its counts must be
   * written in the same transaction.
   */
  get mustWrite(): boolean {
    return this.#mustWrite;
  }

  /**
   * Counts a stored report again from its row, as {@linkcode record} and
   * {@linkcode commitWrite} counted it, when its counts were not written
   * (the storage rebuilds what it had not written after a crash or a
   * rollback). Only for a report whose write did not create its group, add
   * a session to it or reopen it ({@linkcode mustWrite}).
   *
   * @param input The report's group, session's notebook, time and payload.
   */
  recount(
    input: {
      groupId: number;
      notebook: string;
      now: number;
      payload: ErrorPayload;
    },
  ): void {
    if (!this.#enabled) return;
    const { groupId, notebook, now } = input;
    const row = this.#st.findGroupById!.get(groupId) as
      | (FoundGroupRow & { fingerprint: string })
      | undefined;
    // Deleted with its reports, so this cannot happen; skip it if it does.
    if (row === undefined) return;
    const groupKey = `${notebook}\u0000${row.fingerprint}`;
    let group = this.#groups.get(groupKey);
    if (group === undefined) {
      group = batchGroupFromRow(row, notebook, row.fingerprint);
      this.#groups.set(groupKey, group);
    }
    const hour = utcHour(now);
    this.#staged.push({
      groupId,
      notebook,
      now,
      hour,
      hourKey: `${groupId}\u0000${hour}`,
      sessionKey: undefined,
      created: undefined,
      group,
      newSession: 0,
      latest: { ...input.payload, notebook },
      notice: undefined,
    });
    this.commitWrite();
  }

  /** The unwritten per-hour counts of a group in `[from, to)`. */
  #unwrittenHours(groupId: number, from: number, to: number): number {
    let n = 0;
    for (const c of this.#hours.values()) {
      if (c.groupId === groupId && c.hour >= from && c.hour < to) n += c.n;
    }
    return n;
  }

  /**
   * Writes the batch's changed groups and forgets the batch's groups (the
   * next report reads its group again). The storage calls it before COMMIT
   * and before a write that changes groups otherwise (state, deletion).
   */
  flushGroups(): void {
    for (const g of this.#groups.values()) {
      if (!g.dirty) continue;
      const latest = g.latest!;
      this.#st.updateGroup!.run(
        g.addCount,
        g.addSessions,
        g.lastSeen,
        latest.error_name,
        latest.error_message,
        JSON.stringify(latest),
        g.firstLinesJson ?? JSON.stringify(g.firstLines),
        g.cellNumbersJson ?? JSON.stringify(g.cellNumbers),
        g.state,
        g.reopenedAt,
        g.id,
      );
    }
    this.#groups.clear();
  }

  /**
   * Writes the batch's groups and pending counts; the storage calls it
   * before COMMIT.
   */
  flushCounts(): void {
    this.flushGroups();
    for (const c of this.#days.values()) {
      this.#st.countDay!.run(c.groupId, c.day, c.n);
    }
    for (const c of this.#hours.values()) {
      this.#st.countHour!.run(c.groupId, c.hour, c.n);
    }
    for (const c of this.#notebookHours.values()) {
      this.#st.countNotebookHour!.run(c.notebook, c.hour, c.n);
    }
    this.#days.clear();
    this.#hours.clear();
    this.#notebookHours.clear();
    this.#mustWrite = false;
  }

  /**
   * Adds the running write's reports to the batch's counts and known
   * sessions; the storage calls it when the write succeeded.
   */
  commitWrite(): void {
    const staged = this.#staged;
    if (staged.length === 0) return;
    for (const r of staged) {
      const day = utcDay(r.now);
      const dayKey = `${r.groupId}\u0000${day}`;
      const dayCount = this.#days.get(dayKey);
      if (dayCount) dayCount.n++;
      else this.#days.set(dayKey, { groupId: r.groupId, day, n: 1 });
      const hourCount = this.#hours.get(r.hourKey);
      if (hourCount) hourCount.n++;
      else {
        this.#hours.set(r.hourKey, { groupId: r.groupId, hour: r.hour, n: 1 });
      }
      const notebookKey = `${r.notebook}\u0000${r.hour}`;
      const notebookCount = this.#notebookHours.get(notebookKey);
      if (notebookCount) notebookCount.n++;
      else {
        this.#notebookHours.set(notebookKey, {
          notebook: r.notebook,
          hour: r.hour,
          n: 1,
        });
      }
      if (r.sessionKey !== undefined) this.#rememberSession(r.sessionKey);
      if (
        r.created !== undefined || r.newSession > 0 ||
        r.group?.state === "resolved"
      ) {
        this.#mustWrite = true;
      }
      if (r.created !== undefined) {
        const g = r.created;
        if (r.notice !== undefined) {
          g.lastNoticeAt = r.notice.at;
          g.lastSpikeHour = r.notice.spikeHour ?? g.lastSpikeHour;
        }
        this.#groups.set(`${g.notebook}\u0000${g.fingerprint}`, g);
      } else if (r.group !== undefined) {
        countInGroup(r.group, r);
      }
    }
    staged.length = 0;
  }

  /**
   * Forgets the running write's reports; the storage calls it when the
   * write failed and its statements were rolled back.
   */
  discardWrite(): void {
    this.#staged.length = 0;
  }

  /**
   * Forgets everything the batch staged (its groups, counts and the
   * sessions it told us about); the storage calls it when the batch rolled
   * back.
   */
  rollbackBatch(): void {
    this.#staged.length = 0;
    this.#groups.clear();
    this.#days.clear();
    this.#hours.clear();
    this.#notebookHours.clear();
    this.#mustWrite = false;
    // Rows of the batch are gone: forget what it told us.
    this.#sessions.clear();
  }

  #rememberSession(key: string): void {
    if (this.#sessions.size >= 100_000) this.#sessions.clear();
    this.#sessions.add(key);
  }

  /** A page of a notebook's groups, with the total that match. */
  listGroups(query: GroupQuery): { total: number; groups: GroupSummary[] } {
    const where = ["notebook = ?"];
    const params: (string | number)[] = [query.notebook];
    if (query.state !== undefined) {
      where.push("state = ?");
      params.push(query.state);
    }
    const text = query.text?.trim();
    if (text) {
      where.push(
        "(instr(lower(error_name), lower(?)) > 0 OR instr(lower(error_message), lower(?)) > 0)",
      );
      params.push(text, text);
    }
    const order = query.sort === "count"
      ? "count DESC, id DESC"
      : "last_seen DESC, id DESC";
    const filter = where.join(" AND ");
    const total = (this.#db.prepare(
      `SELECT count(*) AS n FROM groups WHERE ${filter}`,
    ).get(...params) as { n: number }).n;
    const rows = this.#db.prepare(
      `SELECT ${GROUP_COLUMNS} FROM groups WHERE ${filter}
       ORDER BY ${order} LIMIT ? OFFSET ?`,
    ).all(
      ...params,
      Math.max(0, query.limit),
      Math.max(0, query.skip),
    ) as unknown as GroupRow[];
    return { total, groups: rows.map(groupFromRow) };
  }

  /** One group with its details, or `undefined`. */
  getGroup(id: number): GroupDetail | undefined {
    const row = this.#st.groupById!.get(id) as GroupDetailRow | undefined;
    return row ? groupDetailFromRow(row) : undefined;
  }

  /** Per-day counts of these groups, by group then day. */
  groupDailyCounts(
    groupIds: number[],
    fromDay: string,
    toDay: string,
  ): GroupDay[] {
    const ids = [...new Set(groupIds)].filter(Number.isSafeInteger);
    if (ids.length === 0) return [];
    const rows = this.#db.prepare(
      `SELECT group_id, day, count FROM group_days
       WHERE group_id IN (SELECT value FROM json_each(?)) AND day >= ? AND day <= ?
       ORDER BY group_id, day`,
    ).all(JSON.stringify(ids), fromDay, toDay) as unknown as {
      group_id: number;
      day: string;
      count: number;
    }[];
    return rows.map((r) => ({
      groupId: r.group_id,
      day: r.day,
      count: r.count,
    }));
  }

  /** Every notebook's window statistics, by name. */
  notebookWindowStats(now: number): NotebookWindowStats[] {
    const hour = utcHour(now);
    const rows = this.#db.prepare(
      // One pass over each table for every notebook (the windows nest),
      // not a count per notebook and window (each notebook's sessions read
      // three times).
      `WITH names AS (
         SELECT notebook FROM daily_counts UNION SELECT notebook FROM groups
       ),
       g AS (SELECT notebook, count(*) AS groups FROM groups GROUP BY notebook),
       h AS (
         SELECT notebook,
           sum(reports) FILTER (WHERE hour > ?1) AS r24,
           sum(reports) FILTER (WHERE hour > ?2) AS r7,
           sum(reports) AS r30
         FROM notebook_hours WHERE hour > ?3 GROUP BY notebook
       ),
       s AS (
         SELECT notebook,
           count(*) FILTER (WHERE last_report_at > ?4) AS s24,
           count(*) FILTER (WHERE last_report_at > ?5) AS s7,
           count(*) AS s30
         FROM usages WHERE last_report_at > ?6 GROUP BY notebook
       )
       SELECT n.notebook AS notebook, coalesce(g.groups, 0) AS groups,
         coalesce(h.r24, 0) AS r24, coalesce(h.r7, 0) AS r7,
         coalesce(h.r30, 0) AS r30, coalesce(s.s24, 0) AS s24,
         coalesce(s.s7, 0) AS s7, coalesce(s.s30, 0) AS s30
       FROM names n
       LEFT JOIN g ON g.notebook = n.notebook
       LEFT JOIN h ON h.notebook = n.notebook
       LEFT JOIN s ON s.notebook = n.notebook
       ORDER BY n.notebook`,
    ).all(
      hour - 24,
      hour - 7 * 24,
      hour - 30 * 24,
      now - 86_400_000,
      now - 7 * 86_400_000,
      now - 30 * 86_400_000,
    ) as unknown as {
      notebook: string;
      groups: number;
      r24: number;
      r7: number;
      r30: number;
      s24: number;
      s7: number;
      s30: number;
    }[];
    return rows.map((r) => ({
      notebook: r.notebook,
      groups: r.groups,
      reports24h: r.r24,
      reports7d: r.r7,
      reports30d: r.r30,
      sessions24h: r.s24,
      sessions7d: r.s7,
      sessions30d: r.s30,
    }));
  }

  /** Sets a group's state (inside a write). */
  setGroupState(id: number, state: GroupState, now: number): boolean {
    return Number(
      this.#db.prepare(
        "UPDATE groups SET state = ?, state_changed_at = ? WHERE id = ?",
      ).run(state, now, id).changes,
    ) > 0;
  }

  /** Deletes a group, its counts and its raw reports (inside a write). */
  deleteGroup(id: number): boolean {
    this.#sessions.clear();
    const deleted = Number(
      this.#db.prepare("DELETE FROM groups WHERE id = ?").run(id).changes,
    ) > 0;
    if (!deleted) return false;
    for (const table of ["group_days", "group_hours", "group_sessions"]) {
      this.#db.prepare(`DELETE FROM ${table} WHERE group_id = ?`).run(id);
    }
    this.#db.prepare("DELETE FROM reports WHERE group_id = ?").run(id);
    return true;
  }

  /** Deletes hourly counts no query needs any more (inside a write). */
  prune(now: number): void {
    const hour = utcHour(now);
    this.#db.prepare("DELETE FROM group_hours WHERE hour < ?").run(
      hour - GROUP_HOURS_KEPT,
    );
    this.#db.prepare("DELETE FROM notebook_hours WHERE hour < ?").run(
      hour - NOTEBOOK_HOURS_KEPT,
    );
    this.#db.prepare(
      "DELETE FROM notices WHERE status IN ('sent', 'digested', 'failed') AND created_at < ?",
    ).run(now - 30 * 86_400_000);
  }

  /** Claims due notices under the hourly budget (inside a write). */
  claimNotices(options: ClaimNoticesOptions): OutboxNotice[] {
    const { now } = options;
    const hour = utcHour(now);
    const paused = (this.#db.prepare(
      "SELECT paused_until FROM slack_state WHERE id = 1",
    ).get() as { paused_until: number } | undefined)?.paused_until ?? 0;
    // Roll the notices held in past hours into one digest per hour.
    const held = this.#db.prepare(
      `SELECT id, hour, data FROM notices WHERE status = 'held' AND hour < ?
       ORDER BY hour, id`,
    ).all(hour) as unknown as { id: number; hour: number; data: string }[];
    const byHour = new Map<number, DigestItem[]>();
    for (const row of held) {
      const items = byHour.get(row.hour) ?? [];
      items.push(digestItem(JSON.parse(row.data) as NoticeData));
      byHour.set(row.hour, items);
    }
    for (const [heldHour, items] of byHour) {
      const data: NoticeData = { kind: "digest", hour: heldHour, items };
      this.#db.prepare(
        `INSERT INTO notices (kind, group_id, created_at, next_attempt_at, hour, data)
         VALUES ('digest', NULL, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      ).run(now, now, heldHour, JSON.stringify(data));
      this.#db.prepare(
        "UPDATE notices SET status = 'digested' WHERE status = 'held' AND hour = ?",
      ).run(heldHour);
    }
    // Claims whose lease ran out (a crashed or stuck sender) are due again.
    this.#db.prepare(
      `UPDATE notices SET status = 'pending', claimed_hour = NULL, lease_until = NULL
       WHERE status = 'sending' AND lease_until <= ?`,
    ).run(now);
    if (paused > now) return [];
    let used = (this.#db.prepare(
      `SELECT count(*) AS n FROM notices WHERE claimed_hour = ?
       AND status IN ('sent', 'sending')`,
    ).get(hour) as { n: number }).n;
    const due = this.#db.prepare(
      `SELECT id, kind, group_id, created_at, status, attempts, next_attempt_at,
         sent_at, last_error, data, hour FROM notices
       WHERE status = 'pending' AND next_attempt_at <= ?
       ORDER BY kind = 'digest' DESC, id LIMIT ?`,
    ).all(now, Math.max(1, options.limit)) as unknown as NoticeRow[];
    const claimed: OutboxNotice[] = [];
    for (const row of due) {
      if (used < options.hourlyCap) {
        used++;
        this.#db.prepare(
          `UPDATE notices SET status = 'sending', attempts = attempts + 1,
           lease_until = ?, claimed_hour = ? WHERE id = ?`,
        ).run(now + options.leaseMs, hour, row.id);
        claimed.push(
          noticeFromRow({ ...row, attempts: row.attempts + 1 }),
        );
      } else if (row.kind !== "digest") {
        this.#db.prepare(
          "UPDATE notices SET status = 'held', hour = ? WHERE id = ?",
        ).run(hour, row.id);
      }
    }
    return claimed;
  }

  /** Records a send's outcome (inside a write). */
  settleNotice(id: number, outcome: NoticeOutcome, now: number): void {
    if (outcome.status === "sent") {
      this.#db.prepare(
        `UPDATE notices SET status = 'sent', sent_at = ?, lease_until = NULL,
         last_error = NULL WHERE id = ?`,
      ).run(now, id);
      return;
    }
    if (outcome.status === "failed") {
      this.#db.prepare(
        `UPDATE notices SET status = 'failed', lease_until = NULL, claimed_hour = NULL,
         last_error = ? WHERE id = ?`,
      ).run(outcome.error.slice(0, 500), id);
      return;
    }
    this.#db.prepare(
      `UPDATE notices SET status = 'pending', lease_until = NULL, claimed_hour = NULL,
       next_attempt_at = ?, last_error = ? WHERE id = ?`,
    ).run(outcome.at, outcome.error.slice(0, 500), id);
    if (outcome.pauseUntil !== undefined) {
      this.#db.prepare(
        "UPDATE slack_state SET paused_until = max(paused_until, ?) WHERE id = 1",
      ).run(outcome.pauseUntil);
    }
  }

  /** Every notice, oldest first. */
  listNotices(): NoticeRecord[] {
    const rows = this.#db.prepare(
      `SELECT id, kind, group_id, created_at, status, attempts, next_attempt_at,
         sent_at, last_error, data, hour FROM notices ORDER BY id`,
    ).all() as unknown as NoticeRow[];
    return rows.map((row) => ({
      ...noticeFromRow(row),
      status: row.status,
      nextAttemptAt: row.next_attempt_at,
      sentAt: row.sent_at,
      lastError: row.last_error,
    }));
  }
}

/**
 * A digest line for a held notice.
 *
 * @param data The held notice's data.
 * @returns The digest item.
 */
export function digestItem(data: NoticeData): DigestItem {
  if (data.kind === "digest") {
    return {
      kind: "new",
      groupId: 0,
      notebook: "",
      errorName: "digest",
      errorMessage: "",
      count: data.items.length,
    };
  }
  return {
    kind: data.kind,
    groupId: data.group.id,
    notebook: data.group.notebook,
    errorName: data.group.errorName,
    errorMessage: data.group.errorMessage,
    count: data.group.count,
  };
}

function groupFromRow(row: GroupRow): GroupSummary {
  return {
    id: row.id,
    notebook: row.notebook,
    fingerprint: row.fingerprint,
    errorName: row.error_name,
    errorMessage: row.error_message,
    count: row.count,
    sessions: row.sessions,
    firstSeen: row.first_seen,
    lastSeen: row.last_seen,
    state: row.state,
  };
}

function groupDetailFromRow(row: GroupDetailRow): GroupDetail {
  return {
    ...groupFromRow(row),
    latest: JSON.parse(row.latest) as ErrorPayload,
    firstLines: JSON.parse(row.first_lines) as string[],
    cellNumbers: JSON.parse(row.cell_numbers) as number[],
  };
}

function noticeFromRow(row: NoticeRow): OutboxNotice {
  return {
    id: row.id,
    kind: row.kind,
    groupId: row.group_id,
    createdAt: row.created_at,
    attempts: row.attempts,
    data: JSON.parse(row.data) as NoticeData,
  };
}

/** The columns `findGroup` reads. */
interface FoundGroupRow extends Omit<GroupRow, "notebook" | "fingerprint"> {
  first_lines: string;
  cell_numbers: string;
  last_notice_at: number | null;
  last_spike_hour: number | null;
}

function jsonArray(json: string): unknown[] {
  try {
    const parsed = JSON.parse(json);
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function batchGroupFromRow(
  row: FoundGroupRow,
  notebook: string,
  fingerprint: string,
): BatchGroup {
  return {
    id: row.id,
    notebook,
    fingerprint,
    errorName: row.error_name,
    errorMessage: row.error_message,
    count: row.count,
    sessions: row.sessions,
    firstSeen: row.first_seen,
    lastSeen: row.last_seen,
    state: row.state,
    firstLines: jsonArray(row.first_lines),
    firstLinesJson: row.first_lines,
    cellNumbers: jsonArray(row.cell_numbers),
    cellNumbersJson: row.cell_numbers,
    lastNoticeAt: row.last_notice_at,
    lastSpikeHour: row.last_spike_hour,
    hour: NaN,
    hourCount: undefined,
    dirty: false,
    addCount: 0,
    addSessions: 0,
    latest: undefined,
    reopenedAt: null,
  };
}

/** Counts a succeeded write's report in its cached group. */
function countInGroup(g: BatchGroup, r: StagedReport): void {
  const payload = r.latest;
  g.dirty = true;
  g.count++;
  g.addCount++;
  g.sessions += r.newSession;
  g.addSessions += r.newSession;
  if (r.now > g.lastSeen) g.lastSeen = r.now;
  g.errorName = payload.error_name;
  g.errorMessage = payload.error_message;
  g.latest = payload;
  if (
    g.firstLines.length < GROUP_LIMITS.firstLines &&
    !g.firstLines.includes(payload.first_line)
  ) {
    g.firstLines.push(payload.first_line);
    g.firstLinesJson = undefined;
  }
  const cell = payload.execution_count;
  if (
    cell !== null && g.cellNumbers.length < GROUP_LIMITS.cellNumbers &&
    !g.cellNumbers.includes(cell)
  ) {
    g.cellNumbers.push(cell);
    g.cellNumbersJson = undefined;
  }
  if (g.state === "resolved") {
    g.state = "open";
    g.reopenedAt = r.now;
  }
  if (r.notice !== undefined) {
    g.lastNoticeAt = r.notice.at;
    g.lastSpikeHour = r.notice.spikeHour ?? g.lastSpikeHour;
  }
}

function summaryOf(g: BatchGroup): GroupSummary {
  return {
    id: g.id,
    notebook: g.notebook,
    fingerprint: g.fingerprint,
    errorName: g.errorName,
    errorMessage: g.errorMessage,
    count: g.count,
    sessions: g.sessions,
    firstSeen: g.firstSeen,
    lastSeen: g.lastSeen,
    state: g.state,
  };
}
