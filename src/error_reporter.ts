/**
 * The reporter base class: loads the extension into the Deno Jupyter kernel,
 * turns every failing cell (and every error escaping cells later) into one
 * payload, shows what is sent, and hands it to a subclass for delivery.
 *
 * @module
 */

import { buildPayload } from "./build_payload.ts";
import { type CapturedCellError, CellCapture } from "./cell_capture.ts";
import { findConnectionFile, readConnectionInfo } from "./kernel_connection.ts";
import type { ErrorPayload, PayloadInput } from "./types.ts";

/**
 * Options shared by every reporter.
 *
 * @example Usage
 * ```ts
 * import type { ReporterOptions } from "./error_reporter.ts";
 *
 * const options: ReporterOptions = { notebook: "demo", quiet: true };
 * ```
 */
export interface ReporterOptions {
  /**
   * The notebook's name, as reported.
   * @default {the basename of `JPY_SESSION_NAME`, else `"unknown"`}
   */
  notebook?: string;
  /** Whether to skip the per-report display of the JSON sent (the load notice always shows). @default {false} */
  quiet?: boolean;
  /** The kernel's connection file, which overrides discovery from the command line. @default {undefined} */
  connectionFile?: string;
}

/**
 * One reported error as kept locally: the payload sent, plus local-only fields.
 *
 * @example Usage
 * ```ts
 * import { ErrorStore } from "./error_store.ts";
 * import type { ErrorRecord } from "./error_reporter.ts";
 *
 * const store = new ErrorStore({ quiet: true });
 * await store.report(new Error("boom"));
 * const record: ErrorRecord = store.errorDetails[0];
 * console.log(record.timestamp instanceof Date, record.traceback_text[0]); // true "Error: boom"
 * ```
 */
export interface ErrorRecord extends ErrorPayload {
  /** When the error was reported. */
  timestamp: Date;
  /** The unscrubbed traceback lines, kept local, never sent. */
  traceback_text: string[];
}

/**
 * Extra information for {@linkcode ErrorReporter.report}.
 *
 * @example Usage
 * ```ts
 * import type { ReportInfo } from "./error_reporter.ts";
 *
 * const info: ReportInfo = { firstLine: "load()", executionCount: 3 };
 * ```
 */
export interface ReportInfo {
  /** The first line of the failing code. @default {""} */
  firstLine?: string;
  /** The failing cell's execution count. @default {null} */
  executionCount?: number;
}

/** The payload fields, listed in the load notice. */
const SENT_FIELDS =
  "error_name, error_message, traceback (filename, fun_name, lineno of each frame), first_line, execution_count, notebook";
/** Prefix of every line the reporter prints. */
const PREFIX = "notebook-error-reporter";

/** The parts of `Deno.jupyter` used here, when running in the kernel. */
interface JupyterApi {
  display(
    obj: unknown,
    options?: { raw?: boolean; update?: boolean; display_id?: string },
  ): Promise<void>;
  broadcast(
    msgType: string,
    content: Record<string, unknown>,
  ): Promise<void> | void;
}

/**
 * Reports failing notebook cells. Subclasses decide where reports go
 * ({@linkcode ErrorReporter.deliver}) and how that destination is named in the
 * load notice ({@linkcode ErrorReporter.describeDestination}).
 *
 * @example A reporter that logs payloads
 * ```ts
 * import { ErrorReporter, type ErrorRecord } from "./error_reporter.ts";
 *
 * class LogReporter extends ErrorReporter {
 *   protected deliver(record: ErrorRecord): Promise<void> {
 *     console.log(record.error_name);
 *     return Promise.resolve();
 *   }
 *   protected describeDestination(): string {
 *     return "the log";
 *   }
 * }
 * await new LogReporter({ quiet: true }).report(new TypeError("x"));
 * ```
 */
