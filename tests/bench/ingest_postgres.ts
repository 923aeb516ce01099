/**
 * Ingest on PostgreSQL (one instance and two instances sharing one database)
 * side by side with SQLite, with the same load generator (`wrk`) and the same
 * request as the SQLite ingest benchmark (`./ingest.ts`); then what grouping
 * costs per report on either engine.
 *
 * 1. Throughput: collector processes started with `--no-limits`; SQLite
 *    (`--db`, `--synchronous full`, like PostgreSQL's fsync per commit), PostgreSQL with one instance, and two
 *    instances on one database, each driven by its own `wrk` with half the
 *    connections (their throughputs add up).
 * 2. Grouping overhead: the same handler served in this process on a
 *    storage with grouping on and off (`grouping: false`), driven by `wrk`,
 *    per engine; plus the handler alone (`new Request(...)`, no socket, 32
 *    in flight) and the storage alone (`addReport` calls, 64 in flight).
 *    On and off alternate for `--rounds` rounds and the best of each counts
 *    (the machine may be shared; the least disturbed run is the closest).
 *
 * PostgreSQL comes from `BENCH_DATABASE_URL` or `TEST_DATABASE_URL` (start a
 * private one with `source .ci/postgres.sh && start_test_postgres`); each run
 * uses a fresh schema, dropped afterwards. Without a URL the PostgreSQL runs
 * are skipped with a message.
 *
 * Run: `deno run --allow-all tests/bench/ingest_postgres.ts [--duration 10] [--connections 32]`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createCollector } from "../../src/server/app.ts";
import {
  dropPostgresSchema,
  openPostgresStorage,
} from "../../src/server/postgres_storage.ts";
import { openSqliteStorage } from "../../src/server/sqlite_storage.ts";
import type { Storage } from "../../src/server/storage.ts";
import type { ErrorPayload } from "../../src/types.ts";
import { startServerProcess } from "../support/server_process.ts";
import {
  createSession,
  format,
  type IngestFigures,
  PAYLOAD_PREFIX,
  runWrk,
} from "./ingest.ts";

/** Both instances' figures as one: throughputs and requests add up, latencies are the worse. */
function combine(label: string, runs: IngestFigures[]): IngestFigures {
  return {
    label,
    perSecond: runs.reduce((n, r) => n + r.perSecond, 0),
    p50: Math.max(...runs.map((r) => r.p50)),
    p99: Math.max(...runs.map((r) => r.p99)),
    requests: runs.reduce((n, r) => n + r.requests, 0),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
  };
}

function schemaUrl(url: string, schema: string): string {
  return `${url}${url.includes("?") ? "&" : "?"}search_path=${schema}`;
}

function freshSchema(): string {
  return `nbr_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** Serves `createCollector` on `storage` in this process. */
function serveInProcess(
  storage: Storage,
): { url: string; stop(): Promise<void> } {
  const handler = createCollector({ storage, limits: false });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    handler,
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    stop: () => server.shutdown(),
  };
}

/** µs per `addReport` through the storage alone, `inFlight` at a time. */
async function storageCost(
  storage: Storage,
  count: number,
  inFlight: number,
): Promise<number> {
  const sessions = await Promise.all(
    Array.from({ length: 16 }, () => storage.createUsage("bench", Date.now())),
  );
  const payload = (i: number): ErrorPayload => ({
    ...(JSON.parse(`${PAYLOAD_PREFIX}${i}}`) as ErrorPayload),
  });
  let next = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < count) {
      const i = next++;
      await storage.addReport({
        usageUuid: sessions[i % sessions.length]!.uuid,
        payload: payload(i),
        now: Date.now(),
        dedupeWindowMs: 60_000,
        maxReportsPerSession: Infinity,
      });
    }
  }));
  return (performance.now() - start) * 1000 / count;
}

/** µs per report through the handler alone (no socket), `inFlight` at a time. */
async function handlerCost(
  storage: Storage,
  count: number,
  inFlight: number,
): Promise<number> {
  const handler = createCollector({ storage, limits: false });
  const created = await handler(
    new Request("http://bench/usages/", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ notebook: "bench" }),
    }),
  );
  const { uuid } = await created.json() as { uuid: string };
  let next = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < count) {
      const i = next++;
      const response = await handler(
        new Request(`http://bench/errors/${uuid}/`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: `${PAYLOAD_PREFIX}${i}}`,
        }),
      );
      await response.arrayBuffer();
    }
  }));
  return (performance.now() - start) * 1000 / count;
}

