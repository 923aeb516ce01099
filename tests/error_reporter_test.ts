import assert from "node:assert/strict";
import { ErrorStore } from "../src/error_store.ts";
import { ErrorSlack } from "../src/error_slack.ts";
import { defaultNotebookName } from "../src/error_reporter.ts";
import {
  connectionFileFromArgs,
  findConnectionFile,
  readConnectionInfo,
} from "../src/kernel_connection.ts";
import { firstLineOf } from "../src/cell_capture.ts";
import { startSlackReceiver } from "./support/slack_receiver.ts";

const ERROR_STORE_URL = import.meta.resolve("../src/error_store.ts");
const ERROR_SLACK_URL = import.meta.resolve("../src/error_slack.ts");

Deno.test("ErrorStore.report() keeps the payload, a Date timestamp and the unscrubbed traceback", async () => {
  const store = new ErrorStore({ notebook: "manual", quiet: true });
  function failing(): never {
    throw new RangeError("too big");
  }
  try {
    failing();
  } catch (error) {
    await store.report(error, { firstLine: "failing()", executionCount: 7 });
  }
  await store.report("plain string");
  assert.equal(store.errorDetails.length, 2);
  const [record, stringRecord] = store.errorDetails;
  assert.equal(record.error_name, "RangeError");
  assert.equal(record.error_message, "too big");
  assert.equal(record.first_line, "failing()");
  assert.equal(record.execution_count, 7);
  assert.equal(record.notebook, "manual");
  assert.ok(record.timestamp instanceof Date);
  assert.equal(record.traceback.at(-1)?.fun_name, "failing");
  assert.equal(record.traceback_text[0], "RangeError: too big");
  assert.ok(
    record.traceback_text.some((line) => line.includes(import.meta.url)),
  );
  assert.deepEqual(
    [
      stringRecord.error_name,
      stringRecord.error_message,
      stringRecord.traceback,
    ],
    ["Error", "plain string", []],
  );
  assert.equal(stringRecord.execution_count, null);
  assert.equal(stringRecord.first_line, "");
});

Deno.test("outside a kernel, loadExtension() says once in one line that cell capture is unavailable", async () => {
  const script = `
import { ErrorStore } from ${JSON.stringify(ERROR_STORE_URL)};
const store = new ErrorStore({ notebook: "script" });
await store.loadExtension();
await store.loadExtension();
await store.report(new TypeError("by hand"), { firstLine: "x()", executionCount: 2 });
console.log(JSON.stringify(store.errorDetails.map((r) => [r.error_name, r.error_message, r.first_line, r.execution_count])));
await store.unloadExtension();
`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.deepEqual(JSON.parse(stdout), [["TypeError", "by hand", "x()", 2]]);
  const lines = stderr.split("\n").filter((line) =>
    line.includes("notebook-error-reporter")
  );
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /cell capture is unavailable/);
});

Deno.test("outside a kernel, an uncaught error is recorded by the global listener and the process still fails", async () => {
  const script = `
import { ErrorStore } from ${JSON.stringify(ERROR_STORE_URL)};
const store = new ErrorStore({ notebook: "script" });
await store.loadExtension();
globalThis.addEventListener("error", () => {
  console.log(JSON.stringify(store.errorDetails.map((r) => [r.error_name, r.error_message, r.first_line, r.execution_count])));
});
setTimeout(() => { throw new EvalError("escaped"); }, 10);
`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.notEqual(
    output.code,
    0,
    "the process still ends with the uncaught error",
  );
  assert.deepEqual(JSON.parse(stdout.split("\n")[0]), [[
    "EvalError",
    "escaped",
    "",
    null,
  ]]);
  assert.equal(stderr.split("Uncaught EvalError: escaped").length, 2, stderr);
});

Deno.test("outside a kernel, ErrorSlack delivers an escaped error before the process ends with it", async () => {
  await using receiver = await startSlackReceiver();
  const cases = [
    [
      "setTimeout(() => { throw new EvalError('from a timer'); }, 10);",
      "Uncaught EvalError: from a timer",
    ],
    [
      "Promise.reject(new RangeError('never awaited'));",
      "Uncaught (in promise) RangeError: never awaited",
    ],
  ];
  for (const [throwing, uncaught] of cases) {
    const script = `
import { ErrorSlack } from ${JSON.stringify(ERROR_SLACK_URL)};
const slack = new ErrorSlack(${
      JSON.stringify(receiver.url)
    }, { notebook: "script" });
await slack.loadExtension();
${throwing}
`;
    const before = receiver.requests.length;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 1, stderr);
    assert.equal(stderr.split(uncaught).length, 2, stderr);
    assert.equal(receiver.requests.length, before + 1, stderr);
    const sent = receiver.requests[before].text;
    assert.ok(sent.includes(uncaught.split(" ").at(-1)!), sent);
    assert.ok(sent.includes("script"), sent);
  }
});

