import {
  deepEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import { type CollectorHandler, createCollector } from "../src/server/app.ts";
import { parseServerArgs, type ServerConfig } from "../src/server/cli.ts";
import {
  DEFAULT_NOTICE_POLICY,
  noticeMessage,
  SlackNotifier,
  type SlackNotifierOptions,
} from "../src/server/slack_notifier.ts";
import type { Storage } from "../src/server/storage.ts";
import type { SlackMessage } from "../src/slack_message.ts";
import type { ErrorPayload } from "../src/types.ts";
import { startServerProcess } from "./support/server_process.ts";
import { startSlackReceiver } from "./support/slack_receiver.ts";
import { engineTest } from "./support/storage_engines.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);

function payload(overrides: Partial<ErrorPayload> = {}): ErrorPayload {
  return {
    error_name: "TypeError",
    error_message: "x is not a function",
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 2 }],
    first_line: "x()",
    execution_count: 3,
    notebook: "demo",
    ...overrides,
  };
}

/** A collector on `storage` with an injected clock, plus helpers. */
function collector(storage: Storage, clock: () => number) {
  const handler: CollectorHandler = createCollector({
    storage,
    clock,
    limits: false,
  });
  async function session(notebook = "demo"): Promise<string> {
    const response = await handler(
      new Request("http://localhost/usages/", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ notebook }),
      }),
    );
    assertEquals(response.status, 200);
    return ((await response.json()) as { uuid: string }).uuid;
  }
  async function send(uuid: string, p: ErrorPayload): Promise<Response> {
    const response = await handler(
      new Request(`http://localhost/errors/${uuid}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(p),
      }),
    );
    assertEquals(response.status, 200, await response.clone().text());
    await response.body?.cancel();
    return response;
  }
  return { handler, session, send };
}

function header(body: unknown): string {
  const message = body as SlackMessage;
  const first = message.blocks[0];
  assert(first && first.type === "header");
  return first.text.text;
}

function notifierFor(
  storage: Storage,
  url: string,
  clock: () => number,
  extra: Partial<SlackNotifierOptions> = {},
): SlackNotifier {
  return new SlackNotifier({
    webhookUrl: url,
    storage,
    clock,
    retryBaseMs: 10_000,
    timeoutMs: 3000,
    ...extra,
  });
}

engineTest(
  "SlackNotifier posts a new group once, escaped, with its counts",
  async ({ open }) => {
    await using receiver = await startSlackReceiver();
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock, {
      groupLink: (id) => `https://errors.example.com/dashboard/groups/${id}`,
    });
    const a = await session();
    const b = await session();
    await send(
      a,
      payload({ error_message: "item 1 <!channel> is not a function" }),
    );
    now += 1000;
    await send(
      b,
      payload({ error_message: "item 2 <!channel> is not a function" }),
    );
    assertEquals(await notifier.runOnce(), 1);
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 1);
    const body = receiver.requests[0]!.body as SlackMessage;
    assertEquals(header(body), "New error group");
    const text = JSON.stringify(body);
    assert(text.includes("&lt;!channel&gt;"), text);
    assert(!text.includes("<!channel>"), text);
    assert(text.includes("1 report from 1 session"), text);
    assert(text.includes("https://errors.example.com/dashboard/groups/"), text);
    // Later reports of the same group queue nothing more.
    now += 10 * MINUTE;
    await send(
      a,
      payload({
        error_message: "item 3 <!channel> is not a function",
        first_line: "again()",
      }),
    );
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 1);
  },
);

engineTest(
  "SlackNotifier posts a regression when a resolved group comes back",
  async ({ open }) => {
    await using receiver = await startSlackReceiver();
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    const uuid = await session();
    await send(uuid, payload());
    await notifier.runOnce();
    const [group] = (await storage.listGroups({
      notebook: "demo",
      sort: "lastSeen",
      skip: 0,
      limit: 1,
    })).groups;
    assert(group);
    now += HOUR;
    assert(await storage.setGroupState(group.id, "resolved", now));
    now += MINUTE;
    await send(uuid, payload({ first_line: "x() // retried" }));
    assertEquals(await notifier.runOnce(), 1);
    assertEquals(receiver.requests.length, 2);
    assertEquals(
      header(receiver.requests[1]!.body),
      "Regression: a resolved error is back",
    );
    assert(
      JSON.stringify(receiver.requests[1]!.body).includes(
        "2 reports from 1 session",
      ),
    );
    assertEquals((await storage.getGroup(group.id))!.state, "open");
  },
);

