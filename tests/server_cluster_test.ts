import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import type { SlackMessage } from "../src/slack_message.ts";
import { startServerProcess } from "./support/server_process.ts";
import { startSlackReceiver } from "./support/slack_receiver.ts";
import { engineTest } from "./support/storage_engines.ts";

engineTest(
  "Two server processes on one PostgreSQL: 1,000 concurrent reports of one error make one group, count 1,000, one Slack message",
  async ({ location, open }) => {
    await using receiver = await startSlackReceiver();
    const env = { DATABASE_URL: location, SLACK_WEBHOOK: receiver.url };
    const servers = await Promise.all([
      startServerProcess(["--no-limits"], env),
      startServerProcess(["--no-limits"], env),
    ]);
    try {
      // 100 sessions, half opened on each instance.
      const sessions = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const response = await fetch(`${servers[i % 2]!.url}/usages/`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ notebook: "cluster" }),
          });
          assertEquals(response.status, 200);
          return ((await response.json()) as { uuid: string }).uuid;
        }),
      );
      // 1,000 reports of one error (numbers and line numbers vary), all in
      // flight at once, each session's reports spread over both instances.
      const statuses = await Promise.all(
        Array.from({ length: 1000 }, async (_, i) => {
          const response = await fetch(
            `${servers[(i >> 1) % 2]!.url}/errors/${sessions[i % 100]}/`,
            {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({
                error_name: "KeyError",
                error_message: `user ${i} not found`,
                traceback: [
                  {
                    filename: "<cell>",
                    fun_name: "<module>",
                    lineno: 1 + i % 7,
                  },
                  {
                    filename: "<cell>",
                    fun_name: "loadUser",
                    lineno: 40 + i % 3,
                  },
                ],
                first_line: `loadUser(${i})`,
                execution_count: 1 + i % 10,
                notebook: "cluster",
              }),
            },
          );
          await response.body?.cancel();
          return response.status;
        }),
      );
      assertEquals(statuses.filter((s) => s !== 200), []);

      const storage = await open();
      const { total, groups } = await storage.listGroups({
        notebook: "cluster",
        sort: "count",
        skip: 0,
        limit: 10,
      });
      assertEquals(total, 1);
      assertEquals(groups[0]!.count, 1000);
      assertEquals(groups[0]!.sessions, 100);
      const reports = await storage.listReports({ skip: 0, limit: 2000 });
      assertEquals(reports.reduce((n, r) => n + r.occurrences, 0), 1000);
      const [day] = await storage.notebookWindowStats(Date.now());
      assertEquals([day!.groups, day!.reports24h, day!.sessions24h], [
        1,
        1000,
        100,
      ]);

      // Exactly one "New error group" message, whichever instance sent it.
      const [message] = await receiver.waitFor(1, 15_000);
      const notices = await storage.listNotices();
      assertEquals(notices.map((n) => n.kind), ["new"]);
      // Both instances poll every second: give them a few rounds to misbehave.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      assertEquals(receiver.requests.length, 1);
      const body = message!.body as SlackMessage;
      const header = body.blocks[0];
      assert(header && header.type === "header");
      assertEquals(header.text.text, "New error group");
      assertEquals((await storage.listNotices())[0]!.status, "sent");
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
    }
  },
  ["postgres"],
);