/**
 * Runs the PostgreSQL ingest and grouping-overhead benchmarks and prints
 * their figures.
 *
 * @param args Command-line flags: `--duration` (s per run, default 10),
 * `--connections` (default 32), `--reports` (storage-only reports, default
 * 5000), `--rounds` (grouping on/off alternations, default 3).
 * @returns The HTTP figures, in the order printed.
 */
export async function main(args: string[] = []): Promise<IngestFigures[]> {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "10" },
      connections: { type: "string", default: "32" },
      reports: { type: "string", default: "5000" },
      rounds: { type: "string", default: "3" },
    },
  });
  const rounds = Math.max(1, Number(values.rounds));
  const seconds = Number(values.duration);
  const connections = Number(values.connections);
  const reports = Number(values.reports);
  const databaseUrl = Deno.env.get("BENCH_DATABASE_URL") ??
    Deno.env.get("TEST_DATABASE_URL");
  const results: IngestFigures[] = [];
  const print = (figures: IngestFigures) => {
    results.push(figures);
    console.log(format(figures));
  };
  const dir = await Deno.makeTempDir({ prefix: "nbr-bench-pg-" });
  const schemas: string[] = [];
  console.log(
    `ingest on PostgreSQL vs SQLite (loopback, wrk -c ${connections} in total, ${seconds} s per run, --no-limits)`,
  );
  if (!databaseUrl) {
    console.log(
      "PostgreSQL runs skipped: set BENCH_DATABASE_URL or TEST_DATABASE_URL (source .ci/postgres.sh && start_test_postgres)",
    );
  }
  try {
    // 1. Throughput: server processes, the same request as ./ingest.ts.
    const sqlite = await startServerProcess([
      "--db",
      `${dir}/ingest.db`,
      "--no-limits",
      // An fsync per commit, as PostgreSQL's (synchronous_commit on).
      "--synchronous",
      "full",
    ]);
    let sqliteFigures: IngestFigures;
    try {
      const path = `/errors/${await createSession(sqlite.url)}/`;
      await runWrk("warm-up", sqlite.url, path, { seconds: 2, connections });
      sqliteFigures = await runWrk(
        "collector, SQLite synchronous=FULL",
        sqlite.url,
        path,
        { seconds, connections },
      );
      print(sqliteFigures);
    } finally {
      await sqlite.stop();
    }
    if (databaseUrl) {
      const schema = freshSchema();
      schemas.push(schema);
      const env = { DATABASE_URL: schemaUrl(databaseUrl, schema) };
      const one = await startServerProcess(["--no-limits"], env);
      let oneFigures: IngestFigures;
      try {
        const path = `/errors/${await createSession(one.url)}/`;
        await runWrk("warm-up", one.url, path, { seconds: 2, connections });
        oneFigures = await runWrk(
          "collector, PostgreSQL, 1 instance",
          one.url,
          path,
          { seconds, connections },
        );
        print(oneFigures);
      } finally {
        await one.stop();
      }
      const schema2 = freshSchema();
      schemas.push(schema2);
      const env2 = { DATABASE_URL: schemaUrl(databaseUrl, schema2) };
      const pair = await Promise.all([
        startServerProcess(["--no-limits"], env2),
        startServerProcess(["--no-limits"], env2),
      ]);
      try {
        // One session (one error, one group) shared by both instances, as a
        // load balancer would spread one notebook's reports.
        const path = `/errors/${await createSession(pair[0]!.url)}/`;
        await Promise.all(pair.map((s) =>
          runWrk("warm-up", s.url, path, {
            seconds: 2,
            connections: connections / 2,
            threads: 1,
          })
        ));
        const runs = await Promise.all(
          pair.map((s, i) =>
            runWrk(`instance ${i + 1}`, s.url, path, {
              seconds,
              connections: connections / 2,
              threads: 1,
            })
          ),
        );
        print(combine("collector, PostgreSQL, 2 instances (sum)", runs));
      } finally {
        await Promise.all(pair.map((s) => s.stop()));
      }
      console.log(
        `PostgreSQL 1 instance = ${
          (100 * oneFigures.perSecond / sqliteFigures.perSecond).toFixed(1)
        }% of SQLite's throughput (target >= 33.3%)`,
      );
    }

    // 2. Grouping overhead: the same handler in this process, grouping on vs off.
    console.log(
      `\ngrouping overhead (handler in this process, wrk -c ${connections}, ${seconds} s per run; storage alone: ${reports} addReport calls, 64 in flight; on and off alternating, best of ${rounds})`,
    );
    const engines: {
      name: string;
      open: (grouping: boolean) => Promise<Storage>;
    }[] = [{
      name: "SQLite",
      open: (grouping) =>
        openSqliteStorage(`${dir}/grouping-${grouping}-${Date.now()}.db`, {
          grouping,
        }),
    }];
    if (databaseUrl) {
      engines.push({
        name: "PostgreSQL",
        open: (grouping) => {
          const schema = freshSchema();
          schemas.push(schema);
          return openPostgresStorage(databaseUrl, {
            schema,
            grouping,
            maxConnections: 10,
          });
        },
      });
    }
    for (const engine of engines) {
      // On and off side by side, alternating, best of `rounds`: the machine
      // is shared, and the least disturbed run is the closest to the cost.
      const setups = await Promise.all([false, true].map(async (grouping) => {
        const storage = await engine.open(grouping);
        const server = serveInProcess(storage);
        const path = `/errors/${await createSession(server.url)}/`;
        await runWrk("warm-up", server.url, path, { seconds: 2, connections });
        return { grouping, storage, server, path };
      }));
      const http: Record<string, IngestFigures> = {};
      const direct: Record<string, number> = {};
      const handlerOnly: Record<string, number> = {};
      try {
        for (let round = 0; round < rounds; round++) {
          const order = round % 2 === 0 ? setups : [...setups].reverse();
          for (const setup of order) {
            const key = setup.grouping ? "on" : "off";
            const run = await runWrk(
              `${engine.name}, grouping ${key}, HTTP (best of ${rounds})`,
              setup.server.url,
              setup.path,
              { seconds, connections },
            );
            if (!http[key] || run.perSecond > http[key]!.perSecond) {
              http[key] = run;
            }
          }
          for (const setup of order) {
            const key = setup.grouping ? "on" : "off";
            const cost = await storageCost(setup.storage, reports, 64);
            direct[key] = Math.min(direct[key] ?? Infinity, cost);
            const viaHandler = await handlerCost(setup.storage, reports, 32);
            handlerOnly[key] = Math.min(
              handlerOnly[key] ?? Infinity,
              viaHandler,
            );
          }
        }
      } finally {
        for (const setup of setups) {
          await setup.server.stop();
          await setup.storage.close();
        }
      }
      for (const key of ["off", "on"]) {
        print(http[key]!);
        console.log(
          `${
            `${engine.name}, grouping ${key}, storage alone (best of ${rounds})`
              .padEnd(58)
          } ${direct[key]!.toFixed(1).padStart(7)} µs per report`,
        );
        console.log(
          `${
            `${engine.name}, grouping ${key}, handler alone (best of ${rounds})`
              .padEnd(58)
          } ${handlerOnly[key]!.toFixed(1).padStart(7)} µs per report`,
        );
      }
      const httpCost = http.off!.perSecond / http.on!.perSecond - 1;
      const storageCostShare = direct.on! / direct.off! - 1;
      const handlerCostShare = handlerOnly.on! / handlerOnly.off! - 1;
      console.log(
        `${engine.name}: grouping adds ${
          (100 * httpCost).toFixed(1)
        }% to the cost of a report over HTTP (target <= 20%), ${
          (100 * handlerCostShare).toFixed(1)
        }% through the handler alone, ${
          (100 * storageCostShare).toFixed(1)
        }% in the storage alone`,
      );
    }
  } finally {
    if (databaseUrl) {
      for (const schema of schemas) {
        await dropPostgresSchema(databaseUrl, schema).catch(() => {});
      }
    }
    await Deno.remove(dir, { recursive: true });
  }
  return results;
}

if (import.meta.main) {
  await main(Deno.args);
}
