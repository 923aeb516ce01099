/**
 * Checkpoints a SQLite database in WAL mode from a worker thread, off the
 * event loop of the connection that writes. Used only by
 * `sqlite_storage.ts`.
 *
 * @module
 */

import { Worker } from "node:worker_threads";

/** What {@linkcode startCheckpointer} is told. */
export interface CheckpointerOptions {
  /** How often the worker checkpoints, in ms. */
  intervalMs: number;
  /** Called once the worker's connection is open. */
  onReady: () => void;
  /** Called when the worker cannot start or stopped working. */
  onFailure: (error: unknown) => void;
}

/** A running checkpointer. */
export interface Checkpointer {
  /** Closes the worker's connection and ends the thread. */
  stop(): Promise<void>;
}

/**
 * Starts a worker thread that checkpoints the database file every
 * `intervalMs`. The thread does not keep the process alive.
 *
 * @param path The database file.
 * @param options The interval and the callbacks.
 * @returns The checkpointer.
 */
export function startCheckpointer(
  path: string,
  options: CheckpointerOptions,
): Checkpointer {
  let failed = false;
  const fail = (error: unknown) => {
    if (failed) return;
    failed = true;
    options.onFailure(error);
  };
  const worker = new Worker(
    new URL("./_sqlite_checkpoint_worker.ts", import.meta.url),
  );
  const stopped = Promise.withResolvers<void>();
  worker.on("message", (message: unknown) => {
    if (message === "ready") options.onReady();
    else if (message === "stopped") stopped.resolve();
    else {fail(
        new Error(`SQLite checkpoint worker: ${JSON.stringify(message)}`),
      );}
  });
  worker.on("error", (error: unknown) => {
    fail(error);
    stopped.resolve();
  });
  worker.on("exit", () => stopped.resolve());
  worker.unref();
  worker.postMessage({ path, intervalMs: options.intervalMs });
  return {
    async stop(): Promise<void> {
      worker.ref();
      worker.postMessage("stop");
      const timeout = Promise.withResolvers<void>();
      const timer = setTimeout(timeout.resolve, 5000);
      await Promise.race([stopped.promise, timeout.promise]);
      clearTimeout(timer);
      await worker.terminate();
    },
  };
}
