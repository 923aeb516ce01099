import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  errorFingerprint,
  isNotebookFrame,
  normalizeMessage,
} from "../src/server/fingerprint.ts";
import {
  GROUP_LIMITS,
  type NoticePolicy,
  type Storage,
  utcDay,
} from "../src/server/storage.ts";
import type { ErrorPayload, TracebackFrame } from "../src/types.ts";
import { engineTest } from "./support/storage_engines.ts";
import { reportInput as report } from "./support/report_input.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const POLICY: NoticePolicy = {
  minGroupIntervalMs: 30 * 60_000,
  spikeFactor: 10,
  spikeMinimum: 20,
};

function payload(overrides: Partial<ErrorPayload> = {}): ErrorPayload {
  return {
    error_name: "KeyError",
    error_message: "user 42 not found",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 3 },
      { filename: "<cell>", fun_name: "loadUser", lineno: 12 },
      { filename: "ext:core/01_core.js", fun_name: "op", lineno: 90 },
    ],
    first_line: "loadUser(42)",
    execution_count: 4,
    notebook: "demo",
    ...overrides,
  };
}

async function add(
  storage: Storage,
  uuid: string,
  p: ErrorPayload,
  now: number,
) {
  const result = await storage.addReport(report(uuid, p, now));
  assert(
    result.status === "stored" || result.status === "duplicate",
    result.status,
  );
  assert(result.group, "addReport() returns the group");
  return result.group;
}

// ------------------------------------------------------------ fingerprint

Deno.test("normalizeMessage() replaces numbers, hex ids, UUIDs, quoted strings and paths", () => {
  const cases: [string, string][] = [
    ["user 42 not found", "user <n> not found"],
    ["retry 3 of 10 after 1.5s", "retry <n> of <n> after <n>s"],
    [
      "object 0x7ffd3a2c at 9f86d081884c7d65 freed",
      "object <hex> at <hex> freed",
    ],
    [
      "job 550e8400-E29B-41d4-a716-446655440000 failed",
      "job <uuid> failed",
    ],
    [`Cannot find module 'lodash'`, "Cannot find module <str>"],
    [`Unexpected token "}" in JSON`, "Unexpected token <str> in JSON"],
    ["open /data/run-7/out.csv: denied", "open <path>: denied"],
    ["read ~/notes/x.json failed", "read <path> failed"],
    ["GET https://api.example.com/v1/items?id=3 -> 500", "GET <path> -> <n>"],
    ["load data/2026/input.csv", "load <path>"],
    [String.raw`open C:\Users\<user>\nb\x.csv`, "open <path>"],
    ["x is not a function", "x is not a function"],
    ["deadbeef is a word", "deadbeef is a word"],
    ["  spaced\n\tout  ", "spaced out"],
  ];
  for (const [input, expected] of cases) {
    assertEquals(normalizeMessage(input), expected, input);
  }
  // Idempotent: normalising twice changes nothing.
  for (const [input] of cases) {
    const once = normalizeMessage(input);
    assertEquals(normalizeMessage(once), once);
  }
});

Deno.test("isNotebookFrame() keeps cells and local files and drops runtime and package frames", () => {
  const frame = (filename: string): TracebackFrame => ({
    filename,
    fun_name: "f",
    lineno: 1,
  });
  for (const own of ["<cell>", "<eval>", "lib/util.ts", "~/nb/helpers.ts"]) {
    assert(isNotebookFrame(frame(own)), own);
  }
  for (
    const foreign of [
      "<native>",
      "ext:core/01_core.js",
      "node:internal/fs",
      "npm:lodash@4.17.21/lodash.js",
      "jsr:@std/path@1.0.0/join.ts",
      "https://deno.land/x/y/mod.ts",
    ]
  ) {
    assert(!isNotebookFrame(frame(foreign)), foreign);
  }
});

