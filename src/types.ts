/**
 * The shapes that cross module boundaries: what a stack parses into, and
 * the one payload that leaves the machine.
 *
 * @module
 */

/**
 * One frame of a reported traceback, as it leaves the machine.
 *
 * @example Usage
 * ```ts
 * import type { TracebackFrame } from "@nbr/notebook-error-reporter";
 *
 * const frame: TracebackFrame = { filename: "<cell>", fun_name: "<module>", lineno: 3 };
 * ```
 */
export interface TracebackFrame {
  /** `<cell>`, `<native>`, `<eval>`, a `node:`/`ext:` specifier, an `npm:` path, a URL or a path relative to the notebook. */
  filename: string;
  /** The function as V8 names it; `<module>` for top-level code, `<anonymous>` for unnamed callbacks. */
  fun_name: string;
  /** The line, or `null` where V8 gives none. */
  lineno: number | null;
}

/**
 * The one small JSON object sent for a failing cell. It has exactly these six keys.
 *
 * @example Usage
 * ```ts
 * import type { ErrorPayload } from "@nbr/notebook-error-reporter";
 *
 * const payload: ErrorPayload = {
 *   error_name: "TypeError",
 *   error_message: "x is not a function",
 *   traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
 *   first_line: "x()",
 *   execution_count: 4,
 *   notebook: "demo",
 * };
 * ```
 */
export interface ErrorPayload {
  /** The error's class name, such as `TypeError` (scrubbed, at most 200 characters). */
  error_name: string;
  /** The error's message, scrubbed, at most 1000 characters. */
  error_message: string;
  /** The frames, outermost call first and the frame that threw last, at most 50. */
  traceback: TracebackFrame[];
  /** The first line of the failing cell, scrubbed, at most 200 characters. */
  first_line: string;
  /** The failing cell's execution count, or `null` when unknown. */
  execution_count: number | null;
  /** The notebook's name, scrubbed, at most 100 characters. */
  notebook: string;
}

/**
 * One parsed line of a V8 stack trace.
 *
 * @example Usage
 * ```ts
 * import { parseStack } from "@nbr/notebook-error-reporter";
 *
 * const [frame] = parseStack("Error: boom\n    at foo (file:///app/main.ts:2:9)");
 * console.log(frame?.function, frame?.line); // "foo" 2
 * ```
 */
export interface StackFrame {
  /** The function name as V8 prints it, or `null` when V8 prints none. */
  function: string | null;
  /** The location's file, URL or specifier, or `null` for native frames. */
  file: string | null;
  /** The 1-based line, or `null`. */
  line: number | null;
  /** The 1-based column, or `null`. */
  column: number | null;
  /** Whether V8 printed the frame without a position (built-in code). */
  native: boolean;
  /** Whether V8 printed the frame as `at async …`. */
  async: boolean;
  /** Whether V8 printed the frame as `at new …`. */
  constructor: boolean;
}

/**
 * What {@linkcode buildPayload} turns into an {@linkcode ErrorPayload}.
 *
 * @example Usage
 * ```ts
 * import type { PayloadInput } from "@nbr/notebook-error-reporter";
 *
 * const input: PayloadInput = { name: "Error", message: "boom", firstLine: "boom()" };
 * ```
 */
export interface PayloadInput {
  /** The error's name. */
  name: string;
  /** The error's message. */
  message: string;
  /** The text of `error.stack`. */
  stack?: string;
  /** The kernel's traceback lines (the stack split on newlines); used when `stack` is absent. */
  traceback?: string[];
  /** The first line of the failing cell. @default {""} */
  firstLine?: string;
  /** The failing cell's execution count. @default {null} */
  executionCount?: number | null;
  /** The notebook's name. @default {"unknown"} */
  notebook?: string;
}

/**
 * Where the machine's private paths and names are, so that they can be removed.
 * Each field defaults to the running process, where permission is granted.
 *
 * @example Usage
 * ```ts
 * import type { PayloadContext } from "@nbr/notebook-error-reporter";
 *
 * const context: PayloadContext = { cwd: "/home/alice/nb", home: "/home/alice", user: "alice" };
 * ```
 */
export interface PayloadContext {
  /** The notebook's working directory: files below it are reported relative to it. */
  cwd?: string;
  /** The user's home directory, reported as `~`. */
  home?: string;
  /** The user's login name, reported as `<user>`. */
  user?: string;
  /** Deno's cache directory, whose npm packages are reported as `npm:<name>@<version>/…`. */
  denoDir?: string;
}
