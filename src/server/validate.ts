/**
 * Reading and validating what clients send to the collector: a bounded body
 * (counted while the stream is read), JSON only, and payload fields checked
 * one by one with answers that name the field.
 *
 * @module
 */

import { FRAME_LIMITS, PAYLOAD_LIMITS } from "../scrub.ts";
import type { ErrorPayload, TracebackFrame } from "../types.ts";
import { type FieldProblem, HttpError } from "./http_error.ts";

/** The largest request body accepted, in bytes. */
export const MAX_BODY_BYTES = 16 * 1024;

/**
 * The longest value accepted per field, in characters (code points); longer
 * values are answered with 422. They are the payload's own limits
 * ({@linkcode PAYLOAD_LIMITS}), so a payload built by this library always
 * passes, except for frame strings, which are accepted longer than
 * {@linkcode FRAME_LIMITS} and truncated to it by the server's re-scrub.
 */
export const INPUT_LIMITS: Readonly<{
  errorName: number;
  errorMessage: number;
  firstLine: number;
  notebook: number;
  frames: number;
  filename: number;
  funName: number;
}> = Object.freeze({
  errorName: PAYLOAD_LIMITS.errorName,
  errorMessage: PAYLOAD_LIMITS.errorMessage,
  firstLine: PAYLOAD_LIMITS.firstLine,
  notebook: PAYLOAD_LIMITS.notebook,
  frames: PAYLOAD_LIMITS.frames,
  filename: FRAME_LIMITS.filename * 4,
  funName: FRAME_LIMITS.funName * 4,
});

const JSON_MEDIA_TYPE_REGEXP = /^application\/(?:[\w.+-]+\+)?json$/i;
const CHARSET_PARAM_REGEXP = /;\s*charset\s*=\s*"?([^";\s]+)"?/i;
const DIGITS_REGEXP = /^\d+$/;

/**
 * Options of {@linkcode readJsonBody}.
 *
 * @example Usage
 * ```ts
 * import type { ReadBodyOptions } from "./validate.ts";
 *
 * const options: ReadBodyOptions = { maxBytes: 4096 };
 * ```
 */
export interface ReadBodyOptions {
  /** The largest body accepted, in bytes. @default {16384} */
  maxBytes?: number;
}

/**
 * Reads a request's JSON body. The size is enforced from `Content-Length`
 * when given and while the stream is read otherwise: the read stops as soon
 * as the limit is passed.
 *
 * @param request The request.
 * @param options The size limit.
 * @returns The parsed JSON value.
 * @throws {HttpError} 415 when the content type is not JSON, 413 when the body
 * is too large, 400 when it is not UTF-8 JSON.
 *
 * @example Usage
 * ```ts
 * import { readJsonBody } from "./validate.ts";
 *
 * const request = new Request("http://x/usages/", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: '{"notebook": "demo"}',
 * });
 * console.log(await readJsonBody(request)); // { notebook: "demo" }
 * ```
 */
export async function readJsonBody(
  request: Request,
  options: ReadBodyOptions = {},
): Promise<unknown> {
  const maxBytes = options.maxBytes ?? MAX_BODY_BYTES;
  const contentType = request.headers.get("content-type") ?? "";
  const mediaType = contentType.split(";")[0]!.trim();
  if (!JSON_MEDIA_TYPE_REGEXP.test(mediaType)) {
    throw new HttpError(
      415,
      `Content-Type must be application/json, got ${
        JSON.stringify(contentType.slice(0, 100))
      }`,
    );
  }
  const charset = CHARSET_PARAM_REGEXP.exec(contentType)?.[1];
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
    throw new HttpError(
      415,
      `charset must be utf-8, got ${JSON.stringify(charset.slice(0, 40))}`,
    );
  }
  const length = request.headers.get("content-length");
  if (length !== null) {
    if (!DIGITS_REGEXP.test(length)) {
      throw new HttpError(400, "Content-Length is not a number");
    }
    if (Number(length) > maxBytes) {
      throw new HttpError(
        413,
        `body is ${length} bytes, over the limit of ${maxBytes}`,
      );
    }
  }
  let bytes: Uint8Array;
  if (length !== null) {
    // The declared length bounds what the HTTP layer reads: read it at once.
    try {
      bytes = new Uint8Array(await request.arrayBuffer());
    } catch {
      throw new HttpError(400, "the body could not be read");
    }
    if (bytes.byteLength > maxBytes) {
      throw new HttpError(
        413,
        `body is over the limit of ${maxBytes} bytes`,
      );
    }
  } else {
    bytes = await readBounded(request, maxBytes);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "body is not valid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message.slice(0, 200) : "";
    throw new HttpError(400, `body is not JSON: ${reason}`);
  }
}

