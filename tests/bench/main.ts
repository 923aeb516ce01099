/**
 * `deno task bench`: runs every benchmark in turn and prints its figures.
 * Name some to run only those: `deno task bench stack kernel`.
 *
 * - `stack`: parseStack vs error-stack-parser, stacktrace-parser and
 *   @sentry/core's node parser (frames/s and accuracy on the fixtures);
 * - `kernel`: cell latency with and without the extension, error → Slack
 *   latency, cold import + loadExtension() (real kernels);
 * - `ingest`: the collector on SQLite vs a bare `Deno.serve` (wrk);
 * - `sqlite`: CPU per `SqliteStorage.addReport` alone, NORMAL and FULL;
 * - `postgres`: the same ingest on PostgreSQL, one and two instances, and
 *   the cost of grouping on both engines (needs `TEST_DATABASE_URL` or
 *   `BENCH_DATABASE_URL`; `tests/bench/run.sh` starts a private server);
 * - `dashboard`: a notebook's group list with 10,000 groups and 1,000,000
 *   reports on SQLite.
 *
 * @module
 */

import { main as dashboard } from "./dashboard.ts";
import { main as ingest } from "./ingest.ts";
import { main as ingestPostgres } from "./ingest_postgres.ts";
import { main as kernelLatency } from "./kernel_latency.ts";
import { main as sqliteStorage } from "./sqlite_storage.ts";
import { main as stackParsers } from "./stack_parsers.ts";

const BENCHMARKS: Record<string, () => Promise<unknown> | unknown> = {
  stack: () => stackParsers(),
  kernel: () => kernelLatency(),
  ingest: () => ingest([]),
  sqlite: () => sqliteStorage([]),
  postgres: () => ingestPostgres([]),
  dashboard: () => dashboard([]),
};

/**
 * Runs the named benchmarks (all when none is named).
 *
 * @param names Benchmark names, from {@linkcode BENCHMARKS}.
 * @returns The process exit code: 0, or 1 when a benchmark failed to run.
 */
export async function main(names: string[]): Promise<number> {
  const unknown = names.filter((name) => !(name in BENCHMARKS));
  if (unknown.length > 0) {
    console.error(
      `unknown benchmark: ${unknown.join(", ")} (known: ${
        Object.keys(BENCHMARKS).join(", ")
      })`,
    );
    return 2;
  }
  const selected = names.length > 0 ? names : Object.keys(BENCHMARKS);
  let failed = 0;
  for (const name of selected) {
    console.log(`\n=== ${name} ===`);
    const start = performance.now();
    try {
      await BENCHMARKS[name]();
    } catch (error) {
      failed++;
      console.error(`${name} failed: ${error}`);
    }
    console.log(
      `=== ${name}: ${((performance.now() - start) / 1000).toFixed(1)} s ===`,
    );
  }
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
