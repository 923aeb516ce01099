/**
 * A linear-time parser for V8 / Deno stack traces (`error.stack`).
 *
 * @module
 */

import { ANSI_ESCAPE_REGEXP } from "./scrub.ts";
import type { StackFrame } from "./types.ts";

/** Lines longer than this are not frames (V8 never prints such lines; guards against hostile input). */
const MAX_FRAME_LINE_LENGTH = 4096;

/** A position number with more digits than this is not a position. */
const MAX_POSITION_DIGITS = 10;

/** A frame line: indentation, then `at `. */
const FRAME_LINE_REGEXP = /^[ \t]+at[ \t]/;

/**
 * Parses the text of `error.stack` (or a kernel's traceback lines joined by
 * `\n`) into frames, innermost first, as V8 prints them.
 *
 * The frames are the trailing block of indented `at ` lines: lines of a
 * multi-line message that merely look like frames are not frames, unless the
 * message itself ends with them (the text alone cannot tell those apart).
 * Lines that are not understood are skipped. It never throws, and runs in
 * time linear in the length of the input.
 *
 * @param stack The stack text.
 * @returns The parsed frames, innermost first; `[]` when there are none.
 *
 * @example Usage
 * ```ts
 * import { parseStack } from "./parse_stack.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const frames = parseStack(
 *   "Error: boom\n    at foo (<anonymous>:2:9)\n    at async <anonymous>:4:1",
 * );
 * deepEqual(frames.map((frame) => frame.function), ["foo", null]);
 * deepEqual(frames[1]?.async, true);
 * ```
 */
export function parseStack(stack: string): StackFrame[] {
  if (typeof stack !== "string" || stack.length === 0) return [];
  const lines = stack.split("\n");
  const { start, end } = trailingBlock(lines);
  const frames: StackFrame[] = [];
  for (let i = start; i < end; i++) {
    const frame = parseStackLine(lines[i]);
    if (frame !== undefined) frames.push(frame);
  }
  return frames;
}

/**
 * Where the trailing block of indented `at ` lines of a stack starts: the
 * lines that {@linkcode parseStack} reads frames from. Trailing blank lines
 * are ignored.
 *
 * @param stack The stack text.
 * @returns The index of the block's first character; `stack.length` when
 * there is no such block.
 *
 * @example Usage
 * ```ts
 * import { frameBlockStart } from "./parse_stack.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const stack = "Error: a\n    at fake\nb\n    at f (<anonymous>:1:2)";
 * deepEqual(stack.slice(frameBlockStart(stack)), "    at f (<anonymous>:1:2)");
 * deepEqual(frameBlockStart("no frames"), 9);
 * ```
 */
export function frameBlockStart(stack: string): number {
  if (typeof stack !== "string") return 0;
  const lines = stack.split("\n");
  const { start } = trailingBlock(lines);
  let offset = 0;
  for (let i = 0; i < start; i++) offset += lines[i].length + 1;
  return Math.min(offset, stack.length);
}

/**
 * Parses one line of a V8 stack trace, such as `    at foo (file:///a.ts:1:2)`.
 *
 * @param line One line, with or without its indentation.
 * @returns The frame, or `undefined` when the line is not a frame V8 prints.
 *
 * @example Usage
 * ```ts
 * import { parseStackLine } from "./parse_stack.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(parseStackLine("    at JSON.parse (<anonymous>)"), {
 *   function: "JSON.parse",
 *   file: null,
 *   line: null,
 *   column: null,
 *   native: true,
 *   async: false,
 *   constructor: false,
 * });
 * deepEqual(parseStackLine("hello"), undefined);
 * ```
 */
