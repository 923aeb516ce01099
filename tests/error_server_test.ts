import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { ErrorServer } from "../src/error_server.ts";
import { startKernel } from "../src/kernel_client.ts";
import { type CollectorOptions, createCollector } from "../src/server/app.ts";
import {
  openSqliteStorage,
  type SqliteStorage,
} from "../src/server/sqlite_storage.ts";

interface LoopbackCollector {
  url: string;
  storage: SqliteStorage;
  requests: { method: string; path: string; status: number }[];
  close(): Promise<void>;
}

/** A real collector on a loopback port, backed by a SQLite file in a temp dir. */
async function startCollector(
  options: Partial<CollectorOptions> = {},
): Promise<LoopbackCollector> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-es-" });
  const storage = await openSqliteStorage(`${dir}/errors.db`, {
    synchronous: "normal",
  });
  const handler = createCollector({ storage, ...options });
  const requests: LoopbackCollector["requests"] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, async (request, info) => {
    const response = await handler(request, info);
    requests.push({
      method: request.method,
      path: new URL(request.url).pathname,
      status: response.status,
    });
    return response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    storage,
    requests,
    async close() {
      await server.shutdown();
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function captureWarnings<T>(
  run: () => Promise<T>,
): Promise<{ value: T; warnings: string[] }> {
  const warnings: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) =>
    warnings.push(args.map(String).join(" "));
  try {
    return { value: await run(), warnings };
  } finally {
    console.warn = original;
  }
}

Deno.test("ErrorServer creates a session on load, posts reports and retrieves them", async () => {
  const collector = await startCollector();
  const reporter = new ErrorServer(`${collector.url}/`, {
    notebook: "client-test",
    quiet: true,
  });
  try {
    const { warnings } = await captureWarnings(async () => {
      await reporter.loadExtension();
      await reporter.report(new TypeError("x is not a function"), {
        firstLine: "x()",
        executionCount: 3,
      });
      await reporter.report(new RangeError("too far"), {
        firstLine: "go()",
        executionCount: 4,
      });
    });
    // Outside a kernel: one line saying cell capture is unavailable, nothing else.
    assertEquals(warnings.length, 1, warnings.join("\n"));
    assertMatch(warnings[0]!, /cell capture is unavailable/);
    assertMatch(reporter.sessionId ?? "", /^[0-9a-f]{32}$/);
    const stored = await reporter.retrieveErrors();
    assertEquals(
      stored.map((
        e,
      ) => [e.error_name, e.error_message, e.first_line, e.execution_count]),
      [
        ["TypeError", "x is not a function", "x()", 3],
        ["RangeError", "too far", "go()", 4],
      ],
    );
    assert(stored.every((e) => e.usage_uuid === reporter.sessionId));
    assertEquals(
      collector.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
      [
        "POST /usages/ 200",
        `POST /errors/${reporter.sessionId}/ 200`,
        `POST /errors/${reporter.sessionId}/ 200`,
        `GET /usages/${reporter.sessionId} 200`,
      ],
    );
  } finally {
    await reporter.unloadExtension();
    await collector.close();
  }
});

Deno.test("ErrorServer holds reports back on 429 Retry-After, says so once, and sends them later", async () => {
  const collector = await startCollector({
    limits: { sessionBurst: 1, sessionRefillMs: 1000 },
  });
  const reporter = new ErrorServer(collector.url, {
    notebook: "burst",
    quiet: true,
  });
  try {
    const { warnings } = await captureWarnings(async () => {
      await reporter.loadExtension();
      const started = Date.now();
      for (let i = 0; i < 4; i++) {
        await reporter.report(new Error(`burst ${i}`), { executionCount: i });
      }
      // Reporting never waited for the Retry-After.
      assert(
        Date.now() - started < 900,
        `reporting took ${Date.now() - started} ms`,
      );
      const deadline = Date.now() + 10_000;
      while (
        (await reporter.retrieveErrors()).length < 4 && Date.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    const throttled = warnings.filter((w) => w.includes("slow down"));
    assertEquals(throttled.length, 1, warnings.join("\n"));
    assertMatch(throttled[0]!, /429, retry after 1 s/);
    const stored = await reporter.retrieveErrors();
    assertEquals(stored.map((e) => e.error_message).sort(), [
      "burst 0",
      "burst 1",
      "burst 2",
      "burst 3",
    ]);
    assert(collector.requests.some((r) => r.status === 429));
  } finally {
    await reporter.unloadExtension();
    await collector.close();
  }
});

Deno.test("ErrorServer turns an unreachable collector and a full session into one warning each", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const unreachable = new ErrorServer(`http://127.0.0.1:${deadPort}`, {
    notebook: "x",
    quiet: true,
    timeoutMs: 2000,
  });
  const { warnings } = await captureWarnings(async () => {
    await unreachable.loadExtension();
    await unreachable.report(new Error("lost"));
    await unreachable.unloadExtension();
  });
  assertEquals(
    warnings.filter((w) => w.includes("could not be reached")).length,
    2,
    warnings.join("\n"),
  );
  assert(warnings.every((w) => !w.includes("\n")));

  const collector = await startCollector({ maxReportsPerSession: 1 });
  const reporter = new ErrorServer(collector.url, {
    notebook: "full",
    quiet: true,
  });
  try {
    const full = await captureWarnings(async () => {
      await reporter.loadExtension();
      for (let i = 0; i < 3; i++) await reporter.report(new Error(`n${i}`));
    });
    const capped = full.warnings.filter((w) => w.includes("no more reports"));
    assertEquals(capped.length, 1, full.warnings.join("\n"));
    assertEquals((await reporter.retrieveErrors()).length, 1);
    assertEquals(
      collector.requests.filter((r) =>
        r.method === "POST" && r.path.startsWith("/errors/")
      ).length,
      2,
    );
  } finally {
    await reporter.unloadExtension();
    await collector.close();
  }
});

Deno.test("ErrorServer reports a failing cell from a real Deno kernel to a real collector", async () => {
  const collector = await startCollector();
  const kernel = await startKernel({ env: { NBR_URL: collector.url } });
  try {
    const moduleUrl = new URL("../src/error_server.ts", import.meta.url).href;
    const load = await kernel.execute(
      `import { ErrorServer } from "${moduleUrl}";\n` +
        `const es = new ErrorServer(Deno.env.get("NBR_URL")!, { notebook: "kernel-demo" });\n` +
        `await es.loadExtension();`,
    );
    assertEquals(load.status, "ok", JSON.stringify(load.error));
    const failing = await kernel.execute(
      `// load the table\nfunction loadTable() { throw new RangeError("row 7 is out of range"); }\nloadTable();`,
    );
    assertEquals(failing.status, "error");
    const deadline = Date.now() + 15_000;
    let reports = await collector.storage.listReports({ skip: 0, limit: 10 });
    while (reports.length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      reports = await collector.storage.listReports({ skip: 0, limit: 10 });
    }
    assertEquals(reports.length, 1);
    const [report] = reports;
    assertEquals(report!.notebook, "kernel-demo");
    assertEquals(report!.error_name, "RangeError");
    assertEquals(report!.error_message, "row 7 is out of range");
    assertEquals(report!.first_line, "// load the table");
    assertEquals(report!.execution_count, failing.executionCount);
    assert(
      report!.traceback.some((f) => f.fun_name === "loadTable"),
      JSON.stringify(report!.traceback),
    );
    const retrieved = await kernel.execute(
      `const stored = await es.retrieveErrors();\nconsole.log(JSON.stringify(stored.map((e) => e.error_message)));`,
    );
    assertEquals(retrieved.status, "ok");
    const printed = retrieved.outputs.filter((m) =>
      m.header.msg_type === "stream"
    )
      .map((m) => String(m.content.text)).join("");
    assertMatch(printed, /\["row 7 is out of range"\]/);
  } finally {
    await kernel.shutdown();
    await collector.close();
  }
});
