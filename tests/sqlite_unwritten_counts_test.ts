import { deepEqual, equal, ok } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  openSqliteStorage,
  type SqliteStorage,
  type SqliteStorageOptions,
} from "../src/server/sqlite_storage.ts";
import { utcDay } from "../src/server/storage.ts";
import {
  REFUSED_FIRST_LINE,
  refuseReports,
} from "./support/refusing_trigger.ts";
import { numberedPayload, reportInput } from "./support/report_input.ts";
import { START, UNWRITTEN_BATCHES } from "./support/unwritten_counts_writer.ts";

const WRITER = new URL("./support/unwritten_counts_writer.ts", import.meta.url)
  .pathname;

/** Every count the file holds, read with SQL through another connection. */
function counts(path: string): Record<string, unknown[]> {
  const db = new DatabaseSync(path);
  try {
    const all = (sql: string) =>
      db.prepare(sql).all().map((row) => ({ ...row }));
    return {
      groups: all(
        `SELECT id, error_name, error_message, latest, count, sessions, first_seen,
           last_seen, state, first_lines, cell_numbers FROM groups ORDER BY id`,
      ),
      groupDays: all("SELECT * FROM group_days ORDER BY group_id, day"),
      groupHours: all("SELECT * FROM group_hours ORDER BY group_id, hour"),
      notebookHours: all("SELECT * FROM notebook_hours ORDER BY hour"),
      daily: all("SELECT * FROM daily_counts ORDER BY day"),
      usages: all(
        "SELECT id, report_count, last_report_at FROM usages ORDER BY id",
      ),
    };
  } finally {
    db.close();
  }
}

/** `[last report counted, last report stored]`. */
function countedThrough(path: string): [number, number] {
  const db = new DatabaseSync(path);
  try {
    const through = db.prepare("SELECT report_id AS n FROM counted_through")
      .get() as { n: number };
    const last = db.prepare("SELECT max(id) AS n FROM reports").get() as {
      n: number;
    };
    return [through.n, last.n];
  } finally {
    db.close();
  }
}

async function runWriter(path: string, mode: "crash" | "close") {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", WRITER, path, mode],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/\b(ready|done)\n/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  if (mode === "crash") child.kill("SIGKILL");
  await reader.cancel();
  const status = await child.status;
  if (mode === "close") equal(status.code, 0);
  ok(
    text.includes(mode === "crash" ? "ready" : "done"),
    `writer said ${JSON.stringify(text)}`,
  );
}

