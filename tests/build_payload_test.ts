import { deepEqual, equal, ok } from "node:assert/strict";
import { buildPayload, scrubPayload } from "../src/build_payload.ts";
import { PAYLOAD_LIMITS } from "../src/scrub.ts";
import type { ErrorPayload } from "../src/types.ts";
import { loadStackFixtures } from "./support/stack_fixtures.ts";

const KEYS = [
  "error_message",
  "error_name",
  "execution_count",
  "first_line",
  "notebook",
  "traceback",
];

const CONTEXT = {
  cwd: "/home/alice/nb",
  home: "/home/alice",
  user: "alice",
  denoDir: "/home/alice/.cache/deno",
};

function strings(payload: ErrorPayload): string[] {
  return [
    payload.error_name,
    payload.error_message,
    payload.first_line,
    payload.notebook,
    ...payload.traceback.flatMap((f) => [f.filename, f.fun_name]),
  ];
}

function checkShape(payload: ErrorPayload): void {
  deepEqual(Object.keys(payload).sort(), KEYS);
  ok(payload.error_name.length <= PAYLOAD_LIMITS.errorName);
  ok(payload.error_message.length <= PAYLOAD_LIMITS.errorMessage);
  ok(payload.first_line.length <= PAYLOAD_LIMITS.firstLine);
  ok(payload.notebook.length <= PAYLOAD_LIMITS.notebook);
  ok(payload.traceback.length <= PAYLOAD_LIMITS.frames);
  ok(
    !/[\n\r\t]/.test(
      payload.first_line + payload.notebook + payload.error_name,
    ),
  );
  ok(
    payload.execution_count === null ||
      Number.isSafeInteger(payload.execution_count),
  );
  for (const frame of payload.traceback) {
    deepEqual(Object.keys(frame).sort(), ["filename", "fun_name", "lineno"]);
    ok(frame.filename.length > 0 && frame.fun_name.length > 0);
    ok(frame.lineno === null || Number.isSafeInteger(frame.lineno));
  }
}

const fixtures = loadStackFixtures();

for (const fixture of fixtures) {
  Deno.test(`buildPayload() builds the expected payload for ${fixture.name}`, () => {
    const payload = buildPayload(fixture.error, fixture.context);
    deepEqual(payload, fixture.expected.payload);
    checkShape(payload);
  });
}

Deno.test("buildPayload() never leaks the home directory or user name of any fixture", () => {
  for (const fixture of fixtures) {
    const { home, user } = fixture.context;
    const inputs = [
      {
        ...fixture.error,
        firstLine: `load("${home}/x")`,
        notebook: `${user}-notes`,
      },
      {
        name: fixture.error.name,
        message: fixture.error.message,
        traceback: fixture.error.stack.split("\n"),
      },
    ];
    for (const input of inputs) {
      const payload = buildPayload(input, fixture.context);
      for (const text of strings(payload)) {
        ok(!text.includes(home), `${fixture.name}: ${text}`);
        ok(
          !text.toLowerCase().includes(user.toLowerCase()),
          `${fixture.name}: ${text}`,
        );
      }
    }
  }
});

Deno.test("buildPayload() gives the same frames from kernel traceback lines as from the stack", () => {
  ok(fixtures.filter((f) => f.error.traceback !== undefined).length >= 5);
  for (const fixture of fixtures) {
    const fromLines = buildPayload(
      {
        name: fixture.error.name,
        message: fixture.error.message,
        traceback: fixture.error.traceback ?? fixture.error.stack.split("\n"),
      },
      fixture.context,
    );
    deepEqual(
      fromLines.traceback,
      fixture.expected.payload.traceback,
      fixture.name,
    );
  }
});

