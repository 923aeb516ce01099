/**
 * The in-kernel IOPub listener: a SUB socket on the kernel's own IOPub channel
 * that pairs every `error` message with the `execute_input` of the same
 * request, so a failing cell's first line and execution count are known.
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

/** A failing cell, as seen on IOPub. */
export interface CapturedCellError {
  /** The error's name (`ename`). */
  ename: string;
  /** The error's message (`evalue`). */
  evalue: string;
  /** The kernel's traceback lines. */
  traceback: string[];
  /** The first line of the failing cell's code, exactly; `""` when unknown. */
  firstLine: string;
  /** The failing cell's execution count, or `null` when unknown. */
  executionCount: number | null;
}

/** Options for {@linkcode CellCapture}. */
export interface CellCaptureOptions {
  /** The kernel's connection information. */
  connection: KernelConnectionInfo;
  /** Called for every failing cell. */
  onError: (error: CapturedCellError) => void;
  /**
   * Publishes something carrying `displayId` as its `transient.display_id`
   * (a `display_data` on the first attempt, an `update_display_data` on later
   * ones); {@linkcode CellCapture.start} waits until it comes back.
   */
  probe: (displayId: string, attempt: number) => Promise<void>;
  /** How long `start()` waits for the probe to come back, in milliseconds. @default {5000} */
  startTimeoutMs?: number;
  /** Milliseconds between probe attempts. @default {250} */
  probeIntervalMs?: number;
}

/** How many recent `execute_input` messages are remembered for pairing. */
const REMEMBERED_INPUTS = 64;
/** At most this many routing frames may precede the delimiter. */
const MAX_IDENTITY_FRAMES = 16;

/**
 * Captures failing cells from the kernel's own IOPub channel. Messages whose
 * header says they are not needed (outputs, streams, status) are skipped after
 * the header frame: their content is neither copied nor parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { CellCapture } from "./cell_capture.ts";
 * import { readConnectionInfo } from "./kernel_connection.ts";
 *
 * const capture = new CellCapture({
 *   connection: await readConnectionInfo("/tmp/kernel.json"),
 *   onError: (error) => console.log(error.executionCount, error.firstLine),
 *   probe: (displayId, attempt) =>
 *     Deno.jupyter.display({ "text/plain": "listening" }, { raw: true, display_id: displayId, update: attempt > 0 }),
 * });
 * await capture.start();
 * await capture.stop();
 * ```
 */
export class CellCapture {
  #options: CellCaptureOptions;
  #socket: ZmtpSocket | undefined;
  #signer: MessageSigner | undefined;
  #inputs = new Map<
    string,
    { firstLine: string; executionCount: number | null }
  >();
  #lastExecutionCount: number | null = null;
  #probeId: string | undefined;
  #probeSeen: PromiseWithResolvers<void> | undefined;
  #queue: Promise<void> = Promise.resolve();
  #stopped = false;

  /**
   * Creates a capture; nothing happens until {@linkcode CellCapture.start}.
   *
   * @param options Capture options.
   */
  constructor(options: CellCaptureOptions) {
    this.#options = options;
  }

  /** The execution count of the last cell seen, or `null`. */
  get lastExecutionCount(): number | null {
    return this.#lastExecutionCount;
  }

  /** Whether the socket is connected. */
  get live(): boolean {
    return this.#socket !== undefined && !this.#socket.closed;
  }

  /**
   * Connects to IOPub, subscribes, and waits until the subscription is live
   * (its own probe came back).
   *
   * @returns Once capture is live.
   * @throws {Error} When the connection fails or the probe does not come back in time.
   */
  async start(): Promise<void> {
    const { connection } = this.#options;
    this.#signer = await MessageSigner.create(
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
      },
    );
    await this.#socket.subscribe("");
    this.#probeId = `nbr-${crypto.randomUUID()}`;
    this.#probeSeen = Promise.withResolvers();
    const timeoutMs = this.#options.startTimeoutMs ?? 5000;
    const intervalMs = this.#options.probeIntervalMs ?? 250;
    const deadline = Date.now() + timeoutMs;
    let seen = false;
    this.#probeSeen.promise.then(() => seen = true);
    try {
      for (let attempt = 0; !seen; attempt++) {
        if (Date.now() >= deadline || this.#stopped) {
          throw new Error(
            `Kernel IOPub did not echo the probe within ${timeoutMs} ms`,
          );
        }
        await this.#options.probe(this.#probeId, attempt);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          this.#probeSeen.promise,
          new Promise((resolve) => timer = setTimeout(resolve, intervalMs)),
        ]);
        clearTimeout(timer);
      }
      if (this.#stopped) {
        throw new Error("Cell capture was stopped while starting");
      }
    } catch (error) {
      await this.stop();
      throw error;
    } finally {
      this.#probeId = undefined;
    }
  }

  /**
   * Closes the socket and forgets pending state. Idempotent.
   *
   * @returns Once the socket is closed.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#probeSeen?.resolve();
    await this.#socket?.close();
    await this.#queue;
  }

  /** Decides after each frame whether the rest of a message is worth reading. */
  #accept(frames: Uint8Array[]): boolean {
    const delimiter = findDelimiter(frames);
    if (delimiter < 0) return frames.length <= MAX_IDENTITY_FRAMES;
    if (frames.length !== delimiter + 3) return true;
    const type = peekHeader(frames)?.msg_type;
    return type === "execute_input" || type === "error" ||
      (this.#probeId !== undefined &&
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
        const executionCount = typeof content.execution_count === "number"
          ? content.execution_count
          : null;
        this.#lastExecutionCount = executionCount ?? this.#lastExecutionCount;
        this.#inputs.set(parentId, {
          firstLine: firstLineOf(code),
          executionCount,
        });
        if (this.#inputs.size > REMEMBERED_INPUTS) {
          this.#inputs.delete(this.#inputs.keys().next().value!);
        }
        break;
      }
      case "error": {
        const input = this.#inputs.get(parentId);
        this.#options.onError({
          ename: String(content.ename ?? "Error"),
          evalue: String(content.evalue ?? ""),
          traceback: Array.isArray(content.traceback)
            ? content.traceback.map(String)
            : [],
          firstLine: input?.firstLine ?? "",
          executionCount: input?.executionCount ?? null,
        });
        break;
      }
      case "display_data":
      case "update_display_data": {
        const transient = content.transient as
          | { display_id?: unknown }
          | undefined;
        if (
          this.#probeId !== undefined && transient?.display_id === this.#probeId
        ) {
          this.#probeSeen?.resolve();
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
 * import { firstLineOf } from "./cell_capture.ts";
 *
 * console.log(firstLineOf("// load data\nconst x = 1;")); // "// load data"
 * ```
 */
export function firstLineOf(code: string): string {
  const end = code.indexOf("\n");
  const line = end < 0 ? code : code.slice(0, end);
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