/** Runs `test` on a storage opened with `options` on a new file, then removes it. */
async function withStorage(
  options: SqliteStorageOptions,
  test: (storage: SqliteStorage, path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-unwritten-" });
  try {
    const path = `${dir}/errors.db`;
    await test(await openSqliteStorage(path, options), path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("SqliteStorage: counts left unwritten by batches of reports are counted again after kill -9, equal to a clean close's", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-unwritten-" });
  try {
    const clean = `${dir}/clean.db`;
    await runWriter(clean, "close");
    const crashed = `${dir}/crashed.db`;
    await runWriter(crashed, "crash");

    // The killed process committed its reports but not their counts.
    const [through, last] = countedThrough(crashed);
    const reports = 4 + 3 * UNWRITTEN_BATCHES;
    equal(last, reports);
    equal(through, 4);
    const before = counts(crashed);
    deepEqual(
      (before.daily as { reports: number }[]).map((d) => d.reports),
      [4],
    );

    // Opening the file counts them again and writes the counts.
    const storage = await openSqliteStorage(crashed);
    deepEqual(countedThrough(crashed), [reports, reports]);
    const after = counts(crashed);
    const expected = counts(clean);
    deepEqual(after, expected);
    equal(
      (expected.usages as { report_count: number }[]).reduce(
        (n, u) => n + u.report_count,
        0,
      ),
      reports,
    );
    equal(
      (expected.groupHours as { count: number }[]).reduce(
        (n, h) => n + h.count,
        0,
      ),
      reports,
    );
    // Reports 7 minutes apart: counts in several hours.
    const hours = new Set(
      Array.from(
        { length: reports },
        (_, i) => Math.floor((START + i * 7 * 60_000) / 3_600_000),
      ),
    );
    ok(hours.size > 2);
    deepEqual(
      new Set((expected.groupHours as { hour: number }[]).map((h) => h.hour)),
      hours,
    );
    await storage.close();
    deepEqual(counts(crashed), expected);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqliteStorage: a rolled-back batch keeps the unwritten counts of the batches before it; reads and caps see them", () =>
  withStorage({
    countsEvery: { batches: 1000, ms: 3_600_000 },
  }, async (storage, path) => {
    const now = Date.UTC(2026, 0, 5, 12);
    const usage = await storage.createUsage("counts", now);
    const add = (i: number, refused = false) =>
      storage.addReport(
        reportInput(
          usage.uuid,
          refused
            ? { ...numberedPayload(i), first_line: REFUSED_FIRST_LINE }
            : numberedPayload(i),
          now + i,
          { maxReportsPerSession: 9 },
        ),
      );
    // The first creates the group (written); then three batches left unwritten.
    await add(0);
    for (let i = 1; i <= 3; i++) {
      await Promise.all([add(2 * i - 1), add(2 * i)]);
    }
    deepEqual(countedThrough(path), [1, 7]);

    // A refused report rolls its batch back, and the counts kept in memory
    // with it; they are counted again from the committed reports, and the
    // batch runs again without the refused one.
    refuseReports(path);
    const results = await Promise.allSettled([
      add(7),
      add(8, true),
    ]);
    deepEqual(results.map((r) => r.status), ["fulfilled", "rejected"]);
    deepEqual(countedThrough(path), [1, 8]);

    // The session's cap (9) counts the unwritten reports: one more fits.
    const capped = await Promise.all([add(10), add(11)]);
    deepEqual(capped.map((r) => r.status), ["stored", "session-limit"]);

    // Reads write the counts first.
    equal((await storage.getUsage(usage.uuid))!.reportCount, 9);
    deepEqual(countedThrough(path), [9, 9]);
    const [day] = await storage.dailyCounts({
      fromDay: utcDay(now),
      toDay: utcDay(now),
    });
    deepEqual([day!.reports, day!.sessions], [9, 1]);
    const { groups } = await storage.listGroups({
      notebook: "counts",
      skip: 0,
      limit: 10,
      sort: "count",
    });
    deepEqual(groups.map((g) => [g.count, g.sessions]), [[9, 1]]);
    const detail = await storage.getGroup(groups[0]!.id);
    deepEqual(detail!.cellNumbers, [0, 1, 2, 3, 4, 5, 6, 7, 10]);
    await storage.close();
    const stored = counts(path);
    deepEqual(
      (stored.groupHours as { count: number }[]).map((h) => h.count),
      [9],
    );
    deepEqual(
      (stored.notebookHours as { reports: number }[]).map((h) => h.reports),
      [9],
    );
  }));

Deno.test("SqliteStorage: counts are written on their own after countsEvery.ms, without another write or read", () =>
  withStorage({
    countsEvery: { batches: 1000, ms: 50 },
  }, async (storage, path) => {
    const now = Date.UTC(2026, 0, 5, 12);
    const usage = await storage.createUsage("counts", now);
    for (let i = 0; i < 3; i++) {
      await storage.addReport(reportInput(usage.uuid, numberedPayload(i), now));
    }
    deepEqual(countedThrough(path), [1, 3]);
    const deadline = Date.now() + 5_000;
    while (countedThrough(path)[0] !== 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    deepEqual(countedThrough(path), [3, 3]);
    await storage.close();
  }));

Deno.test("SqliteStorage: countsEvery is checked", async () => {
  for (const every of [{ batches: 0, ms: 10 }, { batches: 2, ms: -1 }]) {
    const message = await (async () =>
      await openSqliteStorage(":memory:", { countsEvery: every }))().then(
        (storage) =>
          storage.close().then(() => "opened"),
        (error) => String(error),
      );
    ok(message.includes("countsEvery must be"), message);
  }
});

Deno.test("SqliteStorage: a spike is measured against the past hours' counts, unwritten ones included", () =>
  withStorage({
    notices: { minGroupIntervalMs: 0, spikeFactor: 10, spikeMinimum: 3 },
    countsEvery: { batches: 1000, ms: 3_600_000 },
  }, async (storage, path) => {
    const lastHour = Date.UTC(2026, 0, 5, 11);
    const usage = await storage.createUsage("counts", lastHour);
    const add = (n: number, now: number) =>
      storage.addReport(reportInput(usage.uuid, numberedPayload(n), now));
    // Six reports in the group's first hour: the first creates the group
    // (its counts written), the next five leave theirs unwritten.
    for (let n = 0; n < 6; n++) await add(n, lastHour + n * 60_000);
    deepEqual(countedThrough(path), [1, 6]);
    // This hour: a spike is more than 10 x 6 reports (not 10 x 1).
    const notices: (string | undefined)[] = [];
    for (let n = 0; n < 62; n++) {
      const result = await add(100 + n, lastHour + 3_600_000 + n * 1000);
      notices.push(result.status === "stored" ? result.group?.notice : "-");
    }
    deepEqual(countedThrough(path), [1, 68]);
    equal(notices.indexOf("spike"), 60);
    equal(notices.filter((kind) => kind !== undefined).length, 1);
    await storage.close();
  }));