Deno.test("ErrorSlack with a missing or wrong webhook URL warns in one line at load and per report; never throws", async () => {
  const cases: [string, RegExp][] = [
    [
      'Deno.env.get("NBR_UNSET_WEBHOOK")!',
      /^notebook-error-reporter: could not prepare reporting: Slack webhook URL must be an absolute https: URL, got undefined$/,
    ],
    [
      '"http://hooks.slack.com/services/T0/B0/secretpart"',
      /^notebook-error-reporter: could not prepare reporting: Slack webhook URL must use https: .*"hooks\.slack\.com"$/,
    ],
  ];
  for (const [url, atLoad] of cases) {
    const script = `
import { ErrorSlack } from ${JSON.stringify(ERROR_SLACK_URL)};
const slack = new ErrorSlack(${url}, { notebook: "script", quiet: true });
await slack.loadExtension();
await slack.report(new Error("by hand"));
console.log("still running");
`;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    assert.equal(stdout, "still running\n");
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 3, stderr);
    assert.match(lines[0], atLoad);
    assert.match(lines[1], /cell capture is unavailable/);
    assert.match(lines[2], /^notebook-error-reporter: could not send/);
    assert.ok(!stderr.includes("secretpart"), stderr);
  }
});

Deno.test("ErrorSlack.report() posts through the injected fetch; a failure becomes one warning line", async () => {
  await using receiver = await startSlackReceiver();
  const slack = new ErrorSlack(receiver.url, { notebook: "nb", quiet: true });
  await slack.report(new Error("to slack"), {
    firstLine: "go()",
    executionCount: 3,
  });
  const [request] = await receiver.waitFor(1, 5000);
  assert.ok(request.text.includes("to slack"));
  assert.ok(request.text.includes("go()"));
  receiver.setMode("fail500");
  const warnings: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args.join(" "));
  try {
    await slack.report(new Error("fails"));
  } finally {
    console.warn = original;
  }
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0],
    /^notebook-error-reporter: could not send the error report to Slack \(127\.0\.0\.1:\d+\): .*500/,
  );
  assert.ok(!warnings[0].includes(receiver.secret));
  let calls = 0;
  const injected = new ErrorSlack(
    "https://hooks.slack.com/services/T0/B0/secret",
    {
      quiet: true,
      fetch: () => {
        calls++;
        return Promise.resolve(new Response("ok"));
      },
    },
  );
  await injected.report(new Error("injected"));
  assert.equal(calls, 1);
});

Deno.test("connectionFileFromArgs() reads the path after --conn of a kernel command line only", async () => {
  assert.equal(
    connectionFileFromArgs([
      "/usr/bin/deno",
      "jupyter",
      "--kernel",
      "--conn",
      "/tmp/k.json",
    ]),
    "/tmp/k.json",
  );
  assert.equal(
    connectionFileFromArgs([
      "deno",
      "jupyter",
      "--kernel",
      "--conn=/tmp/a b.json",
    ]),
    "/tmp/a b.json",
  );
  assert.equal(
    connectionFileFromArgs(["deno", "run", "--conn", "/tmp/k.json"]),
    undefined,
  );
  assert.equal(
    connectionFileFromArgs(["deno", "jupyter", "--kernel", "--conn"]),
    undefined,
  );
  assert.equal(await findConnectionFile(), undefined);
  assert.equal(
    await findConnectionFile({ connectionFile: "/x.json" }),
    "/x.json",
  );
});

Deno.test("readConnectionInfo() rejects a broken file without quoting its text (it holds the key)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/kernel.json`;
    for (
      const [text, expected] of [
        [
          "key=very-secret-key",
          /^Connection file .*kernel\.json is not valid JSON$/,
        ],
        ['{"key": "very-secret-key", "iopub_port": 1,', /is not valid JSON$/],
        ["null", /is not a JSON object$/],
        [
          '{"key": "very-secret-key", "shell_port": 2}',
          /has no numeric iopub_port: undefined$/,
        ],
      ] as const
    ) {
      await Deno.writeTextFile(path, text);
      await assert.rejects(readConnectionInfo(path), (error: Error) => {
        assert.match(error.message, expected);
        assert.ok(!error.message.includes("very-secret"), error.message);
        return true;
      });
    }
    await Deno.writeTextFile(
      path,
      JSON.stringify({ iopub_port: 5, shell_port: 6, key: "k" }),
    );
    const info = await readConnectionInfo(path);
    assert.deepEqual(
      [
        info.transport,
        info.ip,
        info.iopub_port,
        info.key,
        info.signature_scheme,
      ],
      ["tcp", "127.0.0.1", 5, "k", "hmac-sha256"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("defaultNotebookName() is the basename of JPY_SESSION_NAME, else unknown", () => {
  const previous = Deno.env.get("JPY_SESSION_NAME");
  try {
    Deno.env.set("JPY_SESSION_NAME", "/home/a/project/report.ipynb");
    assert.equal(defaultNotebookName(), "report.ipynb");
    Deno.env.set("JPY_SESSION_NAME", "  ");
    assert.equal(defaultNotebookName(), "unknown");
    Deno.env.delete("JPY_SESSION_NAME");
    assert.equal(defaultNotebookName(), "unknown");
    assert.equal(new ErrorStore().notebook, "unknown");
  } finally {
    if (previous === undefined) Deno.env.delete("JPY_SESSION_NAME");
    else Deno.env.set("JPY_SESSION_NAME", previous);
  }
});

Deno.test("firstLineOf() keeps the first line exactly, without its line break", () => {
  assert.equal(
    firstLineOf("  // indented comment  \nnext"),
    "  // indented comment  ",
  );
  assert.equal(firstLineOf("a\r\nb"), "a");
  assert.equal(firstLineOf(""), "");
  assert.equal(firstLineOf("\nsecond"), "");
});
