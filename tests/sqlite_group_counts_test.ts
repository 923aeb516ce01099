import { deepEqual, equal } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import type { ErrorPayload } from "../src/types.ts";
import { refuseReports } from "./support/refusing_trigger.ts";

/** One error per name: each name is its own group. */
function payload(
  errorName: string,
  executionCount: number,
  refused = false,
): ErrorPayload {
  return {
    error_name: errorName,
    error_message: `${errorName} in the cell`,
    traceback: [{ filename: "<cell>", fun_name: `f${errorName}`, lineno: 3 }],
    first_line: refused ? "refuse me" : "# a cell",
    execution_count: executionCount,
    notebook: "counts",
  };
}

interface Send {
  session: "a" | "b";
  error: string;
  refused?: boolean;
}

interface Totals {
  groups: {
    name: string;
    count: number;
    sessions: number;
    days: number;
    hours: number;
    sessionRows: number;
  }[];
  reports: number;
  daily: number;
  notebookHours: number;
}

/** Every count the store keeps about groups and reports, read with SQL. */
function totals(path: string): Totals {
  const db = new DatabaseSync(path);
  try {
    const groups = db.prepare(
      `SELECT g.error_name AS name, g.count AS count, g.sessions AS sessions,
         (SELECT coalesce(sum(count), 0) FROM group_days d WHERE d.group_id = g.id) AS days,
         (SELECT coalesce(sum(count), 0) FROM group_hours h WHERE h.group_id = g.id) AS hours,
         (SELECT count(*) FROM group_sessions s WHERE s.group_id = g.id) AS sessionRows
       FROM groups g ORDER BY g.error_name`,
    ).all() as unknown as Totals["groups"];
    const one = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return {
      groups: groups.map((g) => ({ ...g })),
      reports: one("SELECT count(*) AS n FROM reports"),
      daily: one("SELECT coalesce(sum(reports), 0) AS n FROM daily_counts"),
      notebookHours: one(
        "SELECT coalesce(sum(reports), 0) AS n FROM notebook_hours",
      ),
    };
  } finally {
    db.close();
  }
}

/** What the counts must be: only the acknowledged reports, each once. */
function expected(sends: Send[], acknowledged: boolean[]): Totals {
  const byName = new Map<string, { count: number; sessions: Set<string> }>();
  sends.forEach((send, i) => {
    if (!acknowledged[i]) return;
    const group = byName.get(send.error) ??
      { count: 0, sessions: new Set<string>() };
    group.count++;
    group.sessions.add(send.session);
    byName.set(send.error, group);
  });
  const n = acknowledged.filter(Boolean).length;
  return {
    groups: [...byName.entries()].sort(([x], [y]) => x < y ? -1 : 1).map((
      [name, g],
    ) => ({
      name,
      count: g.count,
      sessions: g.sessions.size,
      days: g.count,
      hours: g.count,
      sessionRows: g.sessions.size,
    })),
    reports: n,
    daily: n,
    notebookHours: n,
  };
}

const CASES: { name: string; batches: Send[][] }[] = [
  {
    name: "one failing report among several to the same group",
    batches: [[
      { session: "a", error: "TypeError" },
      { session: "a", error: "TypeError" },
      { session: "a", error: "TypeError", refused: true },
      { session: "a", error: "TypeError" },
      { session: "a", error: "TypeError" },
    ]],
  },
  {
    // The first attempt stores four reports, fails on the fifth and is
    // rolled back whole; the re-run stores the four again.
    name: "a failing last report (the whole first attempt rolled back)",
    batches: [[
      { session: "a", error: "TypeError" },
      { session: "a", error: "TypeError" },
      { session: "b", error: "TypeError" },
      { session: "a", error: "TypeError" },
      { session: "a", error: "TypeError", refused: true },
    ]],
  },
  {
    // b's failing report adds b to the group's sessions, undone; b's next
    // report must add it again. The refused new group's id is reused by
    // the next new group.
    name: "failing reports that add a session and create a group",
    batches: [
      [
        { session: "a", error: "TypeError" },
        { session: "b", error: "TypeError", refused: true },
        { session: "a", error: "RangeError", refused: true },
        { session: "a", error: "SyntaxError" },
        { session: "a", error: "TypeError" },
        { session: "b", error: "TypeError" },
      ],
      [
        { session: "b", error: "SyntaxError", refused: true },
        { session: "a", error: "TypeError" },
      ],
      [{ session: "b", error: "SyntaxError" }],
    ],
  },
];

for (const { name, batches } of CASES) {
  Deno.test(`SqliteStorage: group, hourly and daily counts equal the acknowledged reports after ${name}`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbr-counts-" });
    const path = `${dir}/errors.db`;
    try {
      const storage = await openSqliteStorage(path);
      const now = Date.UTC(2026, 0, 5, 12);
      const sessions = {
        a: await storage.createUsage("counts", now),
        b: await storage.createUsage("counts", now),
      };
      // Another connection makes SQLite refuse some reports after they were
      // grouped (a real failure inside the write transaction).
      refuseReports(path);
      const sent: Send[] = [];
      const acknowledged: boolean[] = [];
      let i = 0;
      for (const batch of batches) {
        const results = await Promise.allSettled(
          batch.map((send) =>
            storage.addReport({
              usageUuid: sessions[send.session].uuid,
              payload: payload(send.error, i++, send.refused),
              now,
              dedupeWindowMs: 60_000,
              maxReportsPerSession: Infinity,
            })
          ),
        );
        deepEqual(
          results.map((r) => r.status),
          batch.map((send) => send.refused ? "rejected" : "fulfilled"),
        );
        sent.push(...batch);
        acknowledged.push(...results.map((r) => r.status === "fulfilled"));
      }
      deepEqual(totals(path), expected(sent, acknowledged));
      const { groups } = await storage.listGroups({
        notebook: "counts",
        skip: 0,
        limit: 10,
        sort: "count",
      });
      const days = await storage.groupDailyCounts(
        groups.map((g) => g.id),
        "2026-01-05",
        "2026-01-05",
      );
      deepEqual(
        days.map((d) => [d.groupId, d.count]),
        groups.map((g) => [g.id, g.count]).sort(([x], [y]) => x! - y!),
      );
      const [stats] = await storage.notebookWindowStats(now);
      equal(stats!.reports24h, acknowledged.filter(Boolean).length);
      // Each group's cell numbers are its acknowledged reports' (in order),
      // its latest payload the last of them: refused reports left no trace.
      for (const summary of groups) {
        const group = await storage.getGroup(summary.id);
        const cells = sent.flatMap((send, n) =>
          acknowledged[n] && send.error === summary.errorName ? [n] : []
        );
        deepEqual(group!.cellNumbers, cells);
        deepEqual(group!.latest, payload(summary.errorName, cells.at(-1)!));
        deepEqual(group!.firstLines, ["# a cell"]);
      }
      await storage.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
