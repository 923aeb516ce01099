/**
 * The worker side of {@linkcode CellCapture}: it owns the SUB socket on the
 * kernel's IOPub channel, so the socket is drained on its own thread even
 * while the kernel's main thread is busy (a cell printing 20 MB writes its
 * output synchronously, and the kernel's publisher waits for every
 * subscriber). The same reader also runs on the main thread while the worker
 * starts (about a second in the kernel).
 *
 * A successful cell costs the kernel as little as possible: the reader wakes
 * up once per burst of messages rather than once per message, and less often
 * still while cells run back to back (see `ZmtpSocketOptions.coalesceMs` and
 * `coalesceMaxMs`); in the worker it waits out those pauses blocked on a
 * shared flag rather than on a timer, so the messages arriving meanwhile do
 * not wake its thread either (the main thread raises the flag with each
 * request, see {@linkcode wakeReader}); it skips unneeded messages after their header
 * frame, keeps each `execute_input` as received (its signature is verified
 * and its content parsed only when a failing cell or a marker needs it), and
 * posts nothing to the main thread. It posts an `error` (already paired with
 * its cell's first line and execution count), and answers markers with the
 * execution count of the last cell seen.
 *
 * Protocol (main → worker): `start {connection, wake?}`, `expect {id}`,
 * `forget {id}`, `stop`. Worker → main: `connected`, `failed {message}`,
 * `expecting {id}`, `input {parentId, firstLine, executionCount}` (only from
 * a reader created with `postInputs`), `error {parentId, ename, evalue,
 * traceback, firstLine, executionCount}`, `marker {id, executionCount}`,
 * `closed {message?}`, `stopped`.
 *
 * @module
 */

import {
  findDelimiter,
  type JupyterMessage,
  MessageSigner,
  parseMessage,
  peekMsgType,
} from "./jupyter_message.ts";
import type { KernelConnectionInfo } from "./kernel_connection.ts";
import { ZmtpSocket } from "./zmtp.ts";

/** A message from the main thread to the worker. */
export type IopubWorkerRequest =
  | {
    type: "start";
    connection: KernelConnectionInfo;
    /**
     * A flag shared with the main thread (one `Int32Array` slot on a
     * `SharedArrayBuffer`): given, the reader waits out its pauses blocked
     * on it, and the main thread raises it (with {@linkcode wakeReader})
     * after each request it posts, so a request never waits for a pause to
     * end. Only for a reader that has its own thread.
     */
    wake?: Int32Array;
  }
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
    /** The failing cell's first line; `""` when its `execute_input` was not seen. */
    firstLine: string;
    /** The failing cell's execution count; `null` when its `execute_input` was not seen. */
    executionCount: number | null;
  }
  | {
    type: "marker";
    id: string;
    /** The execution count of the last cell seen before the marker, or `null`. */
    executionCount: number | null;
  }
  | { type: "closed"; message?: string }
  | { type: "stopped" };

/** Options for {@linkcode IopubReader}. */
export interface IopubReaderOptions {
  /**
   * Also post an `input` event for every `execute_input` (costs a wake-up of
   * the receiving thread per cell). @default {false}
   */
  postInputs?: boolean;
  /**
   * Milliseconds the socket waits after a burst before reading again (see
   * `ZmtpSocketOptions.coalesceMs`). @default {10}
   */
  coalesceMs?: number;
  /**
   * The longest wait while messages keep coming without a gap (see
   * `ZmtpSocketOptions.coalesceMaxMs`). @default {40}
   */
  coalesceMaxMs?: number;
}

/** The reader's default pause after a burst (see `ZmtpSocketOptions.coalesceMs`). */
export const DEFAULT_COALESCE_MS = 10;
/** The reader's default longest pause (see `ZmtpSocketOptions.coalesceMaxMs`). */
export const DEFAULT_COALESCE_MAX_MS = 40;

