/**
 * The in-kernel IOPub listener: a SUB socket on the kernel's own IOPub channel
 * (run in a worker, see `iopub_worker.ts`) that pairs every `error` message
 * with the `execute_input` of the same request, so a failing cell's first
 * line and execution count are known.
 *
 * @module
 */

import {
  IopubReader,
  type IopubWorkerEvent,
  type IopubWorkerRequest,
  wakeReader,
} from "./iopub_worker.ts";
import type { KernelConnectionInfo } from "./kernel_connection.ts";

export { firstLineOf } from "./iopub_worker.ts";

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
  /**
   * Publishes an invisible marker: an `update_display_data` for `displayId`,
   * a display id that was never shown (frontends ignore it). Used by
   * {@linkcode CellCapture.sync}.
   */
  marker: (displayId: string) => Promise<void>;
  /** Called once if the IOPub connection ends without {@linkcode CellCapture.stop}. @default {undefined} */
  onClosed?: (message?: string) => void;
  /** How long `start()` waits for the probe to come back, in milliseconds. @default {5000} */
  startTimeoutMs?: number;
  /** Milliseconds between probe attempts. @default {250} */
  probeIntervalMs?: number;
}

/** How many recent `execute_input` messages are remembered for pairing. */
const REMEMBERED_INPUTS = 64;

/** One IOPub reader: on the main thread, or in the worker. */
interface Source {
  /** Sends a request; resolves with the answering event. */
  request(request: IopubWorkerRequest): Promise<IopubWorkerEvent>;
  /** Ends the source (after a `stop` request, or at once). */
  terminate(): void;
}

/**
 * Captures failing cells from the kernel's own IOPub channel. It starts with
 * a reader on the main thread (live within tens of milliseconds) and hands
 * over to a reader in a worker as soon as that one is live (starting a worker
 * takes about a second in the kernel): the worker drains the socket even while
 * a cell keeps the main thread busy, which the kernel's publisher needs for
 * large outputs. Messages whose header says they are not needed (outputs,
 * streams, status) are skipped after the header frame, their content neither
 * copied nor parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { CellCapture } from "./cell_capture.ts";
 * import { readConnectionInfo } from "./kernel_connection.ts";
 *
 * const show = (id: string, update: boolean) =>
 *   Deno.jupyter.display({ "text/plain": "listening" }, { raw: true, display_id: id, update });
 * const capture = new CellCapture({
 *   connection: await readConnectionInfo("/tmp/kernel.json"),
 *   onError: (error) => console.log(error.executionCount, error.firstLine),
 *   probe: (id, attempt) => show(id, attempt > 0),
 *   marker: (id) => show(id, true),
 * });
 * await capture.start();
 * await capture.stop();
 * ```
 */
export class CellCapture {
  #options: CellCaptureOptions;
  #sources = new Set<Source>();
  #worker: Worker | undefined;
  #workerSource: Source | undefined;
  #workerWaiters = new Map<string, (event: IopubWorkerEvent) => void>();
  #acks = new Map<string, Promise<void>>();
  #handover: Promise<void> | undefined;
  #inputs = new Map<
    string,
    { firstLine: string; executionCount: number | null }
  >();
  #reported = new Set<string>();
  #lastExecutionCount: number | null = null;
  #markers = new Map<string, () => void>();
  #stopped = false;

  /**
   * Creates a capture; nothing happens until {@linkcode CellCapture.start}.
   *
   * @param options Capture options.
   */
  constructor(options: CellCaptureOptions) {
    this.#options = options;
  }

  /**
   * The execution count of the last cell seen, or `null`. The worker reader
   * does not report every cell (that would wake the kernel's main thread on
   * each one): it is current after {@linkcode CellCapture.sync}.
   */
  get lastExecutionCount(): number | null {
    return this.#lastExecutionCount;
  }

  /**
   * Connects to IOPub on the main thread, subscribes, and waits until the
   * subscription is live (its own probe came back); then starts the worker
   * reader in the background.
   *
   * @returns Once capture is live.
   * @throws {Error} When the connection fails or the probe does not come back in time.
   */
  async start(): Promise<void> {
    const timeoutMs = this.#options.startTimeoutMs ?? 5000;
    const intervalMs = this.#options.probeIntervalMs ?? 250;
    const deadline = Date.now() + timeoutMs;
    const local = this.#localSource();
    const probeId = `nbr-${crypto.randomUUID()}`;
    try {
      const started = await withTimeout(
        local.request({ type: "start", connection: this.#options.connection }),
        timeoutMs,
        "Kernel IOPub connection",
      );
      if (started.type === "failed") {
        throw new Error(
          `Cannot subscribe to the kernel's IOPub: ${started.message}`,
        );
      }
      this.#sources.add(local);
      const seen = this.#expectOn([local], probeId);
      await Promise.resolve();
      let echoed = false;
      seen.then(() => echoed = true);
      for (let attempt = 0; !echoed; attempt++) {
        if (Date.now() >= deadline || this.#stopped) {
          throw new Error(
            `Kernel IOPub did not echo the probe within ${timeoutMs} ms`,
          );
        }
        await this.#options.probe(probeId, attempt);
        await raceTimeout(seen, intervalMs);
      }
      if (this.#stopped) {
        throw new Error("Cell capture was stopped while starting");
      }
    } catch (error) {
      await this.stop();
      throw error;
    } finally {
      this.#markers.delete(probeId);
    }
    this.#handover = this.#startWorker(local).catch(() => {
      // The worker could not start: the main-thread reader stays in charge.
      this.#worker?.terminate();
      this.#worker = undefined;
    });
  }

