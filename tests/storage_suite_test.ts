/**
 * The storage contract, run against both engines (SQLite and PostgreSQL):
 * sessions, reports, the per-session cap, duplicates, listing, per-day
 * counts, pruning, migrations and concurrent writers.
 */

import {
  deepEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
import {
  openPostgresStorage,
  POSTGRES_MIGRATIONS,
  PostgresStorage,
} from "../src/server/postgres_storage.ts";
import { SQLITE_MIGRATIONS } from "../src/server/sqlite_storage.ts";
import { engineTest } from "./support/storage_engines.ts";
import {
  numberedInput as input,
  numberedPayload as payload,
} from "./support/report_input.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 10, 25, 12);

engineTest(
  "Storage creates, finds and lists sessions and counts them per day",
  async ({ open }) => {
    const storage = await open();
    const a = await storage.createUsage("demo", T0);
    const b = await storage.createUsage("demo", T0 + DAY);
    assert(/^[0-9a-f]{32}$/.test(a.uuid));
    assert(a.uuid !== b.uuid);
    assertEquals(await storage.getUsage(a.uuid), {
      id: a.id,
      uuid: a.uuid,
      notebook: "demo",
      createdAt: T0,
      reportCount: 0,
    });
    assertEquals(await storage.getUsage("0".repeat(32)), undefined);
    assertEquals(
      (await storage.listUsages({ skip: 1, limit: 5 })).map((u) => u.uuid),
      [b.uuid],
    );
    assertEquals(
      await storage.dailyCounts({ fromDay: "2026-11-01", toDay: "2026-11-30" }),
      [
        { day: "2026-11-25", notebook: "demo", reports: 0, sessions: 1 },
        { day: "2026-11-26", notebook: "demo", reports: 0, sessions: 1 },
      ],
    );
    await storage.ping();
  },
);

engineTest(
  "Storage.addReport() reports unknown sessions, session caps and duplicates",
  async ({ open }) => {
    const storage = await open();
    assertEquals(
      (await storage.addReport(input("f".repeat(32), 1, T0))).status,
      "unknown-session",
    );
    const usage = await storage.createUsage("nb", T0);
    const first = await storage.addReport(
      input(usage.uuid, 1, T0, { maxReportsPerSession: 3 }),
    );
    assert(first.status === "stored");
    assertEquals(first.report.notebook, "nb");
    const dup = await storage.addReport(
      input(usage.uuid, 1, T0 + 59_999, { maxReportsPerSession: 3 }),
    );
    assert(dup.status === "duplicate");
    assertEquals(dup.report.id, first.report.id);
    assertEquals(dup.report.occurrences, 2);
    assertEquals(dup.report.lastSeenAt, T0 + 59_999);
    assertEquals(dup.report.notebook, "nb");
    // Outside the window the same payload is stored again.
    const later = await storage.addReport(
      input(usage.uuid, 1, T0 + 120_000, { maxReportsPerSession: 3 }),
    );
    assertEquals(later.status, "stored");
    assertEquals(
      await storage.addReport(
        input(usage.uuid, 3, T0, { maxReportsPerSession: 3 }),
      ),
      { status: "session-limit", limit: 3 },
    );
    assertEquals((await storage.getUsage(usage.uuid))?.reportCount, 3);
    const [count] = await storage.dailyCounts({
      fromDay: "2026-11-25",
      toDay: "2026-11-25",
    });
    assertEquals(count!.reports, 3);
  },
);

engineTest(
  "Storage.addReport() counts a duplicate across a restart within the window",
  async ({ open }) => {
    const first = await open();
    const usage = await first.createUsage("nb", T0);
    const stored = await first.addReport(input(usage.uuid, 1, T0));
    assert(stored.status === "stored");
    const other = await first.addReport(input(usage.uuid, 2, T0 + 1_000));
    assert(other.status === "stored");
    await first.close();
    // A new instance on the same data knows what the last one stored.
    const second = await open();
    const dup = await second.addReport(input(usage.uuid, 1, T0 + 30_000));
    assert(dup.status === "duplicate");
    assertEquals(dup.report.id, stored.report.id);
    assertEquals(dup.report.occurrences, 2);
    // Past the window of the first report, it is stored again; the second
    // report's window is still open.
    const later = await second.addReport(input(usage.uuid, 1, T0 + 60_000));
    assertEquals(later.status, "stored");
    const dup2 = await second.addReport(input(usage.uuid, 2, T0 + 60_000));
    assert(dup2.status === "duplicate");
    assertEquals(dup2.report.id, other.report.id);
    // Another session's identical payload is its own report.
    const peer = await second.createUsage("nb", T0);
    assertEquals(
      (await second.addReport(input(peer.uuid, 2, T0 + 60_000))).status,
      "stored",
    );
    // A window reaching further back finds the latest of the session's
    // reports with that payload.
    const wide = await second.addReport(
      input(usage.uuid, 1, T0 + 61_000, { dedupeWindowMs: 600_000 }),
    );
    assert(wide.status === "duplicate");
    assert(later.status === "stored");
    assertEquals(wide.report.id, later.report.id);
  },
);

engineTest(
  "Storage.addReport() stores a report again once its duplicate's group was deleted",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("nb", T0);
    const stored = await storage.addReport(input(usage.uuid, 1, T0));
    assert(stored.status === "stored" && stored.group !== undefined);
    assertEquals(await storage.deleteGroup(stored.group.id), true);
    const again = await storage.addReport(input(usage.uuid, 1, T0 + 1_000));
    assert(again.status === "stored");
    assertEquals(again.report.occurrences, 1);
    assert(again.report.id !== stored.report.id);
    const dup = await storage.addReport(input(usage.uuid, 1, T0 + 2_000));
    assert(dup.status === "duplicate");
    assertEquals(dup.report.id, again.report.id);
  },
);

