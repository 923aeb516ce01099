/**
 * Builds the one small, scrubbed JSON payload sent for a failing cell, and
 * re-scrubs payloads received from elsewhere.
 *
 * @module
 */

import { frameBlockStart, parseStack } from "./parse_stack.ts";
import { processContext } from "./process_context.ts";
import {
  ANSI_ESCAPE_REGEXP,
  FRAME_LIMITS,
  PAYLOAD_LIMITS,
  removeControlCharacters,
  scrubText,
  truncateText,
} from "./scrub.ts";
import { frameFilename } from "./source_location.ts";
import type {
  ErrorPayload,
  PayloadContext,
  PayloadInput,
  StackFrame,
  TracebackFrame,
} from "./types.ts";

/**
 * Text longer than this is cut before scrubbing (the payload keeps at most
 * 1000 characters of it); the cut drops a trailing partial word, so that no
 * fragment of a secret escapes the scrubber.
 */
const MAX_SCRUB_INPUT = 65_536;

/**
 * Turns an error into the payload that leaves the machine: exactly six keys,
 * every string scrubbed (see {@linkcode scrubText}) and bounded
 * ({@linkcode PAYLOAD_LIMITS}), the traceback outermost call first with the
 * frame that threw last, at most 50 frames (the outermost 25 and the
 * innermost 25). Frames come from `input.stack`, else from
 * `input.traceback` (the kernel's lines); lines belonging to the message are
 * never frames. Fields of `context` left undefined are read from the running
 * process ({@linkcode processContext}). Never throws: garbage input gives a
 * payload with defaults (`error_name` `"Error"`, `first_line` `""`,
 * `execution_count` `null`, `notebook` `"unknown"`).
 *
 * @param input The error's name, message, stack or traceback lines, and the cell's details.
 * @param context Where private paths and names are; defaults to the running process.
 * @returns The payload.
 *
 * @example Usage
 * ```ts
 * import { buildPayload } from "./build_payload.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const payload = buildPayload(
 *   {
 *     name: "Error",
 *     message: "cannot open /home/alice/data.csv",
 *     stack: "Error: cannot open /home/alice/data.csv\n" +
 *       "    at load (file:///home/alice/nb/lib.ts:3:9)\n" +
 *       "    at <anonymous>:4:1",
 *     firstLine: "load()",
 *     executionCount: 7,
 *     notebook: "demo",
 *   },
 *   { cwd: "/home/alice/nb", home: "/home/alice", user: "alice" },
 * );
 * deepEqual(payload, {
 *   error_name: "Error",
 *   error_message: "cannot open ~/data.csv",
 *   traceback: [
 *     { filename: "<cell>", fun_name: "<module>", lineno: 4 },
 *     { filename: "lib.ts", fun_name: "load", lineno: 3 },
 *   ],
 *   first_line: "load()",
 *   execution_count: 7,
 *   notebook: "demo",
 * });
 * ```
 */
export function buildPayload(
  input: PayloadInput,
  context?: PayloadContext,
): ErrorPayload {
  const source: Partial<PayloadInput> = isObject(input) ? input : {};
  const ctx = resolveContext(context);
  const name = toText(attempt(() => source.name), "");
  const message = toText(attempt(() => source.message), "");
  let frames: StackFrame[] = [];
  try {
    frames = framesOf(source, name, message);
  } catch {
    frames = [];
  }
  const traceback: TracebackFrame[] = [];
  const count = frames.length;
  for (let i = count - 1; i >= 0; i--) {
    const frame = frames[i];
    traceback.push({
      filename: safe(() => frameFilename(frame, ctx), "<unknown>"),
      fun_name: funName(frame, i === count - 1),
      lineno: frame.native ? null : frame.line,
    });
  }
  const executionCount = attempt(() => source.executionCount);
  return finish({
    error_name: name === "" ? "Error" : name,
    error_message: message,
    traceback,
    first_line: toText(attempt(() => source.firstLine), ""),
    execution_count: typeof executionCount === "number" ? executionCount : null,
    notebook: toText(attempt(() => source.notebook), "unknown"),
  }, ctx);
}