export abstract class ErrorReporter {
  #notebook: string;
  #quiet: boolean;
  #connectionFile: string | undefined;
  #loading: Promise<void> | undefined;
  #capture: CellCapture | undefined;
  #lastExecutionCount: number | null = null;
  #noticeDisplayed = false;
  #listeners: {
    error: (event: ErrorEvent) => void;
    rejection: (event: PromiseRejectionEvent) => void;
  } | undefined;
  #generation = 0;

  /**
   * Creates a reporter; nothing is captured before {@linkcode ErrorReporter.loadExtension}.
   *
   * @param options Reporter options.
   */
  constructor(options: ReporterOptions = {}) {
    this.#notebook = options.notebook ?? defaultNotebookName();
    this.#quiet = options.quiet ?? false;
    this.#connectionFile = options.connectionFile;
  }

  /** The notebook name put in every payload. */
  get notebook(): string {
    return this.#notebook;
  }

  /**
   * Starts capturing: listens to the kernel's IOPub channel for failing cells
   * and to `error` / `unhandledrejection` for errors escaping cells later, and
   * displays the load notice once. Idempotent. Resolves once capture is live,
   * so a cell run right afterwards is captured. Outside a kernel, only the
   * global listeners are installed and one line says that cell capture is
   * unavailable; an escaped error still ends the process as usual, once its
   * report is delivered (at most 15 s later). Never rejects: problems become
   * one warning line.
   *
   * @returns Once capture is live (or known to be unavailable).
   *
   * @example Usage
   * ```ts
   * import { ErrorStore } from "./error_store.ts";
   *
   * const store = new ErrorStore({ notebook: "demo" });
   * await store.loadExtension(); // outside a kernel: one line says cell capture is unavailable
   * await store.unloadExtension();
   * ```
   */
  loadExtension(): Promise<void> {
    this.#loading ??= this.#load();
    return this.#loading;
  }

  /**
   * Stops capturing: closes the IOPub socket, removes the global listeners,
   * then lets the subclass flush ({@linkcode ErrorReporter.dispose}). Idempotent.
   *
   * @returns Once everything is released.
   */
  async unloadExtension(): Promise<void> {
    const loading = this.#loading;
    if (loading === undefined) return;
    this.#generation++;
    await loading;
    this.#loading = undefined;
    this.#removeListeners();
    const capture = this.#capture;
    this.#capture = undefined;
    await capture?.stop().catch(() => {});
    try {
      await this.dispose();
    } catch (error) {
      this.#warn(`could not finish pending reports: ${describe(error)}`);
    }
  }

  /**
   * Reports one error by hand (scripts, `try/catch`): builds the payload,
   * displays it (unless quiet) and delivers it. Never rejects: a delivery
   * failure becomes one warning line.
   *
   * @param error The error; a non-`Error` value is reported as `Error` with its string form.
   * @param info The failing code's first line and execution count.
   * @returns Once delivered (or failed).
   */
  report(error: unknown, info: ReportInfo = {}): Promise<void> {
    try {
      const { name, message, stack } = describeThrown(error);
      return this.#dispatch(
        {
          name,
          message,
          stack,
          firstLine: info.firstLine,
          executionCount: info.executionCount,
        },
        stack === "" ? [] : stack.split("\n"),
      );
    } catch (failure) {
      this.#warn(`could not report an error: ${describe(failure)}`);
      return Promise.resolve();
    }
  }

  /**
   * Delivers one record (sends or keeps it). A rejection becomes one warning line.
   *
   * @param record The record; its payload fields are exactly what may leave the machine.
   * @returns Once delivered.
   */
  protected abstract deliver(record: ErrorRecord): Promise<void>;

  /**
   * Names where reports go, host only, for the load notice, such as `Slack (hooks.slack.com)`.
   *
   * @returns The destination's description.
   */
  protected abstract describeDestination(): string;

  /**
   * Runs once in {@linkcode ErrorReporter.loadExtension} before capture starts.
   * A rejection becomes one warning line; capture still starts.
   *
   * @returns Once prepared.
   */
  protected prepare(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Runs in {@linkcode ErrorReporter.unloadExtension} after capture stopped (flush pending sends).
   *
   * @returns Once disposed.
   */
  protected dispose(): Promise<void> {
    return Promise.resolve();
  }

  async #load(): Promise<void> {
    const generation = this.#generation;
    try {
      await this.prepare();
    } catch (error) {
      this.#warn(`could not prepare reporting: ${describe(error)}`);
    }
    this.#installListeners();
    const jupyter = jupyterApi();
    const connectionFile =
      jupyter === undefined && this.#connectionFile === undefined
        ? undefined
        : await findConnectionFile({ connectionFile: this.#connectionFile });
    if (jupyter === undefined || connectionFile === undefined) {
      this.#warn(
        `cell capture is unavailable (not running in a Deno Jupyter kernel); uncaught errors are reported to ${this.#destination()}`,
      );
      return;
    }
    try {
      const connection = await readConnectionInfo(connectionFile);
      if (generation !== this.#generation) return;
      const capture = new CellCapture({
        connection,
        onError: (cellError) => this.#onCellError(cellError),
        probe: (displayId, attempt) =>
          this.#showNotice(jupyter, displayId, attempt),
        marker: (displayId) =>
          jupyter.display({ "text/plain": "" }, {
            raw: true,
            display_id: displayId,
            update: true,
          }),
      });
      this.#capture = capture;
      await capture.start();
    } catch (error) {
      this.#capture = undefined;
      if (!this.#noticeDisplayed) {
        // Escaped errors are still reported: say so, but never reject.
        await this.#showNotice(jupyter, undefined, 0).catch(() => {});
      }
      this.#warn(`cell capture is unavailable: ${describe(error)}`);
    }
  }

  async #showNotice(
    jupyter: JupyterApi,
    displayId: string | undefined,
    attempt: number,
  ): Promise<void> {
    const update = attempt > 0 || this.#noticeDisplayed;
    const text =
      `${PREFIX}: errors in this notebook's cells are reported to ${this.#destination()}. ` +
      `Sent per error: ${SENT_FIELDS} (notebook: ${
        JSON.stringify(this.#notebook)
      }). ` +
      "Home folders, user names and secrets are removed first; nothing else is sent.";
    const html =
      `<div style="font-size:0.85em;opacity:0.8">&#9888;&#65039; <b>${PREFIX}</b>: errors in ` +
      `this notebook's cells are reported to <b>${
        escapeHtml(this.#destination())
      }</b>.<br>` +
      `Sent per error: <code>${
        escapeHtml(SENT_FIELDS)
      }</code> (notebook: <code>${
        escapeHtml(JSON.stringify(this.#notebook))
      }</code>). Home folders, user names and secrets are removed first; nothing else is sent.</div>`;
    const options: { raw: boolean; display_id?: string; update?: boolean } = {
      raw: true,
    };
    if (displayId !== undefined) {
      options.display_id = displayId;
      options.update = update;
    }
    await jupyter.display({ "text/plain": text, "text/html": html }, options);
    this.#noticeDisplayed = true;
  }

  #onCellError(cellError: CapturedCellError): void {
    this.#lastExecutionCount = cellError.executionCount ??
      this.#lastExecutionCount;
    this.#dispatch({
      name: cellError.ename,
      message: cellError.evalue,
      traceback: cellError.traceback,
      firstLine: cellError.firstLine,
      executionCount: cellError.executionCount,
    }, cellError.traceback).catch(() => {});
  }

  #installListeners(): void {
    if (this.#listeners !== undefined) return;
    const onEscaped = async (error: unknown): Promise<void> => {
      // The error may fire before the current cell's execute_input was read
      // from IOPub: catch up first, so that "the last cell" is the right one.
      const capture = this.#capture;
      if (capture !== undefined) await capture.sync();
      const executionCount = capture?.lastExecutionCount ??
        this.#lastExecutionCount;
      await this.report(error, {
        firstLine: "",
        executionCount: executionCount ?? undefined,
      });
    };
    // In the kernel, an escaped error's default action does not show it
    // anywhere, but it stops the kernel from running the event loop between
    // cells (timers, pending reports) until the next cell runs, which then
    // can stall. preventDefault() keeps the loop running, so the report is
    // delivered at once; the error stays as invisible as before (bar the
    // report display). Outside a kernel the default action ends the process
    // before an asynchronous delivery (a post to Slack) could finish: it is
    // held until the report is delivered, then the error is thrown again,
    // so `deno run` still ends as it would without the reporter.
    const inKernel = jupyterApi() !== undefined;
    this.#listeners = {
      error: (event) => {
        const error = event.error ?? event.message;
        if (inKernel) {
          event.preventDefault();
          void onEscaped(error);
        } else if (!RELEASED_ERRORS.has(error)) {
          event.preventDefault();
          holdUntilReported(error, onEscaped(error), (value) => {
            setTimeout(() => {
              throw value;
            });
          });
        }
      },
      rejection: (event) => {
        const reason = event.reason;
        if (inKernel) {
          event.preventDefault();
          void onEscaped(reason);
        } else if (!RELEASED_ERRORS.has(reason)) {
          event.preventDefault();
          holdUntilReported(reason, onEscaped(reason), (value) => {
            Promise.reject(value);
          });
        }
      },
    };
    globalThis.addEventListener("error", this.#listeners.error);
    globalThis.addEventListener(
      "unhandledrejection",
      this.#listeners.rejection,
    );
  }

  #removeListeners(): void {
    if (this.#listeners === undefined) return;
    globalThis.removeEventListener("error", this.#listeners.error);
    globalThis.removeEventListener(
      "unhandledrejection",
      this.#listeners.rejection,
    );
    this.#listeners = undefined;
  }

  async #dispatch(
    input: Omit<PayloadInput, "notebook">,
    tracebackText: string[],
  ): Promise<void> {
    let record: ErrorRecord;
    try {
      const payload = buildPayload({ ...input, notebook: this.#notebook });
      record = {
        ...payload,
        timestamp: new Date(),
        traceback_text: tracebackText,
      };
      if (!this.#quiet) this.#showReport(payload);
    } catch (error) {
      this.#warn(`could not build an error report: ${describe(error)}`);
      return;
    }
    try {
      await this.deliver(record);
    } catch (error) {
      this.#warn(
        `could not send the error report to ${this.#destination()}: ${
          describe(error)
        }`,
      );
    }
  }

  #showReport(payload: ErrorPayload): void {
    const jupyter = jupyterApi();
    if (jupyter === undefined) return;
    const json = JSON.stringify(payload, null, 2);
    const cell = payload.execution_count === null
      ? ""
      : ` of cell [${payload.execution_count}]`;
    const summary = `${PREFIX}: error report${cell} to ${this.#destination()}`;
    const html =
      `<details style="font-size:0.85em;opacity:0.8"><summary>${
        escapeHtml(summary)
      }</summary>` +
      `<pre>${escapeHtml(json)}</pre></details>`;
    jupyter.display(
      { "text/plain": `${summary}:\n${json}`, "text/html": html },
      { raw: true },
    )
      .catch(() => {});
  }

  #destination(): string {
    try {
      return this.describeDestination();
    } catch {
      return "an unknown destination";
    }
  }

  /** The one documented warning path: a stderr stream line in the kernel, `console.warn` outside. */
  #warn(text: string): void {
    const line = `${PREFIX}: ${oneLine(text)}`;
    const jupyter = jupyterApi();
    if (jupyter === undefined) {
      console.warn(line);
      return;
    }
    try {
      // `broadcast` may return a promise or nothing, depending on the kernel version.
      Promise.resolve(
        jupyter.broadcast("stream", { name: "stderr", text: `${line}\n` }),
      )
        .catch(() => {});
    } catch {
      // the warning path itself must never throw
    }
  }
}

