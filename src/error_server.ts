/**
 * A reporter that posts each failing cell's payload to the project's own
 * collector server (or to the original Python tool's server: it speaks that
 * API), so that no Slack webhook ever sits in a shared notebook.
 *
 * @module
 */

import {
  type ErrorRecord,
  ErrorReporter,
  type ReporterOptions,
} from "./error_reporter.ts";
import type { TracebackFrame } from "./types.ts";

/** Options for {@linkcode ErrorServer}. */
export interface ErrorServerOptions extends ReporterOptions {
  /** How long one request to the collector may take, in milliseconds. @default {5000} */
  timeoutMs?: number;
  /** The `fetch` used to talk to the collector (tests inject one). @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** Reports held back at most while the collector asks to slow down (429); more are dropped. @default {20} */
  maxDeferred?: number;
}

/**
 * One report as the collector stored it (the Python tool's `Error` shape).
 *
 * @example Usage
 * ```ts
 * import type { StoredError } from "./error_server.ts";
 *
 * const error: StoredError = {
 *   id: 1,
 *   usage_uuid: "0123456789abcdef0123456789abcdef",
 *   timestamp: "2026-01-01T00:00:00.000Z",
 *   error_name: "Error",
 *   error_message: "boom",
 *   traceback: [],
 *   execution_count: 2,
 *   first_line: "boom()",
 * };
 * ```
 */
export interface StoredError {
  /** The report's id on the collector. */
  id: number;
  /** The session it belongs to. */
  usage_uuid: string;
  /** When the collector received it (ISO 8601). */
  timestamp: string;
  /** The error's class name. */
  error_name: string;
  /** The error's message. */
  error_message: string;
  /** The frames, outermost first. */
  traceback: TracebackFrame[];
  /** The failing cell's execution count. */
  execution_count: number | null;
  /** The failing cell's first line. */
  first_line: string;
}

interface Deferred {
  payload: Record<string, unknown>;
}

const TRAILING_SLASHES_REGEXP = /\/+$/;
const UUID_REGEXP = /^[0-9a-f]{32}$/;
const RETRY_AFTER_SECONDS_REGEXP = /^\d{1,7}$/;

/**
 * Reports failing cells to a collector server: creates a session when the
 * extension loads (`POST /usages/`), posts each payload to
 * `POST /errors/<uuid>/`, and reads this session's stored reports back with
 * {@linkcode ErrorServer.retrieveErrors}. Sending never blocks a cell. When
 * the collector answers 429, reports are held back until its `Retry-After`
 * has passed (at most `maxDeferred`, the rest dropped) and one warning line
 * says so; when the session reached its cap, further reports are dropped,
 * said once.
 *
 * @example Usage
 * ```ts ignore
 * import { ErrorServer } from "./error_server.ts";
 *
 * const reporter = new ErrorServer(Deno.env.get("NBR_COLLECTOR_URL")!, { notebook: "demo" });
 * await reporter.loadExtension();
 * ```
 */
export class ErrorServer extends ErrorReporter {
  #base: string;
  #url: URL | undefined;
  #timeoutMs: number;
  #fetch: typeof fetch;
  #maxDeferred: number;
  #session: Promise<string> | undefined;
  #uuid: string | undefined;
  #pending = new Set<Promise<unknown>>();
  #deferred: Deferred[] = [];
  #resumeAt = 0;
  #resumeTimer: ReturnType<typeof setTimeout> | undefined;
  #throttleAnnounced = false;
  #sessionFull = false;

  /**
   * Creates a collector reporter; nothing is sent before
   * {@linkcode ErrorReporter.loadExtension} (or a first report).
   *
   * @param url The collector's base URL, such as `https://errors.example.org`.
   * @param options Reporter and connection options.
   */
  constructor(url: string, options: ErrorServerOptions = {}) {
    super(options);
    this.#base = String(url).replace(TRAILING_SLASHES_REGEXP, "");
    try {
      const parsed = new URL(this.#base);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") {
        this.#url = parsed;
      }
    } catch {
      this.#url = undefined;
    }
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#maxDeferred = options.maxDeferred ?? 20;
  }

  /** This session's uuid on the collector, once created. */
  get sessionId(): string | undefined {
    return this.#uuid;
  }

  /**
   * Creates the session on the collector.
   *
   * @returns Once the session exists.
   * @throws {Error} When the collector cannot be reached or refuses.
   */
  protected override async prepare(): Promise<void> {
    await this.#ensureSession();
  }

  /**
   * Names the destination for the load notice: the collector's host only.
   *
   * @returns Such as `"the collector at errors.example.org"`.
   */
  protected describeDestination(): string {
    return `the collector at ${this.#url?.host ?? "an invalid URL"}`;
  }

  /**
   * Posts the record's payload to the collector (creating the session first
   * if loading could not).
   *
   * @param record The record.
   * @returns Once the collector stored it, or it was deferred or dropped quietly.
   * @throws {Error} When sending fails, and once when the collector starts refusing.
   */
  protected async deliver(record: ErrorRecord): Promise<void> {
    const { timestamp: _timestamp, traceback_text: _text, ...payload } = record;
    const send = this.#deliverPayload(payload);
    this.#pending.add(send);
    try {
      await send;
    } finally {
      this.#pending.delete(send);
    }
  }

