import assert from "node:assert/strict";
import {
  IopubReader,
  type IopubWorkerEvent,
  type IopubWorkerRequest,
  wakeReader,
} from "../src/iopub_worker.ts";
import {
  makeHeader,
  MessageSigner,
  serializeMessage,
} from "../src/jupyter_message.ts";
import { concatBytes, encodeMessage } from "../src/zmtp.ts";
import type { KernelConnectionInfo } from "../src/kernel_connection.ts";
import { startPublisher } from "./support/fake_publisher.ts";

/** The connection of a kernel whose IOPub is the test publisher on `port`. */
function publisherConnection(port: number, key: string): KernelConnectionInfo {
  return {
    transport: "tcp",
    ip: "127.0.0.1",
    iopub_port: port,
    shell_port: 0,
    control_port: 0,
    stdin_port: 0,
    hb_port: 0,
    key,
    signature_scheme: "hmac-sha256",
  };
}

/** A message the kernel publishes while answering `parent`, signed by `signer`. */
function kernelMessage(
  signer: MessageSigner,
  type: string,
  parent: ReturnType<typeof makeHeader>,
  content: Record<string, unknown>,
): Promise<Uint8Array[]> {
  return serializeMessage(
    {
      header: makeHeader(type, "kernel"),
      parent_header: parent,
      metadata: {},
      content,
    },
    signer,
  );
}

