/**
 * A reporter that keeps every captured error in memory, for the notebook's
 * own use: nothing leaves the machine.
 *
 * @module
 */

import {
  type ErrorRecord,
  ErrorReporter,
  type ReporterOptions,
} from "./error_reporter.ts";

/**
 * Keeps failing cells' reports locally in {@linkcode ErrorStore.errorDetails}.
 *
 * @example Usage
 * ```ts
 * import { ErrorStore } from "./error_store.ts";
 *
 * const store = new ErrorStore({ notebook: "demo", quiet: true });
 * await store.report(new RangeError("too big"), { firstLine: "grow()", executionCount: 3 });
 * console.log(store.errorDetails[0].error_name); // "RangeError"
 * ```
 */
export class ErrorStore extends ErrorReporter {
  /** The captured records, oldest first. */
  readonly errorDetails: ErrorRecord[] = [];

  /**
   * Creates a store.
   *
   * @param options Reporter options.
   */
  constructor(options: ReporterOptions = {}) {
    super(options);
  }

  /**
   * Appends the record to {@linkcode ErrorStore.errorDetails}.
   *
   * @param record The record.
   * @returns Once stored.
   */
  protected deliver(record: ErrorRecord): Promise<void> {
    this.errorDetails.push(record);
    return Promise.resolve();
  }

  /**
   * Names the destination for the load notice.
   *
   * @returns `"this notebook only (ErrorStore keeps them in memory)"`.
   */
  protected describeDestination(): string {
    return "this notebook only (ErrorStore keeps them in memory; nothing leaves the machine)";
  }
}
