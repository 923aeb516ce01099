/**
 * SqliteStorage finds duplicates in memory (src/server/_sqlite_dedupe_window.ts):
 * what only that engine can get wrong — writes rolled back at COMMIT, a
 * batch run again after a failing write, reports of the same batch, the
 * capacity, and reports deleted by another connection.
 */

import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { DedupeWindow } from "../src/server/_sqlite_dedupe_window.ts";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import type { AddReportResult } from "../src/server/storage.ts";
import type { ErrorPayload } from "../src/types.ts";
import { reportInput as input } from "./support/report_input.ts";
import { refuseReports } from "./support/refusing_trigger.ts";

const T0 = Date.UTC(2026, 0, 5, 12);

function payload(n: number, firstLine = `cell ${n}`): ErrorPayload {
  return {
    error_name: "Error",
    error_message: "boom",
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 3 }],
    first_line: firstLine,
    execution_count: n,
    notebook: "dedupe",
  };
}

function reportId(result: AddReportResult): number {
  ok(result.status === "stored" || result.status === "duplicate");
  return result.report.id;
}

async function withFile(run: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-dedupe-" });
  try {
    await run(`${dir}/errors.db`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("SqliteStorage: a batch rolled back at COMMIT leaves no duplicate entry behind", async () => {
  await withFile(async (path) => {
    const storage = await openSqliteStorage(path);
    try {
      const usage = await storage.createUsage("dedupe", T0);
      // Another connection sets a trap that fails the COMMIT (a deferred
      // foreign key) of a batch holding a report with this first line.
      const other = new DatabaseSync(path);
      other.exec(`
        CREATE TABLE trap (usage_id INTEGER
          REFERENCES usages (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER spring AFTER INSERT ON reports
          WHEN NEW.first_line = 'fail at commit'
          BEGIN INSERT INTO trap VALUES (-1); END`);
      other.close();
      const failed = await Promise.allSettled([
        storage.addReport(input(usage.uuid, payload(1), T0)),
        storage.addReport(input(usage.uuid, payload(2, "fail at commit"), T0)),
      ]);
      deepEqual(failed.map((r) => r.status), ["rejected", "rejected"]);
      equal((await storage.listUsageReports([usage.uuid])).length, 0);
      // The next report takes the row id the rolled-back one had...
      const other3 = reportId(
        await storage.addReport(input(usage.uuid, payload(3), T0 + 1)),
      );
      // ...and the rolled-back report's payload is not a duplicate of it.
      const again = await storage.addReport(
        input(usage.uuid, payload(1), T0 + 2),
      );
      equal(again.status, "stored");
      ok(reportId(again) !== other3);
      const reports = await storage.listUsageReports([usage.uuid]);
      deepEqual(
        reports.map((r) => [r.execution_count, r.occurrences]),
        [[3, 1], [1, 1]],
      );
    } finally {
      await storage.close();
    }
  });
});

Deno.test("SqliteStorage: duplicates within one batch are counted, also when the batch runs again after a failing write", async () => {
  await withFile(async (path) => {
    const storage = await openSqliteStorage(path);
    try {
      const usage = await storage.createUsage("dedupe", T0);
      refuseReports(path);
      // The refused report is last: the first attempt stored the others
      // before it was rolled back and the batch run again.
      const results = await Promise.allSettled([
        storage.addReport(input(usage.uuid, payload(1), T0)),
        storage.addReport(input(usage.uuid, payload(1), T0 + 1)),
        storage.addReport(input(usage.uuid, payload(2), T0 + 2)),
        storage.addReport(input(usage.uuid, payload(9, "refuse me"), T0 + 3)),
      ]);
      deepEqual(
        results.map((r) => r.status === "fulfilled" ? r.value.status : "x"),
        ["stored", "duplicate", "stored", "x"],
      );
      const [a, b] = results.map((r) =>
        r.status === "fulfilled" ? reportId(r.value) : 0
      );
      equal(a, b);
      const next = await storage.addReport(
        input(usage.uuid, payload(1), T0 + 10),
      );
      equal(next.status, "duplicate");
      equal(reportId(next), a);
      ok(next.status === "duplicate");
      equal(next.report.occurrences, 3);
      const reports = await storage.listUsageReports([usage.uuid]);
      deepEqual(
        reports.map((r) => [r.execution_count, r.occurrences]),
        [[1, 3], [2, 1]],
      );
    } finally {
      await storage.close();
    }
  });
});

Deno.test("SqliteStorage: past dedupeCapacity the older half is forgotten and stored again", async () => {
  // Two generations of two: after five reports, 3 and 4 (older) and 5.
  const storage = await openSqliteStorage(":memory:", { dedupeCapacity: 4 });
  try {
    const usage = await storage.createUsage("dedupe", T0);
    for (let n = 1; n <= 5; n++) {
      await storage.addReport(input(usage.uuid, payload(n), T0 + n));
    }
    const statuses = [];
    for (const n of [5, 3, 4, 2, 1]) {
      statuses.push(
        (await storage.addReport(input(usage.uuid, payload(n), T0 + 10 + n)))
          .status,
      );
    }
    deepEqual(statuses, [
      "duplicate",
      "duplicate",
      "duplicate",
      "stored",
      "stored",
    ]);
  } finally {
    await storage.close();
  }
});

Deno.test("SqliteStorage: dedupeCapacity is checked", async () => {
  for (const capacity of [1, 0, -5, 2.5, NaN]) {
    await rejects(
      async () =>
        await openSqliteStorage(":memory:", { dedupeCapacity: capacity }),
      (error) =>
        error instanceof RangeError &&
        error.message.includes("dedupeCapacity must be"),
    );
  }
});

Deno.test("SqliteStorage: a duplicate's report deleted by another connection is stored again", async () => {
  await withFile(async (path) => {
    const storage = await openSqliteStorage(path);
    try {
      const usage = await storage.createUsage("dedupe", T0);
      const first = reportId(
        await storage.addReport(input(usage.uuid, payload(1), T0)),
      );
      const other = new DatabaseSync(path);
      other.prepare("DELETE FROM reports WHERE id = ?").run(first);
      other.close();
      const again = await storage.addReport(
        input(usage.uuid, payload(1), T0 + 1),
      );
      equal(again.status, "stored");
      ok(again.status === "stored");
      equal(again.report.occurrences, 1);
      equal(
        (await storage.addReport(input(usage.uuid, payload(1), T0 + 2)))
          .status,
        "duplicate",
      );
    } finally {
      await storage.close();
    }
  });
});

Deno.test("SqliteStorage: prune() evicting reports within the window leaves no stale duplicate", async () => {
  await withFile(async (path) => {
    const storage = await openSqliteStorage(path);
    try {
      const usage = await storage.createUsage("dedupe", T0);
      await storage.addReport(input(usage.uuid, payload(1), T0));
      await storage.addReport(input(usage.uuid, payload(2), T0 + 1));
      // A cap of one byte evicts every raw report.
      const result = await storage.prune({
        now: T0 + 2,
        maxAgeMs: 86_400_000,
        maxBytes: 1,
      });
      equal(result.evictedReports, 2);
      const again = await storage.addReport(
        input(usage.uuid, payload(2), T0 + 3),
      );
      equal(again.status, "stored");
      equal(
        (await storage.addReport(input(usage.uuid, payload(2), T0 + 4)))
          .status,
        "duplicate",
      );
    } finally {
      await storage.close();
    }
  });
});

Deno.test("SqliteStorage: after a restart the newest dedupeCapacity reports of the window are remembered", async () => {
  await withFile(async (path) => {
    const first = await openSqliteStorage(path, { dedupeCapacity: 4 });
    const usage = await first.createUsage("dedupe", T0);
    for (let n = 1; n <= 5; n++) {
      await first.addReport(input(usage.uuid, payload(n), T0 + n * 1_000));
    }
    await first.close();
    const second = await openSqliteStorage(path, { dedupeCapacity: 4 });
    try {
      // A clock a little behind the last report's still finds it.
      equal(
        (await second.addReport(input(usage.uuid, payload(5), T0 + 4_500)))
          .status,
        "duplicate",
      );
      // The four newest (2 to 5) were loaded; 1 was not.
      for (const n of [2, 3, 4]) {
        equal(
          (await second.addReport(input(usage.uuid, payload(n), T0 + 6_000)))
            .status,
          "duplicate",
        );
      }
      equal(
        (await second.addReport(input(usage.uuid, payload(1), T0 + 7_000)))
          .status,
        "stored",
      );
    } finally {
      await second.close();
    }
  });
});

/** A window over an empty in-memory `reports` table. */
function emptyWindow(capacity: number): DedupeWindow {
  const db = new DatabaseSync(":memory:");
  db.exec(
    "CREATE TABLE reports (id INTEGER PRIMARY KEY, usage_id INTEGER, payload_hash TEXT, created_at INTEGER)",
  );
  return new DedupeWindow(db, capacity);
}

/** Stores one report under `key` at `now` in a batch of its own. */
function store(window: DedupeWindow, key: string, id: number, now: number) {
  window.stage(key, id, now);
  window.commitWrite();
  window.commitBatch();
}

Deno.test("DedupeWindow: past capacity the older generation goes at once, and a key stored again joins the newer", () => {
  const window = emptyWindow(4);
  const cutoff = T0 - 60_000;
  equal(window.find("a", cutoff), undefined);
  store(window, "a", 1, T0);
  store(window, "b", 2, T0 + 1);
  // The newer generation is full: "a" and "b" become the older one.
  store(window, "c", 3, T0 + 2);
  // "a" again, as when its last report left the dedupe window: newer.
  store(window, "a", 4, T0 + 3);
  deepEqual(window.find("a", cutoff), { id: 4, createdAt: T0 + 3 });
  deepEqual(window.find("b", cutoff), { id: 2, createdAt: T0 + 1 });
  // Full again: the older generation ("b", and "a"'s old entry) goes.
  store(window, "d", 5, T0 + 4);
  equal(window.find("b", cutoff), undefined);
  deepEqual(window.find("a", cutoff), { id: 4, createdAt: T0 + 3 });
  deepEqual(window.find("c", cutoff), { id: 3, createdAt: T0 + 2 });
  deepEqual(window.find("d", cutoff), { id: 5, createdAt: T0 + 4 });
});

Deno.test("DedupeWindow: through many times its capacity it keeps between half and all of it, newest first, and expires by time", () => {
  const window = emptyWindow(100);
  window.find("k0", T0 - 60_000);
  for (let n = 0; n < 5_000; n++) {
    // Every tenth key is stored a second time.
    store(window, `k${n}`, 2 * n + 1, T0 + n);
    if (n % 10 === 0) store(window, `k${n}`, 2 * n + 2, T0 + n);
  }
  const cutoff = T0 - 60_000;
  const held = Array.from(
    { length: 5_000 },
    (_, n) => window.find(`k${n}`, cutoff) !== undefined,
  );
  // Generations of 50 keys: the last one full, 50 keys before it kept.
  const first = held.indexOf(true);
  ok(held.slice(first).every(Boolean));
  equal(held.filter(Boolean).length, 5_000 - first);
  ok(5_000 - first >= 50 && 5_000 - first <= 100, `${5_000 - first} held`);
  // A later cutoff drops the older generation once all of it is created
  // 10 s (the slack) or more before it; the newer stays until it is too.
  const newest = window.find("k4999", cutoff)!;
  deepEqual(newest, { id: 9_999, createdAt: T0 + 4_999 });
  equal(window.find(`k${first}`, T0 + 4_998)?.id, undefined);
  deepEqual(window.find("k4999", T0 + 4_998), newest);
  equal(window.find(`k${first}`, T0 + 20_000), undefined);
  equal(window.find("k4999", T0 + 20_000), undefined);
});
