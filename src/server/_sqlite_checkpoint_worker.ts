/**
 * The worker thread behind `_sqlite_checkpointer.ts`: its own connection to
 * the database, which copies the WAL back into the database file
 * (`PRAGMA wal_checkpoint(PASSIVE)`) every few hundred milliseconds, so that
 * the connection that commits reports does not do it on its event loop.
 *
 * Messages in: `{ path, intervalMs }` to start, `"stop"` to close the
 * connection. Messages out: `"ready"`, `"stopped"`, or `{ error }`.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parentPort } from "node:worker_threads";

let db: DatabaseSync | undefined;
let timer: ReturnType<typeof setInterval> | undefined;

function checkpoint(): void {
  try {
    db?.exec("PRAGMA wal_checkpoint(PASSIVE)");
  } catch (error) {
    // Failing now: the next round tries again, and the writer's own
    // automatic checkpoint bounds the WAL meanwhile.
    parentPort?.postMessage({ error: String(error).slice(0, 200) });
  }
}

parentPort?.on("message", (data: unknown) => {
  if (data === "stop") {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
    try {
      db?.close();
    } catch { /* already closed */ }
    db = undefined;
    parentPort?.postMessage("stopped");
    return;
  }
  if (db !== undefined) return;
  const { path, intervalMs } = data as { path: string; intervalMs: number };
  try {
    db = new DatabaseSync(path);
    db.exec("PRAGMA busy_timeout = 1000");
    timer = setInterval(checkpoint, intervalMs);
    parentPort?.postMessage("ready");
  } catch (error) {
    db = undefined;
    parentPort?.postMessage({ error: String(error).slice(0, 200) });
  }
});
