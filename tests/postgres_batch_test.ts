/**
 * Reports stored together in one batch (group commit) are grouped as if
 * stored one by one: each group counted once per report, created and
 * reopened once, its sessions counted once per pair, its latest payload the
 * last report's, and reports over a session's cap left out entirely. Run on
 * both engines; on PostgreSQL the concurrent calls share `nbr_add_reports`
 * batches.
 */

import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import type { AddReportResult, Storage } from "../src/server/storage.ts";
import type { ErrorPayload } from "../src/types.ts";
import { engineTest } from "./support/storage_engines.ts";

const T0 = Date.UTC(2026, 10, 25, 12);

function payload(message: string, n: number): ErrorPayload {
  return {
    error_name: "Error",
    error_message: message,
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: n }],
    first_line: `line ${n % 3}`,
    execution_count: n,
    notebook: "demo",
  };
}

function add(
  storage: Storage,
  usageUuid: string,
  message: string,
  n: number,
  maxReportsPerSession = Infinity,
): Promise<AddReportResult> {
  return storage.addReport({
    usageUuid,
    payload: payload(message, n),
    now: T0 + n,
    dedupeWindowMs: 60_000,
    maxReportsPerSession,
  });
}

engineTest(
  "Storage.addReport() groups concurrent reports of two errors and two sessions as one by one",
  async ({ open }) => {
    const storage = await open();
    const a = await storage.createUsage("demo", T0);
    const b = await storage.createUsage("demo", T0);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, n) =>
        add(
          storage,
          n % 2 === 0 ? a.uuid : b.uuid,
          n % 4 < 2 ? "boom 1" : "bang 2",
          n,
        )),
    );
    assert(results.every((r) => r.status === "stored"));
    const { groups } = await storage.listGroups({
      notebook: "demo",
      sort: "count",
      skip: 0,
      limit: 10,
    });
    assertEquals(groups.length, 2);
    for (const group of groups) {
      assertEquals(group.count, 20);
      assertEquals(group.sessions, 2);
      const mine = results.flatMap((r, n) =>
        r.status === "stored" && r.group?.id === group.id
          ? [{ n, id: r.report.id, created: r.group.created }]
          : []
      );
      assertEquals(mine.length, 20);
      assertEquals(mine.filter((m) => m.created).length, 1);
      const detail = (await storage.getGroup(group.id))!;
      assertEquals([...detail.firstLines].sort(), [
        "line 0",
        "line 1",
        "line 2",
      ]);
      // Concurrent calls have no order: the latest payload is that of the
      // report stored last, the last-seen time the latest of them.
      const last = mine.reduce((x, y) => y.id > x.id ? y : x);
      assertEquals(detail.latest, payload(group.errorMessage, last.n));
      assertEquals(group.lastSeen, T0 + Math.max(...mine.map((m) => m.n)));
    }
  },
);

engineTest(
  "Storage.addReport() reopens a resolved group once for concurrent reports",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    const first = await add(storage, usage.uuid, "boom", 0);
    assert(first.status === "stored" && first.group?.created);
    assert(await storage.setGroupState(first.group.id, "resolved", T0 + 1));
    const results = await Promise.all(
      Array.from(
        { length: 10 },
        (_, n) => add(storage, usage.uuid, "boom", n + 1),
      ),
    );
    const reopened = results.filter((r) =>
      r.status === "stored" && r.group?.reopened
    );
    assertEquals(reopened.length, 1);
    const group = (await storage.getGroup(first.group.id))!;
    assertEquals([group.state, group.count, group.sessions], ["open", 11, 1]);
  },
);

engineTest(
  "Storage.addReport() leaves reports over a session's cap out of the group, and a new error of only those makes no group",
  async ({ open }) => {
    const storage = await open();
    const capped = await storage.createUsage("demo", T0);
    const other = await storage.createUsage("demo", T0);
    for (let n = 0; n < 3; n++) {
      assertEquals(
        (await add(storage, capped.uuid, "boom", n, 3)).status,
        "stored",
      );
    }
    // In one batch: reports over the cap, among them the only reports of
    // an error (it must not make a group), and another session's report.
    const results = await Promise.all([
      add(storage, capped.uuid, "boom", 3, 3),
      add(storage, capped.uuid, "never grouped", 4, 3),
      add(storage, other.uuid, "boom", 5, 3),
      add(storage, capped.uuid, "never grouped", 6, 3),
    ]);
    assertEquals(
      results.map((r) => r.status),
      ["session-limit", "session-limit", "stored", "session-limit"],
    );
    const { groups } = await storage.listGroups({
      notebook: "demo",
      sort: "count",
      skip: 0,
      limit: 10,
    });
    assertEquals(
      groups.map((g) => [g.errorMessage, g.count, g.sessions]),
      [["boom", 4, 2]],
    );
  },
);
