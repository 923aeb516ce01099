/**
 * How the collector groups reports: a pure function from a payload to a
 * fingerprint, Sentry-style.
 *
 * The fingerprint is the SHA-256 of:
 * - the notebook;
 * - the error name;
 * - the error message, normalised ({@linkcode normalizeMessage}): UUIDs,
 *   quoted strings, paths and URLs, hex ids and numbers become placeholders,
 *   so `"user 42 not found"` and `"user 7 not found"` group;
 * - the notebook's own frames ({@linkcode isNotebookFrame}: not `<native>`,
 *   `ext:`, `node:`, `npm:`, `jsr:` or a remote `http(s):` module), by
 *   filename and function, never by line number (lines move when a cell is
 *   edited); consecutive repeats of one frame (recursion) count once.
 *
 * @module
 */

import { sha256Hex } from "./sha256.ts";
import type { ErrorPayload, TracebackFrame } from "../types.ts";

/** The version mixed into every fingerprint; bump it when the rule changes. */
const FINGERPRINT_VERSION = "nbr-fingerprint-1";

/** At most this much of a message is normalised (payloads are bounded to 1000 anyway). */
const MAX_MESSAGE_CHARS = 2000;

/** A UUID, dashed, any case. */
const UUID_REGEXP =
  /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;

/**
 * A quoted string: '…', "…", `…` or “…”, on one line, at most 200 characters
 * inside (longer quotes stay as typed: they are prose, not values).
 */
const QUOTED_REGEXP =
  /'[^'\n]{0,200}'|"[^"\n]{0,200}"|`[^`\n]{0,200}`|\u201c[^\u201d\n]{0,200}\u201d/g;

/**
 * A URL (`scheme://…`, `file:`…), an absolute or home path (`/a/b`, `~/a`,
 * `C:\a`), or a relative path with a directory (`./a`, `../a`, `dir/file.ts`).
 */
const PATH_REGEXP = new RegExp(
  [
    // scheme://rest (http, https, file, s3…)
    String.raw`\b[a-z][a-z0-9+.-]{1,15}:\/\/[^\s'"]*[^\s'".,:;)]`,
    // Windows drive paths
    String.raw`\b[a-z]:\\(?:[^\s'"]*[^\s'".,:;)])?`,
    // absolute, home and dot-relative paths: /a/b, ~/a, ./a, ../a
    String.raw`(?:~|\.{1,2})?\/[^\s'"/,:;()]+(?:\/[^\s'"/,:;()]*)*`,
    // relative paths such as data/file.csv
    String.raw`\b[\w.-]+(?:\/[\w.-]+)+`,
  ].join("|"),
  "gi",
);

/**
 * `0x…` hex numbers, and runs of 6+ hex characters holding both a digit and a
 * letter (ids, hashes, addresses; plain words such as "deadbeef" stay).
 */
const HEX_REGEXP =
  /\b0x[0-9a-f]+\b|\b(?=[0-9]*[a-f])(?=[a-f]*\d)[0-9a-f]{6,}\b/gi;

/** Numbers, also inside words (`row12`), with an optional fraction and exponent. */
const NUMBER_REGEXP = /\d+(?:\.\d+)?(?:e[-+]?\d+)?/gi;

/** Filenames of frames that are not the notebook's own code. */
const FOREIGN_FILE_REGEXP = /^(?:<native>|ext:|node:|npm:|jsr:|https?:)/i;

/**
 * Normalises an error message for grouping: UUIDs become `<uuid>`, quoted
 * strings `<str>`, URLs and paths `<path>`, hex ids `<hex>`, numbers `<n>`,
 * and runs of whitespace one space.
 *
 * @param message The (scrubbed) error message.
 * @returns The normalised message.
 *
 * @example Usage
 * ```ts
 * import { normalizeMessage } from "./fingerprint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   normalizeMessage(`Cannot read "data/2024.csv": id 0xdeadbeef at row 12`),
 *   "Cannot read <str>: id <hex> at row <n>",
 * );
 * ```
 */
