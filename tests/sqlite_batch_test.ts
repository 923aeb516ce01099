import { deepEqual, equal, ok } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import { utcDay } from "../src/server/storage.ts";
import { refuseReports } from "./support/refusing_trigger.ts";

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
      refuseReports(path);
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

Deno.test("SqliteStorage: a group's state change and deletion queued among its reports take effect in call order", async () => {
  const storage = await openSqliteStorage(":memory:", {
    notices: {
      minGroupIntervalMs: 0,
      spikeFactor: 10,
      spikeMinimum: 20,
    },
  });
  try {
    const now = Date.UTC(2026, 0, 5, 12);
    const usage = await storage.createUsage("bench", now);
    const add = (n: number) =>
      storage.addReport({
        usageUuid: usage.uuid,
        payload: { ...PAYLOAD, execution_count: n },
        now: now + n,
        dedupeWindowMs: 60_000,
        maxReportsPerSession: Infinity,
      });
    const first = await add(0);
    ok(first.status === "stored" && first.group?.created);
    const id = first.group.id;

    // One batch: a report, then the group is ignored: it stays ignored.
    const [a, ignored] = await Promise.all([
      add(1),
      storage.setGroupState(id, "ignored", now + 1),
    ]);
    equal(ignored, true);
    ok(a.status === "stored");
    equal((await storage.getGroup(id))!.state, "ignored");
    equal((await storage.getGroup(id))!.count, 2);

    // One batch: resolved between two reports: the second reopens it.
    const [b, , c] = await Promise.all([
      add(2),
      storage.setGroupState(id, "resolved", now + 2),
      add(3),
    ]);
    ok(b.status === "stored" && c.status === "stored");
    deepEqual(
      [b.group?.reopened, b.group?.notice, c.group?.reopened, c.group?.notice],
      [false, undefined, true, "regression"],
    );
    const group = (await storage.getGroup(id))!;
    deepEqual(
      [
        group.state,
        group.count,
        group.cellNumbers,
        group.latest.execution_count,
      ],
      ["open", 4, [0, 1, 2, 3], 3],
    );
    // The regression notice shows the group as the report left it.
    const regression = (await storage.listNotices()).at(-1)!.data;
    ok(regression.kind === "regression");
    deepEqual(
      [
        regression.group.count,
        regression.group.state,
        regression.group.lastSeen,
      ],
      [4, "open", now + 3],
    );

    // One batch: deleted between two reports: the second starts a new group.
    const [d, deleted, e] = await Promise.all([
      add(4),
      storage.deleteGroup(id),
      add(5),
    ]);
    equal(deleted, true);
    ok(d.status === "stored" && e.status === "stored");
    equal(d.group?.id, id);
    ok(e.group?.created && e.group.id !== id);
    equal(await storage.getGroup(id), undefined);
    const fresh = (await storage.getGroup(e.group.id))!;
    deepEqual([fresh.count, fresh.sessions, fresh.cellNumbers], [1, 1, [5]]);
  } finally {
    await storage.close();
  }
});

Deno.test("SqliteStorage: a batch's session claims reach the session's row: count, cap per call, latest report time", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-batch-" });
  const path = `${dir}/errors.db`;
  try {
    const storage = await openSqliteStorage(path);
    const now = Date.UTC(2026, 0, 5, 12);
    const a = await storage.createUsage("bench", now);
    const b = await storage.createUsage("bench", now);
    await storage.addReport({
      usageUuid: a.uuid,
      payload: { ...PAYLOAD, execution_count: 100 },
      now,
      dedupeWindowMs: 60_000,
      maxReportsPerSession: Infinity,
    });
    // One batch: a's cap is 3 for some calls and 5 for others; b is new in
    // the batch; one of a's reports repeats an earlier one (a duplicate
    // claims a report too).
    const sends: [typeof a, number, number][] = [
      [a, 1, 3],
      [b, 1, 3],
      [a, 2, 3],
      [a, 3, 3],
      [a, 4, 5],
      [a, 100, 5],
      [a, 6, 5],
      [b, 2, 3],
    ];
    const results = await Promise.all(
      sends.map(([usage, n, cap], i) =>
        storage.addReport({
          usageUuid: usage.uuid,
          payload: { ...PAYLOAD, execution_count: n },
          now: now + 10 + i,
          dedupeWindowMs: 60_000,
          maxReportsPerSession: cap,
        })
      ),
    );
    deepEqual(results.map((r) => r.status), [
      "stored",
      "stored",
      "stored",
      "session-limit",
      "stored",
      "duplicate",
      "session-limit",
      "stored",
    ]);
    await storage.close();
    const db = new DatabaseSync(path);
    const rows = db.prepare(
      "SELECT uuid, report_count, last_report_at FROM usages ORDER BY id",
    ).all().map((r) => [r.uuid, r.report_count, r.last_report_at]);
    db.close();
    deepEqual(rows, [[a.uuid, 5, now + 15], [b.uuid, 2, now + 17]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
