/**
 * The embedded storage engine: one SQLite file through `node:sqlite`, in WAL
 * mode, with versioned migrations, prepared statements and group commit.
 *
 * Writes are queued and run together in one transaction per event-loop turn
 * (group commit), without a savepoint per write; when one fails, the
 * transaction is rolled back and the batch run again with a savepoint per
 * write, so one failing write never undoes another. A write's counts (per
 * day, per group and hour, its session's report count, its group's count
 * and latest report) join those in memory only once the write succeeded, and
 * are written behind the reports: with every 32nd batch or so, and before
 * anything that reads or changes them (see `#writeCounts`). Each group and
 * session is read once and written once for all the reports counted in
 * memory. After a crash or a rollback the reports stored after the recorded
 * `counted_through` are counted again from their rows. A write's promise
 * resolves after the COMMIT returned, so the HTTP layer acknowledges only
 * committed reports.
 *
 * A session's identical reports within the dedupe window are found in
 * memory (`_sqlite_dedupe_window.ts`, loaded from the table on first use and
 * kept as writes succeed), not through an index on the random payload hash.
 * Unlike the batch's in-memory state (which lives while the batch holds the
 * write lock), it outlives a batch, so it expects this storage to be the
 * only writer of reports to the file: a report stored meanwhile by another
 * connection is not recognised as the original of a duplicate.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import {
  type Checkpointer,
  startCheckpointer,
} from "./_sqlite_checkpointer.ts";
import type { ErrorPayload, TracebackFrame } from "../types.ts";
import {
  DedupeWindow,
  DEFAULT_DEDUPE_CAPACITY,
} from "./_sqlite_dedupe_window.ts";
import {
  SQLITE_GROUPING_INDEX_MIGRATION,
  SQLITE_GROUPING_MIGRATION,
  SqliteGrouping,
} from "./sqlite_grouping.ts";
import {
  type AddReportInput,
  type AddReportResult,
  type ClaimNoticesOptions,
  type DailyCount,
  type DailyCountQuery,
  type GroupDay,
  type GroupDetail,
  type GroupQuery,
  type GroupState,
  type GroupSummary,
  type NotebookSummary,
  type NotebookWindowStats,
  type NoticeOutcome,
  type NoticePolicy,
  type NoticeRecord,
  type OutboxNotice,
  type PageQuery,
  payloadHash,
  type PruneOptions,
  type PruneResult,
  type ReportQuery,
  type Storage,
  type StoredReport,
  type StoredUsage,
  utcDay,
} from "./storage.ts";

/**
 * One schema migration. Versions are applied in order, each in its own
 * transaction, and recorded in `schema_migrations`.
 *
 * @example Usage
 * ```ts
 * import { type Migration, SQLITE_MIGRATIONS } from "./sqlite_storage.ts";
 *
 * const latest: Migration = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]!;
 * console.log(latest.version);
 * ```
 */
export interface Migration {
  /** The version this migration brings the schema to (1, 2, …). */
  version: number;
  /** A short description. */
  name: string;
  /** The SQL that applies it. */
  sql: string;
}

/**
 * The SQLite schema's migrations, oldest first.
 *
 * @example Usage
 * ```ts
 * import { SQLITE_MIGRATIONS } from "./sqlite_storage.ts";
 *
 * console.log(SQLITE_MIGRATIONS.map((m) => m.name));
 * ```
 */
export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sessions, reports and per-day counts",
    sql: `
      CREATE TABLE usages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        notebook TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        report_count INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX usages_created_at ON usages (created_at);
      CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        usage_id INTEGER NOT NULL REFERENCES usages (id) ON DELETE CASCADE,
        notebook TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        occurrences INTEGER NOT NULL DEFAULT 1,
        payload_hash TEXT NOT NULL,
        error_name TEXT NOT NULL,
        error_message TEXT NOT NULL,
        traceback TEXT NOT NULL,
        first_line TEXT NOT NULL,
        execution_count INTEGER
      );
      CREATE INDEX reports_usage_hash ON reports (usage_id, payload_hash, created_at);
      CREATE INDEX reports_notebook_id ON reports (notebook, id);
      CREATE INDEX reports_created_at ON reports (created_at);
      CREATE TABLE daily_counts (
        notebook TEXT NOT NULL,
        day TEXT NOT NULL,
        reports INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (notebook, day)
      ) WITHOUT ROWID;
      CREATE INDEX daily_counts_day ON daily_counts (day);
    `,
  },
  SQLITE_GROUPING_MIGRATION,
  SQLITE_GROUPING_INDEX_MIGRATION,
  {
    // PostgreSQL's batch function changed; SQLite groups in TypeScript, so
    // this version only keeps both engines' versions aligned.
    version: 4,
    name: "each group locked and written once per batch",
    sql: "",
  },
  {
    // PostgreSQL's batch function changed again; nothing to do on SQLite.
    version: 5,
    name:
      "batch groups numbered by the client, latest payload built once per group",
    sql: "",
  },
  {
    // Duplicates are found in memory (_sqlite_dedupe_window.ts): the index
    // keyed by the random payload hash cost a random leaf page write per
    // report at commit.
    version: 6,
    name: "duplicates found without the (session, payload hash) index",
    sql: "DROP INDEX reports_usage_hash;",
  },
  {
    // Version 6 dropped the only index that led with usage_id: reading a
    // session's reports (GET /usages/<uuid>) and deleting the sessions that
    // pruning expires (NOT EXISTS, then ON DELETE CASCADE for each) then
    // read the whole reports table, on the event loop. Appended in session
    // order, the index costs about one leaf page per commit.
    version: 7,
    name: "a session's reports found through an index on the session",
    sql: "CREATE INDEX reports_usage ON reports (usage_id);",
  },
  {
    // Counts (per day, group, hour, session) are written once per several
    // batches (see SqliteStorage): this row says which reports they
    // include, so that those stored after it can be counted again after a
    // crash. At this version every report is counted.
    version: 8,
    name: "counts written behind the reports, up to a recorded report",
    sql: `
      CREATE TABLE counted_through (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        report_id INTEGER NOT NULL
      );
      INSERT INTO counted_through (id, report_id)
        SELECT 1, coalesce(max(id), 0) FROM reports;
    `,
  },
  {
    // Its leaf pages (often two with a split) were written at every commit.
    // Pruning and the duplicate finder's load go in arrival (id) order
    // instead, and stop at the first report that does not qualify.
    version: 9,
    name: "reports pruned in arrival order, without the index on created_at",
    sql: "DROP INDEX reports_created_at;",
  },
];

