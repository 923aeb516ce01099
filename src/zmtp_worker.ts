/**
 * A worker hosting one {@linkcode ZmtpSocket} and forwarding each message's
 * frames to the main thread (transferred, not copied). Used by the project's
 * Jupyter client for IOPub: the Deno kernel's publisher corrupts the stream of
 * a subscriber that does not drain its socket in time, and a worker reads
 * even while the main thread parses a 20 MB message.
 *
 * Protocol (main → worker): `connect {endpoint, socketType}`, `close`.
 * Worker → main: `ready`, `failed {message}`, `message {frames}`,
 * `closed {message?}`.
 *
 * @module
 */

import { type ZmtpEndpoint, ZmtpSocket, type ZmtpSocketType } from "./zmtp.ts";

/** A message from the main thread to the worker. */
export type ZmtpWorkerRequest =
  | { type: "connect"; endpoint: ZmtpEndpoint; socketType: ZmtpSocketType }
  | { type: "close" };

/** A message from the worker to the main thread. */
export type ZmtpWorkerEvent =
  | { type: "ready" }
  | { type: "failed"; message: string }
  | { type: "message"; frames: Uint8Array[] }
  | { type: "closed"; message?: string };

interface WorkerScope {
  onmessage: ((event: MessageEvent<ZmtpWorkerRequest>) => void) | null;
  postMessage(message: ZmtpWorkerEvent, transfer?: Transferable[]): void;
  close(): void;
}

const scope = globalThis as unknown as WorkerScope & {
  WorkerGlobalScope?: unknown;
};
if (typeof scope.WorkerGlobalScope !== "undefined") {
  let socket: ZmtpSocket | undefined;
  let closing = false;
  scope.onmessage = async (event) => {
    const request = event.data;
    if (request.type === "connect") {
      try {
        socket = await ZmtpSocket.connect(request.endpoint, {
          type: request.socketType,
          onMessage: (frames) => {
            const buffers = frames.map((frame) => frame.buffer as ArrayBuffer);
            scope.postMessage({ type: "message", frames }, buffers);
          },
          onClose: (error) => {
            if (!closing) {
              scope.postMessage({
                type: "closed",
                message: error === undefined ? undefined : String(error),
              });
            }
          },
        });
        if (request.socketType === "SUB") await socket.subscribe("");
        scope.postMessage({ type: "ready" });
      } catch (error) {
        scope.postMessage({ type: "failed", message: String(error) });
      }
    } else {
      closing = true;
      await socket?.close();
      scope.postMessage({ type: "closed" });
      scope.close();
    }
  };
}
