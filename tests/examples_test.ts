/**
 * Executes the example notebooks in a real Deno kernel and checks what was
 * captured. `NBR_WRITE_EXAMPLES=1` also saves the run's outputs into the
 * notebooks. `NBR_EXAMPLES_DIR` points at another copy of the examples folder
 * (whose parent holds the `mod.ts` the notebooks import).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  type KernelClient,
  runNotebook,
  startKernel,
} from "../src/kernel_client.ts";
import type { JupyterMessage } from "../src/jupyter_message.ts";
import { startSlackReceiver } from "./support/slack_receiver.ts";
import { displayedJson } from "./support/kernel_cells.ts";

const EXAMPLES = Deno.env.get("NBR_EXAMPLES_DIR") ??
  fileURLToPath(new URL("../examples/", import.meta.url));
const WRITE = Deno.env.get("NBR_WRITE_EXAMPLES") === "1";

interface Captured {
  error_name: string;
  error_message: string;
  first_line: string;
  execution_count: number | null;
  notebook: string;
}

async function captured(
  kernel: KernelClient,
  variable: string,
): Promise<Captured[]> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  const data = await displayedJson(
    kernel,
    `await Deno.jupyter.display({ "application/json": { records: JSON.parse(JSON.stringify(${variable}.errorDetails ?? [])) } }, { raw: true })`,
  ) as { records: Captured[] };
  return data.records;
}

function texts(outputs: JupyterMessage[]): string {
  return outputs.map((message) => JSON.stringify(message.content)).join("\n");
}

Deno.test("examples/error_store.ipynb captures its two failing cells", async () => {
  const kernel = await startKernel({ cwd: EXAMPLES });
  try {
    const cells = await runNotebook(`${EXAMPLES}/error_store.ipynb`, {
      kernel,
      writeOutputs: WRITE,
      settleMs: 500,
      pauseAfterErrorMs: WRITE ? 500 : 0,
    });
    assert.deepEqual(cells.map((cell) => cell.result.status), [
      "ok",
      "ok",
      "error",
      "error",
      "ok",
    ]);
    assert.ok(texts(cells[0].result.outputs).includes("are reported to"));
    const records = await captured(kernel, "es");
    assert.deepEqual(
      records.map((record) => [
        record.error_name,
        record.first_line,
        record.execution_count,
        record.notebook,
      ]),
      [
        [
          "SyntaxError",
          "// Parse the settings",
          cells[2].result.executionCount,
          "error_store example",
        ],
        [
          "RangeError",
          "function average(values: number[]): number {",
          cells[3].result.executionCount,
          "error_store example",
        ],
      ],
    );
    assert.equal(records[1].error_message, "average of an empty list");
  } finally {
    await kernel.shutdown();
  }
});

Deno.test("examples/error_slack.ipynb posts its failing cell to the webhook in SLACK_WEBHOOK", async () => {
  await using receiver = await startSlackReceiver();
  const kernel = await startKernel({
    cwd: EXAMPLES,
    env: { SLACK_WEBHOOK: receiver.url },
  });
  try {
    const cells = await runNotebook(`${EXAMPLES}/error_slack.ipynb`, {
      kernel,
      writeOutputs: WRITE,
      settleMs: 500,
      pauseAfterErrorMs: WRITE ? 500 : 0,
    });
    assert.deepEqual(cells.map((cell) => cell.result.status), [
      "ok",
      "ok",
      "error",
    ]);
    const notice = texts(cells[0].result.outputs);
    assert.ok(notice.includes(`Slack (${new URL(receiver.url).host})`), notice);
    assert.ok(!notice.includes(receiver.secret));
    const [request] = await receiver.waitFor(1, 5000);
    assert.equal(receiver.requests.length, 1);
    assert.ok(request.text.includes("TypeError"));
    assert.ok(
      request.text.includes("Reduce of empty array with no initial value"),
    );
    assert.ok(
      request.text.includes("// Find the warmest city in a list that is empty"),
    );
    assert.ok(request.text.includes("error_slack example"));
    assert.ok(request.text.includes(String(cells[2].result.executionCount)));
  } finally {
    await kernel.shutdown();
  }
});