/**
 * Options of {@linkcode openSqliteStorage}.
 *
 * @example Usage
 * ```ts
 * import type { SqliteStorageOptions } from "./sqlite_storage.ts";
 *
 * const options: SqliteStorageOptions = { synchronous: "full" };
 * ```
 */
export interface SqliteStorageOptions {
  /**
   * SQLite's `synchronous` setting. With the write-ahead log, `normal`
   * makes every acknowledged report survive a crash of the process (it is
   * in the log before the answer) but not a power loss or a crash of the
   * operating system, which can lose the last reports acknowledged (never
   * corrupt the file); `full` also survives those, at the cost of an fsync
   * per commit, which takes a good part of the throughput (`deno task bench
   * ingest` measures both).
   * @default {"normal"}
   */
  synchronous?: "full" | "normal";
  /** Writes committed in one transaction at most. @default {1000} */
  maxBatch?: number;
  /**
   * When set, reports queue Slack notices in the outbox (new groups,
   * regressions, spikes) in the same transaction. @default {undefined}
   */
  notices?: NoticePolicy;
  /**
   * Group reports (fingerprint, group counts, notices). `false` stores bare
   * reports only: for measuring what grouping costs. @default {true}
   */
  grouping?: boolean;
  /**
   * The most reports the in-memory duplicate finder remembers (the latest
   * of each session's distinct payloads within the dedupe window), an
   * integer of at least 2. Past it the older half is forgotten at once (the
   * newest half is always remembered), so in a flood of more distinct
   * reports than this within one window, a repeat of a forgotten one is
   * stored again instead of counted. @default {100000}
   */
  dedupeCapacity?: number;
  /**
   * How long the counts of stored reports (per day, per group and hour, per
   * session) may stay in memory, unwritten: at most this many batches, and
   * this many ms after the first batch that left them. Writing them costs
   * about as much as a batch's reports; after a crash, the reports stored
   * since are counted again when the file is opened, so a longer wait only
   * makes that step longer. @default {{ batches: 32, ms: 100 }}
   */
  countsEvery?: { batches: number; ms: number };
}

interface QueuedWrite {
  // deno-lint-ignore no-explicit-any
  run: () => any;
  /**
   * The write is not a report's: the unwritten counts are written before
   * it runs (outside its savepoint), and its batch writes them again before
   * COMMIT.
   */
  flushFirst: boolean;
  // deno-lint-ignore no-explicit-any
  resolve: (value: any) => void;
  reject: (reason: unknown) => void;
}

/** How often the checkpoint worker copies the WAL into the database file. */
const CHECKPOINT_INTERVAL_MS = 200;
/** SQLite's default automatic checkpoint, in WAL pages. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;
/** The automatic checkpoint while the worker checkpoints (about 40 MiB of WAL). */
const BACKSTOP_AUTOCHECKPOINT_PAGES = 10_000;
/** Counts are written at the latest with every this many batches… */
const COUNTS_EVERY_BATCHES = 32;
/** …or this many ms after the first batch that did not write them. */
const COUNTS_EVERY_MS = 100;

/** A session as the open batch's succeeded writes left it. */
interface BatchSession {
  id: number;
  notebook: string;
  /** Its reports, the unwritten included. */
  reportCount: number;
  /** Its reports not written to its row yet. */
  added: number;
  /** The latest of them's time. */
  lastReportAt: number;
}

interface UsageRow {
  id: number;
  uuid: string;
  notebook: string;
  created_at: number;
  report_count: number;
}

/** The columns of a report row that hold its payload. */
interface PayloadColumns {
  notebook: string;
  error_name: string;
  error_message: string;
  traceback: string;
  first_line: string;
  execution_count: number | null;
}

interface UncountedRow extends PayloadColumns {
  uuid: string;
  created_at: number;
  group_id: number | null;
}

interface ReportRow extends PayloadColumns {
  id: number;
  usage_uuid: string;
  created_at: number;
  last_seen_at: number;
  occurrences: number;
}

const REPORT_COLUMNS = `r.id, u.uuid AS usage_uuid, r.notebook, r.created_at,
  r.last_seen_at, r.occurrences, r.error_name, r.error_message, r.traceback,
  r.first_line, r.execution_count`;