/**
 * Re-scrubs and re-bounds every string of an already-built payload, such as
 * one a collector receives from an untrusted client: the same rules as
 * {@linkcode buildPayload}, with only the given `context` (the running
 * process is not read: the server's home is not the reader's). Anything
 * that is not of the payload's shape is replaced by defaults; the result has
 * exactly the six keys. Idempotent; never throws.
 *
 * @param payload The payload (possibly hostile).
 * @param context Home directory and user name to remove, if known.
 * @returns A clean payload.
 *
 * @example Usage
 * ```ts
 * import { scrubPayload } from "./build_payload.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const clean = scrubPayload({
 *   error_name: "Error",
 *   error_message: "mail bob@example.com",
 *   traceback: [{ filename: "/home/bob/x.ts", fun_name: "f", lineno: 2 }],
 *   first_line: "f()",
 *   execution_count: 3,
 *   notebook: "nb",
 * });
 * deepEqual(clean.error_message, "mail <email>");
 * deepEqual(clean.traceback[0]?.filename, "~/x.ts");
 * ```
 */
export function scrubPayload(
  payload: ErrorPayload,
  context?: PayloadContext,
): ErrorPayload {
  const source: Partial<Record<keyof ErrorPayload, unknown>> = isObject(payload)
    ? payload
    : {};
  const ctx: PayloadContext = isObject(context) ? definedFields(context) : {};
  const rawTraceback = attempt(() => source.traceback);
  const traceback: TracebackFrame[] = [];
  if (Array.isArray(rawTraceback)) {
    const length = Math.min(rawTraceback.length, 100_000);
    for (const i of keptIndexes(length)) {
      const frame: unknown = attempt(() => rawTraceback[i]);
      const record: Partial<Record<keyof TracebackFrame, unknown>> =
        isObject(frame) ? frame : {};
      const lineno = attempt(() => record.lineno);
      traceback.push({
        filename: toText(attempt(() => record.filename), "<unknown>"),
        fun_name: toText(attempt(() => record.fun_name), "<anonymous>"),
        lineno: isLineNumber(lineno) ? lineno : null,
      });
    }
  }
  const executionCount = attempt(() => source.execution_count);
  return finish({
    error_name: toText(attempt(() => source.error_name), "Error"),
    error_message: toText(attempt(() => source.error_message), ""),
    traceback,
    first_line: toText(attempt(() => source.first_line), ""),
    execution_count: typeof executionCount === "number" ? executionCount : null,
    notebook: toText(attempt(() => source.notebook), "unknown"),
  }, ctx);
}

/** Scrubs and bounds every field; keeps at most 50 frames. */
function finish(payload: ErrorPayload, ctx: PayloadContext): ErrorPayload {
  const frames: TracebackFrame[] = [];
  for (const i of keptIndexes(payload.traceback.length)) {
    const frame = payload.traceback[i];
    frames.push({
      filename: cleanLine(frame.filename, FRAME_LIMITS.filename, ctx) ||
        "<unknown>",
      fun_name: cleanLine(frame.fun_name, FRAME_LIMITS.funName, ctx) ||
        "<anonymous>",
      lineno: isLineNumber(frame.lineno) ? frame.lineno : null,
    });
  }
  const count = payload.execution_count;
  return {
    error_name: cleanLine(payload.error_name, PAYLOAD_LIMITS.errorName, ctx) ||
      "Error",
    error_message: cleanText(
      payload.error_message,
      PAYLOAD_LIMITS.errorMessage,
      true,
      ctx,
    ),
    traceback: frames,
    first_line: cleanLine(payload.first_line, PAYLOAD_LIMITS.firstLine, ctx),
    execution_count: typeof count === "number" && Number.isSafeInteger(count) &&
        count >= 0
      ? count
      : null,
    notebook: cleanLine(payload.notebook, PAYLOAD_LIMITS.notebook, ctx) ||
      "unknown",
  };
}

/** Indexes kept from `length` frames: all, or the first 25 and the last 25. */
function keptIndexes(length: number): number[] {
  const max = PAYLOAD_LIMITS.frames;
  const indexes: number[] = [];
  if (length <= max) {
    for (let i = 0; i < length; i++) indexes.push(i);
    return indexes;
  }
  const half = Math.floor(max / 2);
  for (let i = 0; i < half; i++) indexes.push(i);
  for (let i = length - (max - half); i < length; i++) indexes.push(i);
  return indexes;
}

