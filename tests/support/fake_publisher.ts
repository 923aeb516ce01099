/**
 * A minimal ZMTP PUB peer on loopback TCP for tests of the project's SUB
 * socket and IOPub reader.
 *
 * @module
 */

import {
  concatBytes,
  encodeCommand,
  encodeReadyData,
  type ZmtpFrame,
  zmtpGreeting,
  ZmtpParser,
} from "../../src/zmtp.ts";

/** A minimal publisher peer: greets, waits for the subscription, then runs `serve`. */
export function startPublisher(
  serve: (conn: Deno.Conn, index: number) => Promise<void>,
): { port: number; close: () => void; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    let index = 0;
    for await (const conn of listener) {
      // As a ZeroMQ publisher does: no Nagle delay on small messages (with
      // it, a reader that pauses sees them held back by delayed ACKs).
      conn.setNoDelay(true);
      const parser = new ZmtpParser();
      const subscribed = Promise.withResolvers<void>();
      parser.onFrame = (frame: ZmtpFrame) => {
        if (!frame.command && frame.body[0] === 1) subscribed.resolve();
      };
      (async () => {
        const buffer = new Uint8Array(4096);
        while (true) {
          const count = await conn.read(buffer).catch(() => null);
          if (count === null) break;
          parser.push(buffer.subarray(0, count));
        }
      })();
      await conn.write(
        concatBytes([
          zmtpGreeting(),
          encodeCommand("READY", encodeReadyData({ "Socket-Type": "PUB" })),
        ]),
      );
      await subscribed.promise;
      await serve(conn, index++);
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: () => listener.close(),
    done,
  };
}