Deno.test("IopubReader drops unsigned messages and reconnects after a corrupted stream", async () => {
  const key = "test-key";
  const signer = await MessageSigner.create(key, "hmac-sha256");
  const unsigned = await MessageSigner.create("", "hmac-sha256");
  const request = makeHeader("execute_request", "client");
  const message = (
    type: string,
    content: Record<string, unknown>,
    by = signer,
  ) => kernelMessage(by, type, request, content);
  const connections: Deno.Conn[] = [];
  const publisher = startPublisher(async (conn, index) => {
    connections.push(conn);
    if (index === 0) {
      // A frame header announcing an absurd size: the stream is broken.
      await conn.write(
        new Uint8Array([0x02, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
      );
      return;
    }
    const forged = await message("error", {
      ename: "Forged",
      evalue: "x",
      traceback: [],
    }, unsigned);
    const input = await message("execute_input", {
      code: "// first\nsecond",
      execution_count: 9,
    });
    const error = await message("error", {
      ename: "Error",
      evalue: "boom",
      traceback: ["Error: boom"],
    });
    await conn.write(
      concatBytes([
        encodeMessage(forged),
        encodeMessage(input),
        encodeMessage(error),
      ]),
    );
  });
  const events: IopubWorkerEvent[] = [];
  const gotError = Promise.withResolvers<void>();
  const reader = new IopubReader((event) => {
    events.push(event);
    if (event.type === "error") gotError.resolve();
  });
  await reader.handle({
    type: "start",
    connection: publisherConnection(publisher.port, key),
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    gotError.promise,
    new Promise((_, reject) =>
      timer = setTimeout(() => reject(new Error("no error event")), 5000)
    ),
  ]);
  clearTimeout(timer);
  await reader.handle({ type: "stop" });
  assert.deepEqual(events, [
    { type: "connected" },
    {
      type: "error",
      parentId: request.msg_id,
      ename: "Error",
      evalue: "boom",
      traceback: ["Error: boom"],
      firstLine: "// first",
      executionCount: 9,
    },
    { type: "stopped" },
  ]);
  assert.equal(connections.length, 2, "reconnected once");
  for (const conn of connections) {
    try {
      conn.close();
    } catch {
      // closed by the reader
    }
  }
  publisher.close();
  await publisher.done;
});

Deno.test("IopubReader posts nothing for successful cells, pairs an error with its verified input, and answers a marker with the last execution count", async () => {
  const key = "test-key";
  const signer = await MessageSigner.create(key, "hmac-sha256");
  const forger = await MessageSigner.create("other-key", "hmac-sha256");
  const requests = [1, 2, 3].map(() => makeHeader("execute_request", "client"));
  const message = (
    type: string,
    parent: ReturnType<typeof makeHeader>,
    content: Record<string, unknown>,
    by = signer,
  ) => kernelMessage(by, type, parent, content);
  const marker = (id: string) =>
    message("update_display_data", requests[2], {
      data: {},
      metadata: {},
      transient: { display_id: id },
    });
  const sendNow = Promise.withResolvers<Deno.Conn>();
  const publisher = startPublisher((conn) => {
    sendNow.resolve(conn);
    return Promise.resolve();
  });
  const events: IopubWorkerEvent[] = [];
  const waiting = new Map<string, () => void>();
  const reader = new IopubReader((event) => {
    events.push(event);
    waiting.get(event.type)?.();
  });
  const next = (type: string): Promise<void> => {
    const seen = Promise.withResolvers<void>();
    waiting.set(type, seen.resolve);
    return seen.promise;
  };
  await reader.handle({
    type: "start",
    connection: publisherConnection(publisher.port, key),
  });
  const conn = await sendNow.promise;
  const write = async (parts: Promise<Uint8Array[]>[]) =>
    await conn.write(
      concatBytes((await Promise.all(parts)).map(encodeMessage)),
    );
  // Two successful cells: status, execute_input, execute_result, status.
  for (const [index, request] of requests.slice(0, 2).entries()) {
    await write([
      message("status", request, { execution_state: "busy" }),
      message("execute_input", request, {
        code: `cell ${index + 1}\nmore`,
        execution_count: index + 1,
      }),
      message("execute_result", request, {
        data: { "text/plain": "2" },
        execution_count: index + 1,
      }),
      message("status", request, { execution_state: "idle" }),
    ]);
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(events, [{ type: "connected" }], "nothing per cell");
  // A failing cell, whose forged twin input (wrong key) comes after the real one.
  const errorSeen = next("error");
  await write([
    message("execute_input", requests[2], {
      code: "// third\nthrow x",
      execution_count: 3,
    }),
    message("execute_input", requests[2], {
      code: "forged",
      execution_count: 99,
    }, forger),
    message("error", requests[2], {
      ename: "ReferenceError",
      evalue: "x is not defined",
      traceback: ["ReferenceError: x is not defined"],
    }),
  ]);
  await errorSeen;
  // A marker, then an input published after it: the marker's count is 3.
  await reader.handle({ type: "expect", id: "sync-1" });
  const markerSeen = next("marker");
  await write([
    marker("sync-1"),
    message("execute_input", makeHeader("execute_request", "client"), {
      code: "later",
      execution_count: 4,
    }),
  ]);
  await markerSeen;
  await reader.handle({ type: "stop" });
  assert.deepEqual(events, [
    { type: "connected" },
    {
      type: "error",
      parentId: requests[2].msg_id,
      ename: "ReferenceError",
      evalue: "x is not defined",
      traceback: ["ReferenceError: x is not defined"],
      firstLine: "// third",
      executionCount: 3,
    },
    { type: "expecting", id: "sync-1" },
    { type: "marker", id: "sync-1", executionCount: 3 },
    { type: "stopped" },
  ]);
  try {
    conn.close();
  } catch {
    // closed by the reader
  }
  publisher.close();
  await publisher.done;
});

Deno.test("IopubReader in its worker, given a wake flag: while cells stream it sleeps through 40 ms pauses, yet a request is answered at once and an error is posted before the next pause", async () => {
  const key = "test-key";
  const signer = await MessageSigner.create(key, "hmac-sha256");
  const message = (
    type: string,
    parent: ReturnType<typeof makeHeader>,
    content: Record<string, unknown>,
  ) => kernelMessage(signer, type, parent, content);
  const connected = Promise.withResolvers<Deno.Conn>();
  const publisher = startPublisher((conn) => {
    connected.resolve(conn);
    return Promise.resolve();
  });
  const worker = new Worker(
    new URL("../src/iopub_worker.ts", import.meta.url),
    { type: "module" },
  );
  const wake = new Int32Array(new SharedArrayBuffer(4));
  const listeners = new Set<(event: IopubWorkerEvent) => void>();
  worker.onmessage = (event: MessageEvent<IopubWorkerEvent>) => {
    for (const listener of listeners) listener(event.data);
  };
  const request = (
    body: IopubWorkerRequest,
    answer: IopubWorkerEvent["type"],
  ): Promise<number> => {
    const answered = Promise.withResolvers<number>();
    const listener = (event: IopubWorkerEvent) => {
      if (event.type === answer) {
        listeners.delete(listener);
        answered.resolve(performance.now());
      }
    };
    listeners.add(listener);
    worker.postMessage(body);
    wakeReader(wake);
    return answered.promise;
  };
  const median = (values: number[]) =>
    [...values].sort((a, b) => a - b)[values.length >> 1]!;
  let streaming = true;
  let stream: Promise<void> = Promise.resolve();
  try {
    await request({
      type: "start",
      wake,
      connection: publisherConnection(publisher.port, key),
    }, "connected");
    const conn = await connected.promise;
    // Successful cells back to back, a status message every 2 ms: the
    // reader's pause grows to 40 ms and stays there.
    const cell = makeHeader("execute_request", "client");
    const status = encodeMessage(
      await message("status", cell, { execution_state: "busy" }),
    );
    let writes: Promise<unknown> = Promise.resolve();
    const write = (bytes: Uint8Array) => {
      writes = writes.then(() => conn.write(bytes));
      return writes;
    };
    stream = (async () => {
      while (streaming) {
        await write(status);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 500));

    // Requests posted at random moments of the pauses: answered within a
    // few ms (without the wake-up each would wait 20 ms on average).
    const answers: number[] = [];
    for (let i = 0; i < 9; i++) {
      await new Promise((resolve) => setTimeout(resolve, 13 + 7 * i));
      const sent = performance.now();
      answers.push(
        await request({ type: "expect", id: `marker-${i}` }, "expecting") -
          sent,
      );
    }
    assert.ok(
      median(answers) < 10,
      `requests answered in ${answers.map((ms) => ms.toFixed(1))} ms`,
    );

    // A failing cell amid the stream: its error is read at the end of the
    // current pause (0-40 ms later) and posted before the next one starts
    // (40-80 ms, had the reader blocked before checking its signature). The
    // sends fall 4-39 ms before a pause ends (median about 25 ms).
    const errors: number[] = [];
    for (let i = 0; i < 9; i++) {
      await new Promise((resolve) => setTimeout(resolve, 11 + 5 * i));
      const parent = makeHeader("execute_request", "client");
      const bytes = concatBytes(
        await Promise.all([
          message("execute_input", parent, {
            code: `throw new Error("${i}")`,
            execution_count: i + 1,
          }),
          message("error", parent, {
            ename: "Error",
            evalue: String(i),
            traceback: [],
          }),
        ]).then((messages) => messages.map(encodeMessage)),
      );
      const posted = Promise.withResolvers<number>();
      const listener = (event: IopubWorkerEvent) => {
        if (event.type === "error" && event.evalue === String(i)) {
          listeners.delete(listener);
          posted.resolve(performance.now());
        }
      };
      listeners.add(listener);
      const sent = performance.now();
      await write(bytes);
      errors.push(await posted.promise - sent);
    }
    assert.ok(
      median(errors) < 45,
      `errors posted ${
        errors.map((ms) => ms.toFixed(1))
      } ms after they were sent`,
    );
    streaming = false;
    await stream;
    await request({ type: "stop" }, "stopped");
    try {
      conn.close();
    } catch {
      // closed by the reader
    }
  } finally {
    streaming = false;
    await stream.catch(() => {});
    worker.terminate();
    publisher.close();
    await publisher.done;
  }
});
