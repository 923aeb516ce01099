/**
 * Test support: running cells in a real kernel through the project's own
 * client, loading an ErrorStore the way a notebook author does, reading what
 * it captured, and counting the peers of the kernel's IOPub port.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ExecuteResult, KernelClient } from "../../src/kernel_client.ts";

const ERROR_STORE_URL = import.meta.resolve("../../src/error_store.ts");

/** A record of `es.errorDetails`, as a cell displays it (JSON). */
export interface StoredRecord {
  error_name: string;
  error_message: string;
  traceback: { filename: string; fun_name: string; lineno: number | null }[];
  first_line: string;
  execution_count: number | null;
  notebook: string;
  timestamp: string;
  traceback_text: string[];
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The cell a notebook author writes to load an ErrorStore. */
export function loadStoreCell(
  options: Record<string, unknown> = { notebook: "demo" },
): string {
  return [
    `const { ErrorStore } = await import(${JSON.stringify(ERROR_STORE_URL)});`,
    `globalThis.es = new ErrorStore(${JSON.stringify(options)});`,
    "await es.loadExtension();",
  ].join("\n");
}

/** Runs a cell (60 s at most) and returns what the client saw. */
export async function execute(
  kernel: KernelClient,
  code: string,
): Promise<ExecuteResult> {
  return await kernel.execute(code, { timeoutMs: 60_000 });
}

/** Runs a cell that must succeed. */
export async function executeOk(
  kernel: KernelClient,
  code: string,
): Promise<ExecuteResult> {
  const result = await execute(kernel, code);
  assert.equal(
    result.status,
    "ok",
    `cell failed: ${JSON.stringify(result.error)}`,
  );
  return result;
}

/**
 * Runs a cell that displays one `application/json` value and returns that
 * value. The Deno kernel can publish the display after its idle status, and
 * can lose IOPub output under large messages (the client then reconnects):
 * waits for a late display, then runs the cell again (three times at most).
 */
export async function displayedJson(
  kernel: KernelClient,
  code: string,
): Promise<unknown> {
  for (let attempt = 0;; attempt++) {
    const result = await executeOk(kernel, code);
    const find = () =>
      result.outputs.find((message) =>
        message.header.msg_type === "display_data" &&
        (message.content.data as Record<string, unknown> | undefined)
            ?.["application/json"] !== undefined
      );
    // The kernel may publish a display after its idle status: give it time.
    const lateDeadline = Date.now() + 3000;
    while (find() === undefined && Date.now() < lateDeadline) await sleep(25);
    const output = find();
    if (output === undefined && attempt < 3) continue;
    assert.ok(output, `no display from ${code}`);
    return (output.content.data as Record<string, unknown>)["application/json"];
  }
}

/** Reads `es.errorDetails` through a cell (which itself never fails). */
export async function readRecords(
  kernel: KernelClient,
): Promise<StoredRecord[]> {
  const data = await displayedJson(
    kernel,
    'await Deno.jupyter.display({ "application/json": { records: JSON.parse(JSON.stringify(globalThis.es.errorDetails)), dates: globalThis.es.errorDetails.every((r) => r.timestamp instanceof Date) } }, { raw: true })',
  ) as { records: StoredRecord[]; dates: boolean };
  assert.equal(data.dates, true, "timestamps are Dates");
  return data.records;
}

/** Waits (without running cells) until `count` records exist, then reads them. */
export async function waitForRecords(
  kernel: KernelClient,
  count: number,
  timeoutMs = 5000,
): Promise<StoredRecord[]> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    await sleep(100);
    const records = await readRecords(kernel);
    if (records.length >= count || Date.now() > deadline) return records;
  }
}

/**
 * The remote addresses (`ADDR:PORT` in hex) of the established connections
 * to the kernel's IOPub port, from `/proc/net/tcp` and `/proc/net/tcp6`;
 * `undefined` where `/proc` is unavailable.
 */
export async function iopubPeers(
  kernel: KernelClient,
): Promise<Set<string> | undefined> {
  const { iopub_port: port } = JSON.parse(
    await Deno.readTextFile(kernel.connectionFile),
  ) as { iopub_port: number };
  const portHex = port.toString(16).toUpperCase().padStart(4, "0");
  const peers = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = await Deno.readTextFile(table);
    } catch {
      return undefined;
    }
    for (const line of text.split("\n").slice(1)) {
      const [, local, remote, state] = line.trim().split(/\s+/);
      if (local?.endsWith(`:${portHex}`) && state === "01") peers.add(remote!);
    }
  }
  return peers;
}
