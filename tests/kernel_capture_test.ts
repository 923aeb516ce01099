/**
 * End-to-end tests of the kernel integration: a real `deno jupyter --kernel`,
 * driven over its real ZMQ sockets by the project's own client, with the
 * reporter loaded into it the way a notebook author does.
 */

import assert from "node:assert/strict";
import { type KernelClient, startKernel } from "../src/kernel_client.ts";
import type { JupyterMessage } from "../src/jupyter_message.ts";
import { startSlackReceiver } from "./support/slack_receiver.ts";
import {
  displayedJson,
  execute,
  executeOk,
  loadStoreCell,
  readRecords,
  sleep,
  waitForRecords,
} from "./support/kernel_cells.ts";

const ERROR_SLACK_URL = import.meta.resolve("../src/error_slack.ts");
const ZOD = "npm:zod@3.23.8";

interface TestKernel {
  kernel: KernelClient;
  dir: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a kernel in a fresh folder (holding a small local module). */
async function openKernel(
  env: Record<string, string> = {},
): Promise<TestKernel> {
  const dir = await Deno.realPath(
    await Deno.makeTempDir({ prefix: "nbr-capture-" }),
  );
  await Deno.writeTextFile(
    `${dir}/helper.ts`,
    [
      "// A local module the notebook imports.",
      "export function explode(what: string): never {",
      "  throw new SyntaxError(`cannot parse ${what}`);",
      "}",
      "",
    ].join("\n"),
  );
  const kernel = await startKernel({ cwd: dir, env });
  return {
    kernel,
    dir,
    async [Symbol.asyncDispose]() {
      await kernel.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function textOf(message: JupyterMessage): string {
  const data = message.content.data as Record<string, string> | undefined;
  return String(data?.["text/plain"] ?? message.content.text ?? "");
}

function displays(outputs: JupyterMessage[], needle: string): JupyterMessage[] {
  return outputs.filter((message) =>
    message.header.msg_type === "display_data" &&
    textOf(message).includes(needle)
  );
}

Deno.test("loadExtension() captures a failing cell run right after it, back to back, with exact first line and count", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  const load = await executeOk(kernel, loadStoreCell());
  const notice = displays(load.outputs, "are reported to");
  assert.equal(notice.length, 1, "the load notice is displayed once");
  const noticeText = textOf(notice[0]);
  for (
    const field of [
      "error_name",
      "error_message",
      "traceback",
      "first_line",
      "execution_count",
      "notebook",
    ]
  ) {
    assert.ok(
      noticeText.includes(field),
      `the notice lists ${field}: ${noticeText}`,
    );
  }
  const failing = await execute(
    kernel,
    "function divide(a, b) { if (b === 0) throw new RangeError('division by zero'); return a / b }\ndivide(1, 0)",
  );
  assert.equal(failing.status, "error");
  const records = await waitForRecords(kernel, 1);
  assert.equal(records.length, 1);
  const [record] = records;
  assert.equal(record.error_name, "RangeError");
  assert.equal(record.error_message, "division by zero");
  assert.equal(
    record.first_line,
    "function divide(a, b) { if (b === 0) throw new RangeError('division by zero'); return a / b }",
  );
  assert.equal(record.execution_count, failing.executionCount);
  assert.equal(record.notebook, "demo");
  assert.deepEqual(
    record.traceback.map((frame) => [frame.filename, frame.fun_name]),
    [
      ["<cell>", "<module>"],
      ["<cell>", "divide"],
    ],
  );
  assert.ok(
    record.traceback.every((frame) => typeof frame.lineno === "number"),
  );
  assert.deepEqual(record.traceback_text, failing.error?.traceback);
  assert.ok(
    Math.abs(Date.parse(record.timestamp) - Date.now()) < 60_000,
    record.timestamp,
  );
  assert.deepEqual(
    Object.keys(record).sort(),
    [
      "error_message",
      "error_name",
      "execution_count",
      "first_line",
      "notebook",
      "timestamp",
      "traceback",
      "traceback_text",
    ],
  );
});

Deno.test("loadExtension() is idempotent: one notice, one capture per failing cell", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell());
  const again = await executeOk(
    kernel,
    "await es.loadExtension(); await es.loadExtension();",
  );
  assert.equal(displays(again.outputs, "are reported to").length, 0);
  const failing = await execute(kernel, "null.x");
  assert.equal(failing.status, "error");
  await sleep(300);
  const records = await waitForRecords(kernel, 1);
  assert.equal(records.length, 1);
  assert.equal(records[0].error_name, "TypeError");
  assert.equal(records[0].first_line, "null.x");
});

Deno.test("a successful cell captures nothing and displays nothing", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell());
  const ok = await executeOk(
    kernel,
    "const total = [1, 2, 3].reduce((a, b) => a + b, 0);\ntotal",
  );
  assert.equal(displays(ok.outputs, "notebook-error-reporter").length, 0);
  await sleep(300);
  assert.deepEqual(await readRecords(kernel), []);
});

