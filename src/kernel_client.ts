/**
 * The project's own small Jupyter client for the Deno kernel: it starts a
 * real `deno jupyter --kernel` on free loopback ports and drives it over its
 * shell (DEALER) and IOPub (SUB) sockets with HMAC-signed messages. Used by
 * tests, the demo and the benchmarks; not part of the in-kernel library.
 *
 * @module
 */

import {
  type JupyterMessage,
  makeHeader,
  MessageSigner,
  parseMessage,
  serializeMessage,
} from "./jupyter_message.ts";
import { ZmtpSocket } from "./zmtp.ts";
import type { ZmtpWorkerEvent, ZmtpWorkerRequest } from "./zmtp_worker.ts";

/** Options for {@linkcode startKernel}. */
export interface StartKernelOptions {
  /** The kernel's working directory. @default {Deno.cwd()} */
  cwd?: string;
  /** Extra environment variables for the kernel. @default {{}} */
  env?: Record<string, string>;
  /** The deno executable. @default {Deno.execPath()} */
  deno?: string;
  /** How long to wait for the kernel's `kernel_info_reply`, in milliseconds. @default {30000} */
  startTimeoutMs?: number;
  /** Whether the kernel's stderr goes to this process's stderr. @default {false} */
  inheritStderr?: boolean;
}

/** Options for {@linkcode KernelClient.execute}. */
export interface ExecuteOptions {
  /** How long to wait for the reply and the idle status, in milliseconds. @default {60000} */
  timeoutMs?: number;
}

/** The outcome of one execute request. */
export interface ExecuteResult {
  /** `ok` or `error` (from `execute_reply`). */
  status: string;
  /** The cell's execution count. */
  executionCount: number | null;
  /**
   * The IOPub messages whose parent is this request (except `status`), in
   * arrival order. The array stays live: the Deno kernel publishes stream
   * output and `execute_result` after the idle status, so late outputs are
   * appended as they arrive (for the client's 200 most recent requests).
   */
  outputs: JupyterMessage[];
  /** The error content, when the cell failed. */
  error?: { ename: string; evalue: string; traceback: string[] };
  /** The execute request's msg_id. */
  msgId: string;
  /**
   * Whether the IOPub stream was reconnected while this request ran (the Deno
   * kernel can corrupt it under large outputs): some outputs may be missing.
   */
  iopubDisrupted: boolean;
  /** Milliseconds from sending the request to receiving both the reply and the idle status. */
  elapsedMs: number;
}

/** Listens to IOPub messages. */
export type IopubListener = (message: JupyterMessage) => void;

/** How long after `execute_reply` the idle status may still come, in milliseconds. */
const IDLE_GRACE_MS = 5000;

interface PendingExecute {
  reply?: JupyterMessage;
  idle: boolean;
  /** IOPub messages of this request may have been lost (the stream was reconnected). */
  disrupted: boolean;
  outputs: JupyterMessage[];
  done: PromiseWithResolvers<void>;
}

/**
 * A connection to a running kernel started by {@linkcode startKernel}.
 *
 * @example Run one cell
 * ```ts ignore
 * import { startKernel } from "./kernel_client.ts";
 *
 * const kernel = await startKernel();
 * const result = await kernel.execute("1 + 1");
 * console.log(result.status); // "ok"
 * await kernel.shutdown();
 * ```
 */
export class KernelClient {
  /** The connection file's path. */
  readonly connectionFile: string;
  /** The kernel process id. */
  readonly pid: number;
  #process: Deno.ChildProcess;
  #tempDir: string;
  #signer: MessageSigner;
  #session = crypto.randomUUID();
  #shell: ZmtpSocket | undefined;
  #iopub: Worker | undefined;
  #iopubDisruptions = 0;

  /** How often the IOPub stream had to be reconnected so far. */
  get iopubDisruptions(): number {
    return this.#iopubDisruptions;
  }