Deno.test("buildPayload() reads coloured kernel traceback lines", () => {
  const payload = buildPayload({
    name: "Error",
    message: "boom",
    traceback: [
      "\x1b[31mError\x1b[0m: boom",
      "    at \x1b[1m\x1b[3mfoo\x1b[0m (\x1b[36m<anonymous>\x1b[0m:\x1b[33m2\x1b[0m:\x1b[33m9\x1b[0m)",
      "    at \x1b[36m<anonymous>\x1b[0m:\x1b[33m4\x1b[0m:\x1b[33m1\x1b[0m",
    ],
    firstLine: "function foo() { throw new Error('boom') }",
    executionCount: 3,
    notebook: "demo",
  }, CONTEXT);
  deepEqual(payload, {
    error_name: "Error",
    error_message: "boom",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 4 },
      { filename: "<cell>", fun_name: "foo", lineno: 2 },
    ],
    first_line: "function foo() { throw new Error('boom') }",
    execution_count: 3,
    notebook: "demo",
  });
});

Deno.test("buildPayload() never takes frame-like message lines as frames", () => {
  const message =
    "upstream said:\n    at evil (file:///home/mallory/evil.ts:6:6)";
  const payload = buildPayload({
    name: "Error",
    message,
    stack: `Error: ${message}\n    at f (<anonymous>:1:7)`,
  }, CONTEXT);
  deepEqual(payload.traceback, [{
    filename: "<cell>",
    fun_name: "f",
    lineno: 1,
  }]);
  equal(
    payload.error_message,
    "upstream said:\n    at evil (file://~/evil.ts:6:6)",
  );
});

Deno.test("buildPayload() names unnamed frames <module> when outermost, else <anonymous>", () => {
  const payload = buildPayload({
    name: "TypeError",
    message: "x",
    stack:
      "TypeError: x\n    at <anonymous>:2:23\n    at Array.map (<anonymous>)\n    at async <anonymous>:2:8",
  }, CONTEXT);
  deepEqual(payload.traceback.map((f) => f.fun_name), [
    "<module>",
    "Array.map",
    "<anonymous>",
  ]);
});

Deno.test("buildPayload() keeps the outermost 25 and innermost 25 of many frames", () => {
  const lines = Array.from(
    { length: 120 },
    (_, i) => `    at f${i} (<anonymous>:${i + 1}:1)`,
  );
  const payload = buildPayload({
    name: "E",
    message: "m",
    stack: `E: m\n${lines.join("\n")}`,
  }, CONTEXT);
  equal(payload.traceback.length, 50);
  // Innermost first in the stack: f0 threw; outermost is f119.
  deepEqual(
    payload.traceback.slice(0, 25).map((f) => f.fun_name),
    Array.from({ length: 25 }, (_, i) => `f${119 - i}`),
  );
  deepEqual(
    payload.traceback.slice(25).map((f) => f.fun_name),
    Array.from({ length: 25 }, (_, i) => `f${24 - i}`),
  );
});