engineTest(
  "Storage resolves concurrent writes each after commit, one row each",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    const results = await Promise.all(
      Array.from(
        { length: 300 },
        (_, i) => storage.addReport(input(usage.uuid, i, T0 + i)),
      ),
    );
    const ids = results.map((r) => r.status === "stored" ? r.report.id : -1);
    assertEquals(new Set(ids).size, 300);
    // A second instance on the same data sees every acknowledged report.
    const other = await open();
    assertEquals(
      (await other.listReports({ skip: 0, limit: 1000 })).length,
      300,
    );
    assertEquals((await other.getUsage(usage.uuid))!.reportCount, 300);
    await storage.close();
    await assertRejects(storage.createUsage("late", T0), /storage is closed/);
  },
);

engineTest(
  "Storage lists reports by notebook, time and session, newest first on request",
  async ({ open }) => {
    const storage = await open();
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
    assertEquals(desc.map((r) => [r.notebook, r.execution_count]), [
      ["a", 3],
      ["a", 2],
    ]);
    const window = await storage.listReports({
      skip: 0,
      limit: 10,
      since: T0 + DAY,
      until: T0 + 3 * DAY,
    });
    assertEquals(window.length, 4);
    const usageReports = await storage.listUsageReports([b.uuid]);
    assertEquals(usageReports.map((r) => r.usageUuid), Array(5).fill(b.uuid));
    assertEquals(usageReports[0]!.traceback, payload(0).traceback);
    assertEquals(await storage.listUsageReports([]), []);
    const notebooks = await storage.notebooks();
    assertEquals(
      notebooks.map((n) => [n.notebook, n.reports, n.sessions, n.lastReportAt]),
      [["a", 5, 1, T0 + 4 * DAY], ["b", 5, 1, T0 + 4 * DAY]],
    );
    // A notebook is dated by the last report it received (found through the
    // (notebook, id) index, not by reading all its reports), even when the
    // clock stepped back in between.
    await storage.addReport(input(a.uuid, 5, T0 + DAY));
    assertEquals(
      (await storage.notebooks()).map((n) => [n.notebook, n.lastReportAt]),
      [["a", T0 + DAY], ["b", T0 + 4 * DAY]],
    );
  },
);

