/**
 * Posts a {@linkcode SlackMessage} to a Slack incoming webhook, bounded in
 * time and never throwing, and keeps the webhook's secret path out of every
 * message it produces.
 *
 * @module
 */

import type { SlackMessage } from "./slack_message.ts";

/**
 * What {@linkcode postSlackMessage} resolves to. `error` names the webhook's
 * host and, where there was one, the HTTP status; it never contains the
 * webhook's secret path or query.
 *
 * @example Usage
 * ```ts
 * import type { SlackPostResult } from "@nbr/notebook-error-reporter";
 *
 * const result: SlackPostResult = {
 *   ok: false,
 *   status: 429,
 *   retryAfterSeconds: 30,
 *   error: "Slack webhook at hooks.slack.com answered HTTP 429 (rate_limited)",
 * };
 * ```
 */
export type SlackPostResult =
  | { ok: true }
  | {
    ok: false;
    /** The HTTP status, when Slack answered. */
    status?: number;
    /** From `Retry-After` on a 429 answer, when present and valid. */
    retryAfterSeconds?: number;
    /** What went wrong, with the host but never the secret path. */
    error: string;
  };

/**
 * Options for {@linkcode postSlackMessage}.
 *
 * @example Usage
 * ```ts
 * import type { PostSlackMessageOptions } from "@nbr/notebook-error-reporter";
 *
 * const options: PostSlackMessageOptions = { timeoutMs: 2000 };
 * ```
 */
export interface PostSlackMessageOptions {
  /**
   * The `fetch` to use (injected for tests and proxies).
   *
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * How long the whole post, reading the answer included, may take.
   *
   * @default {5000}
   */
  timeoutMs?: number;
  /**
   * Aborts the post early (for example when a reporter is unloaded).
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
}

/** The default of {@linkcode PostSlackMessageOptions.timeoutMs}. */
const DEFAULT_TIMEOUT_MS = 5000;
/** At most this much of an answer is read (and at most 100 characters kept). */
const MAX_ANSWER_BYTES = 64 * 1024;
/** Slack's short error words, such as `invalid_blocks` or `rate_limited`. */
const ANSWER_WORD_REGEXP = /^[\w.:-]{1,100}$/;
/** `Retry-After` as delay-seconds. */
const RETRY_AFTER_SECONDS_REGEXP = /^\d{1,9}$/;
/** `Retry-After` as an HTTP date (IMF-fixdate, RFC 9110). */
const RETRY_AFTER_DATE_REGEXP =
  /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;
/** A run of white space, line breaks included: one space in a one-line error. */
const WHITESPACE_RUN_REGEXP = /\s+/g;
/** Loopback host names, the only ones allowed with plain `http:`. */
const LOOPBACK_HOST_REGEXP = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i;

/**
 * Checks that `url` can be a Slack incoming-webhook URL: an absolute `https:`
 * URL, or an `http:` one on a loopback host (`localhost`, `127.x.x.x`,
 * `[::1]`) for tests. The error message shows the scheme and host but never
 * the secret path.
 *
 * @param url The webhook URL.
 * @returns The parsed URL.
 * @throws {TypeError} If `url` is not a URL, has another scheme, or uses
 * `http:` on a host that is not loopback.
 *
 * @example Usage
 * ```ts
 * import { validateSlackWebhookUrl } from "@nbr/notebook-error-reporter";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   validateSlackWebhookUrl("https://hooks.slack.com/services/T0/B0/x").host,
 *   "hooks.slack.com",
 * );
 * assert.throws(() => validateSlackWebhookUrl("http://hooks.slack.com/services/T0/B0/x"), TypeError);
 * ```
 */
export function validateSlackWebhookUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(
      typeof url === "string"
        ? `Slack webhook URL must be an absolute https: URL, got a string of ${url.length} characters that is not a URL (not shown: it may hold the secret)`
        : `Slack webhook URL must be an absolute https: URL, got ${
          url === null ? "null" : typeof url
        }`,
    );
  }
  if (parsed.protocol === "https:" && parsed.hostname !== "") return parsed;
  if (
    parsed.protocol === "http:" && LOOPBACK_HOST_REGEXP.test(parsed.hostname)
  ) {
    return parsed;
  }
  if (parsed.protocol === "http:") {
    throw new TypeError(
      `Slack webhook URL must use https: (http: only on a loopback host), got http: for host "${parsed.host}"`,
    );
  }
  throw new TypeError(
    `Slack webhook URL must use https:, got "${parsed.protocol}"`,
  );
}

/**
 * The host (with any port) of a webhook URL, for notices such as
 * `Slack (hooks.slack.com)`: never the secret path.
 *
 * @param url The webhook URL.
 * @returns The host, or `"invalid URL"` when `url` does not parse.
 *
 * @example Usage
 * ```ts
 * import { describeWebhookHost } from "@nbr/notebook-error-reporter";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(describeWebhookHost("https://hooks.slack.com/services/T0/B0/x"), "hooks.slack.com");
 * ```
 */
export function describeWebhookHost(url: string): string {
  try {
    return new URL(url).host || "invalid URL";
  } catch {
    return "invalid URL";
  }
}

