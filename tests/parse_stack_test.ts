import { deepEqual, equal, ok } from "node:assert/strict";
import { parseStack, parseStackLine } from "../src/parse_stack.ts";
import type { StackFrame } from "../src/types.ts";
import { loadStackFixtures } from "./support/stack_fixtures.ts";
import { seededRandom } from "./support/seeded_random.ts";

/**
 * A frame with defaults. (`constructor` is spelled `ctor` here: an object
 * literal without an own `constructor` would type-check as `Function`.)
 */
function frame(
  fields: Omit<Partial<StackFrame>, "constructor"> & { ctor?: boolean },
): StackFrame {
  const { ctor, ...rest } = fields;
  return {
    function: null,
    file: null,
    line: null,
    column: null,
    native: false,
    async: false,
    ...rest,
    constructor: ctor ?? false,
  };
}

const fixtures = loadStackFixtures();

Deno.test("parseStack() fixtures exist and have reviewed expectations", () => {
  ok(fixtures.length >= 30, `only ${fixtures.length} fixtures`);
  for (const fixture of fixtures) {
    ok(fixture.expected, `fixture ${fixture.name} has no expected frames`);
  }
});

for (const fixture of fixtures) {
  Deno.test(`parseStack() parses the captured ${fixture.name} stack`, () => {
    deepEqual(parseStack(fixture.error.stack), fixture.expected.frames);
  });
}

/** Hand-written lines: Windows, URLs, odd paths, every V8 shape. */
const LINES: [string, StackFrame | undefined][] = [
  [
    "    at foo (file:///C:/Users/Bob/My%20Notebooks/lib.ts:12:5)",
    frame({
      function: "foo",
      file: "file:///C:/Users/Bob/My%20Notebooks/lib.ts",
      line: 12,
      column: 5,
    }),
  ],
  [
    "    at Object.<anonymous> (C:\\Users\\Bob\\proj (copy)\\index.js:1:7)",
    frame({
      function: "Object.<anonymous>",
      file: "C:\\Users\\Bob\\proj (copy)\\index.js",
      line: 1,
      column: 7,
    }),
  ],
  [
    "    at C:\\Program Files\\app\\x.js:3:4",
    frame({
      file: "C:\\Program Files\\app\\x.js",
      line: 3,
      column: 4,
    }),
  ],
  [
    "    at \\\\server\\share\\x.js:3:4",
    frame({
      file: "\\\\server\\share\\x.js",
      line: 3,
      column: 4,
    }),
  ],
  [
    "    at load (https://esm.sh/v135/preact@10.19.3/es2022/preact.mjs?target=deno#x:1:200)",
    frame({
      function: "load",
      file:
        "https://esm.sh/v135/preact@10.19.3/es2022/preact.mjs?target=deno#x",
      line: 1,
      column: 200,
    }),
  ],
  [
    "    at Module.readFileSync (node:fs:453:20)",
    frame({
      function: "Module.readFileSync",
      file: "node:fs",
      line: 453,
      column: 20,
    }),
  ],
  [
    "    at async Object.readTextFile (ext:deno_fs/30_fs.js:1:10042)",
    frame({
      function: "Object.readTextFile",
      file: "ext:deno_fs/30_fs.js",
      line: 1,
      column: 10042,
      async: true,
    }),
  ],
  [
    "    at Type.method [as alias] (file:///a.ts:1:2)",
    frame({
      function: "Type.method",
      file: "file:///a.ts",
      line: 1,
      column: 2,
    }),
  ],
  [
    "    at new Foo (<anonymous>:3:11)",
    frame({
      function: "new Foo",
      file: "<anonymous>",
      line: 3,
      column: 11,
      ctor: true,
    }),
  ],
  [
    "    at async new Bar (file:///b.ts:9:1)",
    frame({
      function: "new Bar",
      file: "file:///b.ts",
      line: 9,
      column: 1,
      async: true,
      ctor: true,
    }),
  ],
  ["    at <anonymous>", frame({ native: true })],
  ["    at native", frame({ native: true })],
  ["    at f (unknown location)", frame({ function: "f", native: true })],
  [
    "    at Array.forEach (native)",
    frame({ function: "Array.forEach", native: true }),
  ],
  [
    "    at async Promise.all (index 12)",
    frame({
      function: "Promise.all",
      native: true,
      async: true,
    }),
  ],
  [
    "    at Promise.any (index 0)",
    frame({ function: "Promise.any", native: true }),
  ],
  [
    "    at async <anonymous>:2:3",
    frame({
      file: "<anonymous>",
      line: 2,
      column: 3,
      async: true,
    }),
  ],
  [
    "    at inner (eval at <anonymous> (eval at outer (file:///x.ts:1:1)), <anonymous>:1:5)",
    frame({
      function: "inner",
      file:
        "eval at <anonymous> (eval at outer (file:///x.ts:1:1)), <anonymous>",
      line: 1,
      column: 5,
    }),
  ],
  [
    "    at f (/home/a/dir (with parens)/ünï côdé.js:10:2)",
    frame({
      function: "f",
      file: "/home/a/dir (with parens)/ünï côdé.js",
      line: 10,
      column: 2,
    }),
  ],
  [
    "    at f (/tmp/unbalanced(dir/x.js:1:2)",
    frame({
      function: "f",
      file: "/tmp/unbalanced(dir/x.js",
      line: 1,
      column: 2,
    }),
  ],
  [
    "    at get [computed] (file:///a.ts:1:2)",
    frame({
      function: "get [computed]",
      file: "file:///a.ts",
      line: 1,
      column: 2,
    }),
  ],
  ["    at file:///a.ts:7", frame({ file: "file:///a.ts", line: 7 })],
  [
    "    at wasm://wasm/8c2f4a2e:wasm-function[3]:0x1a2",
    frame({
      file: "wasm://wasm/8c2f4a2e:wasm-function[3]:0x1a2",
    }),
  ],
  // Colours, as a kernel may print them.
  [
    "    at \x1b[1m\x1b[3mfoo\x1b[0m (\x1b[36mfile:///a.ts\x1b[0m:\x1b[33m2\x1b[0m:\x1b[33m9\x1b[0m)",
    frame({
      function: "foo",
      file: "file:///a.ts",
      line: 2,
      column: 9,
    }),
  ],
  [
    "\tat tabbed (file:///a.ts:1:1)\r",
    frame({
      function: "tabbed",
      file: "file:///a.ts",
      line: 1,
      column: 1,
    }),
  ],
  // Not frames.
  ["Error: boom", undefined],
  ["    atfoo (file:///a.ts:2:1)", undefined],
  ["    at ", undefined],
  ["    atfoo (file:///a.ts:1:1)", undefined],
  ["", undefined],
  ["    at f (" + "x".repeat(5000) + ":1:1)", undefined],
];

