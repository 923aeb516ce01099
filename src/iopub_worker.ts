/**
 * The worker side of {@linkcode CellCapture}: it owns the SUB socket on the
 * kernel's IOPub channel, so the socket is drained on its own thread even
 * while the kernel's main thread is busy (a cell printing 20 MB writes its
 * output synchronously, and the kernel's publisher waits for every
 * subscriber). It skips unneeded messages after their header frame, verifies
 * signatures, and posts only small events (`execute_input` first lines and
 * counts, `error` contents, markers) to the main thread. The same reader also
 * runs on the main thread while the worker starts (about a second in the
 * kernel).
 *
 * Protocol (main → worker): `start {connection}`, `expect {id}`,
 * `forget {id}`, `stop`. Worker → main: `connected`, `failed {message}`,
 * `expecting {id}`, `input {parentId, firstLine, executionCount}`,
 * `error {parentId, ename, evalue, traceback}`, `marker {id}`,
 * `closed {message?}`, `stopped`.
 *
 * @module
 */

import {
  findDelimiter,
  type JupyterMessage,
  MessageSigner,
  parseMessage,
  peekHeader,
} from "./jupyter_message.ts";
import type { KernelConnectionInfo } from "./kernel_connection.ts";
import { ZmtpSocket } from "./zmtp.ts";

/** A message from the main thread to the worker. */
export type IopubWorkerRequest =
  | { type: "start"; connection: KernelConnectionInfo }
  | { type: "expect"; id: string }
  | { type: "forget"; id: string }
  | { type: "stop" };

/** A message from the worker to the main thread. */
export type IopubWorkerEvent =
  | { type: "connected" }
  | { type: "failed"; message: string }
  | { type: "expecting"; id: string }
  | {
    type: "input";
    parentId: string;
    firstLine: string;
    executionCount: number | null;
  }
  | {
    type: "error";
    parentId: string;
    ename: string;
    evalue: string;
    traceback: string[];
  }
  | { type: "marker"; id: string }
  | { type: "closed"; message?: string }
  | { type: "stopped" };

/** At most this many routing frames may precede the delimiter. */
const MAX_IDENTITY_FRAMES = 16;

interface WorkerScope {
  onmessage: ((event: MessageEvent<IopubWorkerRequest>) => void) | null;
  postMessage(message: IopubWorkerEvent): void;
  close(): void;
}

/**
 * Reads IOPub and turns it into {@linkcode IopubWorkerEvent}s. Runs inside the
 * worker; exported for tests.
 *
 * @example Usage
 * ```ts ignore
 * import { IopubReader } from "./iopub_worker.ts";
 *
 * const reader = new IopubReader((event) => console.log(event.type));
 * ```
 */
export class IopubReader {
  #post: (event: IopubWorkerEvent) => void;
  #socket: ZmtpSocket | undefined;
  #signer: MessageSigner | undefined;
  #expected = new Set<string>();
  #queue: Promise<void> = Promise.resolve();
  #stopped = false;

  /**
   * Creates a reader.
   *
   * @param post Receives the events.
   */
  constructor(post: (event: IopubWorkerEvent) => void) {
    this.#post = post;
  }

  /**
   * Handles one request from the main thread.
   *
   * @param request The request.
   * @returns Once handled.
   */
  async handle(request: IopubWorkerRequest): Promise<void> {
    switch (request.type) {
      case "start":
        try {
          await this.#start(request.connection);
          this.#post({ type: "connected" });
        } catch (error) {
          this.#post({ type: "failed", message: describe(error) });
        }
        break;
      case "expect":
        this.#expected.add(request.id);
        this.#post({ type: "expecting", id: request.id });
        break;
      case "forget":
        this.#expected.delete(request.id);
        break;
      case "stop":
        this.#stopped = true;
        await this.#socket?.close();
        await this.#queue;
        this.#post({ type: "stopped" });
        break;
    }
  }

