/**
 * Report failing Jupyter notebook cells on the Deno kernel, without collecting
 * anything private about the reader.
 *
 * Put this in a notebook's first cell: from then on a cell that succeeds does
 * nothing, and a cell that fails sends one small, scrubbed JSON payload
 * ({@linkcode ErrorPayload}).
 *
 * @example Report failing cells to Slack
 * ```ts ignore
 * import { ErrorSlack } from "@nbr/notebook-error-reporter";
 *
 * const es = new ErrorSlack(Deno.env.get("SLACK_WEBHOOK")!, { notebook: "demo" });
 * await es.loadExtension();
 * ```
 *
 * @module
 */

export type * from "./src/types.ts";
export { parseStack } from "./src/parse_stack.ts";
export { buildPayload, scrubPayload } from "./src/build_payload.ts";
export { PAYLOAD_LIMITS, scrubText, truncateText } from "./src/scrub.ts";
export {
  defaultNotebookName,
  type ErrorRecord,
  ErrorReporter,
  type ReporterOptions,
  type ReportInfo,
} from "./src/error_reporter.ts";
export { ErrorStore } from "./src/error_store.ts";
export { ErrorSlack, type ErrorSlackOptions } from "./src/error_slack.ts";
export {
  ErrorServer,
  type ErrorServerOptions,
  type StoredError,
} from "./src/error_server.ts";
export * from "./src/slack_message.ts";
export * from "./src/slack_webhook.ts";