/**
 * Raises the flag a worker's reader waits on (see the `wake` of its `start`
 * request), ending its current or next pause at once. Call it after posting
 * a request to the worker.
 *
 * @param wake The flag given in the `start` request.
 *
 * @example Usage
 * ```ts
 * import { wakeReader } from "./iopub_worker.ts";
 *
 * const wake = new Int32Array(new SharedArrayBuffer(4));
 * wakeReader(wake);
 * console.log(Atomics.load(wake, 0)); // 1
 * ```
 */
export function wakeReader(wake: Int32Array): void {
  Atomics.store(wake, 0, 1);
  Atomics.notify(wake, 0);
}

/** At most this many routing frames may precede the delimiter. */
const MAX_IDENTITY_FRAMES = 16;
/** How many recent `execute_input` messages are kept for pairing. */
const REMEMBERED_INPUTS = 64;

const decoder = new TextDecoder();

/** An `execute_input` as received: verified and parsed only when needed. */
interface ReceivedInput {
  /** Its position in the stream's `execute_input` messages. */
  seq: number;
  frames: Uint8Array[];
  /** The parent request's msg_id, once read (`""` when unreadable). */
  parentId?: string;
  /** The verified cell, once checked; `null` when invalid. */
  cell?: { firstLine: string; executionCount: number | null } | null;
}

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
  #options: IopubReaderOptions;
  #socket: ZmtpSocket | undefined;
  #signer: MessageSigner | undefined;
  #expected = new Set<string>();
  #inputs: ReceivedInput[] = [];
  #inputsSeen = 0;
  #queue: Promise<void> = Promise.resolve();
  #stopped = false;
  #wake: Int32Array | undefined;

  /**
   * Creates a reader.
   *
   * @param post Receives the events.
   * @param options Reader options.
   */
  constructor(
    post: (event: IopubWorkerEvent) => void,
    options: IopubReaderOptions = {},
  ) {
    this.#post = post;
    this.#options = options;
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
        this.#wake = request.wake;
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
        this.#inputs = [];
        this.#post({ type: "stopped" });
        break;
    }
  }

  async #start(connection: KernelConnectionInfo): Promise<void> {
    this.#signer ??= await MessageSigner.create(
      connection.key,
      connection.signature_scheme,
    );
    const wake = this.#wake;
    this.#socket = await ZmtpSocket.connect(
      {
        transport: connection.transport,
        ip: connection.ip,
        port: connection.iopub_port,
      },
      {
        type: "SUB",
        coalesceMs: this.#options.coalesceMs ?? DEFAULT_COALESCE_MS,
        coalesceMaxMs: this.#options.coalesceMaxMs ?? DEFAULT_COALESCE_MAX_MS,
        pause: wake === undefined
          ? undefined
          : (ms) => this.#blockingPause(wake, ms),
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
   * Blocks the thread for `ms` or until the main thread raises `wake`. The
   * messages already read are handled first (their signature checks are
   * asynchronous, and an error must not wait for the pause to be posted).
   */
  async #blockingPause(wake: Int32Array, ms: number): Promise<void> {
    await this.#queue;
    if (this.#stopped) return;
    Atomics.wait(wake, 0, 0, ms);
    Atomics.store(wake, 0, 0);
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
    const type = peekMsgType(frames);
    return type === "execute_input" || type === "error" ||
      (this.#expected.size > 0 &&
        (type === "display_data" || type === "update_display_data"));
  }

  #onFrames(frames: Uint8Array[]): void {
    if (this.#stopped) return;
    if (isExecuteInput(frames)) {
      // Kept as received: no signature check, no parsing, no wake-up task.
      const input: ReceivedInput = { seq: this.#inputsSeen++, frames };
      this.#remember(input);
      if (this.#options.postInputs) {
        this.#queue = this.#queue.then(async () => {
          const cell = await this.#verify(input);
          if (cell != null && !this.#stopped) {
            this.#post({ type: "input", parentId: input.parentId!, ...cell });
          }
        }).catch(() => {});
      }
      return;
    }
    // Inputs that arrive while this message waits in the queue are not "before" it.
    const inputsBefore = this.#inputsSeen;
    this.#queue = this.#queue.then(async () => {
      const message = await parseMessage(frames, this.#signer!);
      if (message !== undefined && !this.#stopped) {
        await this.#onMessage(message, inputsBefore);
      }
    }).catch(() => {});
  }

  #remember(input: ReceivedInput): void {
    this.#inputs.push(input);
    if (this.#inputs.length > REMEMBERED_INPUTS) this.#inputs.shift();
  }

  async #onMessage(
    message: JupyterMessage,
    inputsBefore: number,
  ): Promise<void> {
    const { content } = message;
    const parentId = String(message.parent_header.msg_id ?? "");
    switch (message.header.msg_type) {
      case "error": {
        const cell = parentId === ""
          ? undefined
          : await this.#cellOf(parentId, inputsBefore);
        this.#post({
          type: "error",
          parentId,
          ename: String(content.ename ?? "Error"),
          evalue: String(content.evalue ?? ""),
          traceback: Array.isArray(content.traceback)
            ? content.traceback.map(String)
            : [],
          firstLine: cell?.firstLine ?? "",
          executionCount: cell?.executionCount ?? null,
        });
        break;
      }
      case "display_data":
      case "update_display_data": {
        const transient = content.transient as
          | { display_id?: unknown }
          | undefined;
        const id = transient?.display_id;
        if (typeof id === "string" && this.#expected.has(id)) {
          this.#post({
            type: "marker",
            id,
            executionCount: await this.#lastExecutionCount(inputsBefore),
          });
        }
        break;
      }
    }
  }

  /** The verified cell of the `execute_input` answering request `parentId`. */
  async #cellOf(
    parentId: string,
    inputsBefore: number,
  ): Promise<ReceivedInput["cell"]> {
    for (let index = this.#inputs.length - 1; index >= 0; index--) {
      const input = this.#inputs[index];
      if (input.seq >= inputsBefore) continue;
      if (parentIdOf(input) !== parentId) continue;
      const cell = await this.#verify(input);
      if (cell !== null) return cell;
    }
    return undefined;
  }

  /** The execution count of the newest valid `execute_input` (of the first `inputsBefore`) that has one. */
  async #lastExecutionCount(inputsBefore: number): Promise<number | null> {
    for (let index = this.#inputs.length - 1; index >= 0; index--) {
      if (this.#inputs[index].seq >= inputsBefore) continue;
      const cell = await this.#verify(this.#inputs[index]);
      if (cell?.executionCount != null) return cell.executionCount;
    }
    return null;
  }

  /** Verifies and parses a kept `execute_input` once. */
  async #verify(input: ReceivedInput): Promise<ReceivedInput["cell"]> {
    if (input.cell === undefined) {
      parentIdOf(input);
      const message = await parseMessage(input.frames, this.#signer!);
      input.cell = message === undefined ||
          message.header.msg_type !== "execute_input"
        ? null
        : cellOf(message.content);
      input.frames = [];
    }
    return input.cell;
  }
}

/** Whether complete `frames` are an `execute_input` (by its unverified header). */
function isExecuteInput(frames: Uint8Array[]): boolean {
  return peekMsgType(frames) === "execute_input";
}

/** The parent msg_id of a kept input (read once, unverified), or `""`. */
function parentIdOf(input: ReceivedInput): string {
  if (input.parentId !== undefined) return input.parentId;
  const { frames } = input;
  const delimiter = findDelimiter(frames);
  let parentId = "";
  if (delimiter >= 0 && frames.length >= delimiter + 4) {
    try {
      const parent = JSON.parse(decoder.decode(frames[delimiter + 3]));
      if (typeof parent?.msg_id === "string") parentId = parent.msg_id;
    } catch {
      // no parent id
    }
  }
  input.parentId = parentId;
  return parentId;
}

/** The first line and execution count of an `execute_input`'s content. */
function cellOf(
  content: Record<string, unknown>,
): { firstLine: string; executionCount: number | null } {
  return {
    firstLine: firstLineOf(
      typeof content.code === "string" ? content.code : "",
    ),
    executionCount: typeof content.execution_count === "number"
      ? content.execution_count
      : null,
  };
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