engineTest(
  "Storage.prune() deletes reports older than the retention and keeps per-day counts",
  async ({ open }) => {
    const storage = await open();
    const old = await storage.createUsage("nb", T0 - 100 * DAY);
    await storage.addReport(input(old.uuid, 1, T0 - 100 * DAY));
    const recent = await storage.createUsage("nb", T0 - DAY);
    await storage.addReport(input(recent.uuid, 2, T0 - DAY));
    const result = await storage.prune({
      now: T0,
      maxAgeMs: 90 * DAY,
      maxBytes: 2 ** 40,
    });
    assertEquals(
      [result.expiredReports, result.expiredUsages, result.evictedReports],
      [1, 1, 0],
    );
    const left = await storage.listReports({ skip: 0, limit: 10 });
    assertEquals(left.map((r) => r.execution_count), [2]);
    assertEquals(await storage.getUsage(old.uuid), undefined);
    const counts = await storage.dailyCounts({
      fromDay: "2026-01-01",
      toDay: "2026-12-31",
    });
    assertEquals(counts.map((c) => [c.day, c.reports, c.sessions]), [
      ["2026-08-17", 1, 1],
      ["2026-11-24", 1, 1],
    ]);
    // The group keeps its count after its raw reports went.
    const groups = await storage.listGroups({
      notebook: "nb",
      sort: "count",
      skip: 0,
      limit: 10,
    });
    assertEquals(groups.groups.map((g) => g.count), [2]);
  },
);

engineTest(
  "Storage.prune() evicts the oldest raw reports first past the size cap",
  async ({ engine, open }) => {
    const storage = await open();
    const usage = await storage.createUsage("nb", T0);
    const big = "m".repeat(900);
    await Promise.all(Array.from({ length: 1500 }, (_, i) =>
      storage.addReport({
        ...input(usage.uuid, i, T0 + i * 1000),
        payload: { ...payload(i), error_message: `${i} ${big}` },
      })));
    const probe = await storage.prune({
      now: T0 + 2_000_000,
      maxAgeMs: 90 * DAY,
      maxBytes: 2 ** 40,
    });
    assert(probe.bytes > 1_000_000, `only ${probe.bytes} bytes`);
    const cap = Math.floor(probe.bytes / 2);
    const result = await storage.prune({
      now: T0 + 2_000_000,
      maxAgeMs: 90 * DAY,
      maxBytes: cap,
    });
    assert(result.evictedReports >= 300, JSON.stringify(result));
    // SQLite frees pages at once; PostgreSQL reuses the space after vacuum.
    if (engine === "sqlite") {
      assert(result.bytes <= cap, JSON.stringify(result));
    }
    const left = await storage.listReports({ skip: 0, limit: 2000 });
    assertEquals(left.length, 1500 - result.evictedReports);
    // The survivors are the newest ones, in one contiguous run.
    const survivors = left.map((r) => r.execution_count!).sort((a, b) => a - b);
    assertEquals(survivors[0], result.evictedReports);
    assertEquals(survivors.at(-1), 1499);
    const counts = await storage.dailyCounts({
      fromDay: "2026-11-25",
      toDay: "2026-11-25",
    });
    assertEquals(counts[0]!.reports, 1500);
  },
);

engineTest(
  "Storage migrates once to the same versions on both engines and refuses a newer schema",
  async ({ engine, open, location }) => {
    assertEquals(
      POSTGRES_MIGRATIONS.map((m) => [m.version, m.name]),
      SQLITE_MIGRATIONS.map((m) => [m.version, m.name]),
    );
    // Several instances opening together migrate once.
    const storages = await Promise.all([open(), open(), open()]);
    await storages[0]!.createUsage("demo", T0);
    assertEquals(
      (await storages[2]!.listUsages({ skip: 0, limit: 10 })).length,
      1,
    );
    if (engine === "postgres") {
      const pg = storages[0] as PostgresStorage;
      assertEquals(
        await pg.schemaVersion(),
        POSTGRES_MIGRATIONS.at(-1)!.version,
      );
      // A schema from a newer server is refused, not downgraded.
      // deno-lint-ignore no-import-prefix
      const { default: postgres } = await import("npm:postgres@3.4.5");
      const schema = new URL(location).searchParams.get("search_path")!;
      const sql = postgres(location.split("?")[0]!, {
        onnotice: () => {},
        max: 1,
      });
      await sql.unsafe(
        `INSERT INTO "${schema}".schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)`,
      );
      await sql.end();
      await assertRejects(
        openPostgresStorage(location),
        /schema version is 99, newer than this server's \d+/,
      );
    }
  },
);

Deno.test("PostgresStorage rejects URLs that are not postgres:// and bad schema names", () => {
  assertThrows(() => new PostgresStorage("mysql://x@y/z"), TypeError);
  assertThrows(() => new PostgresStorage("not a url"), TypeError);
  assertThrows(
    () =>
      new PostgresStorage("postgres://x@127.0.0.1/db", {
        schema: 'x"; DROP TABLE y',
      }),
    /Invalid PostgreSQL schema name/,
  );
});