export function normalizeMessage(message: string): string {
  return String(message).slice(0, MAX_MESSAGE_CHARS)
    .replace(UUID_REGEXP, "<uuid>")
    .replace(QUOTED_REGEXP, "<str>")
    .replace(PATH_REGEXP, "<path>")
    .replace(HEX_REGEXP, "<hex>")
    .replace(NUMBER_REGEXP, "<n>")
    .replace(/\s+/g, " ")
    .trim();
}

/**
 * Whether a frame is the notebook's own code: not a `<native>` frame and not
 * a `ext:`, `node:`, `npm:`, `jsr:` or remote `http(s):` module.
 *
 * @param frame A traceback frame.
 * @returns `true` for the notebook's own frames (cells, `<eval>`, local files).
 *
 * @example Usage
 * ```ts
 * import { isNotebookFrame } from "./fingerprint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isNotebookFrame({ filename: "<cell>", fun_name: "load", lineno: 3 }), true);
 * assert.equal(isNotebookFrame({ filename: "ext:core/01_core.js", fun_name: "x", lineno: 1 }), false);
 * ```
 */
export function isNotebookFrame(frame: TracebackFrame): boolean {
  return !FOREIGN_FILE_REGEXP.test(String(frame.filename));
}

/**
 * The fingerprint of a payload: reports with the same fingerprint form one
 * group. See the module documentation for the rule.
 *
 * @param payload The (scrubbed) payload.
 * @returns 64 lowercase hex digits.
 *
 * @example Two reports that group
 * ```ts
 * import { errorFingerprint } from "./fingerprint.ts";
 * import assert from "node:assert/strict";
 *
 * const a = {
 *   error_name: "Error",
 *   error_message: "user 42 not found",
 *   traceback: [{ filename: "<cell>", fun_name: "load", lineno: 3 }],
 *   first_line: "load(42)",
 *   execution_count: 4,
 *   notebook: "demo",
 * };
 * const b = {
 *   ...a,
 *   error_message: "user 7 not found",
 *   traceback: [{ filename: "<cell>", fun_name: "load", lineno: 9 }],
 * };
 * assert.equal(errorFingerprint(a), errorFingerprint(b));
 * assert.notEqual(errorFingerprint(a), errorFingerprint({ ...a, error_message: "user 42 is locked" }));
 * ```
 */
export function errorFingerprint(payload: ErrorPayload): string {
  // A flood repeats one error: remember the last few thousand inputs.
  const key = JSON.stringify([
    payload.notebook,
    payload.error_name,
    payload.error_message,
    (payload.traceback ?? []).map((f) => [f.filename, f.fun_name]),
  ]);
  const cached = CACHE.get(key);
  if (cached !== undefined) return cached;
  const fingerprint = computeFingerprint(payload);
  if (CACHE.size >= CACHE_SIZE) CACHE.clear();
  CACHE.set(key, fingerprint);
  return fingerprint;
}

/** Fingerprints of recent inputs (the input determines the result). */
const CACHE = new Map<string, string>();
const CACHE_SIZE = 4096;

function computeFingerprint(payload: ErrorPayload): string {
  const frames: [string, string][] = [];
  for (const frame of payload.traceback ?? []) {
    if (!isNotebookFrame(frame)) continue;
    const key: [string, string] = [
      String(frame.filename),
      String(frame.fun_name),
    ];
    const last = frames[frames.length - 1];
    if (last && last[0] === key[0] && last[1] === key[1]) continue;
    frames.push(key);
  }
  const canonical = JSON.stringify([
    FINGERPRINT_VERSION,
    String(payload.notebook),
    String(payload.error_name),
    normalizeMessage(payload.error_message),
    frames,
  ]);
  return sha256Hex(canonical);
}