  /**
   * Waits until every IOPub message published before this call has been
   * processed (so {@linkcode CellCapture.lastExecutionCount} is current): it
   * publishes an invisible marker and waits for it to come back.
   *
   * @param timeoutMs How long to wait at most, in milliseconds.
   * @returns Whether the marker came back in time.
   */
  async sync(timeoutMs = 1000): Promise<boolean> {
    if (this.#sources.size === 0) return false;
    const markerId = `nbr-sync-${crypto.randomUUID()}`;
    try {
      const seen = this.#expectOn([...this.#sources], markerId);
      // Let every source acknowledge before the marker is published.
      await withTimeout(
        this.#acknowledged(markerId),
        timeoutMs,
        "IOPub reader",
      );
      await this.#options.marker(markerId);
      return await raceTimeout(seen, timeoutMs);
    } catch {
      return false;
    } finally {
      this.#forget(markerId);
    }
  }

  /**
   * Closes the sockets and ends the worker. Idempotent.
   *
   * @returns Once every reader is gone.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const resolve of this.#markers.values()) resolve();
    // A worker still starting is ended at once; its pending requests fail.
    if (this.#worker !== undefined && !this.#sources.has(this.#workerSource!)) {
      this.#worker.terminate();
      for (const waiter of this.#workerWaiters.values()) {
        waiter({ type: "failed", message: "stopped" });
      }
    }
    await this.#handover;
    const sources = [...this.#sources];
    this.#sources.clear();
    await Promise.all(sources.map(async (source) => {
      try {
        await withTimeout(
          source.request({ type: "stop" }),
          2000,
          "IOPub reader stop",
        );
      } catch {
        // terminated below either way
      }
      source.terminate();
    }));
    this.#worker?.terminate();
    this.#worker = undefined;
  }

  /** The main-thread reader. */
  #localSource(): Source {
    const waiters = new Map<string, (event: IopubWorkerEvent) => void>();
    // Only briefly in charge (until the worker's handover): it may post every
    // input and read without coalescing, which keeps loadExtension() fast.
    const reader = new IopubReader((event) => {
      if (!answer(waiters, event)) this.#onEvent(event);
    }, { postInputs: true, coalesceMs: 0 });
    const source: Source = {
      request: (request) => {
        if (request.type === "forget") {
          reader.handle(request).catch(() => {});
          return Promise.resolve({ type: "stopped" });
        }
        const answered = Promise.withResolvers<IopubWorkerEvent>();
        waiters.set(waitKey(request), answered.resolve);
        reader.handle(request).catch(() => {});
        return answered.promise;
      },
      terminate: () => {
        this.#sources.delete(source);
      },
    };
    return source;
  }

