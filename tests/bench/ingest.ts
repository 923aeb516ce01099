/**
 * Ingest benchmark of the collector on SQLite, side by side with a bare
 * `Deno.serve` answering 204 to the same requests.
 *
 * 1. Throughput: `wrk` (closed loop, a Lua script posting distinct reports)
 *    against the bare server, the collector (`--no-limits`, with
 *    `synchronous` NORMAL, its default, and FULL) and, as a reference,
 *    `minimal_durable_server.ts` (one INSERT per report, group commit,
 *    nothing else) with FULL and NORMAL: what SQLite's commits alone leave of
 *    the bare server's throughput. All of them run together, measured in
 *    interleaved rounds; each figure is a server's median round. Each round
 *    also records the CPU time the server process used per request (from
 *    `/proc/<pid>/stat`, Linux only): the bare server's throughput is bounded
 *    by sharing the machine's cores with `wrk`, and this figure compares the
 *    servers' own work per request without that.
 * 2. Latency at a fixed rate: an open-loop generator (latency measured from
 *    each request's scheduled time, so a stall is not hidden) at 2,000
 *    reports/s against the bare server and the collector.
 * 3. Flood isolation: with limits on and `--trust-proxy`, `wrk` sends 50,000
 *    reports from one address (X-Forwarded-For) while other addresses report
 *    within their limits; their p99 is compared with the same traffic alone.
 *
 * Run: `deno run --allow-all tests/bench/ingest.ts` (needs `wrk`, Debian package `wrk`).
 * Flags: `--duration <s>` (default 10), `--connections <n>` (default 32), `--rate <n>` (default 2000),
 * `--rounds <n>` (default 5: each throughput figure is the median of that many runs, and the
 * servers' runs are interleaved).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startServerProcess } from "../support/server_process.ts";

export const PAYLOAD_PREFIX: string =
  '{"error_name": "TypeError", "error_message": "Cannot read properties of undefined (reading \'rows\')", ' +
  '"traceback": [{"filename": "<cell>", "fun_name": "<module>", "lineno": 3}, ' +
  '{"filename": "<cell>", "fun_name": "loadTable", "lineno": 12}], "first_line": "# load the table", ' +
  '"notebook": "bench", "execution_count": ';

/** One measured run. */
export interface IngestFigures {
  /** What was measured. */
  label: string;
  /** Requests answered per second. */
  perSecond: number;
  /** Median latency, ms. */
  p50: number;
  /** 99th percentile latency, ms. */
  p99: number;
  /** Requests answered. */
  requests: number;
  /** Answers that were not 2xx. */
  non2xx: number;
}

/** wrk runs started by this process: each posts reports no other run posted. */
let wrkRuns = 0;

function wrkScript(
  path: string,
  options: { forwardedFor?: string; base: number },
): string {
  return `
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
${
    options.forwardedFor
      ? `wrk.headers["X-Forwarded-For"] = "${options.forwardedFor}"`
      : ""
  }
local threads = {}
local counter = 0
-- thread_id is a global of each thread's Lua state, set by setup(); the base
-- is this run's (distinct bodies, within and across runs: no duplicates)
function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local body = [==[${PAYLOAD_PREFIX}]==] .. (${options.base} + thread_id * 100000000 + counter) .. "}"
  return wrk.format(nil, "${path}", nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status))
end
`;
}

