/**
 * Loads the captured stack fixtures of `tests/fixtures/stacks/` (written by
 * `tests/fixtures/generate_stacks.ts`, expectations reviewed by hand).
 *
 * @module
 */

import type {
  ErrorPayload,
  PayloadContext,
  StackFrame,
} from "../../src/types.ts";

/** One captured stack with its expected frames and payload. */
export interface StackFixture {
  /** The fixture's name (its file name without `.json`). */
  name: string;
  /** What was run to capture it. */
  description: string;
  /** The context the stack was captured in (fake home, user, cwd, DENO_DIR). */
  context: Required<PayloadContext>;
  /** The error as thrown (kernel fixtures: `ename`, `evalue`, the traceback joined, and its lines). */
  error: { name: string; message: string; stack: string; traceback?: string[] };
  /** What `parseStack(error.stack)` and `buildPayload(error, context)` must give. */
  expected: { frames: StackFrame[]; payload: ErrorPayload };
}

/** The fixtures directory. */
export const STACK_FIXTURE_DIR: URL = new URL(
  "../fixtures/stacks/",
  import.meta.url,
);

/**
 * Reads every fixture, sorted by name.
 *
 * @returns The fixtures.
 */
export function loadStackFixtures(): StackFixture[] {
  const fixtures: StackFixture[] = [];
  for (const entry of Deno.readDirSync(STACK_FIXTURE_DIR)) {
    if (!entry.isFile || !entry.name.endsWith(".json")) continue;
    const data = JSON.parse(
      Deno.readTextFileSync(new URL(entry.name, STACK_FIXTURE_DIR)),
    );
    fixtures.push({ name: entry.name.slice(0, -5), ...data });
  }
  return fixtures.sort((a, b) => a.name.localeCompare(b.name));
}