  /** Starts the worker reader and, once its subscription is live, retires `local`. */
  async #startWorker(local: Source): Promise<void> {
    const worker = new Worker(new URL("./iopub_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#worker = worker;
    // The worker's reader waits out its pauses blocked on this flag; each
    // request raises it, so none waits for a pause to end.
    const wake = new Int32Array(new SharedArrayBuffer(4));
    const post = (request: IopubWorkerRequest) => {
      worker.postMessage(request);
      wakeReader(wake);
    };
    const waiters = this.#workerWaiters;
    worker.onmessage = (message: MessageEvent<IopubWorkerEvent>) => {
      if (!answer(waiters, message.data)) this.#onEvent(message.data);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      for (const waiter of waiters.values()) {
        waiter({ type: "failed", message: event.message });
      }
      waiters.clear();
    };
    const source: Source = {
      request: (request) => {
        if (request.type === "forget") {
          post(request);
          return Promise.resolve({ type: "stopped" });
        }
        const answered = Promise.withResolvers<IopubWorkerEvent>();
        waiters.set(waitKey(request), answered.resolve);
        post(request.type === "start" ? { ...request, wake } : request);
        return answered.promise;
      },
      terminate: () => {
        this.#sources.delete(source);
        worker.terminate();
        wakeReader(wake);
      },
    };
    this.#workerSource = source;
    const started = await withTimeout(
      source.request({ type: "start", connection: this.#options.connection }),
      10_000,
      "IOPub worker",
    );
    if (started.type === "failed" || this.#stopped) {
      throw new Error(`IOPub worker did not start: ${JSON.stringify(started)}`);
    }
    // Live once its own marker comes back; until then both readers run, and
    // errors are reported once (by request id).
    this.#sources.add(source);
    const markerId = `nbr-handover-${crypto.randomUUID()}`;
    try {
      const seen = this.#expectOn([source], markerId);
      await withTimeout(this.#acknowledged(markerId), 5000, "IOPub worker");
      for (let attempt = 0; attempt < 20 && !this.#stopped; attempt++) {
        await this.#options.marker(markerId);
        if (await raceTimeout(seen, 250)) {
          await local.request({ type: "stop" });
          local.terminate();
          return;
        }
      }
      throw new Error("IOPub worker did not see its marker");
    } catch (error) {
      this.#sources.delete(source);
      throw error;
    } finally {
      this.#forget(markerId);
    }
  }

  /** Registers a marker id with `sources`; resolves when any of them sees it. */
  #expectOn(sources: Source[], id: string): Promise<void> {
    const seen = Promise.withResolvers<void>();
    this.#markers.set(id, seen.resolve);
    this.#acks.set(
      id,
      Promise.all(
        sources.map((source) => source.request({ type: "expect", id })),
      ).then(
        () => {},
      ),
    );
    return seen.promise;
  }

  #acknowledged(id: string): Promise<void> {
    return this.#acks.get(id) ?? Promise.resolve();
  }

  #forget(id: string): void {
    this.#markers.delete(id);
    this.#acks.delete(id);
    for (const source of this.#sources) {
      source.request({ type: "forget", id }).catch(() => {});
    }
  }

  #onEvent(event: IopubWorkerEvent): void {
    switch (event.type) {
      case "marker":
        // The count of the last cell published before the marker.
        if (event.executionCount !== null) {
          this.#lastExecutionCount = event.executionCount;
        }
        this.#markers.get(event.id)?.();
        break;
      case "input":
        if (!this.#inputs.has(event.parentId)) {
          this.#inputs.set(event.parentId, {
            firstLine: event.firstLine,
            executionCount: event.executionCount,
          });
          if (this.#inputs.size > REMEMBERED_INPUTS) {
            this.#inputs.delete(this.#inputs.keys().next().value!);
          }
        }
        if (event.executionCount !== null) {
          this.#lastExecutionCount = event.executionCount;
        }
        break;
      case "error": {
        // Both readers run for a moment during the handover: report once.
        if (this.#reported.has(event.parentId) && event.parentId !== "") break;
        this.#reported.add(event.parentId);
        if (this.#reported.size > REMEMBERED_INPUTS) {
          this.#reported.delete(this.#reported.keys().next().value!);
        }
        // The reader pairs the error with its cell; during the handover the
        // worker may not have seen the cell's input, the main-thread reader has.
        const input = event.executionCount === null && event.firstLine === ""
          ? this.#inputs.get(event.parentId)
          : event;
        const executionCount = input?.executionCount ?? null;
        if (
          executionCount !== null &&
          (this.#lastExecutionCount === null ||
            executionCount > this.#lastExecutionCount)
        ) {
          this.#lastExecutionCount = executionCount;
        }
        try {
          this.#options.onError({
            ename: event.ename,
            evalue: event.evalue,
            traceback: event.traceback,
            firstLine: input?.firstLine ?? "",
            executionCount,
          });
        } catch {
          // the consumer's failure must not stop capture
        }
        break;
      }
      case "closed":
        this.#options.onClosed?.(event.message);
        break;
    }
  }
}

/** The key under which a request's answer is awaited. */
function waitKey(request: IopubWorkerRequest): string {
  switch (request.type) {
    case "start":
      return "start";
    case "stop":
      return "stop";
    case "expect":
    case "forget":
      return `${request.type}:${request.id}`;
  }
}

/** Resolves a waiter for `event` if it is an answer; returns whether it was. */
function answer(
  waiters: Map<string, (event: IopubWorkerEvent) => void>,
  event: IopubWorkerEvent,
): boolean {
  let key: string | undefined;
  if (event.type === "connected" || event.type === "failed") key = "start";
  else if (event.type === "stopped") key = "stop";
  else if (event.type === "expecting") key = `expect:${event.id}`;
  if (key === undefined) return false;
  waiters.get(key)?.(event);
  waiters.delete(key);
  return true;
}

/** Resolves `true` when `promise` settles first, `false` after `timeoutMs`. */
async function raceTimeout(
  promise: Promise<void>,
  timeoutMs: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => true),
      new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(false), timeoutMs)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Rejects when `promise` does not settle within `timeoutMs`. */
async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(
          () =>
            reject(new Error(`${what} did not answer within ${timeoutMs} ms`)),
          timeoutMs,
        )
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