  #reconnecting: Promise<void> = Promise.resolve();
  #connection: { ip: string; iopub_port: number } = {
    ip: "127.0.0.1",
    iopub_port: 0,
  };
  #pending = new Map<string, PendingExecute>();
  #outputs = new Map<string, JupyterMessage[]>();
  #listeners = new Set<IopubListener>();
  #queue: Promise<void> = Promise.resolve();
  #closed = false;
  #exited: Promise<Deno.CommandStatus>;

  private constructor(
    process: Deno.ChildProcess,
    tempDir: string,
    connectionFile: string,
    signer: MessageSigner,
  ) {
    this.#process = process;
    this.pid = process.pid;
    this.#tempDir = tempDir;
    this.connectionFile = connectionFile;
    this.#signer = signer;
    this.#exited = process.status;
  }

  /** @internal Used by {@linkcode startKernel}. */
  static async _start(options: StartKernelOptions): Promise<KernelClient> {
    const tempDir = await Deno.makeTempDir({ prefix: "nbr-kernel-" });
    const ports = freePorts(5);
    const key = crypto.randomUUID();
    const connection = {
      transport: "tcp",
      ip: "127.0.0.1",
      shell_port: ports[0],
      iopub_port: ports[1],
      stdin_port: ports[2],
      control_port: ports[3],
      hb_port: ports[4],
      key,
      signature_scheme: "hmac-sha256",
      kernel_name: "deno",
    };
    const connectionFile = `${tempDir}/connection.json`;
    await Deno.writeTextFile(connectionFile, JSON.stringify(connection));
    const process = new Deno.Command(options.deno ?? Deno.execPath(), {
      args: ["jupyter", "--kernel", "--conn", connectionFile],
      cwd: options.cwd,
      env: options.env,
      stdin: "null",
      stdout: "null",
      stderr: options.inheritStderr ? "inherit" : "null",
    }).spawn();
    const signer = await MessageSigner.create(key, "hmac-sha256");
    const client = new KernelClient(process, tempDir, connectionFile, signer);
    try {
      await client.#connect(connection, options.startTimeoutMs ?? 30_000);
    } catch (error) {
      await client.shutdown();
      throw error;
    }
    return client;
  }

  async #connect(
    connection: { ip: string; shell_port: number; iopub_port: number },
    timeoutMs: number,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.#exited.then(() => exited = true);
    const retry = async <T>(attempt: () => Promise<T>): Promise<T> => {
      while (true) {
        try {
          return await attempt();
        } catch (error) {
          if (exited) throw new Error("Kernel process exited during start-up");
          if (Date.now() > deadline) {
            throw new Error(
              `Kernel did not start within ${timeoutMs} ms: ${error}`,
            );
          }
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    };
    this.#shell = await retry(() =>
      ZmtpSocket.connect({
        transport: "tcp",
        ip: connection.ip,
        port: connection.shell_port,
      }, {
        type: "DEALER",
        identity: new TextEncoder().encode(this.#session),
        onMessage: (frames) => this.#enqueue(frames, "shell"),
      })
    );
    this.#connection = connection;
    this.#iopub = await retry(() => this.#startIopubWorker(connection));
    // The subscription is live once the kernel's IOPub status for our request comes back.
    await retry(async () => {
      const msgId = await this.#sendShell("kernel_info_request", {});
      const statusSeen = Promise.withResolvers<void>();
      const stop = this.onIopub((message) => {
        if (message.parent_header.msg_id === msgId) statusSeen.resolve();
      });
      try {
        await withTimeout(statusSeen.promise, 1000, "kernel_info status");
      } finally {
        stop();
      }
    });
  }

  /**
   * Adds an IOPub listener, called for every (verified) IOPub message.
   *
   * @param listener The listener.
   * @returns A function removing the listener.
   */
  onIopub(listener: IopubListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Waits for an IOPub message matching `predicate`.
   *
   * @param predicate Which message.
   * @param timeoutMs How long to wait, in milliseconds.
   * @returns The first matching message.
   * @throws {Error} On timeout.
   */
  waitForIopub(
    predicate: (message: JupyterMessage) => boolean,
    timeoutMs = 10_000,
  ): Promise<JupyterMessage> {
    const found = Promise.withResolvers<JupyterMessage>();
    const stop = this.onIopub((message) => {
      if (predicate(message)) found.resolve(message);
    });
    return withTimeout(found.promise, timeoutMs, "IOPub message").finally(stop);
  }

  /**
   * Executes one cell and waits for its `execute_reply` and its idle status.
   *
   * @param code The cell source.
   * @param options Execute options.
   * @returns The result.
   * @throws {Error} On timeout or when the kernel has exited.
   */
  async execute(
    code: string,
    options: ExecuteOptions = {},
  ): Promise<ExecuteResult> {
    const started = performance.now();
    const header = makeHeader("execute_request", this.#session);
    const pending: PendingExecute = {
      idle: false,
      disrupted: false,
      outputs: [],
      done: Promise.withResolvers(),
    };
    this.#pending.set(header.msg_id, pending);
    this.#outputs.set(header.msg_id, pending.outputs);
    if (this.#outputs.size > 200) {
      this.#outputs.delete(this.#outputs.keys().next().value!);
    }
    try {
      await this.#send(header, {
        code,
        silent: false,
        store_history: true,
        user_expressions: {},
        allow_stdin: false,
        stop_on_error: false,
      });
      const exited = this.#exited.then(() => {
        throw new Error("Kernel process exited while executing a cell");
      });
      exited.catch(() => {});
      await withTimeout(
        Promise.race([pending.done.promise, exited]),
        options.timeoutMs ?? 60_000,
        "execute",
      );
    } finally {
      this.#pending.delete(header.msg_id);
    }
    const content = pending.reply!.content;
    const errorOutput = pending.outputs.find((message) =>
      message.header.msg_type === "error"
    );
    const errorContent = errorOutput?.content ??
      (content.status === "error" ? content : undefined);
    return {
      status: String(content.status),
      executionCount: typeof content.execution_count === "number"
        ? content.execution_count
        : null,
      outputs: pending.outputs,
      error: errorContent === undefined ? undefined : {
        ename: String(errorContent.ename),
        evalue: String(errorContent.evalue),
        traceback: Array.isArray(errorContent.traceback)
          ? errorContent.traceback.map(String)
          : [],
      },
      msgId: header.msg_id,
      elapsedMs: performance.now() - started,
      iopubDisrupted: pending.disrupted,
    };
  }

  /**
   * Stops the kernel process, closes the sockets and removes the temporary files. Idempotent.
   *
   * @returns Once everything is released.
   */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#shell?.close();
    await this.#reconnecting;
    if (this.#iopub !== undefined) {
      const closed = Promise.withResolvers<void>();
      this.#iopub.onmessage = (event: MessageEvent<ZmtpWorkerEvent>) => {
        if (event.data.type === "closed") closed.resolve();
      };
      this.#iopub.postMessage({ type: "close" } satisfies ZmtpWorkerRequest);
      await withTimeout(closed.promise, 2000, "IOPub worker close").catch(
        () => {},
      );
      this.#iopub.terminate();
    }
    try {
      this.#process.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.#exited;
    await Deno.remove(this.#tempDir, { recursive: true }).catch(() => {});
  }

  /**
   * The Deno kernel's publisher can cut a large message short, which breaks
   * the stream's framing: reconnect. Requests in flight may have lost their
   * idle status, so they complete on their `execute_reply` alone
   * (`ExecuteResult.iopubDisrupted`).
   */
  #onIopubLost(worker: Worker): void {
    worker.terminate();
    if (this.#iopub !== worker) return;
    this.#iopub = undefined;
    this.#iopubDisruptions++;
    for (const pending of this.#pending.values()) {
      pending.disrupted = true;
      if (pending.reply !== undefined) pending.done.resolve();
    }
    const reconnect = async (): Promise<void> => {
      for (let attempt = 0; attempt < 20 && !this.#closed; attempt++) {
        try {
          const next = await this.#startIopubWorker(this.#connection);
          if (this.#closed) {
            next.terminate();
            return;
          }
          this.#iopub = next;
          return;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    };
    this.#reconnecting = reconnect();
  }

  /** Reads IOPub in a worker, which drains the socket even while this thread parses. */
  async #startIopubWorker(
    connection: { ip: string; iopub_port: number },
  ): Promise<Worker> {
    const worker = new Worker(new URL("./zmtp_worker.ts", import.meta.url), {
      type: "module",
    });
    const ready = Promise.withResolvers<void>();
    worker.onmessage = (event: MessageEvent<ZmtpWorkerEvent>) => {
      const data = event.data;
      if (data.type === "message") this.#enqueue(data.frames, "iopub");
      else if (data.type === "ready") ready.resolve();
      else if (data.type === "failed") ready.reject(new Error(data.message));
      else if (data.type === "closed" && !this.#closed) {
        this.#onIopubLost(worker);
      }
    };
    worker.postMessage(
      {
        type: "connect",
        endpoint: {
          transport: "tcp",
          ip: connection.ip,
          port: connection.iopub_port,
        },
        socketType: "SUB",
      } satisfies ZmtpWorkerRequest,
    );
    try {
      await withTimeout(ready.promise, 5000, "IOPub worker");
    } catch (error) {
      worker.terminate();
      throw error;
    }
    return worker;
  }

  async #sendShell(
    msgType: string,
    content: Record<string, unknown>,
  ): Promise<string> {
    const header = makeHeader(msgType, this.#session);
    await this.#send(header, content);
    return header.msg_id;
  }

  async #send(
    header: ReturnType<typeof makeHeader>,
    content: Record<string, unknown>,
  ) {
    const frames = await serializeMessage(
      { header, parent_header: {}, metadata: {}, content },
      this.#signer,
    );
    await this.#shell!.send(frames);
  }

  /** Parses messages in arrival order (signature checks are async). */
  #enqueue(frames: Uint8Array[], channel: "iopub" | "shell"): void {
    this.#queue = this.#queue.then(async () => {
      const message = await parseMessage(frames, this.#signer);
      if (message === undefined) return;
      if (channel === "shell") this.#onShell(message);
      else this.#onIopub(message);
    });
  }

  #onShell(message: JupyterMessage): void {
    const pending = this.#pending.get(message.parent_header.msg_id ?? "");
    if (pending === undefined || message.header.msg_type !== "execute_reply") {
      return;
    }
    pending.reply = message;
    if (pending.idle || pending.disrupted) {
      pending.done.resolve();
      return;
    }
    // The idle status normally comes with the reply; the Deno kernel can drop
    // IOPub messages under large outputs, so do not wait for it forever.
    const timer = setTimeout(() => {
      pending.disrupted = true;
      pending.done.resolve();
    }, IDLE_GRACE_MS);
    pending.done.promise.then(() => clearTimeout(timer));
  }

  #onIopub(message: JupyterMessage): void {
    const parentId = message.parent_header.msg_id ?? "";
    const pending = this.#pending.get(parentId);
    if (message.header.msg_type === "status") {
      if (pending !== undefined && message.content.execution_state === "idle") {
        pending.idle = true;
        if (pending.reply !== undefined) pending.done.resolve();
      }
    } else {
      this.#outputs.get(parentId)?.push(message);
    }
    for (const listener of this.#listeners) {
      try {
        listener(message);
      } catch {
        // a listener's failure must not stop the others
      }
    }
  }
}