  /**
   * Waits for sends in flight (each bounded by `timeoutMs`); reports still
   * held back for a 429 are dropped.
   *
   * @returns Once no send is pending.
   */
  protected override async dispose(): Promise<void> {
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    this.#resumeTimer = undefined;
    this.#deferred = [];
    await Promise.allSettled([...this.#pending]);
  }

  /**
   * The reports the collector stored for this session (`GET /usages/<uuid>`).
   *
   * @returns The stored reports, oldest first; empty when no session exists yet.
   * @throws {Error} When the collector cannot be reached or answers an error.
   */
  async retrieveErrors(): Promise<StoredError[]> {
    if (this.#uuid === undefined) return [];
    const response = await this.#request("GET", `/usages/${this.#uuid}`);
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(
        `the collector answered ${response.status} for this session's reports`,
      );
    }
    const usage = await response.json() as { errors?: StoredError[] };
    return Array.isArray(usage.errors) ? usage.errors : [];
  }

  #ensureSession(): Promise<string> {
    this.#session ??= this.#createSession().catch((error) => {
      this.#session = undefined;
      throw error;
    });
    return this.#session;
  }

  async #createSession(): Promise<string> {
    const response = await this.#request("POST", "/usages/", {
      notebook: this.notebook,
    });
    if (!response.ok) {
      const detail = await errorDetail(response);
      throw new Error(
        `the collector refused to open a session (${response.status}${detail})`,
      );
    }
    const usage = await response.json() as { uuid?: unknown };
    const uuid = typeof usage.uuid === "string" ? usage.uuid.toLowerCase() : "";
    if (!UUID_REGEXP.test(uuid)) {
      throw new Error("the collector's answer has no session uuid");
    }
    this.#uuid = uuid;
    return uuid;
  }

  async #deliverPayload(payload: Record<string, unknown>): Promise<void> {
    if (this.#sessionFull) return;
    if (Date.now() < this.#resumeAt) {
      this.#defer(payload);
      return;
    }
    const uuid = await this.#ensureSession();
    const response = await this.#request("POST", `/errors/${uuid}/`, payload);
    if (response.ok) {
      await response.body?.cancel();
      return;
    }
    const detail = await errorDetail(response);
    if (response.status !== 429) {
      throw new Error(`the collector answered ${response.status}${detail}`);
    }
    const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
    if (retryAfter === undefined) {
      this.#sessionFull = true;
      throw new Error(
        `the collector accepts no more reports from this session${detail}; further reports are dropped`,
      );
    }
    this.#resumeAt = Date.now() + retryAfter * 1000;
    this.#defer(payload);
    if (!this.#throttleAnnounced) {
      this.#throttleAnnounced = true;
      throw new Error(
        `the collector asked to slow down (429, retry after ${retryAfter} s); reports are held back until then (at most ${this.#maxDeferred}, more are dropped)`,
      );
    }
  }

  #defer(payload: Record<string, unknown>): void {
    if (this.#deferred.length < this.#maxDeferred) {
      this.#deferred.push({ payload });
    }
    if (this.#resumeTimer !== undefined) return;
    const delay = Math.max(0, this.#resumeAt - Date.now());
    const timer = setTimeout(() => {
      this.#resumeTimer = undefined;
      const batch = this.#deferred.splice(0);
      const resend = (async () => {
        for (const { payload } of batch) {
          // Quietly: the slow-down was already said; a new 429 defers again.
          await this.#deliverPayload(payload).catch(() => {});
        }
      })();
      this.#pending.add(resend);
      resend.finally(() => this.#pending.delete(resend));
    }, delay);
    this.#resumeTimer = timer;
    Deno.unrefTimer(timer);
  }

  async #request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<Response> {
    if (this.#url === undefined) {
      throw new Error("the collector URL is not a valid http(s) URL");
    }
    const init: RequestInit = {
      method,
      signal: AbortSignal.timeout(this.#timeoutMs),
      redirect: "error",
    };
    if (body !== undefined) {
      init.headers = { "content-type": "application/json" };
      init.body = JSON.stringify(body);
    }
    try {
      return await this.#fetch(`${this.#base}${path}`, init);
    } catch (error) {
      const reason = error instanceof Error && error.name === "TimeoutError"
        ? `no answer within ${this.#timeoutMs} ms`
        : "it could not be reached";
      throw new Error(`the collector at ${this.#url.host}: ${reason}`);
    }
  }
}

function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (RETRY_AFTER_SECONDS_REGEXP.test(trimmed)) {
    return Math.max(1, Number(trimmed));
  }
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(1, Math.ceil((date - Date.now()) / 1000));
}

async function errorDetail(response: Response): Promise<string> {
  try {
    const body = await response.json() as { detail?: unknown };
    return typeof body.detail === "string"
      ? `: ${body.detail.slice(0, 200)}`
      : "";
  } catch {
    return "";
  }
}
