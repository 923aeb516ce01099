/**
 * Test support: the `addReport` input the storage tests send, with the
 * collector's default duplicate window and no per-session cap.
 *
 * @module
 */

import type { AddReportInput } from "../../src/server/storage.ts";
import type { ErrorPayload } from "../../src/types.ts";

/**
 * An `addReport` input: a 60 s duplicate window and no per-session cap,
 * unless `extra` says otherwise.
 */
export function reportInput(
  usageUuid: string,
  payload: ErrorPayload,
  now: number,
  extra: Partial<AddReportInput> = {},
): AddReportInput {
  return {
    usageUuid,
    payload,
    now,
    dedupeWindowMs: 60_000,
    maxReportsPerSession: Infinity,
    ...extra,
  };
}

/** A report numbered `n`: its line, first line and execution count are `n`. */
export function numberedPayload(n: number, message = "boom"): ErrorPayload {
  return {
    error_name: "Error",
    error_message: message,
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: n }],
    first_line: `cell ${n}`,
    execution_count: n,
    notebook: "ignored",
  };
}

/** The input of report `n` (see {@linkcode numberedPayload}). */
export function numberedInput(
  usageUuid: string,
  n: number,
  now: number,
  extra: Partial<AddReportInput> = {},
): AddReportInput {
  return reportInput(usageUuid, numberedPayload(n), now, extra);
}