/**
 * Opens (creating if needed) a SQLite store and brings its schema up to date.
 *
 * @param path The database file, or `:memory:`.
 * @param options Durability and batching.
 * @returns The store.
 * @throws {Error} When the file is not a database or its schema is newer than this code.
 *
 * @example Usage
 * ```ts
 * import { openSqliteStorage } from "./sqlite_storage.ts";
 *
 * const storage = await openSqliteStorage(":memory:");
 * const usage = await storage.createUsage("demo", Date.now());
 * console.log(usage.uuid.length); // 32
 * await storage.close();
 * ```
 */
export function openSqliteStorage(
  path: string,
  options: SqliteStorageOptions = {},
): Promise<SqliteStorage> {
  return Promise.resolve(new SqliteStorage(path, options));
}

/**
 * The SQLite implementation of {@linkcode Storage}. Use
 * {@linkcode openSqliteStorage} to create one.
 *
 * @example Usage
 * ```ts
 * import { SqliteStorage } from "./sqlite_storage.ts";
 *
 * const storage = new SqliteStorage(":memory:");
 * console.log(storage.schemaVersion); // 9
 * await storage.close();
 * ```
 */
export class SqliteStorage implements Storage {
  /** The engine's name. */
  readonly engine = "sqlite";
  #db: DatabaseSync;
  #queue: QueuedWrite[] = [];
  #scheduled = false;
  #closed = false;
  #maxBatch: number;
  #statements: Record<string, StatementSync> = {};
  /**
   * Per-day counts of succeeded writes not written yet (see
   * {@linkcode #writeCounts}).
   */
  #counts = new Map<
    string,
    { notebook: string; day: string; reports: number; sessions: number }
  >();
  /** The running write's per-day count, added to `#counts` once it succeeded. */
  #staged:
    | { notebook: string; now: number; reports: number; sessions: number }
    | undefined;
  #grouping: SqliteGrouping;
  #dedupe: DedupeWindow;
  /** Sessions read or claimed since the counts were last written, by uuid. */
  #sessions = new Map<string, BatchSession>();
  /** The running write's claim, added to `#sessions` once it succeeded. */
  #claimed: { session: BatchSession; now: number } | undefined;
  #checkpointer: Checkpointer | undefined;
  /** Committed reports' counts are not all written. */
  #unwritten = false;
  /** Batches committed since the counts were last written. */
  #batchesSinceCounts = 0;
  /** When (`performance.now()`) the first of them committed. */
  #unwrittenSince = 0;
  #countsTimer: ReturnType<typeof setTimeout> | undefined;
  /** {@linkcode #recount} failed: it runs again before the next write or read. */
  #recountDue = false;
  #countsEvery: { batches: number; ms: number };
  /**
   * The open batch ran a write whose counts cannot be counted again from
   * its report row: it writes the counts before COMMIT.
   */
  #mustWriteCounts = false;