Deno.test("errorFingerprint() groups across line numbers, numbers in messages and library frames", () => {
  const base = payload();
  const edited = payload({
    error_message: "user 7 not found",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 5 },
      { filename: "<cell>", fun_name: "loadUser", lineno: 20 },
      { filename: "ext:core/01_core.js", fun_name: "otherOp", lineno: 1 },
      { filename: "<native>", fun_name: "JSON.parse", lineno: null },
    ],
    first_line: "await loadUser(7)",
    execution_count: 9,
  });
  assertEquals(errorFingerprint(base), errorFingerprint(edited));
  assert(/^[0-9a-f]{64}$/.test(errorFingerprint(base)));
  // Recursion depth does not split a group.
  const deep = payload({
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 3 },
      { filename: "<cell>", fun_name: "loadUser", lineno: 12 },
      { filename: "<cell>", fun_name: "loadUser", lineno: 12 },
      { filename: "<cell>", fun_name: "loadUser", lineno: 12 },
    ],
  });
  assertEquals(errorFingerprint(base), errorFingerprint(deep));
});

Deno.test("errorFingerprint() separates messages, names, notebooks and own functions", () => {
  const base = errorFingerprint(payload());
  const different = [
    payload({ error_message: "user 42 is locked" }),
    payload({ error_name: "TypeError" }),
    payload({ notebook: "other" }),
    payload({
      traceback: [
        { filename: "<cell>", fun_name: "<module>", lineno: 3 },
        { filename: "<cell>", fun_name: "saveUser", lineno: 12 },
      ],
    }),
    payload({
      traceback: [
        { filename: "lib/users.ts", fun_name: "<module>", lineno: 3 },
        { filename: "<cell>", fun_name: "loadUser", lineno: 12 },
      ],
    }),
  ];
  const seen = new Set([base]);
  for (const p of different) seen.add(errorFingerprint(p));
  assertEquals(seen.size, different.length + 1);
});

// ------------------------------------------------------------ storage

engineTest(
  "Storage groups reports across sessions and edited line numbers, apart by message",
  async ({ open }) => {
    const storage = await open();
    const a = await storage.createUsage("demo", T0);
    const b = await storage.createUsage("demo", T0);
    const g1 = await add(storage, a.uuid, payload(), T0);
    assertEquals(g1.created, true);
    const edited = payload({
      error_message: "user 7 not found",
      traceback: [
        { filename: "<cell>", fun_name: "<module>", lineno: 8 },
        { filename: "<cell>", fun_name: "loadUser", lineno: 30 },
      ],
      first_line: "loadUser(7)",
      execution_count: 11,
    });
    const g2 = await add(storage, b.uuid, edited, T0 + 1000);
    assertEquals(g2, { id: g1.id, created: false, reopened: false });
    // An identical report of one session within a minute is counted in the group too.
    const g3 = await add(storage, b.uuid, edited, T0 + 2000);
    assertEquals(g3.id, g1.id);
    const other = await add(
      storage,
      a.uuid,
      payload({ error_message: "user 42 is locked" }),
      T0 + 3000,
    );
    assert(other.created && other.id !== g1.id);

    const group = await storage.getGroup(g1.id);
    assert(group);
    assertEquals(group.count, 3);
    assertEquals(group.sessions, 2);
    assertEquals(group.firstSeen, T0);
    assertEquals(group.lastSeen, T0 + 2000);
    assertEquals(group.state, "open");
    assertEquals(group.errorMessage, "user 7 not found");
    assertEquals(group.latest, { ...edited, notebook: "demo" });
    assertEquals(group.firstLines, ["loadUser(42)", "loadUser(7)"]);
    assertEquals(group.cellNumbers, [4, 11]);
    assertEquals(group.fingerprint, errorFingerprint(payload()));
    // Reports of each group are tied to it: deleting one group keeps the other's.
    assertEquals(await storage.getGroup(999_999), undefined);
  },
);