Deno.test("buildPayload() maps locations to filenames by the issue's rules", () => {
  const stack = [
    "Error: m",
    "    at a (file:///home/alice/nb/lib/util.ts:1:1)",
    "    at b (file:///etc/private/thing.ts:2:1)",
    "    at c (https://user:pw@esm.sh/x@1/mod.ts?token=abc#frag:3:1)",
    "    at d (node:fs:4:1)",
    "    at e (ext:deno_fs/30_fs.js:5:1)",
    "    at f (file:///home/alice/.cache/deno/npm/registry.npmjs.org/@scope/pkg/1.2.3/dist/i.js:6:1)",
    "    at g (file:///home/alice/nb/node_modules/.deno/@scope+pkg@1.2.3/node_modules/@scope/pkg/i.js:7:1)",
    "    at h (file:///home/alice/nb/node_modules/left-pad/index.js:8:1)",
    "    at i (data:text/javascript,throw 1:9:1)",
    "    at j (blob:null/1234-5678:10:1)",
    "    at k (eval at x (file:///home/alice/nb/a.ts:1:1), <anonymous>:11:1)",
    "    at l (<anonymous>:12:1)",
    "    at JSON.parse (<anonymous>)",
    "    at m (file:///C:/Users/Alice/nb/w.ts:13:1)",
    "    at n (C:\\Users\\Alice\\other\\v.ts:14:1)",
    "    at o (file:///srv/x/Program%20Files/%C3%BC.ts:15:1)",
  ].join("\n");
  const payload = buildPayload({ name: "Error", message: "m", stack }, CONTEXT);
  deepEqual(
    payload.traceback.map((f) => [f.fun_name, f.filename, f.lineno]).reverse(),
    [
      ["a", "lib/util.ts", 1],
      ["b", "…/thing.ts", 2],
      ["c", "https://esm.sh/x@1/mod.ts", 3],
      ["d", "node:fs", 4],
      ["e", "ext:deno_fs/30_fs.js", 5],
      ["f", "npm:@scope/pkg@1.2.3/dist/i.js", 6],
      ["g", "npm:@scope/pkg@1.2.3/i.js", 7],
      ["h", "npm:left-pad/index.js", 8],
      ["i", "<data>", 9],
      ["j", "<blob>", 10],
      ["k", "<eval>", 11],
      ["l", "<cell>", 12],
      ["JSON.parse", "<native>", null],
      ["m", "…/w.ts", 13],
      ["n", "…/v.ts", 14],
      ["o", "…/ü.ts", 15],
    ],
  );
  const windows = buildPayload({ name: "Error", message: "m", stack }, {
    cwd: "C:\\Users\\Alice\\nb",
    home: "C:\\Users\\Alice",
    user: "Alice",
    denoDir: "C:\\Users\\Alice\\AppData\\Local\\deno",
  });
  const byName = (name: string) =>
    windows.traceback.find((f) => f.fun_name === name)?.filename;
  equal(byName("m"), "w.ts");
  equal(byName("n"), "…/v.ts");
  equal(byName("f"), "npm:@scope/pkg@1.2.3/dist/i.js");
});

Deno.test("buildPayload() scrubs and bounds every string; control characters removed", () => {
  const payload = buildPayload({
    name: "Error\nInjected",
    message: "pw password=hunter2 at /home/alice/x\r\n\tnext\x00\x1b[31m " +
      "y".repeat(3000),
    firstLine: "const key = 'sk-abcdefghijklmnopqrstuvwxyz';\nsecond line",
    executionCount: 12,
    notebook: "alice's\tnotebook " + "n".repeat(200),
  }, CONTEXT);
  checkShape(payload);
  equal(payload.error_name, "Error Injected");
  ok(
    payload.error_message.startsWith("pw password=<redacted> at ~/x\n\tnext y"),
  );
  ok(payload.error_message.endsWith("…"));
  equal(payload.error_message.length, 1000);
  equal(payload.first_line, "const key = '<redacted>'; second line");
  ok(payload.notebook.startsWith("<user>'s notebook n"));
  equal(payload.notebook.length, 100);
});

Deno.test("buildPayload() scrubs before truncating (no secret fragment at the cut)", () => {
  const message = "x".repeat(990) + " token=abcdefghijklmnopqrstuvwxyz";
  const payload = buildPayload({ name: "E", message }, CONTEXT);
  ok(!payload.error_message.includes("abcdef"), payload.error_message);
  ok(payload.error_message.length <= 1000);
});

Deno.test("buildPayload() uses defaults and survives garbage input", () => {
  const garbage: unknown[] = [
    undefined,
    null,
    42,
    "text",
    {},
    { name: 5, message: { toString: () => "obj" }, stack: 7, traceback: "no" },
    {
      name: "E",
      message: "m",
      traceback: [1, null, { a: 1 }, "    at f (<anonymous>:1:1)"],
    },
    {
      name: {
        toString() {
          throw new Error("hostile");
        },
      },
      message: Symbol("s"),
    },
    {
      get name(): string {
        throw new Error("getter");
      },
      message: "m",
      executionCount: Number.NaN,
    },
    { name: "E", message: "m", executionCount: -1, notebook: "" },
  ];
  for (const input of garbage) {
    const payload = buildPayload(input as never, CONTEXT);
    checkShape(payload);
    equal(typeof payload.error_name, "string");
  }
  deepEqual(buildPayload({ name: "", message: "" }, CONTEXT), {
    error_name: "Error",
    error_message: "",
    traceback: [],
    first_line: "",
    execution_count: null,
    notebook: "unknown",
  });
});

