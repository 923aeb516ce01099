/**
 * Compares `parseStack` with npm's `error-stack-parser`, `stacktrace-parser`
 * and the Node stack parser of `@sentry/core` on the captured fixture stacks
 * of `tests/fixtures/stacks/`: speed (frames per second) and accuracy
 * (frames wrong against the fixtures' reviewed expected frames, on the fields
 * every parser provides: function, file, line, column).
 *
 * Run: `deno run -A tests/bench/stack_parsers.ts`
 *
 * @module
 */

// Inline, pinned npm specifiers (bench-only dependencies).
// deno-lint-ignore no-import-prefix
import errorStackParserModule from "npm:error-stack-parser@3.0.0";
// deno-lint-ignore no-import-prefix
import { parse as stacktraceParserParse } from "npm:stacktrace-parser@0.1.11";
// deno-lint-ignore no-import-prefix
import { createStackParser } from "npm:@sentry/core@11.12.0";
// deno-lint-ignore no-import-prefix
import { nodeStackLineParser } from "npm:@sentry/core@11.12.0/server";
import { parseStack } from "../../src/parse_stack.ts";
import type { StackFrame } from "../../src/types.ts";
import { loadStackFixtures } from "../support/stack_fixtures.ts";

/** The fields compared: what every parser reports. */
interface ComparableFrame {
  function: string | null;
  file: string | null;
  line: number | null;
  column: number | null;
}

/** One parser under test: text in, comparable frames out (innermost first). */
interface Candidate {
  name: string;
  parse: (stack: string) => ComparableFrame[];
}

/** One row of the result table. */
export interface StackParserResult {
  /** The parser. */
  parser: string;
  /** Expected frames processed per second. */
  framesPerSecond: number;
  /** Frames not exactly right (missing, extra or with a wrong field). */
  framesWrong: number;
  /** Frames in the fixtures. */
  framesTotal: number;
  /** Stacks on which the parser threw. */
  stacksThrown: number;
  /** The fixtures with wrong frames, as `"<fixture> <frames wrong>"`. */
  wrongIn: string[];
}

const errorStackParser = ((errorStackParserModule as unknown as {
  default?: { parse(error: { stack: string }): unknown[] };
}).default ?? errorStackParserModule) as unknown as {
  parse(error: { stack: string }): {
    functionName?: string;
    fileName?: string;
    lineNumber?: number;
    columnNumber?: number;
  }[];
};

const sentryParser = createStackParser(nodeStackLineParser());

const CANDIDATES: Candidate[] = [
  {
    name: "parseStack (this project)",
    parse: (stack) =>
      parseStack(stack).map((f: StackFrame) => ({
        function: f.function,
        file: f.file,
        line: f.line,
        column: f.column,
      })),
  },
  {
    name: "error-stack-parser@3.0.0",
    parse: (stack) =>
      errorStackParser.parse({ stack }).map((f) => ({
        function: f.functionName ?? null,
        file: f.fileName ?? null,
        line: f.lineNumber ?? null,
        column: f.columnNumber ?? null,
      })),
  },
  {
    name: "stacktrace-parser@0.1.11",
    parse: (stack) =>
      stacktraceParserParse(stack).map((f) => ({
        function: f.methodName === "<unknown>" ? null : f.methodName,
        file: f.file,
        line: f.lineNumber,
        column: f.column,
      })),
  },
  {
    name: "@sentry/core@11.12.0 node",
    // Sentry returns the outermost frame first: reverse to compare.
    parse: (stack) =>
      sentryParser(stack).reverse().map((f) => ({
        function: f.function === "?" ? null : f.function ?? null,
        file: f.filename ?? null,
        line: f.lineno ?? null,
        column: f.colno ?? null,
      })),
  },
];

/**
 * Puts equivalent spellings side by side: `file://` URLs and decoded paths,
 * an ` [as alias]` and an `async ` marker (kept by some parsers), "no file"
 * for a native frame printed as `(<anonymous>)`/`(native)`.
 */
