/**
 * A reference for the ingest benchmark: the least a server can do to store
 * each report durably before answering, with none of the collector's work.
 * It parses the JSON body, inserts one row into one table (no secondary
 * index, no validation, scrubbing, grouping, duplicate finding, counts or
 * limits), commits the rows of each event-loop turn in one transaction
 * (group commit, as the collector does), and answers 200 with the row as
 * JSON. Its throughput against the bare server's shows what SQLite's
 * commits cost on this machine, apart from what the collector adds.
 *
 * Run: `deno run --allow-net --allow-read --allow-write tests/bench/minimal_durable_server.ts --db <file> [--synchronous full|normal]`.
 * It prints `listening on <url>` and stops on SIGTERM.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    db: { type: "string" },
    synchronous: { type: "string", default: "full" },
  },
});
if (!values.db || !["full", "normal"].includes(values.synchronous)) {
  throw new Error("usage: --db <file> [--synchronous full|normal]");
}

const db = new DatabaseSync(values.db);
db.exec(`
  PRAGMA journal_mode = WAL;
  PRAGMA synchronous = ${values.synchronous.toUpperCase()};
  CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    usage_uuid TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    error_name TEXT,
    error_message TEXT,
    traceback TEXT,
    first_line TEXT,
    execution_count INTEGER
  );
`);
const insert = db.prepare(
  `INSERT INTO reports (usage_uuid, created_at, error_name, error_message,
   traceback, first_line, execution_count) VALUES (?, ?, ?, ?, ?, ?, ?)`,
);

let queue: (() => void)[] = [];
let scheduled = false;

function commitQueued(): void {
  scheduled = false;
  const batch = queue;
  queue = [];
  db.exec("BEGIN IMMEDIATE");
  for (const write of batch) write();
  db.exec("COMMIT");
}

function store(uuid: string, now: number, body: Record<string, unknown>) {
  return new Promise<number>((resolve) => {
    queue.push(() =>
      resolve(Number(
        insert.run(
          uuid,
          now,
          String(body.error_name),
          String(body.error_message),
          JSON.stringify(body.traceback),
          String(body.first_line),
          Number(body.execution_count),
        ).lastInsertRowid,
      ))
    );
    if (!scheduled) {
      scheduled = true;
      setImmediate(commitQueued);
    }
  });
}

const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`listening on http://127.0.0.1:${port}`),
}, async (request) => {
  const path = new URL(request.url).pathname;
  const uuid = /^\/errors\/([0-9a-f]{32})\/$/.exec(path)?.[1];
  if (request.method !== "POST" || uuid === undefined) {
    return new Response(null, { status: 404 });
  }
  const body = JSON.parse(await request.text());
  const now = Date.now();
  const id = await store(uuid, now, body);
  return new Response(
    JSON.stringify({
      id,
      usage_uuid: uuid,
      timestamp: new Date(now).toISOString(),
      error_name: body.error_name,
      error_message: body.error_message,
      traceback: body.traceback,
      execution_count: body.execution_count,
      first_line: body.first_line,
    }),
    { headers: { "content-type": "application/json" } },
  );
});
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
db.close();