/**
 * Starts a real `deno jupyter --kernel` on free loopback ports and connects to it.
 *
 * @param options Start options.
 * @returns The connected client, once the kernel answered `kernel_info_request`.
 * @throws {Error} When the kernel does not start in time.
 *
 * @example Usage
 * ```ts ignore
 * import { startKernel } from "./kernel_client.ts";
 *
 * const kernel = await startKernel({ cwd: "/tmp" });
 * await kernel.shutdown();
 * ```
 */
export function startKernel(
  options: StartKernelOptions = {},
): Promise<KernelClient> {
  return KernelClient._start(options);
}

/** Options for {@linkcode runNotebook}. */
export interface RunNotebookOptions extends StartKernelOptions {
  /** Write the outputs back into the notebook file. @default {false} */
  writeOutputs?: boolean;
  /** Timeout per cell, in milliseconds. @default {60000} */
  cellTimeoutMs?: number;
  /** Milliseconds to wait after the last cell for late output (timers). @default {0} */
  settleMs?: number;
  /**
   * Milliseconds to pause after each failing cell, as a person reading the
   * error would: the reporter's display then lands under the failing cell
   * rather than under the next one. @default {0}
   */
  pauseAfterErrorMs?: number;
  /** A kernel to use instead of starting one (it is not shut down). @default {undefined} */
  kernel?: KernelClient;
}

