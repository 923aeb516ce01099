/**
 * The kernel integration once the IOPub reader runs in its worker (the state
 * a notebook is in for all but its first second after `loadExtension()`): a
 * real `deno jupyter --kernel`, driven by the project's own client.
 */

import assert from "node:assert/strict";
import { type KernelClient, startKernel } from "../src/kernel_client.ts";
import {
  execute as run,
  iopubPeers,
  loadStoreCell,
  sleep,
  waitForRecords,
} from "./support/kernel_cells.ts";

/** The IOPub peers; the test runs only where `/proc` shows them. */
async function peersOf(kernel: KernelClient): Promise<Set<string>> {
  const peers = await iopubPeers(kernel);
  assert.ok(peers, "/proc/net/tcp is unavailable");
  return peers;
}

Deno.test({
  name:
    "CellCapture after the handover to its worker pairs failing cells with their first line and count, and dates escaped errors with the last cell",
  ignore: Deno.build.os !== "linux", // the handover is observed in /proc/net/tcp
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-capture-worker-" });
    const kernel = await startKernel({ cwd: dir });
    try {
      const [client] = await peersOf(kernel);
      const load = await run(
        kernel,
        loadStoreCell({ notebook: "worker", quiet: true }),
      );
      assert.equal(load.status, "ok", JSON.stringify(load.error));
      const mainThreadPeers = await peersOf(kernel);
      assert.equal(mainThreadPeers.size, 2, "client and main-thread reader");
      // Handed over: two peers again, the main-thread reader's one gone.
      const deadline = Date.now() + 15_000;
      while (true) {
        const peers = await peersOf(kernel);
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
      const records = await waitForRecords(kernel, 4);
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
      const peers = await peersOf(kernel);
      assert.deepEqual([...peers], [client], "only the client is left");
    } finally {
      await kernel.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