function normalize(frame: ComparableFrame): string {
  let fn = frame.function;
  if (fn !== null) {
    fn = fn.replace(/^async /, "");
    const alias = fn.lastIndexOf(" [as ");
    if (alias !== -1 && fn.endsWith("]")) fn = fn.slice(0, alias);
  }
  let file = frame.file;
  if (
    file !== null && frame.line === null &&
    (file === "<anonymous>" || file === "native" || /^index \d+$/.test(file))
  ) {
    file = null;
  }
  if (file !== null) {
    if (file.startsWith("file://")) file = file.slice(7);
    if (/^\/[A-Za-z]:\//.test(file)) file = file.slice(1);
    try {
      file = decodeURI(file);
    } catch {
      // keep as is
    }
  }
  return JSON.stringify([fn, file, frame.line, frame.column]);
}

function framesWrong(
  expected: ComparableFrame[],
  actual: ComparableFrame[],
): number {
  let wrong = 0;
  const length = Math.max(expected.length, actual.length);
  for (let i = 0; i < length; i++) {
    const e = expected[i];
    const a = actual[i];
    if (e === undefined || a === undefined || normalize(e) !== normalize(a)) {
      wrong++;
    }
  }
  return wrong;
}

/**
 * Runs the comparison and prints a table.
 *
 * @param options.minMillis How long to time each parser per round (default 300).
 * @param options.rounds Interleaved timing rounds; the best counts (default 5).
 * @returns The result rows.
 */
export function main(
  options: { minMillis?: number; rounds?: number } = {},
): StackParserResult[] {
  const minMillis = options.minMillis ?? 300;
  const fixtures = loadStackFixtures();
  const stacks = fixtures.map((f) => f.error.stack);
  const framesTotal = fixtures.reduce(
    (sum, f) => sum + f.expected.frames.length,
    0,
  );
  const results: StackParserResult[] = [];
  for (const candidate of CANDIDATES) {
    let wrong = 0;
    let thrown = 0;
    const wrongBy: string[] = [];
    for (const fixture of fixtures) {
      let count: number;
      try {
        count = framesWrong(
          fixture.expected.frames,
          candidate.parse(fixture.error.stack),
        );
      } catch {
        thrown++;
        count = fixture.expected.frames.length;
      }
      wrong += count;
      if (count > 0) wrongBy.push(`${fixture.name} ${count}`);
    }
    results.push({
      parser: candidate.name,
      framesPerSecond: 0,
      framesWrong: wrong,
      framesTotal,
      stacksThrown: thrown,
      wrongIn: wrongBy,
    });
  }
  // Time in interleaved rounds (the machine is shared: timings are noisy);
  // each parser's best round counts.
  const rounds = options.rounds ?? 5;
  for (let round = 0; round < rounds; round++) {
    for (const [index, candidate] of CANDIDATES.entries()) {
      const fps = framesPerSecond(candidate, stacks, framesTotal, minMillis);
      results[index].framesPerSecond = Math.max(
        results[index].framesPerSecond,
        fps,
      );
    }
  }
  printTable(results, fixtures.length);
  return results;
}

function framesPerSecond(
  candidate: Candidate,
  stacks: string[],
  framesTotal: number,
  minMillis: number,
): number {
  const safeParse = (stack: string) => {
    try {
      return candidate.parse(stack).length;
    } catch {
      return 0;
    }
  };
  for (let i = 0; i < 20; i++) for (const s of stacks) safeParse(s);
  let passes = 0;
  let sink = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < minMillis) {
    for (const s of stacks) sink += safeParse(s);
    passes++;
    elapsed = performance.now() - start;
  }
  if (sink < 0) console.log(sink);
  return Math.round((passes * framesTotal) / (elapsed / 1000));
}

function printTable(results: StackParserResult[], stacks: number): void {
  const fastest = Math.max(...results.map((r) => r.framesPerSecond));
  console.log(
    `Stack parsers on ${stacks} captured stacks (${
      results[0]?.framesTotal
    } frames)`,
  );
  const header = ["parser", "frames/s", "relative", "frames wrong", "threw"];
  const rows = results.map((r) => [
    r.parser,
    r.framesPerSecond.toLocaleString("en-US"),
    `${(r.framesPerSecond / fastest).toFixed(2)}x`,
    `${r.framesWrong} / ${r.framesTotal}`,
    String(r.stacksThrown),
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => row[i].length))
  );
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  console.log(line(header));
  console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  for (const row of rows) console.log(line(row));
  for (const r of results) {
    if (r.wrongIn.length > 0) {
      console.log(`${r.parser} wrong in: ${r.wrongIn.join(", ")}`);
    }
  }
}

if (import.meta.main) main();
