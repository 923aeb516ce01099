/**
 * The collector server of notebook-error-reporter: receives the reports of
 * `ErrorServer` (and of the original Python tool), stores them in SQLite or
 * PostgreSQL, resists floods, groups them, forwards new problems to Slack and
 * shows them on a dashboard. Run it with `deno task serve` (see `--help`), or embed the
 * handler with {@linkcode createCollector}.
 *
 * @example Embedding the handler
 * ```ts
 * import { createCollector, openSqliteStorage } from "./server.ts";
 *
 * const storage = await openSqliteStorage(":memory:");
 * const handler = createCollector({ storage, notebooks: ["demo"] });
 * const response = await handler(new Request("http://localhost/api/v1/health"));
 * console.log(response.status); // 200
 * await storage.close();
 * ```
 *
 * @module
 */

export {
  type CollectorHandler,
  type CollectorOptions,
  type ConnectionInfo,
  createCollector,
} from "./src/server/app.ts";
export {
  main,
  parseServerArgs,
  type RunningServer,
  SERVER_HELP,
  type ServerConfig,
  startServer,
} from "./src/server/cli.ts";
export {
  type Migration,
  openSqliteStorage,
  SQLITE_MIGRATIONS,
  SqliteStorage,
  type SqliteStorageOptions,
} from "./src/server/sqlite_storage.ts";
export type * from "./src/server/storage.ts";
export type { ErrorPayload, TracebackFrame } from "./src/types.ts";
export { payloadHash, utcDay } from "./src/server/storage.ts";
export {
  type RateDecision,
  RateLimiter,
  type RateLimitOptions,
} from "./src/server/rate_limits.ts";
export { type FieldProblem, HttpError } from "./src/server/http_error.ts";
export {
  errorFingerprint,
  isNotebookFrame,
  normalizeMessage,
} from "./src/server/fingerprint.ts";
export {
  DEFAULT_NOTICE_POLICY,
  noticeMessage,
  SlackNotifier,
  type SlackNotifierOptions,
} from "./src/server/slack_notifier.ts";
export {
  dropPostgresSchema,
  openPostgresStorage,
  POSTGRES_MIGRATIONS,
  PostgresStorage,
  type PostgresStorageOptions,
} from "./src/server/postgres_storage.ts";
export { GROUP_LIMITS, GROUP_STATES, utcHour } from "./src/server/storage.ts";
export type {
  SlackBlock,
  SlackContextBlock,
  SlackHeaderBlock,
  SlackMessage,
  SlackMrkdwnText,
  SlackPlainText,
  SlackSectionBlock,
  SlackTextObject,
} from "./src/slack_message.ts";
export {
  createDashboard,
  DASHBOARD_CSP,
  type DashboardHandler,
  type DashboardOptions,
  type DashboardStorage,
  isDashboardPath,
} from "./src/server/dashboard/routes.ts";
export {
  DashboardAuth,
  type DashboardAuthOptions,
  type Principal,
} from "./src/server/dashboard/auth.ts";

if (import.meta.main) {
  const { main } = await import("./src/server/cli.ts");
  Deno.exit(await main(Deno.args));
}