  async #start(connection: KernelConnectionInfo): Promise<void> {
    this.#signer ??= await MessageSigner.create(
      connection.key,
      connection.signature_scheme,
    );
    this.#socket = await ZmtpSocket.connect(
      {
        transport: connection.transport,
        ip: connection.ip,
        port: connection.iopub_port,
      },
      {
        type: "SUB",
        accept: (frames) => this.#accept(frames),
        onMessage: (frames) => this.#onFrames(frames),
        onClose: (error) => {
          if (!this.#stopped) this.#reconnect(connection, error);
        },
      },
    );
    await this.#socket.subscribe("");
  }

  /**
   * The Deno kernel's publisher can cut a message short when a subscriber's
   * buffer is full, which breaks the framing of the stream: reconnect (the
   * messages in between are lost, capture goes on).
   */
  async #reconnect(
    connection: KernelConnectionInfo,
    error: unknown,
  ): Promise<void> {
    for (let attempt = 0; attempt < 5 && !this.#stopped; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
      if (this.#stopped) return;
      try {
        await this.#start(connection);
        return;
      } catch (failure) {
        error = failure;
      }
    }
    if (!this.#stopped) {
      this.#post({
        type: "closed",
        message: error === undefined ? undefined : describe(error),
      });
    }
  }

  /** Decides after each frame whether the rest of a message is worth reading. */
  #accept(frames: Uint8Array[]): boolean {
    const delimiter = findDelimiter(frames);
    if (delimiter < 0) return frames.length <= MAX_IDENTITY_FRAMES;
    if (frames.length !== delimiter + 3) return true;
    const type = peekHeader(frames)?.msg_type;
    return type === "execute_input" || type === "error" ||
      (this.#expected.size > 0 &&
        (type === "display_data" || type === "update_display_data"));
  }

  #onFrames(frames: Uint8Array[]): void {
    if (this.#stopped) return;
    this.#queue = this.#queue.then(async () => {
      const message = await parseMessage(frames, this.#signer!);
      if (message !== undefined && !this.#stopped) this.#onMessage(message);
    }).catch(() => {});
  }

  #onMessage(message: JupyterMessage): void {
    const { content } = message;
    const parentId = String(message.parent_header.msg_id ?? "");
    switch (message.header.msg_type) {
      case "execute_input": {
        const code = typeof content.code === "string" ? content.code : "";
        this.#post({
          type: "input",
          parentId,
          firstLine: firstLineOf(code),
          executionCount: typeof content.execution_count === "number"
            ? content.execution_count
            : null,
        });
        break;
      }
      case "error":
        this.#post({
          type: "error",
          parentId,
          ename: String(content.ename ?? "Error"),
          evalue: String(content.evalue ?? ""),
          traceback: Array.isArray(content.traceback)
            ? content.traceback.map(String)
            : [],
        });
        break;
      case "display_data":
      case "update_display_data": {
        const transient = content.transient as
          | { display_id?: unknown }
          | undefined;
        const id = transient?.display_id;
        if (typeof id === "string" && this.#expected.has(id)) {
          this.#post({ type: "marker", id });
        }
        break;
      }
    }
  }
}

/**
 * The first line of a cell's code, exactly (without its line break).
 *
 * @param code The cell's code.
 * @returns Everything before the first `\n` (and a `\r` before it).
 *
 * @example Usage
 * ```ts
 * import { firstLineOf } from "./iopub_worker.ts";
 *
 * console.log(firstLineOf("// load data\nconst x = 1;")); // "// load data"
 * ```
 */
export function firstLineOf(code: string): string {
  const end = code.indexOf("\n");
  const line = end < 0 ? code : code.slice(0, end);
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// Runs only as a worker (a worker scope has no `window`-style `Deno.mainModule` checks;
// `WorkerGlobalScope` is the reliable sign).
const scope = globalThis as unknown as WorkerScope & {
  WorkerGlobalScope?: unknown;
};
if (typeof scope.WorkerGlobalScope !== "undefined") {
  const reader = new IopubReader((event) => scope.postMessage(event));
  let chain: Promise<void> = Promise.resolve();
  scope.onmessage = (event) => {
    const request = event.data;
    chain = chain.then(() => reader.handle(request)).then(() => {
      if (request.type === "stop") scope.close();
    });
  };
}