/**
 * Posts `message` as JSON to the incoming webhook at `webhookUrl`. The post
 * is bounded by `timeoutMs` (connecting, sending and reading the answer),
 * the answer body is read and discarded (Slack answers `ok`), and nothing is
 * thrown: every failure (invalid URL, network error, timeout, abort, HTTP
 * status other than 2xx, redirect) resolves to `{ ok: false, error }`. A 429
 * answer carries `retryAfterSeconds` from its `Retry-After` header.
 *
 * @param webhookUrl The webhook URL (see {@linkcode validateSlackWebhookUrl}).
 * @param message The message, usually from `slackMessage()`.
 * @param options `fetch`, `timeoutMs` and `signal`.
 * @returns `{ ok: true }` on a 2xx answer, else what went wrong.
 *
 * @example Usage
 * ```ts
 * import { postSlackMessage } from "@nbr/notebook-error-reporter";
 * import assert from "node:assert/strict";
 *
 * // A fetch that stands for Slack, for the example only.
 * const fetch = () => Promise.resolve(new Response("ok"));
 * const result = await postSlackMessage(
 *   "https://hooks.slack.com/services/T0/B0/secret",
 *   { text: "hello", blocks: [] },
 *   { fetch },
 * );
 * assert.deepEqual(result, { ok: true });
 * ```
 */
export async function postSlackMessage(
  webhookUrl: string,
  message: SlackMessage,
  options: PostSlackMessageOptions = {},
): Promise<SlackPostResult> {
  let url: URL;
  try {
    url = validateSlackWebhookUrl(webhookUrl);
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
  const host = url.host;
  const redact = redactor(url, webhookUrl);
  const timeoutMs = validTimeout(options.timeoutMs);
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = options.signal === undefined
    ? timeout
    : AbortSignal.any([timeout, options.signal]);
  const doFetch = options.fetch ?? globalThis.fetch;

  let response: Response;
  try {
    const body = JSON.stringify(message);
    response = await doFetch(url.href, {
      method: "POST",
      headers: { "content-type": "application/json; charset=utf-8" },
      body,
      signal,
      redirect: "manual",
    });
  } catch (error) {
    return {
      ok: false,
      error: redact(failure(host, error, timeout, timeoutMs, options.signal)),
    };
  }

  // A 2xx status means Slack took the message, even if reading the rest of
  // its answer fails; any other answer is read for Slack's error word.
  let answer = "";
  try {
    answer = await readAnswer(response);
  } catch {
    // The status line is enough.
  }
  if (response.ok) return { ok: true };

  const word = answer.trim();
  const detail = ANSWER_WORD_REGEXP.test(word) ? ` (${word})` : "";
  const result: SlackPostResult = {
    ok: false,
    status: response.status,
    error: redact(
      `Slack webhook at ${host} answered HTTP ${response.status}${detail}`,
    ),
  };
  if (response.status === 429) {
    const seconds = parseRetryAfter(response.headers.get("retry-after"));
    if (seconds !== undefined) result.retryAfterSeconds = seconds;
  }
  return result;
}

// ---------------------------------------------------------------- internals

/** A finite positive timeout, else the default. */
function validTimeout(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0
    ? Math.min(value, 2_147_483_647)
    : DEFAULT_TIMEOUT_MS;
}

/** Explains a thrown fetch or read error in one line, naming the host. */
function failure(
  host: string,
  error: unknown,
  timeout: AbortSignal,
  timeoutMs: number,
  callerSignal: AbortSignal | undefined,
): string {
  if (timeout.aborted) {
    return `Slack webhook at ${host} did not answer within ${timeoutMs} ms`;
  }
  if (callerSignal?.aborted) {
    return `posting to Slack webhook at ${host} was aborted`;
  }
  return `posting to Slack webhook at ${host} failed: ${describeError(error)}`;
}

/** `name: message (cause)` of an unknown thrown value, in one line. */
function describeError(error: unknown): string {
  try {
    if (error instanceof Error) {
      let text = `${error.name}: ${error.message}`;
      if (error.cause !== undefined) {
        text += ` (${
          error.cause instanceof Error
            ? error.cause.message
            : String(error.cause)
        })`;
      }
      return text.replace(WHITESPACE_RUN_REGEXP, " ").slice(0, 500);
    }
    return String(error).replace(WHITESPACE_RUN_REGEXP, " ").slice(0, 500);
  } catch {
    return "unknown error";
  }
}

/**
 * A function removing the webhook's path and query from a text, in every
 * form in which an error message may quote them.
 */
function redactor(url: URL, raw: string): (text: string) => string {
  const secrets = new Set<string>();
  const add = (value: string) => {
    if (value.length > 1) secrets.add(value);
  };
  add(raw);
  add(url.href);
  add(url.pathname + url.search);
  add(url.pathname);
  add(url.search);
  try {
    add(decodeURIComponent(url.pathname));
  } catch {
    // A malformed escape cannot appear decoded.
  }
  for (const segment of url.pathname.split("/")) {
    if (segment.length >= 4) add(segment);
  }
  const ordered = [...secrets].sort((a, b) => b.length - a.length);
  return (text) => {
    let out = text;
    for (const secret of ordered) out = out.replaceAll(secret, "<redacted>");
    return out;
  };
}

/** Reads at most {@linkcode MAX_ANSWER_BYTES} of the answer, then drops it. */
async function readAnswer(response: Response): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_ANSWER_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    if (size >= MAX_ANSWER_BYTES) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes.subarray(0, 200));
}

/** `Retry-After` as seconds (delay-seconds or an HTTP date), else undefined. */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (RETRY_AFTER_SECONDS_REGEXP.test(text)) return Number(text);
  if (!RETRY_AFTER_DATE_REGEXP.test(text)) return undefined;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
