import assert from "node:assert/strict";
import {
  concatBytes,
  decodeReadyData,
  encodeCommand,
  encodeFrame,
  encodeMessage,
  encodeReadyData,
  pauseAfterSteadyReads,
  type ZmtpFrame,
  zmtpGreeting,
  ZmtpParser,
  ZmtpSocket,
} from "../src/zmtp.ts";
import {
  makeHeader,
  MessageSigner,
  parseMessage,
  peekHeader,
  peekMsgType,
  serializeMessage,
} from "../src/jupyter_message.ts";
import { startKernel } from "../src/kernel_client.ts";
import { startPublisher } from "./support/fake_publisher.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function collect(parser: ZmtpParser): ZmtpFrame[] {
  const frames: ZmtpFrame[] = [];
  parser.onFrame = (frame) => frames.push(frame);
  return frames;
}

Deno.test("zmtpGreeting() is a 64-byte ZMTP 3.0 NULL client greeting", () => {
  const greeting = zmtpGreeting();
  assert.equal(greeting.length, 64);
  assert.deepEqual([...greeting.subarray(0, 12)], [
    0xff,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0x7f,
    3,
    0,
  ]);
  assert.equal(decoder.decode(greeting.subarray(12, 16)), "NULL");
  assert.deepEqual([...greeting.subarray(16, 64)], new Array(48).fill(0));
});

