/**
 * Dashboard benchmark on SQLite: how long the dashboard takes to render a
 * notebook's group list (HTML, through the real handler and the real
 * storage) when the notebook has 10,000 groups and 1,000,000 reports.
 * Target: under 200 ms.
 *
 * The database is filled directly with SQL in one transaction (reports,
 * sessions, groups, per-day and per-hour counts consistent with the
 * reports), then opened with the real `SqliteStorage`. It prints the timing
 * of each page variant (first page, sorted by count, deep pages, text and
 * state filters), the overview and a group page, and the query plans of the
 * group-list queries (they must search indexes, not scan tables).
 *
 * Run: `deno run --allow-all tests/bench/dashboard.ts`
 * Flags: `--groups <n>` (default 10000), `--reports <n>` (default 1000000),
 * `--runs <n>` (default 20).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { createDashboard } from "../../src/server/dashboard/routes.ts";
import { openSqliteStorage } from "../../src/server/sqlite_storage.ts";
import { seededRandom } from "../support/seeded_random.ts";

const NOTEBOOK = "bench-notebook";
const TOKEN = "bench-token";
const DAY_MS = 86_400_000;

/** The timing of one page. */
export interface DashboardTiming {
  /** What was rendered. */
  label: string;
  /** The path requested. */
  path: string;
  /** The very first request (statements not yet prepared, cache cold), ms. */
  first: number;
  /** Median over the runs, ms. */
  p50: number;
  /** 95th percentile, ms. */
  p95: number;
  /** Slowest run, ms. */
  max: number;
  /** The HTML's size in bytes. */
  bytes: number;
}

/** What {@linkcode main} measured. */
export interface DashboardBenchResult {
  /** Groups in the notebook. */
  groups: number;
  /** Reports in the notebook. */
  reports: number;
  /** Seconds spent filling the database. */
  fillSeconds: number;
  /** Per page. */
  timings: DashboardTiming[];
  /** The query plans, by query. */
  plans: Record<string, string[]>;
}

function hex(random: () => number, length: number): string {
  let out = "";
  while (out.length < length) {
    out += Math.floor(random() * 0x100000000).toString(16).padStart(8, "0");
  }
  return out.slice(0, length);
}

