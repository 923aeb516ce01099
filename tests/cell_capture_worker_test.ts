/**
 * The kernel integration once the IOPub reader runs in its worker (the state
 * a notebook is in for all but its first second after `loadExtension()`): a
 * real `deno jupyter --kernel`, driven by the project's own client.
 */

import assert from "node:assert/strict";
import {
  type ExecuteResult,
  type KernelClient,
  startKernel,
} from "../src/kernel_client.ts";

const ERROR_STORE_URL = import.meta.resolve("../src/error_store.ts");

interface StoredRecord {
  error_name: string;
  error_message: string;
  first_line: string;
  execution_count: number | null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function run(kernel: KernelClient, code: string): Promise<ExecuteResult> {
  return await kernel.execute(code, { timeoutMs: 60_000 });
}

/**
 * The client ports of the peers connected to the kernel's IOPub port
 * (established sockets in `/proc/net/tcp` whose local port is that port).
 */
async function iopubPeers(kernel: KernelClient): Promise<Set<string>> {
  const { iopub_port: port } = JSON.parse(
    await Deno.readTextFile(kernel.connectionFile),
  ) as { iopub_port: number };
  const portHex = port.toString(16).toUpperCase().padStart(4, "0");
  const peers = new Set<string>();
  for (const line of (await Deno.readTextFile("/proc/net/tcp")).split("\n")) {
    const [, local, remote, state] = line.trim().split(/\s+/);
    if (local?.endsWith(`:${portHex}`) && state === "01") peers.add(remote);
  }
  return peers;
}

/** Reads `es.errorDetails` through a cell that never fails. */
async function readRecords(kernel: KernelClient): Promise<StoredRecord[]> {
  const result = await run(
    kernel,
    'await Deno.jupyter.display({ "application/json": { records: JSON.parse(JSON.stringify(globalThis.es.errorDetails)) } }, { raw: true })',
  );
  const find = () =>
    result.outputs.find((message) =>
      (message.content.data as
        | Record<string, { records?: unknown }>
        | undefined)
        ?.["application/json"]?.records !== undefined
    );
  // The kernel may publish a display after its idle status.
  const deadline = Date.now() + 3000;
  while (find() === undefined && Date.now() < deadline) await sleep(25);
  const data = find()?.content.data as
    | Record<string, { records: StoredRecord[] }>
    | undefined;
  assert.ok(data, "the records display is missing");
  return data["application/json"].records;
}

Deno.test({
  name:
    "CellCapture after the handover to its worker pairs failing cells with their first line and count, and dates escaped errors with the last cell",
  ignore: Deno.build.os !== "linux", // the handover is observed in /proc/net/tcp
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-capture-worker-" });
    const kernel = await startKernel({ cwd: dir });
    try {
      const [client] = await iopubPeers(kernel);
      const load = await run(
        kernel,
        [
          `const { ErrorStore } = await import(${
            JSON.stringify(ERROR_STORE_URL)
          });`,
          `globalThis.es = new ErrorStore({ notebook: "worker", quiet: true });`,
          "await es.loadExtension();",
        ].join("\n"),
      );
      assert.equal(load.status, "ok", JSON.stringify(load.error));
      const mainThreadPeers = await iopubPeers(kernel);
      assert.equal(mainThreadPeers.size, 2, "client and main-thread reader");
      // Handed over: two peers again, the main-thread reader's one gone.
      const deadline = Date.now() + 15_000;
      while (true) {
        const peers = await iopubPeers(kernel);
        const replaced = [...mainThreadPeers].every((peer) =>
          peer === client || !peers.has(peer)
        );
        if (peers.size === 2 && peers.has(client) && replaced) break;
        assert.ok(Date.now() < deadline, "the worker reader never took over");
        await sleep(20);
      }
      for (let index = 0; index < 5; index++) {
        assert.equal((await run(kernel, `${index} + 1`)).status, "ok");
      }
      const first = await run(
        kernel,
        "// worker path\nthrow new TypeError('after handover')",
      );
      const second = await run(kernel, "null.y");
      assert.equal(first.status, "error");
      assert.equal(second.status, "error");
      await run(kernel, "2 + 2");
      const timer = await run(
        kernel,
        "setTimeout(() => { throw new EvalError('timer after handover') }, 50);\n'scheduled'",
      );
      await sleep(400); // no cell runs while the timer fires
      await run(kernel, "3 + 3");
      const rejection = await run(
        kernel,
        "Promise.reject(new Error('unawaited after handover'));\n1",
      );
      await sleep(400);
      let records: StoredRecord[] = [];
      for (let attempt = 0; attempt < 20 && records.length < 4; attempt++) {
        records = await readRecords(kernel);
        if (records.length < 4) await sleep(100);
      }
      assert.deepEqual(
        records.map((record) => [
          record.error_name,
          record.error_message,
          record.first_line,
          record.execution_count,
        ]),
        [
          [
            "TypeError",
            "after handover",
            "// worker path",
            first.executionCount,
          ],
          [
            "TypeError",
            "Cannot read properties of null (reading 'y')",
            "null.y",
            second.executionCount,
          ],
          ["EvalError", "timer after handover", "", timer.executionCount],
          ["Error", "unawaited after handover", "", rejection.executionCount],
        ],
      );
      const unload = await run(kernel, "await es.unloadExtension()");
      assert.equal(unload.status, "ok");
      const peers = await iopubPeers(kernel);
      assert.deepEqual([...peers], [client], "only the client is left");
    } finally {
      await kernel.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