Deno.test("encodeFrame() uses a 1-byte size up to 255 bytes and an 8-byte size above", () => {
  assert.deepEqual([...encodeFrame(new Uint8Array(255)).subarray(0, 2)], [
    0,
    255,
  ]);
  const long = encodeFrame(new Uint8Array(256), { more: true });
  assert.deepEqual([...long.subarray(0, 9)], [0x03, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.equal(long.length, 9 + 256);
  assert.equal(encodeFrame(new Uint8Array(1), { command: true })[0], 0x04);
});

Deno.test("encodeReadyData() round-trips through decodeReadyData()", () => {
  const data = encodeReadyData({
    "Socket-Type": "DEALER",
    Identity: new Uint8Array([1, 2]),
  });
  const properties = decodeReadyData(data);
  assert.equal(decoder.decode(properties["Socket-Type"]), "DEALER");
  assert.deepEqual([...properties.Identity], [1, 2]);
  assert.throws(
    () => decodeReadyData(data.subarray(0, data.length - 1)),
    RangeError,
  );
});

Deno.test("ZmtpParser reassembles a greeting, commands and multipart messages fed one byte at a time", () => {
  const parser = new ZmtpParser();
  const frames = collect(parser);
  let greeting: Uint8Array | undefined;
  parser.onGreeting = (bytes) => greeting = bytes;
  const stream = concatBytes([
    zmtpGreeting(),
    encodeCommand("READY", encodeReadyData({ "Socket-Type": "PUB" })),
    encodeMessage([
      encoder.encode("a"),
      new Uint8Array(300).fill(7),
      encoder.encode(""),
    ]),
  ]);
  for (let index = 0; index < stream.length; index++) {
    parser.push(stream.subarray(index, index + 1));
  }
  assert.equal(greeting?.length, 64);
  assert.deepEqual(
    frames.map((frame) => [frame.command, frame.more, frame.body.length]),
    [
      [true, false, 1 + 5 + 1 + 11 + 4 + 3],
      [false, true, 1],
      [false, true, 300],
      [false, false, 0],
    ],
  );
  assert.ok(frames[2].body.every((byte) => byte === 7));
});

Deno.test("ZmtpParser handles a 20 MB long frame split across many reads, in linear time", () => {
  const parser = new ZmtpParser({ greeting: false });
  const frames = collect(parser);
  const body = new Uint8Array(20 * 1024 * 1024);
  for (let index = 0; index < body.length; index += 4096) {
    body[index] = index % 251;
  }
  const stream = encodeMessage([encoder.encode("head"), body]);
  // Odd-sized reads, so the 9-byte size header itself is split too.
  for (let offset = 0; offset < stream.length; offset += 65_533) {
    parser.push(stream.subarray(offset, offset + 65_533));
  }
  assert.equal(frames.length, 2);
  assert.equal(frames[1].body.length, body.length);
  assert.deepEqual(frames[1].body, body);
});

Deno.test("ZmtpParser.skipRestOfMessage() skips bodies until the message ends", () => {
  const parser = new ZmtpParser({ greeting: false });
  const frames: ZmtpFrame[] = [];
  parser.onFrame = (frame) => {
    frames.push(frame);
    if (frames.length === 1) parser.skipRestOfMessage();
  };
  parser.push(
    encodeMessage([
      encoder.encode("skip"),
      new Uint8Array(1000),
      encoder.encode("x"),
    ]),
  );
  parser.push(encodeMessage([encoder.encode("kept")]));
  assert.deepEqual(frames.map((frame) => [frame.skipped, frame.body.length]), [
    [false, 4],
    [true, 0],
    [true, 0],
    [false, 4],
  ]);
});

Deno.test("ZmtpParser.atMessageBoundary is true only between complete messages", () => {
  const parser = new ZmtpParser();
  const boundaries: boolean[] = [];
  const push = (bytes: Uint8Array) => {
    parser.push(bytes);
    boundaries.push(parser.atMessageBoundary);
  };
  const greeting = zmtpGreeting();
  push(greeting.subarray(0, 10));
  push(greeting.subarray(10));
  const message = encodeMessage([encoder.encode("a"), new Uint8Array(300)]);
  push(message.subarray(0, 3)); // the first frame, MORE set
  push(message.subarray(3, 5)); // half the second frame's header
  push(message.subarray(5, 100)); // inside its body
  push(message.subarray(100)); // the message is complete
  push(encodeCommand("PING", new Uint8Array(2)));
  assert.deepEqual(boundaries, [false, true, false, false, false, true, true]);
});

Deno.test("ZmtpParser rejects a non-ZMTP greeting and oversized frames", () => {
  assert.throws(() => new ZmtpParser().push(new Uint8Array(64)), RangeError);
  const parser = new ZmtpParser({ greeting: false, maxFrameBytes: 10 });
  assert.throws(
    () => parser.push(encodeFrame(new Uint8Array(11))),
    /exceeds the limit of 10/,
  );
});

Deno.test("jupyter message signing: parseMessage() verifies, finds the delimiter after identities, drops bad signatures", async () => {
  const signer = await MessageSigner.create("secret-key", "hmac-sha256");
  const frames = await serializeMessage({
    identities: [encoder.encode("topic"), encoder.encode("id2")],
    header: makeHeader("error", "session"),
    parent_header: {},
    metadata: {},
    content: { ename: "Error" },
  }, signer);
  assert.equal(peekHeader(frames.slice(0, 5))?.msg_type, "error");
  const message = await parseMessage(frames, signer);
  assert.equal(message?.content.ename, "Error");
  assert.equal(message?.identities.length, 2);
  const tampered = [...frames];
  tampered[6] = encoder.encode('{"ename":"Other"}');
  assert.equal(await parseMessage(tampered, signer), undefined);
  const unsigned = [...frames];
  unsigned[3] = new Uint8Array(0);
  assert.equal(await parseMessage(unsigned, signer), undefined);
  const other = await MessageSigner.create("other-key", "hmac-sha256");
  assert.equal(await parseMessage(frames, other), undefined);
  await assert.rejects(() => MessageSigner.create("k", "hmac-md5"), RangeError);
});

Deno.test("pauseAfterSteadyReads() keeps the shortest pause for two steady reads, then doubles up to the longest", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 50].map((streak) =>
      pauseAfterSteadyReads(streak, 10, 40)
    ),
    [10, 10, 10, 20, 40, 40, 40],
  );
  assert.equal(pauseAfterSteadyReads(1000, 10, 40), 40);
  assert.equal(pauseAfterSteadyReads(9, 10, 10), 10);
});

/**
 * A PUB peer that sends `count` one-frame messages every
 * `everyMs`, then after `gapMs` two more `pairMs` apart; returns when each
 * was received by a SUB socket with these pauses.
 */
