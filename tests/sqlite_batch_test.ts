import { deepEqual, equal, ok } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import { utcDay } from "../src/server/storage.ts";

const PAYLOAD = {
  error_name: "TypeError",
  error_message: "Cannot read properties of undefined (reading 'rows')",
  traceback: [{ filename: "<cell>", fun_name: "loadTable", lineno: 12 }],
  first_line: "# load the table",
  execution_count: 1,
  notebook: "bench",
};

for (const failing of [[2], [0, 4], [0]]) {
  Deno.test(`SqliteStorage: failing writes ${failing} of a batch are rejected alone, the others stored and counted once`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbr-batch-" });
    const path = `${dir}/errors.db`;
    try {
      const storage = await openSqliteStorage(path);
      const now = Date.UTC(2026, 0, 5, 12);
      const usage = await storage.createUsage("bench", now);
      // Another connection makes SQLite refuse some reports (a real
      // failure inside the write transaction).
      const other = new DatabaseSync(path);
      other.exec(`CREATE TRIGGER refuse BEFORE INSERT ON reports
        WHEN NEW.first_line = 'refuse me'
        BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END`);
      other.close();
      const count = failing.length === 1 && failing[0] === 0 ? 1 : 5;
      const results = await Promise.allSettled(
        Array.from({ length: count }, (_, i) =>
          storage.addReport({
            usageUuid: usage.uuid,
            payload: {
              ...PAYLOAD,
              execution_count: i,
              first_line: failing.includes(i)
                ? "refuse me"
                : PAYLOAD.first_line,
            },
            now,
            dedupeWindowMs: 60_000,
            maxReportsPerSession: Infinity,
          })),
      );
      deepEqual(
        results.map((r) => r.status),
        Array.from(
          { length: count },
          (_, i) => failing.includes(i) ? "rejected" : "fulfilled",
        ),
      );
      for (const r of results) {
        if (r.status === "rejected") {
          ok(String(r.reason).includes("refused by the test trigger"));
        }
      }
      const stored = count - failing.length;
      equal((await storage.listUsageReports([usage.uuid])).length, stored);
      equal((await storage.getUsage(usage.uuid))!.reportCount, stored);
      const days = await storage.dailyCounts({
        fromDay: utcDay(now),
        toDay: utcDay(now),
      });
      deepEqual(
        days.map((d) => [d.reports, d.sessions]),
        [[stored, 1]],
      );
      const { groups } = await storage.listGroups({
        notebook: "bench",
        skip: 0,
        limit: 10,
        sort: "count",
      });
      equal(groups.reduce((n, g) => n + g.count, 0), stored);
      await storage.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("SqliteStorage: reports of one batch to two sessions keep each session's cap and count", async () => {
  const storage = await openSqliteStorage(":memory:");
  try {
    const now = Date.UTC(2026, 0, 5, 12);
    const a = await storage.createUsage("bench", now);
    const b = await storage.createUsage("bench", now);
    // Interleaved in one batch: a gets 5 (cap 3), b gets 2.
    const sessions = [a, b, a, a, b, a, a];
    const results = await Promise.all(
      sessions.map((usage, i) =>
        storage.addReport({
          usageUuid: usage.uuid,
          payload: { ...PAYLOAD, execution_count: i },
          now: now + i,
          dedupeWindowMs: 60_000,
          maxReportsPerSession: 3,
        })
      ),
    );
    deepEqual(results.map((r) => r.status), [
      "stored",
      "stored",
      "stored",
      "stored",
      "stored",
      "session-limit",
      "session-limit",
    ]);
    equal((await storage.getUsage(a.uuid))!.reportCount, 3);
    equal((await storage.getUsage(b.uuid))!.reportCount, 2);
    // The next batch sees the counts the previous one wrote.
    const more = await storage.addReport({
      usageUuid: b.uuid,
      payload: { ...PAYLOAD, execution_count: 99 },
      now: now + 10,
      dedupeWindowMs: 60_000,
      maxReportsPerSession: 3,
    });
    equal(more.status, "stored");
    equal((await storage.getUsage(b.uuid))!.reportCount, 3);
  } finally {
    await storage.close();
  }
});