/** One executed notebook cell. */
export interface NotebookCellResult {
  /** The index of the cell in the notebook's `cells`. */
  index: number;
  /** The cell source. */
  source: string;
  /** The execute result. */
  result: ExecuteResult;
}

/**
 * Executes an `.ipynb` file's code cells in order in a fresh kernel (by default
 * started in the notebook's folder) and optionally writes the outputs back.
 *
 * @param path The notebook's path.
 * @param options Run options.
 * @returns The per-cell results.
 * @throws {Error} When the notebook cannot be read or a cell times out.
 *
 * @example Usage
 * ```ts ignore
 * import { runNotebook } from "./kernel_client.ts";
 *
 * const cells = await runNotebook("examples/error_store.ipynb", { writeOutputs: true });
 * console.log(cells.map((cell) => cell.result.status));
 * ```
 */
export async function runNotebook(
  path: string,
  options: RunNotebookOptions = {},
): Promise<NotebookCellResult[]> {
  const notebook = JSON.parse(await Deno.readTextFile(path));
  const folder = path.includes("/")
    ? path.slice(0, path.lastIndexOf("/")) || "/"
    : ".";
  const kernel = options.kernel ??
    await startKernel({ cwd: folder, ...options });
  const results: NotebookCellResult[] = [];
  try {
    for (
      const [index, cell] of (notebook.cells as Record<string, unknown>[])
        .entries()
    ) {
      if (cell.cell_type !== "code") continue;
      const source = Array.isArray(cell.source)
        ? cell.source.join("")
        : String(cell.source);
      const result = await kernel.execute(source, {
        timeoutMs: options.cellTimeoutMs,
      });
      results.push({ index, source, result });
      if (options.pauseAfterErrorMs && result.status === "error") {
        await new Promise((resolve) =>
          setTimeout(resolve, options.pauseAfterErrorMs)
        );
      }
    }
    if (options.settleMs) {
      await new Promise((resolve) => setTimeout(resolve, options.settleMs));
    }
  } finally {
    if (options.kernel === undefined) await kernel.shutdown();
  }
  if (options.writeOutputs) {
    for (const { index, result } of results) {
      const cell = notebook.cells[index];
      cell.execution_count = result.executionCount;
      cell.outputs = result.outputs.flatMap(toNotebookOutput);
    }
    await Deno.writeTextFile(path, JSON.stringify(notebook, null, 1) + "\n");
  }
  return results;
}

function toNotebookOutput(message: JupyterMessage): Record<string, unknown>[] {
  const content = message.content;
  switch (message.header.msg_type) {
    case "stream":
      return [{
        output_type: "stream",
        name: content.name,
        text: content.text,
      }];
    case "display_data":
      return [{
        output_type: "display_data",
        data: content.data,
        metadata: content.metadata ?? {},
      }];
    case "execute_result":
      return [{
        output_type: "execute_result",
        data: content.data,
        metadata: content.metadata ?? {},
        execution_count: content.execution_count,
      }];
    case "error":
      return [{
        output_type: "error",
        ename: content.ename,
        evalue: content.evalue,
        traceback: content.traceback,
      }];
    default:
      return [];
  }
}

function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((listener) =>
    (listener.addr as Deno.NetAddr).port
  );
  for (const listener of listeners) listener.close();
  return ports;
}

function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
