import { equal, ok } from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";

const PAYLOAD = {
  error_name: "TypeError",
  error_message: "Cannot read properties of undefined (reading 'rows')",
  traceback: [{ filename: "<cell>", fun_name: "loadTable", lineno: 12 }],
  first_line: "# load the table",
  execution_count: 1,
  notebook: "bench",
};

Deno.test("SqliteStorage checkpoints the WAL into the database file from a worker thread", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-checkpoint-" });
  const path = `${dir}/errors.db`;
  try {
    const storage = await openSqliteStorage(path, { synchronous: "normal" });
    const usage = await storage.createUsage("bench", Date.now());
    const before = (await Deno.stat(path)).size;
    await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        storage.addReport({
          usageUuid: usage.uuid,
          payload: { ...PAYLOAD, execution_count: i },
          now: Date.now(),
          dedupeWindowMs: 60_000,
          maxReportsPerSession: Infinity,
        })),
    );
    // SQLite's own automatic checkpoint waits for 10,000 WAL pages while
    // the worker runs: only the worker copies these pages into the file.
    let after = before;
    for (let i = 0; i < 100 && after <= before; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      after = (await Deno.stat(path)).size;
    }
    ok(after > before, `database file stayed at ${before} bytes`);
    await storage.close();
    const db = new DatabaseSync(path);
    try {
      const row = db.prepare("SELECT count(*) AS n FROM reports").get() as {
        n: number;
      };
      equal(row.n, 300);
    } finally {
      db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqliteStorage on :memory: starts no checkpoint worker and closes", async () => {
  const storage = await openSqliteStorage(":memory:");
  await storage.createUsage("demo", Date.now());
  await storage.close();
});