engineTest(
  "Storage bounds a group's distinct first lines and cell numbers",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    let id = 0;
    for (let i = 0; i < 60; i++) {
      const g = await add(
        storage,
        usage.uuid,
        payload({ first_line: `loadUser(${i}) // v${i}`, execution_count: i }),
        T0 + i,
      );
      id = g.id;
    }
    const group = await storage.getGroup(id);
    assert(group);
    assertEquals(group.count, 60);
    assertEquals(group.firstLines.length, GROUP_LIMITS.firstLines);
    assertEquals(group.firstLines[0], "loadUser(0) // v0");
    assertEquals(group.cellNumbers.length, GROUP_LIMITS.cellNumbers);
    assertEquals(group.cellNumbers.slice(0, 3), [0, 1, 2]);
  },
);

engineTest(
  "Storage.listGroups() sorts, filters by state and text, and pages with a total",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    const other = await storage.createUsage("elsewhere", T0);
    const ids: number[] = [];
    // Group i gets i + 1 reports; later groups are seen later.
    for (let i = 0; i < 5; i++) {
      for (let k = 0; k <= i; k++) {
        const g = await add(
          storage,
          usage.uuid,
          payload({
            error_name: `Error${"ABCDE"[i]}`,
            error_message: `Boom ${"vwxyz"[i]} ${k}`,
          }),
          T0 + i * 1000 + k,
        );
        if (k === 0) ids.push(g.id);
      }
    }
    await add(storage, other.uuid, payload(), T0);
    // Make the first group the most recently seen.
    await add(
      storage,
      usage.uuid,
      payload({ error_name: "ErrorA", error_message: "Boom v 99" }),
      T0 + 60_000,
    );

    const byLastSeen = await storage.listGroups({
      notebook: "demo",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(byLastSeen.total, 5);
    assertEquals(byLastSeen.groups.map((g) => g.id), [
      ids[0],
      ids[4],
      ids[3],
      ids[2],
      ids[1],
    ]);
    const byCount = await storage.listGroups({
      notebook: "demo",
      sort: "count",
      skip: 0,
      limit: 10,
    });
    assertEquals(byCount.groups.map((g) => g.count), [5, 4, 3, 2, 2]);
    assertEquals(byCount.groups[3]!.id, ids[1]); // tie: newest id first
    const page = await storage.listGroups({
      notebook: "demo",
      sort: "count",
      skip: 1,
      limit: 2,
    });
    assertEquals(page.total, 5);
    assertEquals(page.groups.map((g) => g.id), [ids[3], ids[2]]);

    assertEquals(await storage.setGroupState(ids[2]!, "resolved", T0), true);
    assertEquals(await storage.setGroupState(ids[3]!, "ignored", T0), true);
    const resolved = await storage.listGroups({
      notebook: "demo",
      state: "resolved",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(resolved.groups.map((g) => g.id), [ids[2]]);
    const text = await storage.listGroups({
      notebook: "demo",
      text: "errorc",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(text.groups.map((g) => g.id), [ids[2]]);
    const inMessage = await storage.listGroups({
      notebook: "demo",
      text: "BOOM Y",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(inMessage.groups.map((g) => g.id), [ids[3]]);
    // LIKE wildcards are matched literally.
    const literal = await storage.listGroups({
      notebook: "demo",
      text: "%",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(literal.total, 0);
    const none = await storage.listGroups({
      notebook: "nobody",
      sort: "lastSeen",
      skip: 0,
      limit: 10,
    });
    assertEquals(none, { total: 0, groups: [] });
  },
);

engineTest(
  "Storage keeps per-day group counts and per-notebook window statistics",
  async ({ open }) => {
    const storage = await open();
    const now = T0 + 40 * DAY;
    const s1 = await storage.createUsage("demo", now - 35 * DAY);
    const s2 = await storage.createUsage("demo", now - 6 * DAY);
    const s3 = await storage.createUsage("demo", now - HOUR);
    const s4 = await storage.createUsage("quiet", now - 2 * DAY);
    const g = await add(storage, s1.uuid, payload(), now - 35 * DAY); // outside 30 d
    await add(storage, s1.uuid, payload({ first_line: "a" }), now - 20 * DAY);
    await add(storage, s2.uuid, payload(), now - 6 * DAY);
    await add(
      storage,
      s2.uuid,
      payload({ first_line: "b" }),
      now - 6 * DAY + 1,
    );
    await add(storage, s3.uuid, payload(), now - HOUR);
    await add(
      storage,
      s3.uuid,
      payload({ error_message: "other" }),
      now - 1000,
    );
    await add(storage, s4.uuid, payload({ notebook: "x" }), now - 2 * DAY);

    const days = await storage.groupDailyCounts(
      [g.id],
      utcDay(now - 30 * DAY),
      utcDay(now),
    );
    assertEquals(days, [
      { groupId: g.id, day: utcDay(now - 20 * DAY), count: 1 },
      { groupId: g.id, day: utcDay(now - 6 * DAY), count: 2 },
      { groupId: g.id, day: utcDay(now - HOUR), count: 1 },
    ]);
    assertEquals(
      await storage.groupDailyCounts([], "2000-01-01", "2100-01-01"),
      [],
    );

    const stats = await storage.notebookWindowStats(now);
    assertEquals(stats, [
      {
        notebook: "demo",
        groups: 2,
        reports24h: 2,
        reports7d: 4,
        reports30d: 5,
        sessions24h: 1,
        sessions7d: 2,
        sessions30d: 3,
      },
      {
        notebook: "quiet",
        groups: 1,
        reports24h: 0,
        reports7d: 1,
        reports30d: 1,
        sessions24h: 0,
        sessions7d: 1,
        sessions30d: 1,
      },
    ]);
  },
);

engineTest(
  "Storage state transitions: resolve, a later report reopens it, ignore stays ignored",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    const g = await add(storage, usage.uuid, payload(), T0);
    assertEquals(await storage.setGroupState(g.id, "resolved", T0 + 1), true);
    assertEquals((await storage.getGroup(g.id))!.state, "resolved");
    const again = await add(
      storage,
      usage.uuid,
      payload({ first_line: "x" }),
      T0 + 2,
    );
    assertEquals(again, { id: g.id, created: false, reopened: true });
    assertEquals((await storage.getGroup(g.id))!.state, "open");
    const next = await add(
      storage,
      usage.uuid,
      payload({ first_line: "y" }),
      T0 + 3,
    );
    assertEquals(next.reopened, false);

    assertEquals(await storage.setGroupState(g.id, "ignored", T0 + 4), true);
    const ignored = await add(
      storage,
      usage.uuid,
      payload({ first_line: "z" }),
      T0 + 5,
    );
    assertEquals(ignored.reopened, false);
    const group = await storage.getGroup(g.id);
    assertEquals(group!.state, "ignored");
    assertEquals(group!.count, 4);
    assertEquals(await storage.setGroupState(424242, "open", T0), false);
  },
);

engineTest(
  "Storage.deleteGroup() removes the group and its reports and keeps the aggregate counts",
  async ({ open }) => {
    const storage = await open();
    const usage = await storage.createUsage("demo", T0);
    const g = await add(storage, usage.uuid, payload(), T0);
    await add(storage, usage.uuid, payload({ first_line: "again" }), T0 + 1);
    const keep = await add(
      storage,
      usage.uuid,
      payload({ error_message: "other" }),
      T0 + 2,
    );
    assertEquals(await storage.deleteGroup(g.id), true);
    assertEquals(await storage.deleteGroup(g.id), false);
    assertEquals(await storage.getGroup(g.id), undefined);
    assertEquals(
      await storage.groupDailyCounts([g.id], "2000-01-01", "2100-01-01"),
      [],
    );
    const reports = await storage.listUsageReports([usage.uuid]);
    assertEquals(reports.map((r) => r.error_message), ["other"]);
    assert(await storage.getGroup(keep.id));
    const daily = await storage.dailyCounts({
      fromDay: utcDay(T0),
      toDay: utcDay(T0),
    });
    assertEquals(daily[0]!.reports, 3);
    // The same error later starts a new group.
    const fresh = await add(
      storage,
      usage.uuid,
      payload({ first_line: "later" }),
      T0 + 5,
    );
    assert(fresh.created && fresh.id !== g.id);
  },
);

engineTest(
  "Storage queues notices for new groups and regressions at most once per 30 minutes",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    const g = await add(storage, usage.uuid, payload(), T0);
    assertEquals(g.notice, "new");
    const second = await add(
      storage,
      usage.uuid,
      payload({ first_line: "b" }),
      T0 + 1,
    );
    assertEquals(second.notice, undefined);
    // Resolved and back within 30 minutes of the last notice: reopened, not notified.
    await storage.setGroupState(g.id, "resolved", T0 + 2);
    const early = await add(
      storage,
      usage.uuid,
      payload({ first_line: "c" }),
      T0 + 10 * 60_000,
    );
    assertEquals(early, { id: g.id, created: false, reopened: true });
    // Resolved and back after 30 minutes: a regression notice.
    await storage.setGroupState(g.id, "resolved", T0 + 20 * 60_000);
    const late = await add(
      storage,
      usage.uuid,
      payload({ first_line: "d" }),
      T0 + 31 * 60_000,
    );
    assertEquals(late.notice, "regression");
    // Ignored groups never notify.
    await storage.setGroupState(g.id, "ignored", T0 + 40 * 60_000);
    const other = await add(
      storage,
      usage.uuid,
      payload({ error_message: "fresh" }),
      T0 + 41 * 60_000,
    );
    assertEquals(other.notice, "new");
    const notices = await storage.listNotices();
    assertEquals(notices.map((n) => [n.kind, n.groupId, n.status]), [
      ["new", g.id, "pending"],
      ["regression", g.id, "pending"],
      ["new", other.id, "pending"],
    ]);
    const first = notices[0]!.data;
    assert(first.kind === "new");
    assertEquals(first.group.count, 1);
    assertEquals(first.latest.error_message, "user 42 not found");
  },
);

engineTest(
  "Storage queues a spike notice past 10x the hourly average and at least 20 in the hour",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    const start = T0 - 10 * HOUR;
    const g = await add(storage, usage.uuid, payload(), start); // new
    // Two reports an hour for ten hours: average about 2 per hour.
    for (let h = 0; h < 10; h++) {
      for (let k = 0; k < 2; k++) {
        const outcome = await add(
          storage,
          usage.uuid,
          payload({ first_line: `h${h}k${k}` }),
          start + h * HOUR + 1000 + k,
        );
        assertEquals(outcome.notice, undefined);
      }
    }
    // This hour: 19 reports are not a spike, the 20th is not either (20 <= 10 x ~2.1),
    // but at 22 (> 10 x 2.1) it is, once.
    const kinds: (string | undefined)[] = [];
    for (let i = 0; i < 30; i++) {
      const outcome = await add(
        storage,
        usage.uuid,
        payload({ first_line: `now ${i}` }),
        T0 + 60_000 + i,
      );
      kinds.push(outcome.notice);
    }
    const spikeAt = kinds.indexOf("spike");
    assertEquals(kinds.filter((k) => k === "spike").length, 1);
    // 21 reports before this hour over 10 hours: 2.1 per hour; more than 21 needed.
    assertEquals(spikeAt + 1, 22);
    const notice = (await storage.listNotices()).find((n) =>
      n.kind === "spike"
    );
    assert(notice && notice.data.kind === "spike");
    assertEquals(notice.data.hourCount, 22);
    assertEquals(notice.groupId, g.id);
  },
);

engineTest(
  "Storage never calls a quiet group's first busy hour a spike below 20 reports",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    await add(storage, usage.uuid, payload(), T0 - 48 * HOUR);
    const kinds: (string | undefined)[] = [];
    for (let i = 0; i < 19; i++) {
      kinds.push(
        (await add(
          storage,
          usage.uuid,
          payload({ first_line: `${i}` }),
          T0 + i,
        ))
          .notice,
      );
    }
    assertEquals(kinds.filter(Boolean), []);
    const twentieth = await add(
      storage,
      usage.uuid,
      payload({ first_line: "20" }),
      T0 + 20,
    );
    assertEquals(twentieth.notice, "spike");
  },
);

engineTest(
  "Storage.claimNotices() keeps to the hourly budget and rolls the rest into one digest",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    for (let i = 0; i < 25; i++) {
      await add(storage, usage.uuid, payload({ error_name: `E${i}` }), T0 + i);
    }
    const options = { hourlyCap: 20, limit: 100, leaseMs: 30_000 };
    const claimed = await storage.claimNotices({ ...options, now: T0 + 1000 });
    assertEquals(claimed.length, 20);
    for (const notice of claimed) {
      await storage.settleNotice(notice.id, { status: "sent" }, T0 + 2000);
    }
    assertEquals(
      await storage.claimNotices({ ...options, now: T0 + 3000 }),
      [],
    );
    let notices = await storage.listNotices();
    assertEquals(notices.filter((n) => n.status === "held").length, 5);
    // A new notice later in the same hour is held as well.
    await add(
      storage,
      usage.uuid,
      payload({ error_name: "Late" }),
      T0 + 40 * 60_000,
    );
    assertEquals(
      await storage.claimNotices({ ...options, now: T0 + 41 * 60_000 }),
      [],
    );
    // When the hour ends, one digest of the six held notices goes first.
    const next = T0 + HOUR;
    const digest = await storage.claimNotices({ ...options, now: next });
    assertEquals(digest.length, 1);
    assertEquals(digest[0]!.kind, "digest");
    const data = digest[0]!.data;
    assert(data.kind === "digest");
    assertEquals(data.items.map((i) => i.errorName), [
      "E20",
      "E21",
      "E22",
      "E23",
      "E24",
      "Late",
    ]);
    // A second claim (another instance) creates no second digest.
    assertEquals(await storage.claimNotices({ ...options, now: next + 1 }), []);
    notices = await storage.listNotices();
    assertEquals(notices.filter((n) => n.status === "digested").length, 6);
    assertEquals(notices.filter((n) => n.kind === "digest").length, 1);
  },
);

engineTest(
  "Storage.settleNotice() retries later, pauses on 429, gives up, and re-offers expired leases",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    await add(storage, usage.uuid, payload(), T0);
    await add(storage, usage.uuid, payload({ error_name: "Second" }), T0);
    const options = { hourlyCap: 20, limit: 1, leaseMs: 10_000 };
    const [first] = await storage.claimNotices({ ...options, now: T0 });
    assert(first);
    assertEquals(first.attempts, 1);
    await storage.settleNotice(first.id, {
      status: "retry",
      at: T0 + 5000,
      error: "HTTP 500",
    }, T0);
    // Not due yet: the other notice comes first.
    const [second] = await storage.claimNotices({ ...options, now: T0 + 1 });
    assert(second && second.id !== first.id);
    // A 429 pauses every send until the given time.
    await storage.settleNotice(second.id, {
      status: "retry",
      at: T0 + 60_000,
      error: "HTTP 429",
      pauseUntil: T0 + 60_000,
    }, T0 + 2);
    assertEquals(
      await storage.claimNotices({ ...options, now: T0 + 59_000 }),
      [],
    );
    const [again] = await storage.claimNotices({
      ...options,
      now: T0 + 60_000,
    });
    assertEquals(again!.id, first.id);
    assertEquals(again!.attempts, 2);
    // Never settled: the lease runs out and the notice is offered again.
    assertEquals(
      (await storage.claimNotices({ ...options, limit: 5, now: T0 + 60_001 }))
        .map((n) => n.id),
      [second.id],
    );
    const expired = await storage.claimNotices({
      ...options,
      limit: 5,
      now: T0 + 75_000,
    });
    assertEquals(expired.map((n) => n.id).sort(), [first.id, second.id].sort());
    await storage.settleNotice(first.id, {
      status: "failed",
      error: "HTTP 404",
    }, T0 + 75_001);
    await storage.settleNotice(second.id, { status: "sent" }, T0 + 75_001);
    const notices = await storage.listNotices();
    assertEquals(notices.map((n) => [n.status, n.lastError]), [
      ["failed", "HTTP 404"],
      ["sent", null],
    ]);
  },
);

Deno.test("sha256Hex() matches node:crypto on ASCII, multi-byte and block-boundary inputs", async () => {
  const { sha256Hex } = await import("../src/server/sha256.ts");
  const { createHash } = await import("node:crypto");
  for (
    const text of [
      "",
      "abc",
      "a".repeat(55),
      "a".repeat(56),
      "a".repeat(64),
      "héllo ☃ 😀 ".repeat(40),
      "x".repeat(5000),
    ]
  ) {
    assertEquals(
      sha256Hex(text),
      createHash("sha256").update(text).digest("hex"),
      `length ${text.length}`,
    );
  }
});

engineTest(
  "Storage with grouping off stores bare reports: no groups, no notices",
  async ({ engine, location }) => {
    let storage: Storage;
    if (engine === "sqlite") {
      const { openSqliteStorage } = await import(
        "../src/server/sqlite_storage.ts"
      );
      storage = await openSqliteStorage(location, {
        grouping: false,
        notices: POLICY,
      });
    } else {
      const { openPostgresStorage } = await import(
        "../src/server/postgres_storage.ts"
      );
      storage = await openPostgresStorage(location, {
        grouping: false,
        notices: POLICY,
      });
    }
    try {
      const usage = await storage.createUsage("demo", T0);
      const result = await storage.addReport(report(usage.uuid, payload(), T0));
      assertEquals(result.status, "stored");
      assert(result.status === "stored" && result.group === undefined);
      assertEquals(
        (await storage.listUsageReports([usage.uuid])).map((r) =>
          r.error_message
        ),
        ["user 42 not found"],
      );
      assertEquals(
        (await storage.listGroups({
          notebook: "demo",
          sort: "count",
          skip: 0,
          limit: 5,
        })).total,
        0,
      );
      assertEquals(await storage.listNotices(), []);
    } finally {
      await storage.close();
    }
  },
);

engineTest(
  "Storage queues exactly one spike notice when the spike arrives all at once",
  async ({ open }) => {
    const storage = await open({ notices: POLICY });
    const usage = await storage.createUsage("demo", T0);
    // One report an hour for ten hours: an average of 1.
    for (let h = 10; h >= 1; h--) {
      await add(
        storage,
        usage.uuid,
        payload({ first_line: `h${h}` }),
        T0 - h * HOUR,
      );
    }
    const outcomes = await Promise.all(
      Array.from(
        { length: 30 },
        (_, i) =>
          add(storage, usage.uuid, payload({ first_line: `now ${i}` }), T0 + i),
      ),
    );
    assertEquals(outcomes.filter((o) => o.notice === "spike").length, 1);
    const notices = await storage.listNotices();
    assertEquals(notices.map((n) => n.kind), ["new", "spike"]);
    const spike = notices[1]!.data;
    assert(spike.kind === "spike");
    assertEquals(spike.hourCount, 20);
    const group = await storage.getGroup(outcomes[0]!.id);
    assertEquals(group!.count, 40);
  },
);
