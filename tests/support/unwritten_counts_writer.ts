/**
 * Test support: a process that stores reports in SQLite batches whose counts
 * stay unwritten, then either closes the storage (`close`) or prints `ready`
 * and waits to be killed (`crash`).
 *
 * Run: `deno run --allow-all tests/support/unwritten_counts_writer.ts <file> crash|close`
 *
 * @module
 */

import { openSqliteStorage } from "../../src/server/sqlite_storage.ts";
import type { ErrorPayload } from "../../src/types.ts";
import { reportInput } from "./report_input.ts";

/** The first report's time; later ones are 7 minutes apart (two hours crossed). */
export const START = Date.UTC(2026, 0, 5, 11, 40);

/** Reports stored after the first batch, whose counts are left unwritten. */
export const UNWRITTEN_BATCHES = 10;

function payload(name: string, i: number): ErrorPayload {
  return {
    error_name: name,
    error_message: `${name} number ${i % 3}`,
    traceback: [{ filename: "<cell>", fun_name: `f${name}`, lineno: 3 }],
    first_line: `# cell ${i % 4}`,
    execution_count: i,
    notebook: "counts",
  };
}

if (import.meta.main) {
  const [path, mode] = Deno.args;
  if (!path || (mode !== "crash" && mode !== "close")) {
    throw new Error("usage: unwritten_counts_writer.ts <file> crash|close");
  }
  const storage = await openSqliteStorage(path, {
    countsEvery: { batches: 1000, ms: 3_600_000 },
  });
  const a = await storage.createUsage("counts", START);
  const b = await storage.createUsage("counts", START);
  const add = (uuid: string, name: string, i: number) =>
    storage.addReport(
      reportInput(uuid, payload(name, i), START + i * 7 * 60_000),
    );
  // Creates both groups and both sessions of each: written with the batch.
  let i = 0;
  await Promise.all([
    add(a.uuid, "TypeError", i++),
    add(b.uuid, "TypeError", i++),
    add(a.uuid, "RangeError", i++),
    add(b.uuid, "RangeError", i++),
  ]);
  for (let batch = 0; batch < UNWRITTEN_BATCHES; batch++) {
    await Promise.all([
      add(a.uuid, "TypeError", i++),
      add(b.uuid, batch % 2 ? "TypeError" : "RangeError", i++),
      add(batch % 3 ? a.uuid : b.uuid, "RangeError", i++),
    ]);
  }
  if (mode === "close") {
    await storage.close();
    console.log("done");
  } else {
    console.log("ready");
    // Killed here, its counts unwritten.
    setInterval(() => {}, 60_000);
  }
}
