import assert from "node:assert/strict";
import { IopubReader, type IopubWorkerEvent } from "../src/iopub_worker.ts";
import {
  makeHeader,
  MessageSigner,
  serializeMessage,
} from "../src/jupyter_message.ts";
import { concatBytes, encodeMessage } from "../src/zmtp.ts";
import { startPublisher } from "./support/fake_publisher.ts";

Deno.test("IopubReader drops unsigned messages and reconnects after a corrupted stream", async () => {
  const key = "test-key";
  const signer = await MessageSigner.create(key, "hmac-sha256");
  const unsigned = await MessageSigner.create("", "hmac-sha256");
  const request = makeHeader("execute_request", "client");
  const message = (
    type: string,
    content: Record<string, unknown>,
    by = signer,
  ) =>
    serializeMessage(
      {
        header: makeHeader(type, "kernel"),
        parent_header: request,
        metadata: {},
        content,
      },
      by,
    );
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
    connection: {
      transport: "tcp",
      ip: "127.0.0.1",
      iopub_port: publisher.port,
      shell_port: 0,
      control_port: 0,
      stdin_port: 0,
      hb_port: 0,
      key,
      signature_scheme: "hmac-sha256",
    },
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
  ) =>
    serializeMessage(
      {
        header: makeHeader(type, "kernel"),
        parent_header: parent,
        metadata: {},
        content,
      },
      by,
    );
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
    connection: {
      transport: "tcp",
      ip: "127.0.0.1",
      iopub_port: publisher.port,
      shell_port: 0,
      control_port: 0,
      stdin_port: 0,
      hb_port: 0,
      key,
      signature_scheme: "hmac-sha256",
    },
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
