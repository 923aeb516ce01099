/**
 * SqliteStorage finds duplicates in memory (src/server/_sqlite_dedupe_window.ts):
 * what only that engine can get wrong — writes rolled back at COMMIT, a
 * batch run again after a failing write, reports of the same batch, the
 * capacity, and reports deleted by another connection.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
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

Deno.test("SqliteStorage: past dedupeCapacity the oldest reports are forgotten and stored again", async () => {
  const storage = await openSqliteStorage(":memory:", { dedupeCapacity: 3 });
  try {
    const usage = await storage.createUsage("dedupe", T0);
    for (let n = 1; n <= 5; n++) {
      await storage.addReport(input(usage.uuid, payload(n), T0 + n));
    }
    // 1 and 2 were forgotten; 3, 4, 5 are remembered.
    equal(
      (await storage.addReport(input(usage.uuid, payload(5), T0 + 10))).status,
      "duplicate",
    );
    equal(
      (await storage.addReport(input(usage.uuid, payload(3), T0 + 11))).status,
      "duplicate",
    );
    equal(
      (await storage.addReport(input(usage.uuid, payload(1), T0 + 12))).status,
      "stored",
    );
  } finally {
    await storage.close();
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
    const first = await openSqliteStorage(path, { dedupeCapacity: 3 });
    const usage = await first.createUsage("dedupe", T0);
    for (let n = 1; n <= 5; n++) {
      await first.addReport(input(usage.uuid, payload(n), T0 + n * 1_000));
    }
    await first.close();
    const second = await openSqliteStorage(path, { dedupeCapacity: 3 });
    try {
      // A clock a little behind the last report's still finds it.
      equal(
        (await second.addReport(input(usage.uuid, payload(5), T0 + 4_500)))
          .status,
        "duplicate",
      );
      equal(
        (await second.addReport(input(usage.uuid, payload(3), T0 + 6_000)))
          .status,
        "duplicate",
      );
      equal(
        (await second.addReport(input(usage.uuid, payload(2), T0 + 7_000)))
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

Deno.test("DedupeWindow: at capacity a key stored again counts as the newest, and the oldest other goes", () => {
  const window = emptyWindow(3);
  const cutoff = T0 - 60_000;
  equal(window.find("a", cutoff), undefined);
  store(window, "a", 1, T0);
  store(window, "b", 2, T0 + 1);
  store(window, "c", 3, T0 + 2);
  // "a" again, as when its last report left the dedupe window: now the newest.
  store(window, "a", 4, T0 + 3);
  store(window, "d", 5, T0 + 4);
  equal(window.find("b", cutoff), undefined);
  deepEqual(window.find("a", cutoff), { id: 4, createdAt: T0 + 3 });
  deepEqual(window.find("c", cutoff), { id: 3, createdAt: T0 + 2 });
  deepEqual(window.find("d", cutoff), { id: 5, createdAt: T0 + 4 });
});

Deno.test("DedupeWindow: through many times its capacity it keeps exactly the newest, and expires by time", () => {
  const window = emptyWindow(100);
  window.find("k0", T0 - 60_000);
  for (let n = 0; n < 5_000; n++) {
    // Every tenth key is stored a second time, which leaves a stale place behind.
    store(window, `k${n}`, 2 * n + 1, T0 + n);
    if (n % 10 === 0) store(window, `k${n}`, 2 * n + 2, T0 + n);
  }
  const cutoff = T0 - 60_000;
  const held = Array.from(
    { length: 5_000 },
    (_, n) => window.find(`k${n}`, cutoff) !== undefined,
  );
  deepEqual(held.indexOf(true), 4_900);
  equal(held.filter(Boolean).length, 100);
  // A later cutoff expires the entries created up to 10 s (the slack)
  // before it, oldest first, skipping the stale places; those created
  // after stay.
  equal(window.find("k4999", T0 + 14_960), undefined);
  deepEqual(window.find("k4961", T0 + 4_960), {
    id: 9_923,
    createdAt: T0 + 4_961,
  });
  deepEqual(window.find("k4990", T0 + 4_960), {
    id: 9_982,
    createdAt: T0 + 4_990,
  });
});