/**
 * The default notebook name: the basename of `JPY_SESSION_NAME`, else `"unknown"`.
 * Never prompts for the environment permission.
 *
 * @returns The name.
 *
 * @example Usage
 * ```ts
 * import { defaultNotebookName } from "./error_reporter.ts";
 *
 * console.log(typeof defaultNotebookName()); // "string"
 * ```
 */
export function defaultNotebookName(): string {
  try {
    const state =
      Deno.permissions.querySync({ name: "env", variable: "JPY_SESSION_NAME" })
        .state;
    if (state !== "granted") return "unknown";
    const session = Deno.env.get("JPY_SESSION_NAME")?.trim();
    if (!session) return "unknown";
    const base = session.split(PATH_SEPARATOR_REGEXP).filter((part) =>
      part !== ""
    ).pop();
    return base || "unknown";
  } catch {
    return "unknown";
  }
}

function jupyterApi(): JupyterApi | undefined {
  try {
    // `Deno.jupyter` throws outside `deno jupyter`.
    const jupyter = (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
    return typeof jupyter?.display === "function" &&
        typeof jupyter.broadcast === "function"
      ? jupyter
      : undefined;
  } catch {
    return undefined;
  }
}

function describeThrown(
  error: unknown,
): { name: string; message: string; stack: string } {
  if (error instanceof Error) {
    const name = String(error.name || "Error");
    const message = String(error.message ?? "");
    return {
      name,
      message,
      stack: typeof error.stack === "string"
        ? error.stack
        : `${name}: ${message}`,
    };
  }
  let message: string;
  try {
    message = String(error);
  } catch {
    message = Object.prototype.toString.call(error);
  }
  return { name: "Error", message, stack: "" };
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  try {
    return String(error);
  } catch {
    return "unknown error";
  }
}

function oneLine(text: string): string {
  const line = text.replace(LINE_BREAK_REGEXP, " ");
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}

/** The longest an escaped error's default action is held for its reports, outside a kernel. */
const HOLD_LIMIT_MS = 15_000;
/** Escaped errors (outside a kernel) → how many reporters are still delivering them. */
const HELD_ERRORS = new Map<unknown, number>();
/** Escaped errors thrown again after delivery: their default action (ending the process) proceeds. */
const RELEASED_ERRORS = new Set<unknown>();

/**
 * Holds an escaped error until every reporter that caught it has delivered
 * its report (at most {@linkcode HOLD_LIMIT_MS}), then calls `release` once
 * to raise it again.
 */
function holdUntilReported(
  error: unknown,
  reported: Promise<void>,
  release: (error: unknown) => void,
): void {
  HELD_ERRORS.set(error, (HELD_ERRORS.get(error) ?? 0) + 1);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, HOLD_LIMIT_MS);
  });
  Promise.race([reported, limit]).catch(() => {}).finally(() => {
    clearTimeout(timer);
    const left = (HELD_ERRORS.get(error) ?? 1) - 1;
    if (left > 0) {
      HELD_ERRORS.set(error, left);
      return;
    }
    HELD_ERRORS.delete(error);
    RELEASED_ERRORS.add(error);
    release(error);
  });
}

/** A `/` or `\\` between path segments. */
const PATH_SEPARATOR_REGEXP = /[\\/]/;
/** Any run of line breaks. */
const LINE_BREAK_REGEXP = /[\r\n]+/g;

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(
    ">",
    "&gt;",
  )
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}