Deno.test("parseStackLine() parses every V8 frame shape", async (t) => {
  for (const [line, expected] of LINES) {
    await t.step(JSON.stringify(line).slice(0, 70), () => {
      deepEqual(parseStackLine(line), expected);
    });
  }
});

Deno.test("parseStack() takes only the trailing block of frame lines", () => {
  const stack = [
    "Error: first line",
    "    at fake (file:///fake.ts:1:1)",
    "the message goes on",
    "    at real (file:///real.ts:2:3)",
    "    at file:///main.ts:4:5",
    "",
  ].join("\n");
  deepEqual(parseStack(stack).map((f) => f.file), [
    "file:///real.ts",
    "file:///main.ts",
  ]);
});

Deno.test("parseStack() needs indented frame lines; parseStackLine() does not", () => {
  deepEqual(parseStack("E\nat f (file:///a.ts:1:1)"), []);
  deepEqual(
    parseStackLine("at f (file:///a.ts:1:1)"),
    frame({ function: "f", file: "file:///a.ts", line: 1, column: 1 }),
  );
});

Deno.test("parseStack() handles CRLF and kernel-style lines", () => {
  const stack =
    "Error: boom\r\n    at foo (<anonymous>:2:9)\r\n    at <anonymous>:4:1\r\n";
  deepEqual(parseStack(stack), [
    frame({ function: "foo", file: "<anonymous>", line: 2, column: 9 }),
    frame({ file: "<anonymous>", line: 4, column: 1 }),
  ]);
});