export async function runWrk(
  label: string,
  url: string,
  path: string,
  options: {
    seconds: number;
    connections: number;
    threads?: number;
    forwardedFor?: string;
  },
): Promise<IngestFigures> {
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  // Below the open-loop generator's execution counts (10^12 and up).
  const base = ++wrkRuns * 1e10;
  await Deno.writeTextFile(script, wrkScript(path, { ...options, base }));
  const output = await new Deno.Command("wrk", {
    args: [
      "-t",
      String(options.threads ?? 2),
      "-c",
      String(options.connections),
      "-d",
      `${options.seconds}s`,
      "-s",
      script,
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(script);
  const text = new TextDecoder().decode(output.stdout);
  const match = /RESULT (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(text);
  if (!output.success || !match) {
    throw new Error(
      `wrk failed: ${text}${new TextDecoder().decode(output.stderr)}`,
    );
  }
  const [requests, durationUs, p50Us, p99Us, non2xx] = match.slice(1).map(
    Number,
  ) as [
    number,
    number,
    number,
    number,
    number,
  ];
  return {
    label,
    perSecond: requests / (durationUs / 1e6),
    p50: p50Us / 1000,
    p99: p99Us / 1000,
    requests,
    non2xx,
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** One HTTP/1.1 request as bytes, sent on a raw keep-alive connection. */
function rawPost(
  url: string,
  path: string,
  body: string,
  headers: Record<string, string> = {},
): Uint8Array {
  const { host } = new URL(url);
  const bytes = new TextEncoder().encode(body);
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join(
    "",
  );
  const head =
    `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${bytes.length}\r\n${extra}\r\n`;
  const head8 = new TextEncoder().encode(head);
  const all = new Uint8Array(head8.length + bytes.length);
  all.set(head8);
  all.set(bytes, head8.length);
  return all;
}

const HEADER_END = new Uint8Array([13, 10, 13, 10]);

function indexOfBytes(
  haystack: Uint8Array,
  needle: Uint8Array,
  from: number,
  to: number,
): number {
  outer: for (let i = from; i + needle.length <= to; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** A keep-alive HTTP/1.1 connection that answers one request at a time (status only). */
class RawConnection {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(64 * 1024);
  #filled = 0;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(url: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    conn.setNoDelay(true);
    return new RawConnection(conn);
  }

  async send(request: Uint8Array): Promise<number> {
    let written = 0;
    while (written < request.length) {
      written += await this.#conn.write(request.subarray(written));
    }
    for (;;) {
      const end = indexOfBytes(this.#buffer, HEADER_END, 0, this.#filled);
      if (end >= 0) {
        const head = new TextDecoder().decode(this.#buffer.subarray(0, end));
        const status = Number(head.slice(9, 12));
        const length = Number(
          /\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0,
        );
        const total = end + 4 + length;
        if (this.#filled >= total) {
          this.#buffer.copyWithin(0, total, this.#filled);
          this.#filled -= total;
          return status;
        }
      }
      if (this.#filled === this.#buffer.length) {
        throw new Error("response too large");
      }
      const n = await this.#conn.read(this.#buffer.subarray(this.#filled));
      if (n === null) throw new Error("connection closed");
      this.#filled += n;
    }
  }

  close(): void {
    this.#conn.close();
  }
}

/**
 * Sends `rate` requests per second for `seconds` (or until `until` settles),
 * open loop over a pool of raw keep-alive connections: each request's latency
 * counts from when it was due, so a stall of the server is not hidden by the
 * generator waiting for it. (Deno's `fetch` tops out near 1,000 requests/s on
 * this machine, so it is not used as a generator.)
 */
async function openLoop(
  label: string,
  url: string,
  rate: number,
  seconds: number,
  makeRequest: (i: number) => Uint8Array,
  until?: Promise<unknown>,
  poolSize = 64,
): Promise<IngestFigures> {
  const latencies: number[] = [];
  let non2xx = 0;
  const queue: { bytes: Uint8Array; due: number }[] = [];
  const idle: RawConnection[] = [];
  const pool: RawConnection[] = [];
  for (let c = 0; c < poolSize; c++) pool.push(await RawConnection.open(url));
  idle.push(...pool);
  const running = new Set<Promise<void>>();
  const pump = () => {
    while (queue.length > 0 && idle.length > 0) {
      const job = queue.shift()!;
      const conn = idle.pop()!;
      const sent = conn.send(job.bytes).then((status) => {
        latencies.push(performance.now() - job.due);
        if (status < 200 || status > 299) non2xx++;
        idle.push(conn);
      }, () => {
        non2xx++;
      }).finally(() => {
        running.delete(sent);
        pump();
      });
      running.add(sent);
    }
  };
  const start = performance.now();
  const total = Math.round(rate * seconds);
  let stopped = false;
  until?.then(() => stopped = true);
  let i = 0;
  const more = () => until ? !stopped : i < total;
  while (more()) {
    const wait = start + (i * 1000) / rate - performance.now();
    // Always yield to the event loop (responses are read there). Timers are
    // clamped to a few ms when nested, so requests leave in small bursts; the
    // bare server's line at the same rate shows what that pacing costs.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
    while (more() && start + (i * 1000) / rate <= performance.now()) {
      queue.push({ bytes: makeRequest(i), due: start + (i * 1000) / rate });
      i++;
    }
    pump();
  }
  while (queue.length > 0 || running.size > 0) {
    pump();
    await Promise.race([...running, new Promise((r) => setTimeout(r, 5))]);
  }
  const elapsed = (performance.now() - start) / 1000;
  for (const conn of pool) conn.close();
  latencies.sort((a, b) => a - b);
  return {
    label,
    perSecond: latencies.length / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    requests: latencies.length,
    non2xx,
  };
}

/** The report path of the servers without sessions (bare and reference). */
const NO_SESSION_PATH = "/errors/00000000000000000000000000000000/";

/** The collector's settings measured: the default first. */
const COLLECTOR_VARIANTS: readonly { label: string; flags: string[] }[] = [
  { label: "collector, SQLite synchronous=NORMAL (default)", flags: [] },
  {
    label: "collector, SQLite synchronous=FULL",
    flags: ["--synchronous", "full"],
  },
];

/** A server measured for throughput, and its rounds. */
interface ThroughputServer {
  kind: "bare" | "collector" | "reference";
  /** What it is, without how it was driven. */
  name: string;
  label: string;
  url: string;
  /** Its process. */
  pid: number;
  /** Per round: CPU µs its process used per request answered, when known. */
  cpuPerRequest: (number | undefined)[];
  path: string;
  stop(): Promise<unknown>;
  rounds: IngestFigures[];
}

/** Clock ticks per second of `/proc/<pid>/stat`'s times. */
let clockTicks: number | undefined;

/**
 * The CPU seconds (user and system, all threads) a process has used, from
 * `/proc/<pid>/stat`; `undefined` where there is no such file (not Linux).
 */
async function processCpuSeconds(pid: number): Promise<number | undefined> {
  let stat: string;
  try {
    stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  if (clockTicks === undefined) {
    const output = await new Deno.Command("getconf", { args: ["CLK_TCK"] })
      .output().catch(() => undefined);
    const ticks = Number(new TextDecoder().decode(output?.stdout).trim());
    clockTicks = Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
  }
  // The fields after the command name (which may hold spaces), from `state`
  // (field 3): utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** The item with the median value (the lower middle of an even count), or `undefined` if none. */
function medianBy<T>(items: T[], value: (item: T) => number): T | undefined {
  const sorted = [...items].sort((a, b) => value(a) - value(b));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** The run with the median throughput. */
function median(runs: IngestFigures[]): IngestFigures {
  return medianBy(runs, (run) => run.perSecond)!;
}

/** The median of the known values, or `undefined`. */
function medianOf(values: (number | undefined)[]): number | undefined {
  return medianBy(
    values.filter((v): v is number => v !== undefined),
    (v) => v,
  );
}

/** A started server as measured for throughput, before its first round. */
function throughputServer(
  kind: ThroughputServer["kind"],
  name: string,
  label: string,
  started: { url: string; pid: number; stop(): Promise<unknown> },
  path: string,
): ThroughputServer {
  return {
    kind,
    name,
    label,
    url: started.url,
    pid: started.pid,
    path,
    stop: () => started.stop(),
    rounds: [],
    cpuPerRequest: [],
  };
}

/** A reference server: a Deno child that prints `listening on <url>`. */
interface ReferenceServer {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

function startBareServer(): Promise<ReferenceServer> {
  const code = `
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log("bare listening on http://127.0.0.1:" + port) },
      async (request) => { await request.arrayBuffer(); return new Response(null, { status: 204 }); });
    Deno.addSignalListener("SIGTERM", () => server.shutdown());
    await server.finished;
  `;
  return startReferenceServer("the bare server", ["eval", code]);
}

function startMinimalDurableServer(
  db: string,
  synchronous: "full" | "normal",
): Promise<ReferenceServer> {
  return startReferenceServer("the minimal durable server", [
    "run",
    "--allow-net=127.0.0.1",
    `--allow-read=${db}`,
    `--allow-write=${db}`,
    new URL("./minimal_durable_server.ts", import.meta.url).pathname,
    "--db",
    db,
    "--synchronous",
    synchronous,
  ]);
}

async function startReferenceServer(
  name: string,
  args: string[],
): Promise<ReferenceServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/listening on (\S+)/.test(out)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${name} exited`);
    out += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    url: /listening on (\S+)/.exec(out)![1]!,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

export async function createSession(
  url: string,
  forwardedFor?: string,
): Promise<string> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
  };
  if (forwardedFor) headers["x-forwarded-for"] = forwardedFor;
  const response = await fetch(`${url}/usages/`, {
    method: "POST",
    headers,
    body: JSON.stringify({ notebook: "bench" }),
  });
  if (!response.ok) {
    throw new Error(`session creation answered ${response.status}`);
  }
  return (await response.json()).uuid;
}

export function format(figures: IngestFigures): string {
  return `${figures.label.padEnd(58)} ${
    figures.perSecond.toFixed(0).padStart(7)
  }/s  p50 ${figures.p50.toFixed(2).padStart(7)} ms  p99 ${
    figures.p99.toFixed(2).padStart(7)
  } ms  (${figures.requests} requests, ${figures.non2xx} non-2xx)`;
}

/**
 * Runs the ingest benchmark and prints its figures.
 *
 * @param args Command-line flags: `--duration`, `--connections`, `--rate`.
 * @returns The figures, in the order printed.
 */
export async function main(args: string[] = []): Promise<IngestFigures[]> {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "10" },
      connections: { type: "string", default: "32" },
      rate: { type: "string", default: "2000" },
      rounds: { type: "string", default: "5" },
    },
  });
  const seconds = Number(values.duration);
  const connections = Number(values.connections);
  const rate = Number(values.rate);
  const rounds = Number(values.rounds);
  if (!(Number.isInteger(rounds) && rounds >= 1)) {
    throw new Error(
      `--rounds must be a positive integer, got ${values.rounds}`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "nbr-bench-" });
  const results: IngestFigures[] = [];
  const print = (figures: IngestFigures) => {
    results.push(figures);
    console.log(format(figures));
  };
  console.log(
    `ingest benchmark (SQLite, loopback, wrk -c ${connections}, ${seconds} s per run, ${rounds} interleaved rounds, medians)`,
  );
  try {
    // 1. Throughput: every server answers the same requests, in interleaved
    // rounds (a slower or busier moment of the machine falls on all of them),
    // and each is rated by its median round.
    const servers: ThroughputServer[] = [];
    try {
      servers.push(throughputServer(
        "bare",
        "bare Deno.serve (204)",
        "bare Deno.serve (204), same requests",
        await startBareServer(),
        NO_SESSION_PATH,
      ));
      for (const variant of COLLECTOR_VARIANTS) {
        const collector = await startServerProcess([
          "--db",
          `${dir}/throughput-${servers.length}.db`,
          "--no-limits",
          ...variant.flags,
        ]);
        servers.push(throughputServer(
          "collector",
          variant.label,
          `${variant.label}, --no-limits`,
          collector,
          `/errors/${await createSession(collector.url)}/`,
        ));
      }
      for (const synchronous of ["full", "normal"] as const) {
        const name =
          `reference: minimal durable server, synchronous=${synchronous.toUpperCase()}`;
        servers.push(throughputServer(
          "reference",
          name,
          name,
          await startMinimalDurableServer(
            `${dir}/minimal-${synchronous}.db`,
            synchronous,
          ),
          NO_SESSION_PATH,
        ));
      }
      for (const server of servers) {
        await runWrk("warm-up", server.url, server.path, {
          seconds: 2,
          connections,
        });
      }
      for (let round = 0; round < rounds; round++) {
        for (const server of servers) {
          const cpuBefore = await processCpuSeconds(server.pid);
          const run = await runWrk(server.label, server.url, server.path, {
            seconds,
            connections,
          });
          const cpuAfter = await processCpuSeconds(server.pid);
          server.rounds.push(run);
          server.cpuPerRequest.push(
            cpuBefore === undefined || cpuAfter === undefined ||
              run.requests === 0
              ? undefined
              : (cpuAfter - cpuBefore) * 1e6 / run.requests,
          );
        }
      }
      const bareServer = servers.find((server) => server.kind === "bare")!;
      const bareMedian = median(bareServer.rounds);
      const bareCpu = medianOf(bareServer.cpuPerRequest);
      for (const server of servers) {
        const figures = median(server.rounds);
        print(figures);
        const share = (100 * figures.perSecond / bareMedian.perSecond)
          .toFixed(1);
        const each = server.rounds.map((r) => r.perSecond.toFixed(0)).join(
          ", ",
        );
        const cpu = medianOf(server.cpuPerRequest);
        console.log(
          server.kind === "bare"
            ? `  rounds: ${each}/s`
            : server.kind === "reference"
            ? `  => ${share}% of bare (rounds: ${each}/s): one INSERT per report and a commit per batch, none of the collector's work`
            : `  => throughput ${share}% of bare (target >= 40%; rounds: ${each}/s)`,
        );
        if (cpu !== undefined) {
          console.log(
            server.kind === "bare" || bareCpu === undefined
              ? `  server CPU ${cpu.toFixed(1)} µs per request (median round)`
              : `  server CPU ${
                cpu.toFixed(1)
              } µs per request (median round): the bare server's is ${
                (100 * bareCpu / cpu).toFixed(1)
              }% of it`,
          );
        }
      }
      // 2. Latency at a fixed rate, bare server and collectors.
      for (const server of servers) {
        if (server.kind === "reference") continue;
        const fixed = await openLoop(
          `${server.name} at ${rate} requests/s (open loop)`,
          server.url,
          rate,
          seconds,
          (i) =>
            rawPost(server.url, server.path, `${PAYLOAD_PREFIX}${1e12 + i}}`),
        );
        print(fixed);
        if (server.kind === "collector") {
          console.log(
            `  => p99 at ${rate} reports/s ${
              fixed.p99.toFixed(2)
            } ms (target < 50 ms)`,
          );
        }
      }
    } finally {
      for (const server of servers) await server.stop();
    }

    // 3. Flood from one address vs everyone else, limits on.
    const limited = await startServerProcess([
      "--db",
      `${dir}/flood.db`,
      "--trust-proxy",
    ]);
    try {
      const victimAddresses = 250;
      const sessionsPerAddress = 4;
      const victims: { uuid: string; address: string }[] = [];
      for (let a = 0; a < victimAddresses; a++) {
        const address = `198.51.${100 + (a >> 8)}.${a & 255}`;
        for (let s = 0; s < sessionsPerAddress; s++) {
          victims.push({
            uuid: await createSession(limited.url, address),
            address,
          });
        }
      }
      // Each session reports once per 5 s: within every limit.
      const victimRate = victims.length / 5;
      const victimRequest = (i: number) => {
        const victim = victims[i % victims.length]!;
        return rawPost(
          limited.url,
          `/errors/${victim.uuid}/`,
          `${PAYLOAD_PREFIX}${i}}`,
          {
            "X-Forwarded-For": victim.address,
          },
        );
      };
      const alone = await openLoop(
        `other addresses alone (${victimRate}/s)`,
        limited.url,
        victimRate,
        5,
        victimRequest,
      );
      print(alone);
      const attacker = "203.0.113.66";
      const attackerSession = await createSession(limited.url, attacker);
      // wrk runs by duration: repeat short runs until 50,000 requests were sent.
      const floodDone = (async (): Promise<IngestFigures> => {
        const total: IngestFigures = {
          label: "flood: 50,000+ reports from one address",
          perSecond: 0,
          p50: 0,
          p99: 0,
          requests: 0,
          non2xx: 0,
        };
        let elapsed = 0;
        while (total.requests < 50_000) {
          const run = await runWrk(
            "flood",
            limited.url,
            `/errors/${attackerSession}/`,
            {
              seconds: 2,
              connections,
              forwardedFor: attacker,
            },
          );
          total.requests += run.requests;
          total.non2xx += run.non2xx;
          total.p50 = Math.max(total.p50, run.p50);
          total.p99 = Math.max(total.p99, run.p99);
          elapsed += run.requests / run.perSecond;
        }
        total.perSecond = total.requests / elapsed;
        return total;
      })();
      // Others keep reporting (fresh window: 5 s later every bucket is full again).
      let offset = alone.requests;
      const during = await openLoop(
        `other addresses during the flood (${victimRate}/s)`,
        limited.url,
        victimRate,
        0,
        (i) => victimRequest(offset + i),
        floodDone,
      );
      offset += during.requests;
      const flood = await floodDone;
      print(flood);
      print(during);
      console.log(
        `others' p99 during the flood = ${during.p99.toFixed(2)} ms (alone ${
          alone.p99.toFixed(2)
        } ms; target < 50 ms); ` +
          `flood answered ${flood.non2xx} of ${flood.requests} with non-2xx (429)`,
      );
    } finally {
      await limited.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return results;
}

if (import.meta.main) {
  await main(Deno.args);
}