engineTest(
  "SlackNotifier posts a spike of more than 10x the hourly average",
  async ({ open }) => {
    await using receiver = await startSlackReceiver();
    let now = T0 - 5 * HOUR;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    // One report an hour for five hours, then 25 in one hour.
    for (let h = 0; h < 5; h++) {
      const uuid = await session();
      await send(uuid, payload());
      now += HOUR;
    }
    assertEquals(await notifier.runOnce(), 1); // the new group
    for (let i = 0; i < 25; i++) {
      const uuid = await session();
      await send(uuid, payload({ execution_count: i }));
      now += 1000;
    }
    assertEquals(await notifier.runOnce(), 1);
    assertEquals(receiver.requests.length, 2);
    assertEquals(header(receiver.requests[1]!.body), "Error spike");
    const text = JSON.stringify(receiver.requests[1]!.body);
    assert(
      text.includes("20 reports this hour, about 1.0 per hour before"),
      text,
    );
  },
);

engineTest(
  "SlackNotifier sends at most 20 messages an hour and the rest in one digest",
  async ({ open }) => {
    await using receiver = await startSlackReceiver();
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    const uuid = await session();
    for (let i = 0; i < 26; i++) {
      await send(
        uuid,
        payload({ error_name: `Error${i}`, execution_count: i }),
      );
      now += 1000;
    }
    let sent = 0;
    for (let round = 0; round < 5; round++) sent += await notifier.runOnce();
    assertEquals(sent, 20);
    assertEquals(receiver.requests.length, 20);
    now += 30 * MINUTE;
    assertEquals(await notifier.runOnce(), 0);
    now = T0 + HOUR + 1000;
    assertEquals(await notifier.runOnce(), 1);
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 21);
    const digest = receiver.requests[20]!.body as SlackMessage;
    assertEquals(
      header(digest),
      "Digest: 6 notices held back in the hour from 2026-11-25 12:00 UTC",
    );
    const text = JSON.stringify(digest);
    for (let i = 20; i < 26; i++) assert(text.includes(`Error${i}`), text);
    assert(!text.includes("Error19"), text);
    assert(text.includes("6 new groups"), text);
  },
);

engineTest(
  "SlackNotifier retries with backoff while the receiver answers 500, then delivers once",
  async ({ open }) => {
    await using receiver = await startSlackReceiver({ mode: "fail500" });
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    await send(await session(), payload());
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 1);
    // Not due again before the backoff: 10 s, then 20 s.
    now += 9_000;
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 1);
    now += 1_000;
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 2);
    now += 19_000;
    await notifier.runOnce();
    assertEquals(receiver.requests.length, 2);
    receiver.setMode("ok");
    now += 1_000;
    assertEquals(await notifier.runOnce(), 1);
    assertEquals(receiver.requests.length, 3);
    now += HOUR;
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 3);
    const [notice] = await storage.listNotices();
    assertEquals(notice!.status, "sent");
    assertEquals(notice!.attempts, 3);
    // Every attempt carried the same message.
    assertEquals(receiver.requests[0]!.text, receiver.requests[2]!.text);
  },
);

engineTest(
  "SlackNotifier honours a 429's Retry-After for every notice",
  async ({ open }) => {
    await using receiver = await startSlackReceiver({
      mode: { status: 429, retryAfter: 120 },
    });
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    const uuid = await session();
    await send(uuid, payload());
    await send(uuid, payload({ error_name: "RangeError" }));
    assertEquals(await notifier.runOnce(), 0);
    // The second notice was not tried after Slack said to slow down.
    assertEquals(receiver.requests.length, 1);
    receiver.setMode("ok");
    now += 119_000;
    assertEquals(await notifier.runOnce(), 0);
    assertEquals(receiver.requests.length, 1);
    now += 1_000;
    assertEquals(await notifier.runOnce(), 2);
    assertEquals(receiver.requests.length, 3);
    assertEquals(
      (await storage.listNotices()).map((n) => n.status),
      ["sent", "sent"],
    );
  },
);

engineTest(
  "SlackNotifier gives up on a refused webhook (HTTP 404) without retrying",
  async ({ open }) => {
    await using receiver = await startSlackReceiver({ mode: { status: 404 } });
    let now = T0;
    const clock = () => now;
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, clock);
    const notifier = notifierFor(storage, receiver.url, clock);
    await send(await session(), payload());
    await notifier.runOnce();
    now += HOUR;
    await notifier.runOnce();
    assertEquals(receiver.requests.length, 1);
    const [notice] = await storage.listNotices();
    assertEquals(notice!.status, "failed");
    assert(!notice!.lastError!.includes(receiver.secret), notice!.lastError!);
  },
);

engineTest(
  "Storing a report never waits on Slack: reports are answered while Slack stalls",
  async ({ open }) => {
    await using receiver = await startSlackReceiver({ mode: "stall" });
    const storage = await open({ notices: DEFAULT_NOTICE_POLICY });
    const { session, send } = collector(storage, Date.now);
    const notifier = new SlackNotifier({
      webhookUrl: receiver.url,
      storage,
      timeoutMs: 60_000,
      pollIntervalMs: 20,
    });
    notifier.start();
    try {
      const uuid = await session();
      await send(uuid, payload());
      await receiver.waitFor(1);
      // Slack holds the first post; more reports (and a second new group) are still answered.
      for (let i = 0; i < 5; i++) {
        await send(uuid, payload({ error_name: `Stalled${i}` }));
      }
      assertEquals(receiver.requests.length, 1);
      const groups = await storage.listGroups({
        notebook: "demo",
        sort: "count",
        skip: 0,
        limit: 10,
      });
      assertEquals(groups.total, 6);
    } finally {
      await notifier.stop();
    }
    // The aborted post is retried later, not lost.
    const notices = await storage.listNotices();
    assertEquals(notices.length, 6);
    assert(
      notices.every((n) => n.status === "pending"),
      JSON.stringify(notices),
    );
  },
);