Deno.test("sync and async throws, and throw of a string, are captured with their cells", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ notebook: "throws", quiet: true }));
  const sync = await execute(kernel, "JSON.parse('{oops')");
  const asyncThrow = await execute(
    kernel,
    "async function load() { await new Promise((r) => setTimeout(r, 5)); throw new TypeError('async boom'); }\nawait load();",
  );
  const rejected = await execute(
    kernel,
    "await Promise.reject(new URIError('rejected'))",
  );
  const thrownString = await execute(kernel, 'throw "a string"');
  for (const result of [sync, asyncThrow, rejected, thrownString]) {
    assert.equal(result.status, "error");
  }
  const records = await waitForRecords(kernel, 4);
  assert.deepEqual(
    records.map((record) => [
      record.error_name,
      record.error_message,
      record.first_line,
      record.execution_count,
      record.notebook,
    ]),
    [
      [
        "SyntaxError",
        sync.error!.evalue,
        "JSON.parse('{oops')",
        sync.executionCount,
        "throws",
      ],
      [
        "TypeError",
        "async boom",
        "async function load() { await new Promise((r) => setTimeout(r, 5)); throw new TypeError('async boom'); }",
        asyncThrow.executionCount,
        "throws",
      ],
      [
        "URIError",
        "rejected",
        "await Promise.reject(new URIError('rejected'))",
        rejected.executionCount,
        "throws",
      ],
      [
        "Error",
        "a string",
        'throw "a string"',
        thrownString.executionCount,
        "throws",
      ],
    ],
  );
  // JSON.parse is native: no line; the cell's own frame is outermost.
  assert.deepEqual(records[0].traceback[0].filename, "<cell>");
  assert.deepEqual(records[0].traceback.at(-1), {
    filename: "<native>",
    fun_name: "JSON.parse",
    lineno: null,
  });
  assert.equal(records[1].traceback.at(-1)?.fun_name, "load");
  assert.deepEqual(records[3].traceback, []);
});