Deno.test("parseStack() skips unknown lines inside the frame block", () => {
  const stack =
    "E\n    at a (file:///a.ts:1:1)\n    at \n    at b (file:///b.ts:2:2)";
  deepEqual(parseStack(stack).map((f) => f.function), ["a", "b"]);
});

Deno.test("parseStack() returns [] for stacks without frames and for non-strings", () => {
  deepEqual(parseStack(""), []);
  deepEqual(parseStack("Error: no frames"), []);
  deepEqual(parseStack("a\nb\nc"), []);
  for (const value of [undefined, null, 42, {}, [], Symbol("x")]) {
    deepEqual(parseStack(value as unknown as string), []);
    equal(parseStackLine(value as unknown as string), undefined);
  }
});

const TOKENS = [
  "    at ",
  "at ",
  "async ",
  "new ",
  "(",
  ")",
  ":",
  "1",
  "42",
  " ",
  "\n",
  "\r",
  "file:///",
  "C:\\",
  "<anonymous>",
  "eval at ",
  ", ",
  "[as x]",
  "index ",
  "native",
  "\x1b[31m",
  "ü",
  "\u0000",
  "@",
  "/",
  ".",
  "Object.<anonymous>",
];

function checkFrame(f: StackFrame): void {
  ok(f.function === null || typeof f.function === "string");
  ok(f.file === null || typeof f.file === "string");
  for (const n of [f.line, f.column]) {
    ok(n === null || (Number.isSafeInteger(n) && n >= 0), `bad number ${n}`);
  }
  ok(!f.native || (f.file === null && f.line === null));
}

Deno.test("parseStack() never throws on seeded random input", () => {
  const next = seededRandom(20261125);
  for (let i = 0; i < 3000; i++) {
    const parts: string[] = [];
    const count = Math.floor(next() * 60);
    for (let j = 0; j < count; j++) {
      parts.push(
        next() < 0.85
          ? TOKENS[Math.floor(next() * TOKENS.length)]
          : String.fromCharCode(Math.floor(next() * 0x3000)),
      );
    }
    const text = parts.join("");
    const frames = parseStack(text);
    frames.forEach(checkFrame);
    checkFrame(parseStackLine(text) ?? frame({}));
  }
});

const ADVERSARIAL: [string, (n: number) => string][] = [
  ["open parens", (n) => "    at " + "(".repeat(n)],
  ["close parens", (n) => "    at f" + ")".repeat(n)],
  ["spaces", (n) => "    at " + " ".repeat(n) + "x"],
  ["colons", (n) => "    at " + ":".repeat(n)],
  ["digits", (n) => "    at f (x:" + "1".repeat(n) + ")"],
  ["colon digits", (n) => "    at " + ":1".repeat(n / 2)],
  ["nested eval", (n) => "    at " + "f (eval at ".repeat(n / 11)],
  ["many frame lines", (n) => "    at f (x:1:1)\n".repeat(n / 17)],
  ["many short lines", (n) => "    at (\n".repeat(n / 9)],
  ["ansi", (n) => "    at " + "\x1b[".repeat(n / 2)],
  ["one huge line", (n) => "x".repeat(n)],
];

Deno.test("parseStack() stays linear on 1 MB adversarial input (ReDoS guard)", () => {
  const size = 1 << 20;
  for (const [name, make] of ADVERSARIAL) {
    const small = make(size / 4);
    const large = make(size);
    const t0 = performance.now();
    parseStack(small);
    const t1 = performance.now();
    parseStack(large);
    const t2 = performance.now();
    const ratio = (t2 - t1) / Math.max(t1 - t0, 0.01);
    console.log(
      `  ${name}: 256 KB ${(t1 - t0).toFixed(1)} ms, 1 MB ${
        (t2 - t1).toFixed(1)
      } ms, ratio ${ratio.toFixed(1)} (linear ≈ 4)`,
    );
    // A generous bound: quadratic behaviour on 1 MB would take minutes.
    ok(t2 - t1 < 2000, `${name}: 1 MB took ${t2 - t1} ms`);
  }
});