async function steadyStream(
  coalesceMs: number,
  coalesceMaxMs: number,
): Promise<{ sentAt: number[]; receivedAt: number[] }> {
  const count = 150, everyMs = 2, gapMs = 200, pairMs = 5;
  const sentAt: number[] = [];
  const receivedAt: number[] = [];
  const all = Promise.withResolvers<void>();
  const publisher = startPublisher(async (conn) => {
    const send = async (index: number) => {
      sentAt[index] = performance.now();
      await conn.write(encodeMessage([encoder.encode(String(index))]));
    };
    for (let index = 0; index < count; index++) {
      await send(index);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
    await new Promise((resolve) => setTimeout(resolve, gapMs));
    await send(count);
    await new Promise((resolve) => setTimeout(resolve, pairMs));
    await send(count + 1);
    await all.promise;
    conn.close();
  });
  const socket = await ZmtpSocket.connect(
    { transport: "tcp", ip: "127.0.0.1", port: publisher.port },
    {
      type: "SUB",
      coalesceMs,
      coalesceMaxMs,
      onMessage: (frames) => {
        const index = Number(decoder.decode(frames[0]));
        receivedAt[index] = performance.now();
        if (index === count + 1) all.resolve();
      },
    },
  );
  await socket.subscribe("");
  await all.promise;
  await socket.close();
  publisher.close();
  await publisher.done;
  return { sentAt, receivedAt };
}

/** How many separate reads delivered these messages (gaps over 1 ms). */
function bursts(receivedAt: number[]): number {
  const times = receivedAt.slice(0, -2).sort((a, b) => a - b);
  let count = 1;
  for (let i = 1; i < times.length; i++) {
    if (times[i] - times[i - 1] > 1) count++;
  }
  return count;
}

Deno.test("ZmtpSocket coalesceMaxMs: a steady stream is read in fewer bursts, and after a gap the pause is coalesceMs again", async () => {
  const fixed = await steadyStream(5, 5);
  const growing = await steadyStream(5, 80);
  for (const run of [fixed, growing]) {
    assert.equal(run.receivedAt.filter((at) => at !== undefined).length, 152);
  }
  const fixedBursts = bursts(fixed.receivedAt);
  const growingBursts = bursts(growing.receivedAt);
  assert.ok(
    growingBursts * 2 < fixedBursts,
    `bursts: ${growingBursts} growing, ${fixedBursts} fixed`,
  );
  // The second message after the gap arrives during the pause that follows
  // the first: it waits about 5 ms (coalesceMs), not 80.
  const last = growing.sentAt.length - 1;
  const delay = growing.receivedAt[last] - growing.sentAt[last];
  assert.ok(delay < 40, `the message after the gap waited ${delay} ms`);
});

Deno.test("ZmtpSocket connects over ipc (unix socket) and answers the peer's greeting and READY", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/kernel-ipc-5`;
  const listener = Deno.listen({ transport: "unix", path });
  const peer = (async () => {
    const conn = await listener.accept();
    const parser = new ZmtpParser();
    const received: ZmtpFrame[] = [];
    const gotSubscription = Promise.withResolvers<void>();
    parser.onFrame = (frame) => {
      received.push(frame);
      if (!frame.command) gotSubscription.resolve();
    };
    await conn.write(zmtpGreeting());
    await conn.write(
      encodeCommand("READY", encodeReadyData({ "Socket-Type": "PUB" })),
    );
    const buffer = new Uint8Array(1024);
    (async () => {
      while (true) {
        const count = await conn.read(buffer).catch(() => null);
        if (count === null) break;
        parser.push(buffer.subarray(0, count));
      }
    })();
    await gotSubscription.promise;
    await conn.write(
      encodeMessage([encoder.encode("hello"), encoder.encode("world")]),
    );
    return { conn, received };
  })();
  const messages: string[][] = [];
  const gotMessage = Promise.withResolvers<void>();
  const socket = await ZmtpSocket.connect({
    transport: "ipc",
    ip: `${dir}/kernel-ipc`,
    port: 5,
  }, {
    type: "SUB",
    onMessage: (frames) => {
      messages.push(frames.map((frame) => decoder.decode(frame)));
      gotMessage.resolve();
    },
  });
  assert.equal(socket.peerType, "PUB");
  await socket.subscribe("");
  await gotMessage.promise;
  assert.deepEqual(messages, [["hello", "world"]]);
  const { conn, received } = await peer;
  const ready = received.find((frame) => frame.command)!;
  assert.equal(decoder.decode(ready.body.subarray(1, 6)), "READY");
  assert.deepEqual([...received.find((frame) => !frame.command)!.body], [1]);
  await socket.close();
  assert.equal(socket.closed, true);
  conn.close();
  listener.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("ZmtpSocket round trip with a real Deno kernel: SUB sees a large display split across reads", async () => {
  const kernel = await startKernel();
  try {
    const result = await kernel.execute(
      'await Deno.jupyter.display({ "text/plain": "x".repeat(5_000_000) }, { raw: true }); 1',
    );
    assert.equal(result.status, "ok");
    // The kernel may publish the display after the idle status: wait for it.
    const deadline = Date.now() + 10_000;
    const display = () =>
      result.outputs.find((message) =>
        message.header.msg_type === "display_data"
      );
    while (display() === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(
      (display()?.content.data as Record<string, string>)["text/plain"].length,
      5_000_000,
    );
    const failing = await kernel.execute("throw new TypeError('round trip')");
    assert.equal(failing.status, "error");
    assert.equal(failing.error?.ename, "TypeError");
    assert.equal(failing.error?.evalue, "round trip");
  } finally {
    await kernel.shutdown();
  }
});

Deno.test("peekMsgType() reads the type from the header bytes, and agrees with peekHeader() on every layout", () => {
  const frames = (header: string) =>
    ["<IDS|MSG>", "sig", header, "{}"].map((text) => encoder.encode(text));
  assert.equal(
    peekMsgType(frames('{"msg_id":"1","msg_type":"execute_input"}')),
    "execute_input",
  );
  // A space before the colon: not the fast path, parsed as JSON.
  assert.equal(peekMsgType(frames('{ "msg_type" :\t"status" }')), "status");
  assert.equal(peekMsgType(frames('{"msg_type": \n "status"}')), "status");
  // An escape or a non-ASCII byte in the value: parsed as JSON instead.
  assert.equal(peekMsgType(frames('{"msg_type":"err\\u006fr"}')), "error");
  assert.equal(peekMsgType(frames('{"msg_type":"é"}')), "é");
  // The key's bytes inside a string value are escaped, so never matched.
  assert.equal(
    peekMsgType(
      frames('{"username":"\\"msg_type\\":\\"x","msg_type":"stream"}'),
    ),
    "stream",
  );
  assert.equal(peekMsgType(frames('{"msg_id":"1"}')), undefined);
  assert.equal(peekMsgType(frames("not json")), undefined);
  assert.equal(peekMsgType(frames('{"msg_type":1}')), undefined);
  assert.equal(peekMsgType(frames("{}").slice(0, 2)), undefined);
  assert.equal(peekMsgType([encoder.encode('{"msg_type":"x"}')]), undefined);
  // Random headers, serialized compactly or with spaces, keys in any order.
  const types = ["status", "execute_input", "error", "stream", "display_data"];
  for (let i = 0; i < 500; i++) {
    const header: Record<string, unknown> = {
      msg_id: crypto.randomUUID(),
      username: ["kernel", 'a"b', "msg_type", "ü"][i % 4],
      session: String(i),
      msg_type: types[i % types.length],
      version: "5.3",
    };
    const keys = Object.keys(header).sort(() => Math.random() - 0.5);
    const text = JSON.stringify(
      Object.fromEntries(keys.map((key) => [key, header[key]])),
      null,
      i % 2 === 0 ? undefined : 1,
    );
    assert.equal(peekMsgType(frames(text)), peekHeader(frames(text))?.msg_type);
  }
});