async function readBounded(
  request: Request,
  maxBytes: number,
): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        reader.cancel().catch(() => {});
        throw new HttpError(
          413,
          `body is over the limit of ${maxBytes} bytes`,
        );
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof HttpError) throw error;
    throw new HttpError(400, "the body could not be read");
  }
  if (chunks.length === 1) return chunks[0]!;
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

class Checker {
  problems: FieldProblem[] = [];

  missing(loc: (string | number)[]): void {
    this.problems.push({
      loc: ["body", ...loc],
      msg: "field required",
      type: "missing",
    });
  }

  string(
    value: unknown,
    loc: (string | number)[],
    max: number,
    options: { nullAs?: string; minLength?: number } = {},
  ): string {
    if (value === null && options.nullAs !== undefined) return options.nullAs;
    if (value === undefined) {
      this.missing(loc);
      return "";
    }
    if (typeof value !== "string") {
      this.problems.push({
        loc: ["body", ...loc],
        msg: `must be a string${
          options.nullAs !== undefined ? " or null" : ""
        }, got ${typeName(value)}`,
        type: "type_error",
      });
      return "";
    }
    const length = codePoints(value);
    if (length > max) {
      this.problems.push({
        loc: ["body", ...loc],
        msg: `must be at most ${max} characters, got ${length}`,
        type: "too_long",
      });
    } else if (length < (options.minLength ?? 0)) {
      this.problems.push({
        loc: ["body", ...loc],
        msg: `must be at least ${options.minLength} characters, got ${length}`,
        type: "too_short",
      });
    }
    return value;
  }

