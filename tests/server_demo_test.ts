import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { main } from "../examples/demo.ts";

Deno.test("deno task demo runs the notebook in a real kernel and prints the three stored reports", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => lines.push(args.map(String).join(" "));
  let code: number;
  try {
    code = await main([]);
  } finally {
    console.log = log;
  }
  const output = lines.join("\n");
  assertEquals(code, 0, output);
  assertMatch(output, /The collector stored 3 report\(s\) for notebook "demo"/);
  assertMatch(output, /cell \[3\]\s+SyntaxError: /);
  assertMatch(
    output,
    /cell \[4\]\s+TypeError: Cannot read properties of undefined \(reading 'value'\)/,
  );
  assertMatch(output, /cell \[5\]\s+NotFound: .*private-notes\.txt/);
  const home = Deno.env.get("HOME");
  if (home) {
    const notFound = lines.find((line) => /^\n?#\d+ +cell \[5\]/.test(line))!;
    assert(!notFound.includes(`${home}/`), notFound);
  }
  assertMatch(output, /dashboard: {2}http:\/\/127\.0\.0\.1:\d+\/dashboard\//);
});
