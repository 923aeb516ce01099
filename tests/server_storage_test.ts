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
import {
  numberedInput as input,
  numberedPayload as payload,
} from "./support/report_input.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 10, 25, 12);

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
        "reports_notebook_id",
        "reports_usage",
        "usages_created_at",
      ]
    ) {
      assert(indexes.includes(name), name);
    }
    assert(
      !indexes.includes("reports_usage_hash"),
      "reports_usage_hash is dropped by migration 6 (duplicates are found in memory)",
    );
    assert(
      !indexes.includes("reports_created_at"),
      "reports_created_at is dropped by migration 9 (pruning goes in arrival order)",
    );
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

Deno.test("SqliteStorage finds a session's reports and prunes sessions without reading every report", async () => {
  // SQLite plans every statement the storage prepared here (writes, a
  // session's reports, pruning, a group's deletion): none may scan the whole
  // reports table. Before migration 7, reading a session's reports and
  // deleting expired sessions (NOT EXISTS, then ON DELETE CASCADE) did; on a
  // file of 300,000 reports in 20,000 sessions, prune() then held the event
  // loop for 227 s (0.4 s with the index).
  const prepared = new Set<string>();
  const prepare = DatabaseSync.prototype.prepare;
  DatabaseSync.prototype.prepare = function (this: DatabaseSync, sql: string) {
    prepared.add(sql);
    return prepare.call(this, sql);
  };
  try {
    await withDb(async (path) => {
      const storage = await openSqliteStorage(path);
      const old = await storage.createUsage("nb", T0 - 100 * DAY);
      const usage = await storage.createUsage("nb", T0);
      await storage.addReport(input(old.uuid, 1, T0 - 100 * DAY));
      const stored = await Promise.all(
        [2, 3, 3].map((n) => storage.addReport(input(usage.uuid, n, T0))),
      );
      assertEquals(stored.map((r) => r.status), [
        "stored",
        "stored",
        "duplicate",
      ]);
      assertEquals(
        (await storage.listUsageReports([usage.uuid])).map((r) =>
          r.execution_count
        ),
        [2, 3],
      );
      const result = await storage.prune({
        now: T0,
        maxAgeMs: 90 * DAY,
        maxBytes: 1 << 30,
      });
      assertEquals([result.expiredReports, result.expiredUsages], [1, 1]);
      assertEquals(await storage.getUsage(old.uuid), undefined);
      const group = stored[0]!.status === "stored"
        ? stored[0]!.group
        : undefined;
      assert(group !== undefined && await storage.deleteGroup(group.id));
      await storage.close();
      // Planned on the same file, without the spy.
      DatabaseSync.prototype.prepare = prepare;
      const raw = new DatabaseSync(path);
      const scans: string[] = [];
      for (const sql of prepared) {
        if (!/^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b/i.test(sql)) continue;
        if (!/\breports\b/.test(sql)) continue;
        const plan = raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as {
          detail: string;
        }[];
        // "SCAN r" reads every row, unless in row id order under a LIMIT
        // (the oldest or newest reports: pruning, eviction, the duplicate
        // finder's load), which stops early; "SCAN reports USING INDEX …"
        // with a LIMIT does too. Neither is counted.
        const byIdUnderLimit = /ORDER BY (r\.)?id( DESC)? LIMIT \?\)?\s*$/i
          .test(sql);
        const full = plan.filter((step) =>
          /^SCAN (r|reports)$/.test(step.detail) && !byIdUnderLimit
        );
        if (full.length > 0) {
          scans.push(
            `${sql.replace(/\s+/g, " ")} => ${
              plan.map((step) => step.detail).join(" | ")
            }`,
          );
        }
      }
      raw.close();
      assert(prepared.size > 10, `only ${prepared.size} statements seen`);
      assertEquals(scans, []);
    });
  } finally {
    DatabaseSync.prototype.prepare = prepare;
  }
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

Deno.test("SqliteStorage prunes expired reports in arrival order, past a chunk, and one stored after the clock stepped back waits for those before it", async () => {
  await withDb(async (path) => {
    const storage = await openSqliteStorage(path);
    try {
      const usage = await storage.createUsage("nb", T0 - 200 * DAY);
      // 5,003 expired reports (more than one chunk of 5,000), then a fresh
      // one, then one whose time is 100 days back (the clock stepped back).
      for (let i = 0; i < 5_003; i += 1_000) {
        await Promise.all(
          Array.from(
            { length: Math.min(1_000, 5_003 - i) },
            (_, j) =>
              storage.addReport(input(usage.uuid, i + j, T0 - 100 * DAY)),
          ),
        );
      }
      await storage.addReport(input(usage.uuid, 10_000, T0));
      await storage.addReport(input(usage.uuid, 10_001, T0 - 100 * DAY));
      const prune = (now: number) =>
        storage.prune({ now, maxAgeMs: 90 * DAY, maxBytes: 1 << 30 });
      assertEquals((await prune(T0)).expiredReports, 5_003);
      const left = async () =>
        (await storage.listUsageReports([usage.uuid])).map((r) =>
          r.execution_count
        );
      assertEquals(await left(), [10_000, 10_001]);
      // Once the report before it expires, both go.
      assertEquals((await prune(T0 + 91 * DAY)).expiredReports, 2);
      assertEquals(await left(), []);
    } finally {
      await storage.close();
    }
  });
});