  count(
    value: unknown,
    loc: (string | number)[],
    required: boolean,
  ): number | null {
    if (value === undefined) {
      if (required) this.missing(loc);
      return null;
    }
    if (value === null) return null;
    if (
      typeof value !== "number" || !Number.isSafeInteger(value) || value < 0
    ) {
      this.problems.push({
        loc: ["body", ...loc],
        msg: `must be a non-negative integer or null, got ${describe(value)}`,
        type: "type_error",
      });
      return null;
    }
    return value;
  }
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function describe(value: unknown): string {
  return typeof value === "number" ? String(value) : typeName(value);
}

function fail(checker: Checker): never {
  throw new HttpError(422, checker.problems.slice(0, 10));
}

/** Fails with a 422 unless the body is a JSON object. */
function requireObject(
  checker: Checker,
  body: unknown,
): asserts body is Record<string, unknown> {
  if (isRecord(body)) return;
  checker.problems.push({
    loc: ["body"],
    msg: `must be a JSON object, got ${typeName(body)}`,
    type: "type_error",
  });
  fail(checker);
}

/**
 * Validates the body of `POST /usages/`: `{"notebook": string}`, unknown
 * fields dropped.
 *
 * @param body The parsed JSON body.
 * @returns The notebook's name, as sent.
 * @throws {HttpError} 422 naming the field that is missing, of the wrong type or too long.
 *
 * @example Usage
 * ```ts
 * import { validateUsageCreate } from "./validate.ts";
 *
 * validateUsageCreate({ notebook: "demo", extra: 1 }); // { notebook: "demo" }
 * ```
 */
export function validateUsageCreate(body: unknown): { notebook: string } {
  const checker = new Checker();
  requireObject(checker, body);
  const notebook = checker.string(
    body.notebook,
    ["notebook"],
    INPUT_LIMITS.notebook,
    { minLength: 1 },
  );
  if (checker.problems.length) fail(checker);
  return { notebook };
}

/**
 * Validates a report's body (the payload the Python tool and this library
 * send). Required: `error_name`, `error_message` (null allowed, read as
 * `""`), `execution_count` (null allowed), `first_line`. Optional:
 * `traceback` (default `[]`), `notebook`. Unknown fields are dropped. The
 * strings are returned as sent: scrub them before storing.
 *
 * @param body The parsed JSON body.
 * @returns The payload; `notebook` is `""` when absent.
 * @throws {HttpError} 422 naming every field (up to ten) that is missing, of the wrong type or too long.
 *
 * @example Usage
 * ```ts
 * import { validatePayload } from "./validate.ts";
 *
 * const payload = validatePayload({
 *   error_name: "ValueError",
 *   error_message: "foo",
 *   traceback: [{ filename: "foo.py", fun_name: "run_code", lineno: 666 }],
 *   first_line: "# cell that does foo",
 *   execution_count: 111,
 * });
 * console.log(payload.traceback.length); // 1
 * ```
 */
export function validatePayload(body: unknown): ErrorPayload {
  const checker = new Checker();
  requireObject(checker, body);
  const errorName = checker.string(
    body.error_name,
    ["error_name"],
    INPUT_LIMITS.errorName,
  );
  const errorMessage = checker.string(
    body.error_message,
    ["error_message"],
    INPUT_LIMITS.errorMessage,
    { nullAs: "" },
  );
  const firstLine = checker.string(
    body.first_line,
    ["first_line"],
    INPUT_LIMITS.firstLine,
  );
  const executionCount = checker.count(
    body.execution_count,
    ["execution_count"],
    true,
  );
  const notebook = body.notebook === undefined ? "" : checker.string(
    body.notebook,
    ["notebook"],
    INPUT_LIMITS.notebook,
  );
  const traceback: TracebackFrame[] = [];
  const frames = body.traceback === undefined ? [] : body.traceback;
  if (!Array.isArray(frames)) {
    checker.problems.push({
      loc: ["body", "traceback"],
      msg: `must be an array, got ${typeName(frames)}`,
      type: "type_error",
    });
  } else if (frames.length > INPUT_LIMITS.frames) {
    checker.problems.push({
      loc: ["body", "traceback"],
      msg:
        `must have at most ${INPUT_LIMITS.frames} frames, got ${frames.length}`,
      type: "too_long",
    });
  } else {
    frames.forEach((frame: unknown, i: number) => {
      if (!isRecord(frame)) {
        checker.problems.push({
          loc: ["body", "traceback", i],
          msg: `must be an object, got ${typeName(frame)}`,
          type: "type_error",
        });
        return;
      }
      traceback.push({
        filename: checker.string(
          frame.filename,
          ["traceback", i, "filename"],
          INPUT_LIMITS.filename,
        ),
        fun_name: checker.string(
          frame.fun_name,
          ["traceback", i, "fun_name"],
          INPUT_LIMITS.funName,
        ),
        lineno: checker.count(frame.lineno, ["traceback", i, "lineno"], false),
      });
    });
  }
  if (checker.problems.length) fail(checker);
  return {
    error_name: errorName,
    error_message: errorMessage,
    traceback,
    first_line: firstLine,
    execution_count: executionCount,
    notebook,
  };
}

/**
 * Reads `skip` and `limit` from a URL's query (the Python tool's list
 * parameters).
 *
 * @param url The request URL.
 * @param maxLimit The largest `limit` accepted.
 * @returns The page.
 * @throws {HttpError} 422 naming `skip` or `limit` when not a non-negative integer in range.
 *
 * @example Usage
 * ```ts
 * import { parsePage } from "./validate.ts";
 *
 * parsePage(new URL("http://x/errors/?skip=10")); // { skip: 10, limit: 100 }
 * ```
 */
export function parsePage(
  url: URL,
  maxLimit = 1000,
): { skip: number; limit: number } {
  const skip = queryInteger(url, "skip", 0, Number.MAX_SAFE_INTEGER);
  const limit = queryInteger(url, "limit", 100, maxLimit);
  return { skip, limit };
}

/**
 * Reads one non-negative integer query parameter.
 *
 * @param url The request URL.
 * @param name The parameter.
 * @param fallback The value when absent.
 * @param max The largest value accepted.
 * @returns The value.
 * @throws {HttpError} 422 naming the parameter when it is not an integer from 0 to `max`.
 *
 * @example Usage
 * ```ts
 * import { queryInteger } from "./validate.ts";
 *
 * queryInteger(new URL("http://x/?days=7"), "days", 30, 365); // 7
 * ```
 */
export function queryInteger(
  url: URL,
  name: string,
  fallback: number,
  max: number,
): number {
  const raw = url.searchParams.get(name);
  if (raw === null) return fallback;
  const value = DIGITS_REGEXP.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value > max) {
    throw new HttpError(422, [{
      loc: ["query", name],
      msg: `must be an integer from 0 to ${max}, got ${
        JSON.stringify(raw.slice(0, 40))
      }`,
      type: "value_error",
    }]);
  }
  return value;
}
