/**
 * Kernel benchmarks, measured in real `deno jupyter --kernel` processes by the
 * project's own client:
 *
 * - median latency of a trivial successful cell without and with the
 *   extension loaded (target ratio ≤ 1.05);
 * - the same for a cell that outputs 20 MB (target ratio ≤ 1.10);
 * - time from a cell's `error` message to the Slack request arriving at a
 *   loopback receiver (target p50 ≤ 50 ms);
 * - cold `import` + `loadExtension()` in a fresh kernel (target ≤ 300 ms,
 *   warm Deno cache).
 *
 * Run: `deno run --allow-all tests/bench/kernel_latency.ts`
 *
 * @module
 */

import { type KernelClient, startKernel } from "../../src/kernel_client.ts";
import { startSlackReceiver } from "../support/slack_receiver.ts";

const ERROR_STORE_URL = import.meta.resolve("../../src/error_store.ts");
const ERROR_SLACK_URL = import.meta.resolve("../../src/error_slack.ts");

/** The figures measured by {@linkcode main}. */
export interface KernelBenchResult {
  /** Median ms of a trivial cell without the extension. */
  trivialWithout: number;
  /** Median ms of a trivial cell with the extension. */
  trivialWith: number;
  /** Median ms of a 20 MB output cell without the extension. */
  bigWithout: number;
  /** Median ms of a 20 MB output cell with the extension. */
  bigWith: number;
  /** Median ms from the `error` message to the Slack request. */
  slackP50: number;
  /** Median ms of cold import + loadExtension() in a fresh kernel. */
  coldLoad: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Cells whose IOPub output the kernel lost (not counted). */
let disrupted = 0;

function now(): number {
  return performance.timeOrigin + performance.now();
}

async function loadStore(kernel: KernelClient): Promise<void> {
  const result = await kernel.execute(
    `const { ErrorStore } = await import(${
      JSON.stringify(ERROR_STORE_URL)
    }); globalThis.es = new ErrorStore({ notebook: "bench", quiet: true }); await es.loadExtension();`,
  );
  if (result.status !== "ok") {
    throw new Error(`loading failed: ${JSON.stringify(result.error)}`);
  }
  // Let the worker reader take over from the main-thread one (about 1 s in the kernel).
  await new Promise((resolve) => setTimeout(resolve, 2000));
}

/** Runs `code` alternately in both kernels, `rounds` times; returns the elapsed times. */
async function alternate(
  without: KernelClient,
  withExtension: KernelClient,
  code: string,
  rounds: number,
): Promise<{ without: number[]; with: number[] }> {
  const times = { without: [] as number[], with: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0
      ? [[without, times.without], [withExtension, times.with]] as const
      : [[withExtension, times.with], [without, times.without]] as const;
    for (const [kernel, list] of order) {
      const result = await kernel.execute(code, { timeoutMs: 120_000 });
      if (result.status !== "ok") {
        throw new Error(`bench cell failed: ${result.error?.evalue}`);
      }
      if (result.iopubDisrupted) {
        disrupted++;
        continue; // its time includes waiting for a lost status: not a latency
      }
      list.push(result.elapsedMs);
    }
  }
  return times;
}

async function measureLatency(): Promise<
  Pick<
    KernelBenchResult,
    "trivialWithout" | "trivialWith" | "bigWithout" | "bigWith"
  >
> {
  const without = await startKernel();
  const withExtension = await startKernel();
  try {
    await loadStore(withExtension);
    await alternate(without, withExtension, "1 + 1", 5); // warm-up
    const trivial = await alternate(without, withExtension, "1 + 1", 60);
    const big = await alternate(
      without,
      withExtension,
      "await Deno.jupyter.display({ 'image/png': 'A'.repeat(20 * 1024 * 1024) }, { raw: true }); 0",
      9,
    );
    return {
      trivialWithout: median(trivial.without),
      trivialWith: median(trivial.with),
      bigWithout: median(big.without),
      bigWith: median(big.with),
    };
  } finally {
    await without.shutdown();
    await withExtension.shutdown();
  }
}

async function measureSlack(rounds: number): Promise<number> {
  await using receiver = await startSlackReceiver();
  const kernel = await startKernel();
  try {
    const load = await kernel.execute(
      `const { ErrorSlack } = await import(${JSON.stringify(ERROR_SLACK_URL)});
globalThis.slack = new ErrorSlack(${
        JSON.stringify(receiver.url)
      }, { quiet: true });
await slack.loadExtension();`,
    );
    if (load.status !== "ok") {
      throw new Error(`loading failed: ${JSON.stringify(load.error)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const errorSeen = new Map<string, number>();
    kernel.onIopub((message) => {
      if (message.header.msg_type === "error") {
        errorSeen.set(String(message.parent_header.msg_id), now());
      }
    });
    const latencies: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const result = await kernel.execute(`throw new Error("bench ${round}")`);
      const [request] = (await receiver.waitFor(round + 1, 5000)).slice(round);
      const seenAt = errorSeen.get(result.msgId);
      if (seenAt !== undefined) latencies.push(request.at - seenAt);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return median(latencies);
  } finally {
    await kernel.shutdown();
  }
}

async function measureColdLoad(rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const kernel = await startKernel();
    try {
      const result = await kernel.execute(
        `const t0 = performance.now();
const { ErrorStore } = await import(${JSON.stringify(ERROR_STORE_URL)});
const es = new ErrorStore({ notebook: "cold" });
await es.loadExtension();
await Deno.jupyter.display({ "application/json": { ms: performance.now() - t0 } }, { raw: true });`,
      );
      const output = result.outputs.find((message) =>
        (message.content.data as Record<string, { ms?: number }> | undefined)?.[
          "application/json"
        ]?.ms !== undefined
      );
      const data = output?.content.data as
        | Record<string, { ms: number }>
        | undefined;
      if (data !== undefined) times.push(data["application/json"].ms);
    } finally {
      await kernel.shutdown();
    }
  }
  return times;
}

/**
 * Runs the kernel benchmarks and prints the figures.
 *
 * @returns The figures.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "./kernel_latency.ts";
 *
 * const result = await main();
 * console.log(result.slackP50);
 * ```
 */
export async function main(): Promise<KernelBenchResult> {
  const coldTimes = await measureColdLoad(5);
  const coldLoad = median(coldTimes);
  console.log(
    `cold import + loadExtension() in a fresh kernel: median ${
      coldLoad.toFixed(1)
    } ms ` +
      `(runs: ${
        coldTimes.map((ms) => ms.toFixed(0)).join(", ")
      }; target ≤ 300 ms)`,
  );
  const latency = await measureLatency();
  console.log(
    `trivial cell: ${latency.trivialWithout.toFixed(2)} ms without, ${
      latency.trivialWith.toFixed(2)
    } ms with the extension (ratio ${
      (latency.trivialWith / latency.trivialWithout).toFixed(3)
    }; target ≤ 1.05)`,
  );
  console.log(
    `20 MB output cell: ${latency.bigWithout.toFixed(1)} ms without, ${
      latency.bigWith.toFixed(1)
    } ms with the extension (ratio ${
      (latency.bigWith / latency.bigWithout).toFixed(3)
    }; target ≤ 1.10)`,
  );
  if (disrupted > 0) {
    console.log(
      `(${disrupted} cells left out: the kernel lost their IOPub status)`,
    );
  }
  const slackP50 = await measureSlack(20);
  console.log(
    `error message → Slack request at the loopback receiver: p50 ${
      slackP50.toFixed(1)
    } ms (target ≤ 50 ms)`,
  );
  return { ...latency, slackP50, coldLoad };
}

if (import.meta.main) {
  await main();
}
