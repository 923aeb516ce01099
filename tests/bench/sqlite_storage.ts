/**
 * CPU cost of {@linkcode SqliteStorage.addReport} alone (no HTTP): distinct
 * reports of one error from one session (or several in turn), sent as
 * batches of concurrent
 * `addReport` calls (so group commit puts each batch in one transaction),
 * on a fresh file per run, with `synchronous` NORMAL and FULL, after one
 * untimed warm-up run. Prints the median over the runs of the wall time per
 * report, and the process CPU time per report (which includes the
 * checkpoint worker's).
 *
 * Run: `flock /tmp/nbr/bench.lock deno run -A tests/bench/sqlite_storage.ts`
 * (the lock keeps it apart from other benchmarks on a shared machine).
 * Flags: `--reports <n>` (default 40000), `--batch <n>` (default 32),
 * `--runs <n>` (default 3), `--duplicates <fraction>` (default 0: the share
 * of reports that repeat the previous batch's payload, counted not stored),
 * `--sessions <n>` (default 1: the reports go to n sessions in turn).
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import type { ErrorPayload } from "../../src/types.ts";
import { openSqliteStorage } from "../../src/server/sqlite_storage.ts";

/** One synchronous setting's figures. */
export interface SqliteStorageFigures {
  /** `normal` or `full`. */
  synchronous: "normal" | "full";
  /** Median wall time per report, µs. */
  wallMicros: number;
  /** Median process CPU time per report, µs. */
  cpuMicros: number;
  /** Median reports per second. */
  perSecond: number;
}

function payload(executionCount: number): ErrorPayload {
  return {
    error_name: "TypeError",
    error_message: "Cannot read properties of undefined (reading 'rows')",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 3 },
      { filename: "<cell>", fun_name: "loadTable", lineno: 12 },
    ],
    first_line: "# load the table",
    notebook: "bench",
    execution_count: executionCount,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function runOnce(
  dir: string,
  synchronous: "normal" | "full",
  reports: number,
  batch: number,
  duplicates: number,
  sessions: number,
): Promise<{ wall: number; cpu: number }> {
  const path = `${dir}/bench-${synchronous}.db`;
  for (const suffix of ["", "-wal", "-shm"]) {
    await Deno.remove(path + suffix).catch(() => {});
  }
  const storage = await openSqliteStorage(path, { synchronous });
  try {
    const usages = [];
    for (let i = 0; i < sessions; i++) {
      usages.push(await storage.createUsage("bench", Date.now()));
    }
    const repeatEvery = duplicates > 0 ? Math.round(1 / duplicates) : 0;
    const cpu0 = cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < reports; i += batch) {
      const pending = [];
      for (let j = 0; j < batch; j++) {
        const n = i + j;
        // A repeat of a report of the previous batch: a duplicate.
        const count = repeatEvery > 0 && n % repeatEvery === 0 && n >= batch
          ? n - batch
          : n;
        pending.push(storage.addReport({
          usageUuid: usages[n % sessions]!.uuid,
          payload: payload(count),
          now: Date.now(),
          dedupeWindowMs: 60_000,
          maxReportsPerSession: Infinity,
        }));
      }
      await Promise.all(pending);
    }
    const wall = performance.now() - t0;
    const cpu = cpuUsage(cpu0);
    return {
      wall: (wall * 1000) / reports,
      cpu: (cpu.user + cpu.system) / reports,
    };
  } finally {
    await storage.close();
  }
}

/**
 * Runs the benchmark and prints its figures.
 *
 * @param args Command-line flags (see the module doc).
 * @returns The figures for NORMAL and FULL.
 */
export async function main(
  args: string[] = [],
): Promise<SqliteStorageFigures[]> {
  const { values } = parseArgs({
    args,
    options: {
      reports: { type: "string" },
      batch: { type: "string" },
      runs: { type: "string" },
      duplicates: { type: "string" },
      sessions: { type: "string" },
    },
  });
  const reports = Number(values.reports ?? 40_000);
  const batch = Number(values.batch ?? 32);
  const runs = Number(values.runs ?? 3);
  const duplicates = Number(values.duplicates ?? 0);
  const sessions = Number(values.sessions ?? 1);
  const dir = await Deno.makeTempDir({ prefix: "nbr-sqlite-bench-" });
  const figures: SqliteStorageFigures[] = [];
  try {
    console.log(
      `SqliteStorage.addReport: ${reports} reports, batches of ${batch}, ${sessions} session(s), ${
        duplicates * 100
      }% duplicates, median of ${runs} runs`,
    );
    // Untimed: lets the JIT compile the write path first.
    await runOnce(
      dir,
      "normal",
      Math.min(reports, 10_000),
      batch,
      duplicates,
      sessions,
    );
    for (const synchronous of ["normal", "full"] as const) {
      const walls: number[] = [];
      const cpus: number[] = [];
      for (let r = 0; r < runs; r++) {
        const { wall, cpu } = await runOnce(
          dir,
          synchronous,
          reports,
          batch,
          duplicates,
          sessions,
        );
        walls.push(wall);
        cpus.push(cpu);
      }
      const wallMicros = median(walls);
      const cpuMicros = median(cpus);
      const perSecond = 1_000_000 / wallMicros;
      figures.push({ synchronous, wallMicros, cpuMicros, perSecond });
      console.log(
        `  ${synchronous.padEnd(6)} ${wallMicros.toFixed(1)} µs/report wall, ${
          cpuMicros.toFixed(1)
        } µs/report CPU, ${perSecond.toFixed(0)} reports/s (runs: ${
          walls.map((w) => w.toFixed(1)).join(", ")
        })`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return figures;
}

if (import.meta.main) {
  await main(Deno.args);
}