/** Fills the schema made by SqliteStorage with a consistent data set. */
function fill(
  path: string,
  groups: number,
  reports: number,
  now: number,
): void {
  const db = new DatabaseSync(path);
  db.exec(
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;",
  );
  const random = seededRandom(42);
  const sessions = Math.max(1, Math.ceil(reports / 10));
  db.exec("BEGIN");
  const insertUsage = db.prepare(
    "INSERT INTO usages (id, uuid, notebook, created_at, report_count) VALUES (?, ?, ?, ?, 0)",
  );
  // Sessions in time order, and each session's reports together: the rows
  // arrive roughly in time order, as they do in a real collector (and the
  // fill stays fast because index inserts are mostly appends).
  const sessionStart = Array.from(
    { length: sessions },
    () => now - 3_600_000 - Math.floor(random() * 29 * DAY_MS),
  ).sort((a, b) => a - b);
  for (let u = 1; u <= sessions; u++) {
    insertUsage.run(u, hex(random, 32), NOTEBOOK, sessionStart[u - 1]!);
  }
  const insertGroup = db.prepare(
    `INSERT INTO groups (id, notebook, fingerprint, error_name, error_message, latest,
       count, sessions, first_seen, last_seen, state, first_lines, cell_numbers)
     VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?, ?, ?)`,
  );
  const names = [
    "TypeError",
    "RangeError",
    "SyntaxError",
    "ReferenceError",
    "Error",
    "NotFound",
  ];
  const tracebacks: string[] = [];
  for (let g = 1; g <= groups; g++) {
    const name = names[g % names.length]!;
    const message = `Cannot process row ${g} of table_${
      g % 97
    }: value out of range`;
    const traceback = [
      { filename: "<cell>", fun_name: "<module>", lineno: 3 + (g % 20) },
      { filename: "<cell>", fun_name: `step_${g}`, lineno: 10 + (g % 7) },
      {
        filename: "npm:lodash@4.17.21/lodash.js",
        fun_name: "map",
        lineno: 621,
      },
    ];
    tracebacks.push(JSON.stringify(traceback));
    const latest = {
      error_name: name,
      error_message: message,
      traceback,
      first_line: `run_step(${g})`,
      execution_count: g % 40,
      notebook: NOTEBOOK,
    };
    const state = g % 10 === 0 ? "resolved" : g % 25 === 0 ? "ignored" : "open";
    insertGroup.run(
      g,
      NOTEBOOK,
      hex(random, 64),
      name,
      message,
      JSON.stringify(latest),
      state,
      JSON.stringify([`run_step(${g})`]),
      JSON.stringify([g % 40]),
    );
  }
  const insertReport = db.prepare(
    `INSERT INTO reports (usage_id, notebook, created_at, last_seen_at, occurrences,
       payload_hash, error_name, error_message, traceback, first_line, execution_count, group_id)
     VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)`,
  );
  for (let i = 0; i < reports; i++) {
    // Every group gets one report, then a skewed share of the rest.
    const g = i < groups ? i + 1 : 1 + Math.floor(groups * random() ** 3);
    const u = 1 + Math.min(sessions - 1, Math.floor(i * sessions / reports));
    const created = Math.min(
      now,
      sessionStart[u - 1]! + Math.floor(random() * 3_600_000),
    );
    insertReport.run(
      u,
      NOTEBOOK,
      created,
      created,
      hex(random, 64),
      names[g % names.length]!,
      `Cannot process row ${g} of table_${g % 97}: value out of range`,
      tracebacks[g - 1]!,
      `run_step(${g})`,
      g % 40,
      g,
    );
  }
  db.exec(`
    INSERT INTO group_days (group_id, day, count)
      SELECT group_id, strftime('%Y-%m-%d', created_at / 1000, 'unixepoch'), count(*)
      FROM reports GROUP BY 1, 2;
    INSERT INTO group_sessions (group_id, usage_id)
      SELECT DISTINCT group_id, usage_id FROM reports;
    UPDATE groups SET count = a.c, first_seen = a.f, last_seen = a.l
      FROM (SELECT group_id, count(*) AS c, min(created_at) AS f, max(created_at) AS l
            FROM reports GROUP BY group_id) AS a
      WHERE a.group_id = groups.id;
    UPDATE groups SET sessions = s.n
      FROM (SELECT group_id, count(*) AS n FROM group_sessions GROUP BY group_id) AS s
      WHERE s.group_id = groups.id;
    UPDATE usages SET report_count = a.c, last_report_at = a.l
      FROM (SELECT usage_id, count(*) AS c, max(created_at) AS l FROM reports GROUP BY usage_id) AS a
      WHERE a.usage_id = usages.id;
    INSERT INTO daily_counts (notebook, day, reports, sessions)
      SELECT notebook, strftime('%Y-%m-%d', created_at / 1000, 'unixepoch'), count(*), 0
      FROM reports GROUP BY 1, 2;
    UPDATE daily_counts SET sessions = s.n
      FROM (SELECT notebook, strftime('%Y-%m-%d', created_at / 1000, 'unixepoch') AS day, count(*) AS n
            FROM usages GROUP BY 1, 2) AS s
      WHERE s.notebook = daily_counts.notebook AND s.day = daily_counts.day;
    INSERT INTO notebook_hours (notebook, hour, reports)
      SELECT notebook, created_at / 3600000, count(*) FROM reports GROUP BY 1, 2;
  `);
  db.exec("COMMIT");
  db.exec("ANALYZE");
  db.close();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/**
 * Runs the benchmark and prints its figures.
 *
 * @param args Command-line flags.
 * @returns The figures.
 */
export async function main(args: string[] = []): Promise<DashboardBenchResult> {
  const { values } = parseArgs({
    args,
    options: {
      groups: { type: "string" },
      reports: { type: "string" },
      runs: { type: "string" },
    },
  });
  const groups = Number(values.groups ?? 10_000);
  const reports = Math.max(groups, Number(values.reports ?? 1_000_000));
  const runs = Number(values.runs ?? 20);
  const dir = await Deno.makeTempDir({ prefix: "nbr-bench-dashboard-" });
  const path = `${dir}/errors.db`;
  try {
    const now = Date.now();
    (await openSqliteStorage(path)).close();
    const started = performance.now();
    fill(path, groups, reports, now);
    const fillSeconds = (performance.now() - started) / 1000;
    console.log(
      `dashboard bench: ${groups.toLocaleString("en-US")} groups, ${
        reports.toLocaleString("en-US")
      } reports in one notebook; filled in ${fillSeconds.toFixed(1)} s`,
    );

    const plans: Record<string, string[]> = {};
    {
      const db = new DatabaseSync(path);
      const plan = (
        label: string,
        sql: string,
        ...params: (string | number)[]
      ) => {
        plans[label] =
          (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as {
            detail: string;
          }[]).map((r) => r.detail);
      };
      // The statements SqliteGrouping runs for the group list and its sparklines.
      plan(
        "total",
        "SELECT count(*) AS n FROM groups WHERE notebook = ?",
        NOTEBOOK,
      );
      plan(
        "page by last seen",
        "SELECT id FROM groups WHERE notebook = ? ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?",
        NOTEBOOK,
        50,
        0,
      );
      plan(
        "page by count",
        "SELECT id FROM groups WHERE notebook = ? ORDER BY count DESC, id DESC LIMIT ? OFFSET ?",
        NOTEBOOK,
        50,
        0,
      );
      plan(
        "page by state",
        "SELECT id FROM groups WHERE notebook = ? AND state = ? ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?",
        NOTEBOOK,
        "resolved",
        50,
        0,
      );
      plan(
        "sparklines",
        `SELECT group_id, day, count FROM group_days
         WHERE group_id IN (SELECT value FROM json_each(?)) AND day >= ? AND day <= ?
         ORDER BY group_id, day`,
        "[1,2,3]",
        "2026-01-01",
        "2026-01-14",
      );
      db.close();
    }
    for (const [label, lines] of Object.entries(plans)) {
      console.log(`  plan ${label}: ${lines.join(" | ")}`);
    }
    const scans = Object.entries(plans).filter(([, lines]) =>
      lines.some((l) =>
        /^SCAN (groups|group_days|reports)\b(?!.*USING)/.test(l)
      )
    );
    if (scans.length > 0) {
      console.log(
        `  WARNING: table scans in ${scans.map(([l]) => l).join(", ")}`,
      );
    }

    const storage = await openSqliteStorage(path);
    const dashboard = createDashboard({
      storage,
      auth: { adminToken: TOKEN },
    });
    const lastPage = Math.ceil(groups / 50);
    const aGroup = (await storage.listGroups({
      notebook: NOTEBOOK,
      sort: "count",
      skip: 0,
      limit: 1,
    })).groups[0]!;
    const nb = encodeURIComponent(NOTEBOOK);
    const pages: [string, string][] = [
      ["groups, by last seen, page 1", `/dashboard/groups?notebook=${nb}`],
      [
        "groups, by count, page 1",
        `/dashboard/groups?notebook=${nb}&sort=count`,
      ],
      [
        "groups, by last seen, middle page",
        `/dashboard/groups?notebook=${nb}&page=${Math.ceil(lastPage / 2)}`,
      ],
      [
        "groups, by count, last page",
        `/dashboard/groups?notebook=${nb}&sort=count&page=${lastPage}`,
      ],
      ["groups, text filter", `/dashboard/groups?notebook=${nb}&q=table_42`],
      [
        "groups, state resolved",
        `/dashboard/groups?notebook=${nb}&state=resolved`,
      ],
      ["overview", "/dashboard/"],
      ["group page (largest)", `/dashboard/groups/${aGroup.id}`],
    ];
    const timings: DashboardTiming[] = [];
    for (const [label, pagePath] of pages) {
      const samples: number[] = [];
      let first = 0;
      let bytes = 0;
      for (let i = 0; i < runs + 2; i++) {
        const t0 = performance.now();
        const response = await dashboard(
          new Request(`http://bench.local${pagePath}`, {
            headers: { authorization: `Bearer ${TOKEN}` },
          }),
        );
        const body = await response.text();
        const elapsed = performance.now() - t0;
        if (response.status !== 200) {
          throw new Error(`${pagePath} answered ${response.status}`);
        }
        bytes = new TextEncoder().encode(body).byteLength;
        if (i === 0) first = elapsed;
        if (i >= 2) samples.push(elapsed); // two warm-up runs
      }
      samples.sort((a, b) => a - b);
      const timing = {
        label,
        path: pagePath,
        first,
        p50: percentile(samples, 0.5),
        p95: percentile(samples, 0.95),
        max: samples[samples.length - 1]!,
        bytes,
      };
      timings.push(timing);
      console.log(
        `  ${label.padEnd(36)} first ${
          timing.first.toFixed(1).padStart(6)
        } ms  p50 ${timing.p50.toFixed(1).padStart(6)} ms  p95 ${
          timing.p95.toFixed(1).padStart(6)
        } ms  max ${timing.max.toFixed(1).padStart(6)} ms  ${
          (bytes / 1024).toFixed(0)
        } KiB`,
      );
    }
    const worstList = Math.max(
      ...timings.filter((t) => t.label.startsWith("groups")).map((t) => t.p95),
    );
    console.log(
      `  group list p95 worst case ${
        worstList.toFixed(1)
      } ms (target < 200 ms): ${worstList < 200 ? "met" : "NOT met"}`,
    );
    await storage.close();
    return { groups, reports, fillSeconds, timings, plans };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  await main(Deno.args);
}