engineTest(
  "The outbox survives kill -9 of the server: the pending notice is delivered after restart",
  async ({ engine, location }) => {
    await using receiver = await startSlackReceiver({ mode: "fail500" });
    const args = engine === "sqlite"
      ? ["--db", location, "--no-limits", "--slack-retry-ms", "200"]
      : ["--no-limits", "--slack-retry-ms", "200"];
    const env: Record<string, string> = { SLACK_WEBHOOK: receiver.url };
    if (engine === "postgres") env.DATABASE_URL = location;
    let server = await startServerProcess(args, env);
    try {
      const created = await fetch(`${server.url}/usages/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ notebook: "demo" }),
      });
      const { uuid } = await created.json() as { uuid: string };
      const sent = await fetch(`${server.url}/errors/${uuid}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(payload({ error_message: "survives kill -9" })),
      });
      assertEquals(sent.status, 200);
      await sent.body?.cancel();
      await receiver.waitFor(1, 20_000); // tried, and failed with 500
      server.kill("SIGKILL");
      await server.status;
      const failures = receiver.requests.length;
      receiver.setMode("ok");
      server = await startServerProcess(args, env);
      const requests = await receiver.waitFor(failures + 1, 30_000);
      const delivered = requests[failures]!;
      assertEquals(header(delivered.body), "New error group");
      assert(delivered.text.includes("survives kill -9"));
      // Exactly one delivery: no further posts after it.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assertEquals(receiver.requests.length, failures + 1);
    } finally {
      await server.stop();
    }
  },
);

Deno.test("noticeMessage() builds a digest with slackMessage's escaping and limits", () => {
  const items = Array.from({ length: 60 }, (_, i) => ({
    kind: "new" as const,
    groupId: i,
    notebook: "demo",
    errorName: `E${i}`,
    errorMessage: `<@U123> & ${"x".repeat(5000)}`,
    count: i + 1,
  }));
  const message = noticeMessage({
    id: 1,
    kind: "digest",
    groupId: null,
    createdAt: T0,
    attempts: 1,
    data: { kind: "digest", hour: T0 / HOUR, items },
  });
  const text = JSON.stringify(message);
  assert(!text.includes("<@U123>"));
  assert(text.includes("&lt;@U123&gt;"));
  assert(text.length < 20_000, String(text.length));
  assertEquals(
    message.blocks[0],
    {
      type: "header",
      text: {
        type: "plain_text",
        text:
          "Digest: 60 notices held back in the hour from 2026-11-25 12:00 UTC",
        emoji: false,
      },
    },
  );
});

Deno.test("parseServerArgs() reads SLACK_WEBHOOK, DATABASE_URL, NBR_PUBLIC_URL and --slack-retry-ms", () => {
  const config = parseServerArgs(["--slack-retry-ms", "250"], {
    SLACK_WEBHOOK: "https://hooks.slack.com/services/T0/B0/s3cret",
    DATABASE_URL: "postgres://nbr:pw@db.internal:5432/nbr?search_path=nbr",
    NBR_PUBLIC_URL: "https://errors.example.com",
  }) as ServerConfig;
  assertEquals(
    [
      config.slackWebhook,
      config.databaseUrl,
      config.publicUrl,
      config.slackRetryMs,
    ],
    [
      "https://hooks.slack.com/services/T0/B0/s3cret",
      "postgres://nbr:pw@db.internal:5432/nbr?search_path=nbr",
      "https://errors.example.com/",
      250,
    ],
  );
  const plain = parseServerArgs([], {}) as ServerConfig;
  assertEquals(
    [
      plain.slackWebhook,
      plain.databaseUrl,
      plain.publicUrl,
      plain.slackRetryMs,
    ],
    [undefined, undefined, undefined, 5000],
  );
  assertThrows(
    () => parseServerArgs([], { DATABASE_URL: "mysql://x@y/z" }),
    /DATABASE_URL must start with postgres:\/\/ or postgresql:\/\//,
  );
  try {
    parseServerArgs([], {
      SLACK_WEBHOOK: "http://hooks.slack.com/services/T0/B0/s3cret",
    });
    assert(false, "a plain-http webhook off loopback must be refused");
  } catch (error) {
    assert(error instanceof RangeError);
    assert(!error.message.includes("s3cret"), error.message);
  }
  assertThrows(
    () => parseServerArgs([], { NBR_PUBLIC_URL: "javascript:alert(1)" }),
    /NBR_PUBLIC_URL must be an http\(s\) URL/,
  );
});
