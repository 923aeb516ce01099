import {
  deepEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  openSqliteStorage,
  SQLITE_MIGRATIONS,
  SqliteStorage,
} from "../src/server/sqlite_storage.ts";
import type { AddReportInput } from "../src/server/storage.ts";
import type { ErrorPayload } from "../src/types.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 10, 25, 12);

function payload(n: number, message = "boom"): ErrorPayload {
  return {
    error_name: "Error",
    error_message: message,
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: n }],
    first_line: `cell ${n}`,
    execution_count: n,
    notebook: "ignored",
  };
}

function input(
  usageUuid: string,
  n: number,
  now: number,
  extra: Partial<AddReportInput> = {},
): AddReportInput {
  return {
    usageUuid,
    payload: payload(n),
    now,
    dedupeWindowMs: 60_000,
    maxReportsPerSession: Infinity,
    ...extra,
  };
}

async function withDb(run: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-storage-" });
  try {
    await run(`${dir}/errors.db`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("SqliteStorage migrates a new file once, records the version and uses WAL", async () => {
  await withDb(async (path) => {
    const storage = await openSqliteStorage(path);
    assertEquals(storage.schemaVersion, SQLITE_MIGRATIONS.at(-1)!.version);
    await storage.createUsage("demo", T0);
    await storage.close();
    const again = await openSqliteStorage(path);
    assertEquals((await again.listUsages({ skip: 0, limit: 10 })).length, 1);
    await again.close();
    const raw = new DatabaseSync(path);
    assertEquals(raw.prepare("PRAGMA journal_mode").get(), {
      journal_mode: "wal",
    });
    const versions = raw.prepare("SELECT version, name FROM schema_migrations")
      .all();
    assertEquals(
      versions.map((v) => v.version),
      SQLITE_MIGRATIONS.map((m) => m.version),
    );
    const indexes = raw.prepare(
      "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
    )
      .all().map((r) => r.name);
    for (
      const name of [
        "reports_usage_hash",
        "reports_notebook_id",
        "reports_created_at",
        "usages_created_at",
      ]
    ) {
      assert(indexes.includes(name), name);
    }
    raw.prepare(
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
    ).run();
    raw.close();
    assertThrows(
      () => new SqliteStorage(path),
      /schema version is 99, newer than this server's \d+/,
    );
  });
});

Deno.test("SqliteStorage commits concurrent writes in batches and resolves each after commit", async () => {
  await withDb(async (path) => {
    const storage = await openSqliteStorage(path);
    const usage = await storage.createUsage("demo", T0);
    const results = await Promise.all(
      Array.from(
        { length: 500 },
        (_, i) => storage.addReport(input(usage.uuid, i, T0 + i)),
      ),
    );
    const ids = results.map((r) => r.status === "stored" ? r.report.id : -1);
    assertEquals(new Set(ids).size, 500);
    assert(ids.every((id) => id > 0));
    // Another connection sees every acknowledged report: they are committed.
    const reader = new DatabaseSync(path);
    assertEquals(reader.prepare("SELECT count(*) AS n FROM reports").get(), {
      n: 500,
    });
    reader.close();
    await storage.close();
    await assertRejects(storage.createUsage("late", T0), /storage is closed/);
  });
});

Deno.test("SqliteStorage.addReport() reports unknown sessions, session caps and duplicates", async () => {
  const storage = await openSqliteStorage(":memory:");
  try {
    assertEquals(
      (await storage.addReport(input("f".repeat(32), 1, T0))).status,
      "unknown-session",
    );
    const usage = await storage.createUsage("nb", T0);
    const first = await storage.addReport(
      input(usage.uuid, 1, T0, { maxReportsPerSession: 3 }),
    );
    assertEquals(first.status, "stored");
    const dup = await storage.addReport(
      input(usage.uuid, 1, T0 + 59_999, { maxReportsPerSession: 3 }),
    );
    assertEquals(dup.status, "duplicate");
    if (dup.status === "duplicate" && first.status === "stored") {
      assertEquals(dup.report.id, first.report.id);
      assertEquals(dup.report.occurrences, 2);
      assertEquals(dup.report.lastSeenAt, T0 + 59_999);
      assertEquals(dup.report.notebook, "nb");
    }
    assertEquals(
      (await storage.addReport(
        input(usage.uuid, 2, T0, { maxReportsPerSession: 3 }),
      )).status,
      "stored",
    );
    assertEquals(
      await storage.addReport(
        input(usage.uuid, 3, T0, { maxReportsPerSession: 3 }),
      ),
      {
        status: "session-limit",
        limit: 3,
      },
    );
    assertEquals((await storage.getUsage(usage.uuid))?.reportCount, 3);
  } finally {
    await storage.close();
  }
});

Deno.test("SqliteStorage.prune() deletes reports older than the retention and keeps per-day counts", async () => {
  const storage = await openSqliteStorage(":memory:");
  try {
    const old = await storage.createUsage("nb", T0 - 100 * DAY);
    await storage.addReport(input(old.uuid, 1, T0 - 100 * DAY));
    const recent = await storage.createUsage("nb", T0 - DAY);
    await storage.addReport(input(recent.uuid, 2, T0 - DAY));
    const result = await storage.prune({
      now: T0,
      maxAgeMs: 90 * DAY,
      maxBytes: 2 ** 30,
    });
    assertEquals([
      result.expiredReports,
      result.expiredUsages,
      result.evictedReports,
    ], [1, 1, 0]);
    const left = await storage.listReports({ skip: 0, limit: 10 });
    assertEquals(left.map((r) => r.execution_count), [2]);
    assertEquals(await storage.getUsage(old.uuid), undefined);
    const counts = await storage.dailyCounts({
      fromDay: "2026-01-01",
      toDay: "2026-12-31",
    });
    assertEquals(counts.map((c) => [c.day, c.reports, c.sessions]), [[
      "2026-08-17",
      1,
      1,
    ], ["2026-11-24", 1, 1]]);
  } finally {
    await storage.close();
  }
});

Deno.test("SqliteStorage.prune() evicts the oldest raw reports first past the size cap", async () => {
  await withDb(async (path) => {
    const storage = await openSqliteStorage(path, { synchronous: "normal" });
    const usage = await storage.createUsage("nb", T0);
    const big = "m".repeat(900);
    await Promise.all(Array.from({ length: 2000 }, (_, i) =>
      storage.addReport({
        ...input(usage.uuid, i, T0 + i * 1000),
        payload: { ...payload(i), error_message: `${i} ${big}` },
      })));
    const before = storage.dataBytes;
    assert(before > 2_000_000, `only ${before} bytes`);
    const cap = Math.floor(before / 2);
    const result = await storage.prune({
      now: T0 + 3_000_000,
      maxAgeMs: 90 * DAY,
      maxBytes: cap,
    });
    assert(result.evictedReports > 500, JSON.stringify(result));
    assert(result.bytes <= cap, JSON.stringify(result));
    const left = await storage.listReports({ skip: 0, limit: 2000 });
    assertEquals(left.length, 2000 - result.evictedReports);
    // The survivors are the newest ones, in one contiguous run.
    assertEquals(left[0]!.execution_count, result.evictedReports);
    assertEquals(left.at(-1)!.execution_count, 1999);
    const counts = await storage.dailyCounts({
      fromDay: "2026-11-25",
      toDay: "2026-11-25",
    });
    assertEquals(counts[0]!.reports, 2000);
    await storage.close();
  });
});

Deno.test("SqliteStorage lists reports by notebook and time, newest first on request", async () => {
  const storage = await openSqliteStorage(":memory:");
  try {
    const a = await storage.createUsage("a", T0);
    const b = await storage.createUsage("b", T0);
    for (let i = 0; i < 5; i++) {
      await storage.addReport(input(a.uuid, i, T0 + i * DAY));
      await storage.addReport(input(b.uuid, i, T0 + i * DAY));
    }
    const desc = await storage.listReports({
      skip: 1,
      limit: 2,
      notebook: "a",
      order: "desc",
    });
    assertEquals(desc.map((r) => [r.notebook, r.execution_count]), [["a", 3], [
      "a",
      2,
    ]]);
    const window = await storage.listReports({
      skip: 0,
      limit: 10,
      since: T0 + DAY,
      until: T0 + 3 * DAY,
    });
    assertEquals(window.length, 4);
    const usageReports = await storage.listUsageReports([b.uuid]);
    assertEquals(usageReports.map((r) => r.usageUuid), Array(5).fill(b.uuid));
    assertEquals(
      (await storage.notebooks()).map((
        n,
      ) => [n.notebook, n.reports, n.sessions]),
      [["a", 5, 1], [
        "b",
        5,
        1,
      ]],
    );
  } finally {
    await storage.close();
  }
});