export function parseStackLine(line: string): StackFrame | undefined {
  if (typeof line !== "string" || line.length > MAX_FRAME_LINE_LENGTH) {
    return undefined;
  }
  let text = line.includes("\x1b")
    ? line.replace(ANSI_ESCAPE_REGEXP, "")
    : line;
  text = text.trim();
  if (!text.startsWith("at ")) return undefined;
  text = text.slice(3).trimStart();
  let isAsync = false;
  if (text.startsWith("async ")) {
    isAsync = true;
    text = text.slice(6).trimStart();
  }
  if (text.length === 0) return undefined;

  let fn: string | null = null;
  let location = text;
  if (text.endsWith(")")) {
    const open = locationStart(text);
    if (open > 0) {
      fn = text.slice(0, open).trimEnd();
      location = text.slice(open + 1, -1);
    } else if (open === 0) {
      location = text.slice(1, -1);
    }
  }
  if (fn !== null) {
    fn = stripAlias(fn);
    if (fn.length === 0) fn = null;
  }
  const isConstructor = fn !== null && fn.startsWith("new ");

  const frame: StackFrame = {
    function: fn,
    file: null,
    line: null,
    column: null,
    native: false,
    async: isAsync,
    constructor: isConstructor,
  };
  if (
    location === "<anonymous>" || location === "native" ||
    location === "unknown location" || isPromiseIndex(location)
  ) {
    frame.native = true;
    return frame;
  }
  if (location.length === 0) return undefined;
  const position = splitPosition(location);
  frame.file = position.file;
  frame.line = position.line;
  frame.column = position.column;
  return frame;
}

/** The lines `[start, end)` of the trailing block of frame lines, before any trailing blank lines. */
function trailingBlock(lines: string[]): { start: number; end: number } {
  let end = lines.length;
  while (end > 0 && isBlank(lines[end - 1])) end--;
  let start = end;
  while (start > 0 && isFrameLine(lines[start - 1])) start--;
  return { start, end };
}

function isBlank(line: string | undefined): boolean {
  return line === undefined || line.trim().length === 0;
}

function isFrameLine(line: string | undefined): boolean {
  if (line === undefined) return false;
  const head = line.length > 64 ? line.slice(0, 64) : line;
  const clean = head.includes("\x1b")
    ? line.slice(0, 256).replace(ANSI_ESCAPE_REGEXP, "")
    : head;
  return FRAME_LINE_REGEXP.test(clean);
}

/**
 * Finds the `(` that opens the trailing parenthesised location of
 * `name (location)`: the one balancing the final `)`, when it starts a word;
 * else the first ` (`. Returns -1 when there is none.
 */
function locationStart(text: string): number {
  let depth = 0;
  for (let i = text.length - 1; i >= 0; i--) {
    const c = text.charCodeAt(i);
    if (c === 41 /* ) */) depth++;
    else if (c === 40 /* ( */) {
      depth--;
      if (depth === 0) {
        if (i === 0 || text.charCodeAt(i - 1) === 32) return i;
        break;
      }
    }
  }
  const first = text.indexOf(" (");
  return first === -1 ? (text.startsWith("(") ? 0 : -1) : first + 1;
}

/** Removes a trailing ` [as alias]` from a function name. */
function stripAlias(fn: string): string {
  if (!fn.endsWith("]")) return fn;
  const at = fn.lastIndexOf(" [as ");
  return at === -1 ? fn : fn.slice(0, at).trimEnd();
}

/** `index 2`, as in `at Promise.all (index 2)`. */
function isPromiseIndex(location: string): boolean {
  if (!location.startsWith("index ") || location.length === 6) return false;
  for (let i = 6; i < location.length; i++) {
    const c = location.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** Splits `file:line:column` (or `file:line`) from the end. */
function splitPosition(
  location: string,
): { file: string; line: number | null; column: number | null } {
  const last = trailingNumber(location, location.length);
  if (last === undefined) return { file: location, line: null, column: null };
  const before = trailingNumber(location, last.start - 1);
  if (before === undefined) {
    return {
      file: location.slice(0, last.start - 1),
      line: last.value,
      column: null,
    };
  }
  return {
    file: location.slice(0, before.start - 1),
    line: before.value,
    column: last.value,
  };
}

/**
 * Reads the digits that end at `end` (exclusive) and are preceded by `:` with
 * something before it; returns their value and start index.
 */
function trailingNumber(
  text: string,
  end: number,
): { value: number; start: number } | undefined {
  let i = end;
  while (i > 0 && end - i <= MAX_POSITION_DIGITS) {
    const c = text.charCodeAt(i - 1);
    if (c < 48 || c > 57) break;
    i--;
  }
  const digits = end - i;
  if (digits === 0 || digits > MAX_POSITION_DIGITS) return undefined;
  if (i < 2 || text.charCodeAt(i - 1) !== 58 /* : */) return undefined;
  return { value: Number(text.slice(i, end)), start: i };
}