Deno.test("errors inside an imported local module and inside an npm package are captured with their frames", async () => {
  await using test = await openKernel();
  const { kernel, dir } = test;
  await executeOk(kernel, `await import(${JSON.stringify(ZOD)});`); // warm (cached) import
  await executeOk(kernel, loadStoreCell({ notebook: "modules", quiet: true }));
  const local = await execute(
    kernel,
    `const { explode } = await import(${
      JSON.stringify(`file://${dir}/helper.ts`)
    });\nexplode("the config")`,
  );
  assert.equal(local.status, "error");
  const npm = await execute(
    kernel,
    `const { z } = await import(${
      JSON.stringify(ZOD)
    });\nz.object({ age: z.number() }).parse({ age: "old" })`,
  );
  assert.equal(npm.status, "error");
  const records = await waitForRecords(kernel, 2);
  assert.equal(records.length, 2);
  const [localRecord, npmRecord] = records;
  assert.equal(localRecord.error_name, "SyntaxError");
  assert.equal(localRecord.error_message, "cannot parse the config");
  assert.equal(localRecord.execution_count, local.executionCount);
  assert.equal(
    localRecord.first_line.startsWith("const { explode } = await import("),
    true,
  );
  assert.deepEqual(localRecord.traceback.at(-1), {
    filename: "helper.ts",
    fun_name: "explode",
    lineno: 3,
  });
  assert.equal(localRecord.traceback[0].filename, "<cell>");
  assert.ok(
    localRecord.traceback_text.some((line) =>
      line.includes(`${dir}/helper.ts:3`)
    ),
  );

  assert.equal(npmRecord.error_name, "ZodError");
  assert.ok(
    npmRecord.error_message.includes("Expected number, received string"),
  );
  assert.equal(npmRecord.execution_count, npm.executionCount);
  assert.equal(
    npmRecord.first_line,
    `const { z } = await import(${JSON.stringify(ZOD)});`,
  );
  const npmFrames = npmRecord.traceback.filter((frame) =>
    frame.filename.startsWith("npm:zod@3.23.8/")
  );
  assert.ok(npmFrames.length > 0, JSON.stringify(npmRecord.traceback));
  const home = Deno.env.get("HOME") ?? "/nonexistent-home";
  assert.ok(!JSON.stringify(npmRecord.traceback).includes(home));
  assert.ok(
    npmRecord.traceback_text.some((line) =>
      line.includes("/npm/registry.npmjs.org/zod/")
    ),
  );
});

Deno.test("a multi-line cell whose first line is a comment reports that comment as first_line", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ notebook: "comments", quiet: true }));
  const failing = await execute(
    kernel,
    "// Step 3: compute the totals\r\nconst rows = [];\nrows[0].total",
  );
  assert.equal(failing.status, "error");
  const [record] = await waitForRecords(kernel, 1);
  assert.equal(record.first_line, "// Step 3: compute the totals");
  assert.equal(record.execution_count, failing.executionCount);
  assert.equal(record.error_name, "TypeError");
});

Deno.test("errors escaping cells later (timer, un-awaited rejection) are captured with the last execution count", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ notebook: "later", quiet: true }));
  const scheduled = await executeOk(
    kernel,
    "setTimeout(() => { throw new EvalError('timer fired') }, 50);\n'scheduled'",
  );
  await sleep(400); // no cell runs while the timer fires
  const unawaited = await executeOk(
    kernel,
    "Promise.reject(new Error('nobody awaited me'));\n1",
  );
  await sleep(400);
  const records = await waitForRecords(kernel, 2);
  assert.deepEqual(
    records.map((record) => [
      record.error_name,
      record.error_message,
      record.first_line,
      record.execution_count,
    ]),
    [
      ["EvalError", "timer fired", "", scheduled.executionCount],
      ["Error", "nobody awaited me", "", unawaited.executionCount],
    ],
  );
  // The kernel stays responsive after an escaped error: a short timer completes promptly.
  const next = await executeOk(
    kernel,
    "await new Promise((r) => setTimeout(r, 20)); 'alive'",
  );
  assert.ok(next.elapsedMs < 5000, `the next cell took ${next.elapsedMs} ms`);
});

Deno.test("a cell printing 20 MB before failing is captured, and the output still arrives", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ notebook: "big", quiet: true }));
  const printing = await execute(
    kernel,
    "// print a lot\nconsole.log('x'.repeat(20 * 1024 * 1024));\nthrow new Error('after printing')",
  );
  assert.equal(printing.status, "error");
  // The kernel publishes stream output after the idle status: wait for it.
  const printedLength = (): number =>
    printing.outputs
      .filter((message) => message.header.msg_type === "stream")
      .reduce(
        (total, message) => total + String(message.content.text).length,
        0,
      );
  const printDeadline = Date.now() + 30_000;
  while (printedLength() < 20 * 1024 * 1024 && Date.now() < printDeadline) {
    await sleep(50);
  }
  assert.ok(
    printedLength() >= 20 * 1024 * 1024,
    `printed ${printedLength()} characters`,
  );
  const [record] = await waitForRecords(kernel, 1);
  assert.deepEqual(
    [record.error_message, record.first_line, record.execution_count],
    ["after printing", "// print a lot", printing.executionCount],
  );
  const after = await executeOk(
    kernel,
    "await new Promise((r) => setTimeout(r, 10)); 1 + 1",
  );
  assert.ok(after.elapsedMs < 5000, `the next cell took ${after.elapsedMs} ms`);
});

Deno.test("a cell displaying a 20 MB image before failing is captured", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ notebook: "big", quiet: true }));
  const image = await execute(
    kernel,
    "// show a big image\nawait Deno.jupyter.display({ 'image/png': 'A'.repeat(20 * 1024 * 1024) }, { raw: true });\nthrow new Error('after the image')",
  );
  assert.equal(image.status, "error");
  const [record] = await waitForRecords(kernel, 1);
  assert.deepEqual(
    [record.error_message, record.first_line, record.execution_count],
    ["after the image", "// show a big image", image.executionCount],
  );
  const after = await executeOk(
    kernel,
    "await new Promise((r) => setTimeout(r, 10)); 1 + 1",
  );
  assert.ok(after.elapsedMs < 5000, `the next cell took ${after.elapsedMs} ms`);
});

Deno.test("unloadExtension() stops capture, removes listeners, closes the socket and keeps the kernel responsive", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  const fdCount = "Array.from(Deno.readDirSync('/proc/self/fd')).length";
  await executeOk(kernel, loadStoreCell({ notebook: "unload", quiet: true }));
  await execute(kernel, "throw new Error('captured')");
  assert.equal((await waitForRecords(kernel, 1)).length, 1);
  await sleep(1500); // let the worker reader take over from the main-thread one
  await executeOk(
    kernel,
    "await es.unloadExtension(); await es.unloadExtension();",
  );
  const failing = await execute(kernel, "throw new Error('not captured')");
  assert.equal(failing.status, "error");
  await executeOk(
    kernel,
    "setTimeout(() => { throw new Error('late, not captured') }, 20); 1",
  );
  await sleep(400);
  const records = await readRecords(kernel);
  assert.deepEqual(records.map((record) => record.error_message), ["captured"]);
  for (let index = 0; index < 5; index++) {
    const alive = await executeOk(
      kernel,
      "await new Promise((r) => setTimeout(r, 10)); 'alive'",
    );
    assert.ok(alive.elapsedMs < 5000);
  }
  // Load and unload again: no socket or file descriptor is left behind.
  await executeOk(kernel, `globalThis.fdsBefore = ${fdCount}`);
  await executeOk(kernel, "await es.loadExtension()");
  await execute(kernel, "throw new Error('captured again')");
  const again = await waitForRecords(kernel, 2);
  assert.deepEqual(again.map((record) => record.error_message), [
    "captured",
    "captured again",
  ]);
  await sleep(1500);
  await executeOk(kernel, "await es.unloadExtension()");
  await sleep(200);
  const counts = await displayedJson(
    kernel,
    `await Deno.jupyter.display({ "application/json": { before: fdsBefore, after: ${fdCount} } }, { raw: true })`,
  ) as { before: number; after: number };
  assert.ok(
    counts.after <= counts.before,
    `open fds before ${counts.before}, after ${counts.after}`,
  );
});

Deno.test("each report displays the exact JSON sent, escaped, unless quiet", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  const seen: JupyterMessage[] = [];
  kernel.onIopub((message) => {
    if (displays([message], "error report").length > 0) seen.push(message);
  });
  await executeOk(kernel, loadStoreCell({ notebook: "shown" }));
  const failing = await execute(
    kernel,
    "throw new Error('<img src=x onerror=alert(1)> & more')",
  );
  const records = await waitForRecords(kernel, 1);
  const { timestamp: _t, traceback_text: _x, ...payload } = records[0];
  assert.equal(seen.length, 1);
  const [report] = seen;
  // Shown under the failing cell (or under the next one when cells run back to back).
  assert.ok(report.parent_header.msg_type === "execute_request");
  const html = String(
    (report.content.data as Record<string, string>)["text/html"],
  );
  assert.ok(html.startsWith("<details"), html);
  assert.ok(!html.includes("<img"), html);
  assert.ok(
    html.includes("&lt;img src=x onerror=alert(1)&gt; &amp; more"),
    html,
  );
  assert.ok(html.includes(`cell [${failing.executionCount}]`), html);
  const plain = textOf(report);
  assert.deepEqual(JSON.parse(plain.slice(plain.indexOf("\n") + 1)), payload);
  assert.equal(payload.execution_count, failing.executionCount);

  await executeOk(kernel, "await es.unloadExtension()");
  await executeOk(kernel, loadStoreCell({ notebook: "silent", quiet: true }));
  await execute(kernel, "throw new Error('quiet')");
  assert.equal((await waitForRecords(kernel, 1)).length, 1);
  await sleep(200);
  assert.equal(seen.length, 1, "quiet: true shows no report");
});

Deno.test("ErrorSlack posts one Slack message per failing cell to a loopback webhook; the notice shows the host only", async () => {
  await using receiver = await startSlackReceiver();
  await using test = await openKernel();
  const { kernel } = test;
  const load = await executeOk(
    kernel,
    [
      `const { ErrorSlack } = await import(${
        JSON.stringify(ERROR_SLACK_URL)
      });`,
      `globalThis.slack = new ErrorSlack(${
        JSON.stringify(receiver.url)
      }, { notebook: "slack-demo" });`,
      "await slack.loadExtension();",
    ].join("\n"),
  );
  const notice = displays(load.outputs, "are reported to")[0];
  const host = new URL(receiver.url).host;
  assert.ok(textOf(notice).includes(`Slack (${host})`), textOf(notice));
  assert.ok(!JSON.stringify(notice.content).includes(receiver.secret));
  const failing = await execute(
    kernel,
    "// <!channel> ping attempt\nthrow new TypeError('<!here> & <https://evil.example|click>')",
  );
  assert.equal(failing.status, "error");
  const [request] = await receiver.waitFor(1, 5000);
  await sleep(200);
  assert.equal(receiver.requests.length, 1);
  assert.equal(request.method, "POST");
  const body = request.body as { text: string; blocks: unknown[] };
  assert.equal(typeof body.text, "string");
  assert.ok(Array.isArray(body.blocks) && body.blocks.length > 0);
  const raw = request.text;
  assert.ok(raw.includes("TypeError"));
  assert.ok(raw.includes("slack-demo"));
  assert.ok(raw.includes(String(failing.executionCount)));
  assert.ok(raw.includes("&lt;!channel&gt; ping attempt"), raw);
  assert.ok(
    raw.includes("&lt;!here&gt; &amp; &lt;https://evil.example|click&gt;"),
    raw,
  );
  assert.ok(!raw.includes("<!here>") && !raw.includes("<!channel>"));
  assert.ok(!raw.includes(receiver.secret));
});

Deno.test("ErrorSlack: a webhook answering 500 becomes one warning line; the notebook goes on", async () => {
  await using receiver = await startSlackReceiver({ mode: "fail500" });
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(
    kernel,
    [
      `const { ErrorSlack } = await import(${
        JSON.stringify(ERROR_SLACK_URL)
      });`,
      `globalThis.slack = new ErrorSlack(${
        JSON.stringify(receiver.url)
      }, { quiet: true });`,
      "await slack.loadExtension();",
    ].join("\n"),
  );
  const stderr: string[] = [];
  kernel.onIopub((message) => {
    if (
      message.header.msg_type === "stream" && message.content.name === "stderr"
    ) {
      stderr.push(String(message.content.text));
    }
  });
  const failing = await execute(kernel, "throw new Error('webhook down')");
  assert.equal(failing.status, "error");
  await receiver.waitFor(1, 5000);
  const deadline = Date.now() + 5000;
  while (stderr.length === 0 && Date.now() < deadline) await sleep(50);
  const next = await executeOk(kernel, "'still running'");
  assert.ok(next.elapsedMs < 1000, `next cell took ${next.elapsedMs} ms`);
  assert.equal(stderr.length, 1, JSON.stringify(stderr));
  assert.match(stderr[0], /^notebook-error-reporter: .*500.*\n$/);
  assert.equal(stderr[0].split("\n").length, 2);
  assert.ok(!stderr[0].includes(receiver.secret));
});

Deno.test("ErrorSlack: a webhook that never answers does not block; the next cell runs within 1 s", async () => {
  await using receiver = await startSlackReceiver({ mode: "stall" });
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(
    kernel,
    [
      `const { ErrorSlack } = await import(${
        JSON.stringify(ERROR_SLACK_URL)
      });`,
      `globalThis.slack = new ErrorSlack(${
        JSON.stringify(receiver.url)
      }, { quiet: true, timeoutMs: 1500 });`,
      "await slack.loadExtension();",
    ].join("\n"),
  );
  const stderr: string[] = [];
  kernel.onIopub((message) => {
    if (
      message.header.msg_type === "stream" && message.content.name === "stderr"
    ) {
      stderr.push(String(message.content.text));
    }
  });
  const failing = await execute(kernel, "throw new Error('webhook stalls')");
  assert.equal(failing.status, "error");
  await receiver.waitFor(1, 5000);
  const next = await executeOk(kernel, "'next cell'");
  assert.ok(next.elapsedMs < 1000, `next cell took ${next.elapsedMs} ms`);
  const timed = await executeOk(
    kernel,
    "await new Promise((r) => setTimeout(r, 50)); 'timers run'",
  );
  assert.ok(timed.elapsedMs < 1000, `timer cell took ${timed.elapsedMs} ms`);
  const deadline = Date.now() + 5000;
  while (stderr.length === 0 && Date.now() < deadline) await sleep(50);
  assert.equal(stderr.length, 1, JSON.stringify(stderr));
  assert.match(stderr[0], /^notebook-error-reporter: .*\n$/);
  assert.ok(!stderr[0].includes(receiver.secret));
  await executeOk(kernel, "await slack.unloadExtension()");
});

Deno.test("an explicit connectionFile overrides discovery; a wrong one becomes one warning line", async () => {
  await using test = await openKernel();
  const { kernel } = test;
  await executeOk(
    kernel,
    loadStoreCell({
      notebook: "explicit",
      quiet: true,
      connectionFile: kernel.connectionFile,
    }),
  );
  const failing = await execute(kernel, "throw new Error('explicit')");
  const [record] = await waitForRecords(kernel, 1);
  assert.equal(record.execution_count, failing.executionCount);
  const wrong = await executeOk(
    kernel,
    loadStoreCell({
      notebook: "wrong",
      connectionFile: `${test.dir}/missing.json`,
    }),
  );
  // Stream output may arrive after the idle status.
  const deadline = Date.now() + 5000;
  const warnings = (): JupyterMessage[] =>
    wrong.outputs.filter((message) =>
      message.header.msg_type === "stream" && message.content.name === "stderr"
    );
  while (warnings().length === 0 && Date.now() < deadline) await sleep(50);
  await sleep(200);
  assert.equal(warnings().length, 1);
  assert.match(
    String(warnings()[0].content.text),
    /^notebook-error-reporter: cell capture is unavailable: .*\n$/,
  );
});

Deno.test("the notebook name defaults to the basename of JPY_SESSION_NAME", async () => {
  await using test = await openKernel({
    JPY_SESSION_NAME: "/home/someone/work/analysis.ipynb",
  });
  const { kernel } = test;
  await executeOk(kernel, loadStoreCell({ quiet: true }));
  await execute(kernel, "throw new Error('named')");
  const [record] = await waitForRecords(kernel, 1);
  assert.equal(record.notebook, "analysis.ipynb");
});