Deno.test("buildPayload() defaults the context to the running process", () => {
  const home = Deno.env.get("HOME");
  const cwd = Deno.cwd();
  const payload = buildPayload({
    name: "Error",
    message: `cannot read ${home}/secret.txt`,
    stack: `Error: m\n    at f (file://${cwd}/lib/a.ts:1:1)`,
  });
  if (home !== undefined && home.length > 1) {
    equal(payload.error_message, "cannot read ~/secret.txt");
  }
  equal(payload.traceback[0].filename, "lib/a.ts");
});

Deno.test("scrubPayload() is idempotent on built payloads", () => {
  for (const fixture of fixtures) {
    const built = buildPayload(fixture.error, fixture.context);
    deepEqual(scrubPayload(built, fixture.context), built, fixture.name);
    deepEqual(scrubPayload(built), built, fixture.name);
  }
});

Deno.test("scrubPayload() cleans a hostile payload without reading the process", () => {
  const hostile = {
    error_name: "E\u202e" + "n".repeat(500),
    error_message:
      "mail bob@example.com, key ghp_0123456789abcdefghijABCDEFGHIJ012345",
    traceback: Array.from({ length: 500 }, (_, i) => ({
      filename: i === 0 ? "/home/bob/private/x.ts" : "x".repeat(1000),
      fun_name: i === 1 ? 42 : "f\nnewline",
      lineno: i === 2 ? -5 : i === 3 ? "7" : i,
      extra: "dropped",
    })),
    first_line: "line\nbreak",
    execution_count: 1.5,
    notebook: { evil: true },
    extra_key: "dropped",
  };
  const clean = scrubPayload(hostile as never);
  checkShape(clean);
  ok(clean.error_name.startsWith("En"));
  equal(clean.error_message, "mail <email>, key <redacted>");
  equal(clean.traceback.length, 50);
  equal(clean.traceback[0].filename, "~/private/x.ts");
  equal(clean.traceback[1].fun_name, "42");
  equal(clean.traceback[2].lineno, null);
  equal(clean.traceback[3].lineno, null);
  equal(clean.traceback[4].fun_name, "f newline");
  equal(clean.traceback[49].lineno, 499);
  equal(clean.first_line, "line break");
  equal(clean.execution_count, null);
  equal(clean.notebook, "[object Object]");
  deepEqual(scrubPayload(clean), clean);
  for (const value of [null, undefined, 1, "x", [], { traceback: "x" }]) {
    checkShape(scrubPayload(value as never));
  }
});

Deno.test("buildPayload() ignores a message text that only appears in a frame line", () => {
  const payload = buildPayload({
    name: "E",
    message: "foo",
    stack:
      "Custom header\n    at foo (file:///home/alice/nb/a.ts:1:2)\n    at bar (file:///home/alice/nb/b.ts:3:4)",
  }, CONTEXT);
  deepEqual(payload.traceback, [
    { filename: "b.ts", fun_name: "bar", lineno: 3 },
    { filename: "a.ts", fun_name: "foo", lineno: 1 },
  ]);
});

Deno.test("buildPayload() handles 1 MB messages and stacks in linear time", () => {
  const secret = "token=" + "s".repeat(300);
  const message = "a".repeat(65_530) + secret + " tail";
  const stack = `E: x\n${
    "    at f (file:///home/alice/nb/a.ts:1:1)\n".repeat(25_000)
  }`;
  const t0 = performance.now();
  const payload = buildPayload({
    name: "E",
    message: message + "b ".repeat(500_000),
    stack,
  }, CONTEXT);
  const elapsed = performance.now() - t0;
  console.log(
    `  1 MB message + ${stack.length} byte stack: ${elapsed.toFixed(0)} ms`,
  );
  checkShape(payload);
  ok(!payload.error_message.includes("sss"));
  ok(elapsed < 2000, `took ${elapsed} ms`);
});