  /**
   * Opens the database and migrates it.
   *
   * @param path The database file, or `:memory:`.
   * @param options Durability and batching.
   * @throws {Error} When the file is not a database or its schema is newer than this code.
   */
  constructor(path: string, options: SqliteStorageOptions = {}) {
    this.#maxBatch = options.maxBatch ?? 1000;
    const every = options.countsEvery ??
      { batches: COUNTS_EVERY_BATCHES, ms: COUNTS_EVERY_MS };
    if (!(every.batches >= 1 && every.ms >= 0)) {
      throw new RangeError(
        `countsEvery must be at least 1 batch and 0 ms, got ${
          JSON.stringify(every)
        }`,
      );
    }
    this.#countsEvery = { ...every };
    const dedupeCapacity = options.dedupeCapacity ?? DEFAULT_DEDUPE_CAPACITY;
    if (!(Number.isSafeInteger(dedupeCapacity) && dedupeCapacity >= 2)) {
      throw new RangeError(
        `dedupeCapacity must be an integer of at least 2, got ${dedupeCapacity}`,
      );
    }
    this.#db = new DatabaseSync(path);
    const synchronous = options.synchronous ?? "normal";
    this.#db.exec(`
      PRAGMA busy_timeout = 5000;
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = ${synchronous === "full" ? "FULL" : "NORMAL"};
      PRAGMA foreign_keys = ON;
      PRAGMA cache_size = -16000;
      PRAGMA temp_store = MEMORY;
    `);
    this.#migrate();
    this.#prepare();
    this.#dedupe = new DedupeWindow(this.#db, dedupeCapacity);
    this.#grouping = new SqliteGrouping(
      this.#db,
      options.notices,
      options.grouping ?? true,
    );
    // Reports a crash left uncounted.
    this.#recount();
    this.#writeUnwrittenCounts();
    this.#startCheckpointer();
  }

  /**
   * Moves checkpoints (copying the WAL into the database file, with its
   * fsyncs) to a worker thread with its own connection: committing then
   * only appends to the WAL. SQLite's own automatic checkpoint stays as a
   * backstop at a larger size, and comes back if the worker fails.
   */
  #startCheckpointer(): void {
    const main = (this.#db.prepare("PRAGMA database_list").all() as {
      name: string;
      file: string;
    }[]).find((row) => row.name === "main");
    const mode = (this.#db.prepare("PRAGMA journal_mode").get() as {
      journal_mode: string;
    }).journal_mode;
    if (!main?.file || mode !== "wal") return;
    const setAutocheckpoint = (pages: number) => {
      if (this.#closed) return;
      try {
        this.#db.exec(`PRAGMA wal_autocheckpoint = ${pages}`);
      } catch { /* closing */ }
    };
    try {
      this.#checkpointer = startCheckpointer(main.file, {
        intervalMs: CHECKPOINT_INTERVAL_MS,
        onReady: () => setAutocheckpoint(BACKSTOP_AUTOCHECKPOINT_PAGES),
        onFailure: () => setAutocheckpoint(DEFAULT_AUTOCHECKPOINT_PAGES),
      });
    } catch {
      this.#checkpointer = undefined;
    }
  }

  /** The schema version the database is at. */
  get schemaVersion(): number {
    const row = this.#db.prepare(
      "SELECT max(version) AS v FROM schema_migrations",
    ).get() as { v: number | null };
    return row.v ?? 0;
  }

  #migrate(): void {
    this.#db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied_at INTEGER NOT NULL
    )`);
    const current = this.schemaVersion;
    const known = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]!.version;
    if (current > known) {
      throw new Error(
        `Cannot open database: its schema version is ${current}, newer than this server's ${known}`,
      );
    }
    for (const migration of SQLITE_MIGRATIONS) {
      if (migration.version <= current) continue;
      this.#db.exec("BEGIN IMMEDIATE");
      try {
        this.#db.exec(migration.sql);
        this.#db.prepare(
          "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        ).run(migration.version, migration.name, Date.now());
        this.#db.exec("COMMIT");
      } catch (error) {
        this.#db.exec("ROLLBACK");
        throw error;
      }
    }
  }

  #prepare(): void {
    const sql: Record<string, string> = {
      insertUsage:
        "INSERT INTO usages (uuid, notebook, created_at) VALUES (?, ?, ?) RETURNING id",
      usageByUuid:
        "SELECT id, uuid, notebook, created_at, report_count FROM usages WHERE uuid = ?",
      addCounts:
        `INSERT INTO daily_counts (notebook, day, reports, sessions) VALUES (?, ?, ?, ?)
        ON CONFLICT (notebook, day) DO UPDATE
        SET reports = reports + excluded.reports, sessions = sessions + excluded.sessions`,
      addClaims:
        "UPDATE usages SET report_count = report_count + ?, last_report_at = ? WHERE id = ?",
      bumpDuplicate:
        "UPDATE reports SET occurrences = occurrences + 1, last_seen_at = ? WHERE id = ?",
      oldestReports: "SELECT id, created_at FROM reports ORDER BY id LIMIT ?",
      deleteReportsThrough: "DELETE FROM reports WHERE id <= ?",
      insertReport:
        `INSERT INTO reports (usage_id, notebook, created_at, last_seen_at,
        payload_hash, error_name, error_message, traceback, first_line, execution_count,
        group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      reportById:
        `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id WHERE r.id = ?`,
      listUsages:
        "SELECT id, uuid, notebook, created_at, report_count FROM usages ORDER BY id LIMIT ? OFFSET ?",
      countedThrough: "SELECT report_id FROM counted_through",
      setCountedThrough:
        "UPDATE counted_through SET report_id = (SELECT coalesce(max(id), 0) FROM reports)",
      uncounted:
        `SELECT u.uuid, r.notebook, r.created_at, r.group_id, r.error_name,
        r.error_message, r.traceback, r.first_line, r.execution_count
        FROM reports r JOIN usages u ON u.id = r.usage_id
        WHERE r.id > ? ORDER BY r.id`,
      savepoint: "SAVEPOINT w",
      release: "RELEASE w",
      rollbackTo: "ROLLBACK TO w",
    };
    for (const [name, text] of Object.entries(sql)) {
      this.#statements[name] = this.#db.prepare(text);
    }
  }

  #st(name: string): StatementSync {
    return this.#statements[name]!;
  }

  /**
   * Queues a write for the next batch. `flushFirst` is `false` only for a
   * report's write: its counts can wait (see {@linkcode #writeCounts}).
   */
  #write<T>(run: () => T, flushFirst = true): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new Error("Cannot write: the storage is closed"));
    }
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ run, resolve, reject, flushFirst });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch);
      // Writes almost never fail: run the batch without a savepoint per
      // write, and only when one fails roll it all back and run it again
      // with one (a single write's failure is its own answer).
      let outcomes = this.#runBatch(batch, false);
      if (outcomes === "retry") outcomes = this.#runBatch(batch, true);
      if (outcomes === "retry" || outcomes === "failed") continue;
      batch.forEach((write, i) => {
        const outcome = outcomes[i]!;
        if (outcome.ok) write.resolve(outcome.value);
        else write.reject(outcome.value);
      });
    }
  }

  /**
   * Runs a batch of writes in one transaction and commits it. With
   * `isolated`, each write runs in its own savepoint (a failing write is
   * undone alone); without, a failing write of a batch of several rolls the
   * transaction back and answers `"retry"`. `"failed"`: every write was
   * rejected.
   */
  #runBatch(
    batch: QueuedWrite[],
    isolated: boolean,
  ): { ok: boolean; value: unknown }[] | "retry" | "failed" {
    const outcomes: { ok: boolean; value: unknown }[] = [];
    if (this.#recountDue) this.#recount();
    try {
      this.#db.exec("BEGIN IMMEDIATE");
    } catch (error) {
      for (const write of batch) write.reject(error);
      return "failed";
    }
    this.#mustWriteCounts = false;
    const savepoint = this.#st("savepoint");
    const release = this.#st("release");
    for (const write of batch) {
      if (write.flushFirst) {
        try {
          this.#writeCounts();
          this.#mustWriteCounts = true;
        } catch (error) {
          this.#rollback();
          for (const write of batch) write.reject(error);
          return "failed";
        }
      }
      if (!isolated) {
        try {
          outcomes.push({ ok: true, value: write.run() });
          this.#commitWrite();
        } catch (error) {
          this.#rollback();
          if (batch.length > 1) return "retry";
          write.reject(error);
          return "failed";
        }
        continue;
      }
      savepoint.run();
      try {
        const value = write.run();
        release.run();
        this.#commitWrite();
        outcomes.push({ ok: true, value });
      } catch (error) {
        // Its statements are undone: so are its counts.
        this.#staged = undefined;
        this.#claimed = undefined;
        this.#grouping.discardWrite();
        this.#dedupe.discardWrite();
        try {
          this.#st("rollbackTo").run();
          release.run();
        } catch (rollbackError) {
          // SQLite already rolled the whole transaction back.
          this.#rollback();
          for (const write of batch) write.reject(rollbackError);
          return "failed";
        }
        outcomes.push({ ok: false, value: error });
      }
    }
    const writeCounts = this.#mustWriteCounts || this.#grouping.mustWrite ||
      this.#batchesSinceCounts + 1 >= this.#countsEvery.batches ||
      (this.#unwritten &&
        performance.now() - this.#unwrittenSince >= this.#countsEvery.ms);
    try {
      if (writeCounts) this.#writeCounts();
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#rollback();
      for (const write of batch) write.reject(error);
      return "failed";
    }
    if (writeCounts) this.#countsWritten();
    else this.#countsLeftUnwritten();
    this.#dedupe.commitBatch();
    return outcomes;
  }

  /**
   * Writes the counts (per day, per group and hour, per session) of every
   * committed report and of the open batch's succeeded writes, and records
   * the last report they include, inside the open transaction.
   *
   * A batch of reports only appends rows to `reports` and its indexes when
   * it leaves its counts unwritten: writing them touches another nine or so
   * pages (a group's row and its three indexes, a session's row, four
   * tables of counts), which cost more than the batch's reports at COMMIT.
   * So they are written with every 32nd batch or 100 ms after the first
   * batch that left them (`countsEvery`), before any other write and any
   * read that returns counts, and on close.
   * Until then they are kept in memory, where writes see them (a session's
   * cap, a group's hourly count). After a crash or a rollback,
   * {@linkcode #recount} counts the reports after `counted_through` again.
   * A write whose counts cannot be counted again from its report row (a
   * duplicate, a new session or group, a reopened group, any write that is
   * not a report) writes them in its own batch.
   */
  #writeCounts(): void {
    for (const count of this.#counts.values()) {
      this.#st("addCounts").run(
        count.notebook,
        count.day,
        count.reports,
        count.sessions,
      );
    }
    this.#counts.clear();
    this.#flushSessions();
    this.#grouping.flushCounts();
    this.#st("setCountedThrough").run();
  }

  /** The counts were committed. */
  #countsWritten(): void {
    this.#unwritten = false;
    this.#batchesSinceCounts = 0;
    if (this.#countsTimer !== undefined) {
      clearTimeout(this.#countsTimer);
      this.#countsTimer = undefined;
    }
  }

  /** A batch committed without writing the counts. */
  #countsLeftUnwritten(): void {
    if (!this.#unwritten) {
      this.#unwritten = true;
      this.#unwrittenSince = performance.now();
    }
    this.#batchesSinceCounts++;
    if (this.#countsTimer === undefined) {
      const timer = setTimeout(() => {
        this.#countsTimer = undefined;
        this.#writeUnwrittenCounts();
      }, this.#countsEvery.ms);
      Deno.unrefTimer(timer);
      this.#countsTimer = timer;
    }
  }

  /**
   * Writes the unwritten counts in a transaction of their own (reads that
   * return counts, the timer, close); on failure they stay in memory and
   * the timer tries again.
   */
  #writeUnwrittenCounts(): void {
    if (this.#recountDue) this.#recount();
    if (!this.#unwritten || this.#closed) return;
    try {
      this.#db.exec("BEGIN IMMEDIATE");
    } catch {
      this.#countsLeftUnwritten();
      return;
    }
    try {
      this.#writeCounts();
      this.#db.exec("COMMIT");
      this.#countsWritten();
    } catch {
      this.#rollback();
      if (this.#unwritten) this.#countsLeftUnwritten();
    }
  }

  /**
   * Forgets the counts kept in memory and counts again, from their rows,
   * the reports stored after the last ones the tables include (see
   * {@linkcode #writeCounts}): on open, after a crash, and after a
   * rollback (which undid the counts it was writing).
   */
  #recount(): void {
    this.#recountDue = false;
    this.#forgetCounts();
    let rows: UncountedRow[];
    try {
      const through = (this.#st("countedThrough").get() as {
        report_id: number;
      }).report_id;
      rows = this.#st("uncounted").all(through) as unknown as UncountedRow[];
      for (const row of rows) {
        // Claimed again, without a cap: it was claimed when stored.
        this.#claim(row.uuid, Infinity, row.created_at);
        this.#count(row.notebook, row.created_at, 1, 0);
        if (row.group_id !== null) {
          this.#grouping.recount({
            groupId: row.group_id,
            notebook: row.notebook,
            now: row.created_at,
            payload: payloadFromRow(row),
          });
        }
        this.#commitWrite();
      }
    } catch {
      // Try again before the next write or read.
      this.#forgetCounts();
      this.#recountDue = true;
      return;
    }
    if (rows.length > 0) {
      this.#unwritten = false;
      this.#countsLeftUnwritten();
    } else {
      this.#countsWritten();
    }
  }

  /** Forgets the counts kept in memory and the running write's. */
  #forgetCounts(): void {
    this.#staged = undefined;
    this.#claimed = undefined;
    this.#counts.clear();
    this.#sessions.clear();
    this.#grouping.rollbackBatch();
  }

  /** Adds the write that just succeeded to the batch's pending counts. */
  #commitWrite(): void {
    const staged = this.#staged;
    if (staged !== undefined) {
      this.#staged = undefined;
      const day = utcDay(staged.now);
      const key = `${day}\u0000${staged.notebook}`;
      const count = this.#counts.get(key);
      if (count) {
        count.reports += staged.reports;
        count.sessions += staged.sessions;
      } else {
        this.#counts.set(key, {
          notebook: staged.notebook,
          day,
          reports: staged.reports,
          sessions: staged.sessions,
        });
      }
    }
    const claimed = this.#claimed;
    if (claimed !== undefined) {
      this.#claimed = undefined;
      claimed.session.reportCount++;
      claimed.session.added++;
      claimed.session.lastReportAt = claimed.now;
    }
    this.#grouping.commitWrite();
    this.#dedupe.commitWrite();
  }

  /**
   * Claims a report of the session under its cap, in memory (written by
   * {@linkcode #flushSessions}). Counted only once the write succeeded.
   */
  #claim(
    uuid: string,
    max: number,
    now: number,
  ): BatchSession | "limit" | undefined {
    let session = this.#sessions.get(uuid);
    if (session === undefined) {
      const usage = this.#st("usageByUuid").get(uuid) as UsageRow | undefined;
      if (usage === undefined) return undefined;
      // Read, not changed: later writes may rely on it whatever this one does.
      session = {
        id: usage.id,
        notebook: usage.notebook,
        reportCount: usage.report_count,
        added: 0,
        lastReportAt: now,
      };
      this.#sessions.set(uuid, session);
    }
    if (session.reportCount >= max) return "limit";
    this.#claimed = { session, now };
    return session;
  }

  /** Writes the in-memory session claims and forgets the sessions. */
  #flushSessions(): void {
    if (this.#sessions.size === 0) return;
    const update = this.#st("addClaims");
    for (const session of this.#sessions.values()) {
      if (session.added > 0) {
        update.run(session.added, session.lastReportAt, session.id);
      }
    }
    this.#sessions.clear();
  }

  /**
   * Rolls the open transaction back, and the counts in memory to those of
   * the committed reports.
   */
  #rollback(): void {
    this.#dedupe.rollbackBatch();
    try {
      this.#db.exec("ROLLBACK");
    } catch { /* already rolled back */ }
    this.#recount();
  }

  /**
   * Sets the running write's per-day count (at most one per write), added to
   * the batch's only when the write succeeded.
   */
  #count(
    notebook: string,
    now: number,
    reports: number,
    sessions: number,
  ): void {
    this.#staged = { notebook, now, reports, sessions };
  }

  /** Creates a session for a notebook and counts it for the day. */
  createUsage(notebook: string, now: number): Promise<StoredUsage> {
    return this.#write(() => {
      const uuid = crypto.randomUUID().replaceAll("-", "");
      const row = this.#st("insertUsage").get(uuid, notebook, now) as {
        id: number;
      };
      this.#count(notebook, now, 0, 1);
      return { id: row.id, uuid, notebook, createdAt: now, reportCount: 0 };
    });
  }

  /** The session with this uuid, or `undefined`. */
  getUsage(uuid: string): Promise<StoredUsage | undefined> {
    this.#writeUnwrittenCounts();
    const row = this.#st("usageByUuid").get(uuid) as UsageRow | undefined;
    return Promise.resolve(row ? usageFromRow(row) : undefined);
  }

  /** A page of sessions, oldest first. */
  listUsages(query: PageQuery): Promise<StoredUsage[]> {
    this.#writeUnwrittenCounts();
    const rows = this.#st("listUsages").all(
      query.limit,
      query.skip,
    ) as unknown as UsageRow[];
    return Promise.resolve(rows.map(usageFromRow));
  }

  /** Stores a report (or counts a duplicate) in one transaction. */
  addReport(input: AddReportInput): Promise<AddReportResult> {
    const hash = payloadHash(input.payload);
    const traceback = JSON.stringify(input.payload.traceback);
    return this.#write((): AddReportResult => {
      const now = input.now;
      const usage = this.#claim(
        input.usageUuid,
        input.maxReportsPerSession,
        now,
      );
      if (usage === undefined) return { status: "unknown-session" };
      if (usage === "limit") {
        return { status: "session-limit", limit: input.maxReportsPerSession };
      }
      const group = this.#grouping.record({
        usageId: usage.id,
        notebook: usage.notebook,
        payload: input.payload,
        now,
      });
      const key = DedupeWindow.key(usage.id, hash);
      const duplicate = this.#countDuplicate(
        key,
        now - input.dedupeWindowMs,
        now,
      );
      if (duplicate !== undefined) {
        // Its count is in no row of its own: written with this batch.
        this.#mustWriteCounts = true;
        const report = this.#reportById(duplicate);
        this.#count(usage.notebook, now, 1, 0);
        return { status: "duplicate", report, group };
      }
      const p = input.payload;
      // run() and its rowid: RETURNING costs a few µs more per report.
      const id = Number(
        this.#st("insertReport").run(
          usage.id,
          usage.notebook,
          now,
          now,
          hash,
          p.error_name,
          p.error_message,
          traceback,
          p.first_line,
          p.execution_count,
          group?.id ?? null,
        ).lastInsertRowid,
      );
      this.#dedupe.stage(key, id, now);
      this.#count(usage.notebook, now, 1, 0);
      return {
        status: "stored",
        group,
        report: {
          id,
          usageUuid: input.usageUuid,
          createdAt: now,
          lastSeenAt: now,
          occurrences: 1,
          error_name: p.error_name,
          error_message: p.error_message,
          traceback: p.traceback,
          first_line: p.first_line,
          execution_count: p.execution_count,
          notebook: usage.notebook,
        },
      };
    }, false);
  }

  /**
   * Counts an occurrence of the session's latest report with this payload
   * created after `cutoff`, and returns its id; `undefined` when there is
   * none. Should the finder name a row deleted behind its back (no row
   * counted), it reloads from the table and tries once more.
   */
  #countDuplicate(
    key: string,
    cutoff: number,
    now: number,
  ): number | undefined {
    const bump = this.#st("bumpDuplicate");
    for (let attempt = 0; attempt < 2; attempt++) {
      const found = this.#dedupe.find(key, cutoff);
      if (found === undefined) return undefined;
      if (Number(bump.run(now, found.id).changes) > 0) return found.id;
      this.#dedupe.forget();
    }
    return undefined;
  }

  #reportById(id: number): StoredReport {
    return reportFromRow(
      this.#st("reportById").get(id) as unknown as ReportRow,
    );
  }

  /** The reports of the sessions with these uuids, oldest first. */
  listUsageReports(uuids: string[]): Promise<StoredReport[]> {
    if (uuids.length === 0) return Promise.resolve([]);
    const rows = this.#db.prepare(
      `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id
       WHERE u.uuid IN (${uuids.map(() => "?").join(", ")}) ORDER BY r.id`,
    ).all(...uuids) as unknown as ReportRow[];
    return Promise.resolve(rows.map(reportFromRow));
  }

  /** A page of reports. */
  listReports(query: ReportQuery): Promise<StoredReport[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.notebook !== undefined) {
      where.push("r.notebook = ?");
      params.push(query.notebook);
    }
    if (query.since !== undefined) {
      where.push("r.created_at >= ?");
      params.push(query.since);
    }
    if (query.until !== undefined) {
      where.push("r.created_at < ?");
      params.push(query.until);
    }
    const order = query.order === "desc" ? "DESC" : "ASC";
    const rows = this.#db.prepare(
      `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id
       ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY r.id ${order} LIMIT ? OFFSET ?`,
    ).all(...params, query.limit, query.skip) as unknown as ReportRow[];
    return Promise.resolve(rows.map(reportFromRow));
  }

  /** Per-day counts, ordered by day then notebook. */
  dailyCounts(query: DailyCountQuery): Promise<DailyCount[]> {
    this.#writeUnwrittenCounts();
    const params: string[] = [query.fromDay, query.toDay];
    let filter = "";
    if (query.notebook !== undefined) {
      filter = "AND notebook = ?";
      params.push(query.notebook);
    }
    const rows = this.#db.prepare(
      `SELECT day, notebook, reports, sessions FROM daily_counts
       WHERE day >= ? AND day <= ? ${filter} ORDER BY day, notebook`,
    ).all(...params) as unknown as DailyCount[];
    return Promise.resolve(rows.map((row) => ({ ...row })));
  }

  /** Every notebook with its totals, by name. */
  notebooks(): Promise<NotebookSummary[]> {
    this.#writeUnwrittenCounts();
    const rows = this.#db.prepare(
      `SELECT c.notebook AS notebook, sum(c.reports) AS reports,
         sum(c.sessions) AS sessions,
         (SELECT r.created_at FROM reports r WHERE r.notebook = c.notebook
           ORDER BY r.id DESC LIMIT 1) AS last
       FROM daily_counts c GROUP BY c.notebook ORDER BY c.notebook`,
    ).all() as unknown as {
      notebook: string;
      reports: number;
      sessions: number;
      last: number | null;
    }[];
    return Promise.resolve(rows.map((row) => ({
      notebook: row.notebook,
      reports: row.reports,
      sessions: row.sessions,
      lastReportAt: row.last,
    })));
  }

  /** The bytes of data in the file (pages in use, free pages excluded). */
  get dataBytes(): number {
    const pageSize = (this.#db.prepare("PRAGMA page_size").get() as {
      page_size: number;
    }).page_size;
    const pages = (this.#db.prepare("PRAGMA page_count").get() as {
      page_count: number;
    }).page_count;
    const free = (this.#db.prepare("PRAGMA freelist_count").get() as {
      freelist_count: number;
    }).freelist_count;
    return (pages - free) * pageSize;
  }

  /** Deletes old raw reports and enforces the size cap; per-day counts stay. */
  async prune(options: PruneOptions): Promise<PruneResult> {
    const cutoff = options.now - options.maxAgeMs;
    const chunk = 5000;
    let expiredReports = 0;
    for (;;) {
      const deleted = await this.#write(() => {
        // In arrival order, a chunk at a time from the oldest, up to the
        // first report not expired: one stored after it with an earlier
        // time (the clock stepped back) waits until that one expires too.
        const oldest = this.#st("oldestReports").all(chunk) as {
          id: number;
          created_at: number;
        }[];
        let expired = 0;
        while (
          expired < oldest.length && oldest[expired]!.created_at < cutoff
        ) expired++;
        if (expired === 0) return 0;
        const n = Number(
          this.#st("deleteReportsThrough").run(oldest[expired - 1]!.id)
            .changes,
        );
        if (n > 0) this.#dedupe.forgetBefore(cutoff);
        return n;
      });
      expiredReports += deleted;
      if (deleted < chunk) break;
    }
    await this.#write(() => this.#grouping.prune(options.now));
    const expiredUsages = await this.#write(
      () =>
        Number(
          this.#db.prepare(
            `DELETE FROM usages WHERE created_at < ?
           AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.usage_id = usages.id)`,
          ).run(cutoff).changes,
        ),
      true,
    );
    let evictedReports = 0;
    while (this.dataBytes > options.maxBytes) {
      const total = (this.#db.prepare("SELECT count(*) AS n FROM reports")
        .get() as { n: number }).n;
      if (total === 0) break;
      const n = Math.max(100, Math.min(chunk, Math.ceil(total / 20)));
      evictedReports += await this.#write(() => {
        // The n first to arrive, as pruning by age goes.
        const oldest = this.#st("oldestReports").all(n) as { id: number }[];
        if (oldest.length === 0) return 0;
        const evicted = Number(
          this.#st("deleteReportsThrough").run(oldest[oldest.length - 1]!.id)
            .changes,
        );
        if (evicted > 0) this.#dedupe.forget();
        return evicted;
      });
    }
    return {
      expiredReports,
      expiredUsages,
      evictedReports,
      bytes: this.dataBytes,
    };
  }

  /** A page of a notebook's groups, with the total that match. */
  listGroups(
    query: GroupQuery,
  ): Promise<{ total: number; groups: GroupSummary[] }> {
    this.#writeUnwrittenCounts();
    return Promise.resolve(this.#grouping.listGroups(query));
  }

  /** One group with its details, or `undefined`. */
  getGroup(id: number): Promise<GroupDetail | undefined> {
    this.#writeUnwrittenCounts();
    return Promise.resolve(this.#grouping.getGroup(id));
  }

  /** Per-day counts of these groups, by group then day. */
  groupDailyCounts(
    groupIds: number[],
    fromDay: string,
    toDay: string,
  ): Promise<GroupDay[]> {
    this.#writeUnwrittenCounts();
    return Promise.resolve(
      this.#grouping.groupDailyCounts(groupIds, fromDay, toDay),
    );
  }

  /** Every notebook with its groups and recent reports and sessions. */
  notebookWindowStats(now: number): Promise<NotebookWindowStats[]> {
    this.#writeUnwrittenCounts();
    return Promise.resolve(this.#grouping.notebookWindowStats(now));
  }

  /** Sets a group's state; `false` when there is no such group. */
  setGroupState(id: number, state: GroupState, now: number): Promise<boolean> {
    return this.#write(
      () => this.#grouping.setGroupState(id, state, now),
      true,
    );
  }

  /** Deletes a group and its raw reports; `false` when there is no such group. */
  deleteGroup(id: number): Promise<boolean> {
    return this.#write(() => {
      const deleted = this.#grouping.deleteGroup(id);
      // Its reports went too.
      if (deleted) this.#dedupe.forget();
      return deleted;
    }, true);
  }

  /** Claims due Slack notices under the hourly budget. */
  claimNotices(options: ClaimNoticesOptions): Promise<OutboxNotice[]> {
    return this.#write(() => this.#grouping.claimNotices(options));
  }

  /** Records the outcome of sending a notice. */
  settleNotice(id: number, outcome: NoticeOutcome, now: number): Promise<void> {
    return this.#write(() => this.#grouping.settleNotice(id, outcome, now));
  }

  /** Every notice in the outbox, oldest first. */
  listNotices(): Promise<NoticeRecord[]> {
    this.#writeUnwrittenCounts();
    return Promise.resolve(this.#grouping.listNotices());
  }

  /** Resolves when the database answers a trivial query. */
  ping(): Promise<void> {
    this.#db.prepare("SELECT 1").get();
    return Promise.resolve();
  }

  /** Commits pending writes, checkpoints the WAL and closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#writeUnwrittenCounts();
    if (this.#countsTimer !== undefined) clearTimeout(this.#countsTimer);
    this.#closed = true;
    await this.#checkpointer?.stop();
    try {
      this.#db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch { /* a checkpoint is an optimisation */ }
    this.#db.close();
  }
}

function usageFromRow(row: UsageRow): StoredUsage {
  return {
    id: row.id,
    uuid: row.uuid,
    notebook: row.notebook,
    createdAt: row.created_at,
    reportCount: row.report_count,
  };
}

function reportFromRow(row: ReportRow): StoredReport {
  return {
    id: row.id,
    usageUuid: row.usage_uuid,
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    occurrences: row.occurrences,
    ...payloadFromRow(row),
  };
}

/** A report row's payload (the session's notebook). */
function payloadFromRow(row: PayloadColumns): ErrorPayload {
  return {
    error_name: row.error_name,
    error_message: row.error_message,
    traceback: JSON.parse(row.traceback) as TracebackFrame[],
    first_line: row.first_line,
    execution_count: row.execution_count,
    notebook: row.notebook,
  };
}