function cleanLine(text: string, max: number, ctx: PayloadContext): string {
  return cleanText(text, max, false, ctx).trim();
}

/** Removes control characters, scrubs, then truncates. */
function cleanText(
  text: string,
  max: number,
  keepLineBreaks: boolean,
  ctx: PayloadContext,
): string {
  return safe(() => {
    let value = text;
    if (value.length > MAX_SCRUB_INPUT) value = cutAtWord(value);
    value = removeControlCharacters(value, keepLineBreaks);
    value = scrubText(value, ctx);
    return truncateText(value, max);
  }, "");
}

/**
 * Cuts text to MAX_SCRUB_INPUT characters and drops a partial word at the
 * cut (up to 512 characters): it could be a fragment of a secret.
 */
function cutAtWord(text: string): string {
  const cut = text.slice(0, MAX_SCRUB_INPUT);
  if (/\s/.test(text.charAt(MAX_SCRUB_INPUT))) return cut;
  for (let i = cut.length - 1; i >= 0 && i >= cut.length - 512; i--) {
    if (/\s/.test(cut.charAt(i))) return cut.slice(0, i + 1);
  }
  return cut.slice(0, cut.length - 512);
}

/** The frames of the input, innermost first, without lines of the message. */
function framesOf(
  source: Partial<PayloadInput>,
  name: string,
  message: string,
): StackFrame[] {
  const stack = attempt(() => source.stack);
  let text: string | undefined;
  if (typeof stack === "string" && stack !== "") {
    text = stack;
  } else {
    const lines = attempt(() => source.traceback);
    if (Array.isArray(lines)) {
      text = lines.slice(0, 10_000).map((line) => toText(line, "")).join("\n");
    }
  }
  if (text === undefined || text === "") return [];
  if (text.includes("\x1b")) text = text.replace(ANSI_ESCAPE_REGEXP, "");
  return parseStack(afterMessage(text, name, message));
}

/**
 * The part of a stack after its `Name: message` header, when the message is
 * found there; else the whole stack (whose trailing block of frame lines
 * parseStack then takes).
 */
function afterMessage(stack: string, name: string, message: string): string {
  if (message === "") return stack;
  const header = name === "" ? message : `${name}: ${message}`;
  if (stack.startsWith(header)) return stack.slice(header.length);
  // The header may differ (custom name, "Uncaught", a prefix such as the
  // dynamic import's "TypeError: SyntaxError: …"): find the message itself,
  // near the start.
  // Only a match that starts before the trailing block of frame lines is
  // the message (a frame line may contain the same text).
  const at = stack.indexOf(message);
  if (at !== -1 && at < frameBlockStart(stack)) {
    return stack.slice(at + message.length);
  }
  return stack;
}

function funName(frame: StackFrame, outermost: boolean): string {
  const fn = frame.function;
  if (fn === null || fn === "") return outermost ? "<module>" : "<anonymous>";
  if (frame.constructor && !fn.startsWith("new ")) return `new ${fn}`;
  return fn;
}

function resolveContext(context: PayloadContext | undefined): PayloadContext {
  const given = isObject(context) ? definedFields(context) : {};
  if (
    given.cwd !== undefined && given.home !== undefined &&
    given.user !== undefined && given.denoDir !== undefined
  ) {
    return given;
  }
  const defaults = safe(() => processContext(), {});
  return { ...defaults, ...given };
}

function definedFields(context: PayloadContext): PayloadContext {
  const out: PayloadContext = {};
  for (const key of ["cwd", "home", "user", "denoDir"] as const) {
    const value = attempt(() => context[key]);
    if (typeof value === "string") out[key] = value;
  }
  return out;
}

function isLineNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** A string as is; any other value as its `String()` form, else `fallback`. */
function toText(value: unknown, fallback: string): string {
  if (typeof value === "string") return value;
  if (value === undefined || value === null) return fallback;
  return safe(() => String(value), fallback);
}

function attempt<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

function safe<T>(run: () => T, fallback: T): T {
  try {
    return run();
  } catch {
    return fallback;
  }
}
