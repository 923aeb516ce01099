/**
 * The collector's command line: flags and environment to a configuration,
 * and a running server with periodic pruning and graceful shutdown.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CollectorHandler, createCollector } from "./app.ts";
import { validateSlackWebhookUrl } from "../slack_webhook.ts";
import { openPostgresStorage } from "./postgres_storage.ts";
import { groupUrl } from "./dashboard/urls.ts";
import { DEFAULT_NOTICE_POLICY, SlackNotifier } from "./slack_notifier.ts";
import { openSqliteStorage } from "./sqlite_storage.ts";
import type { Storage } from "./storage.ts";

/**
 * The collector's configuration, as read from flags and environment.
 *
 * @example Usage
 * ```ts
 * import { parseServerArgs, type ServerConfig } from "./cli.ts";
 *
 * const config = parseServerArgs(["--port", "0"], {}) as ServerConfig;
 * console.log(config.port); // 0
 * ```
 */
export interface ServerConfig {
  /** The TCP port; 0 picks a free one. @default {8000} */
  port: number;
  /** The interface to listen on. @default {"0.0.0.0"} */
  hostname: string;
  /** The SQLite file. @default {"./errors.db"} */
  db: string;
  /** A `postgres://` URL (from `DATABASE_URL`): PostgreSQL instead of the SQLite file. */
  databaseUrl?: string;
  /** The Slack incoming webhook (from `SLACK_WEBHOOK`): forward notices to Slack. */
  slackWebhook?: string;
  /** The server's public base URL (from `NBR_PUBLIC_URL`): Slack messages link to the dashboard. */
  publicUrl?: string;
  /** The first retry delay of a failed Slack post, doubling up to 15 minutes. @default {5000} */
  slackRetryMs?: number;
  /** The admin token (from `NBR_ADMIN_TOKEN`). */
  adminToken?: string;
  /** The notebooks accepted; all when undefined. */
  notebooks?: string[];
  /** Read client addresses from `X-Forwarded-For`. @default {false} */
  trustProxy: boolean;
  /** Let everyone read the admin lists. @default {false} */
  publicRead: boolean;
  /** Turn every abuse limit off. @default {false} */
  noLimits: boolean;
  /** Days raw reports are kept. @default {90} */
  retentionDays: number;
  /** The size cap of the data, in MiB. @default {1024} */
  maxDbMib: number;
  /** SQLite's `synchronous`: `normal` survives a crash of the process, `full` also a power loss. @default {"normal"} */
  synchronous: "full" | "normal";
  /** Serve the dashboard without sign-in (no admin token; loopback only). @default {false} */
  dashboardOpen: boolean;
}

/** The text `--help` prints. */
export const SERVER_HELP: string =
  `nbr-collector: receives notebook error reports (the notebook-error-reporter server)

Usage: deno run --allow-net --allow-read --allow-write --allow-env server.ts [options]

Options:
  --port <n>            TCP port to listen on; 0 picks a free one (default 8000)
  --hostname <host>     interface to listen on (default 0.0.0.0)
  --db <file>           SQLite database file, WAL mode (default ./errors.db)
  --slack-retry-ms <n>  first retry delay of a failed Slack post, doubling up to
                        15 minutes (default 5000)
  --notebooks <a,b>     accept only these notebook names (default: all)
  --trust-proxy         take the client address from the last X-Forwarded-For
                        entry (only behind a reverse proxy that sets it)
  --public-read         let everyone list sessions and reports (GET /usages/,
                        GET /errors/, /api/v1/notebooks…); default: admin only
  --no-limits           turn off every abuse limit (benchmarks, trusted setups)
  --retention-days <n>  delete raw reports older than this (default 90)
  --max-db-mib <n>      past this size delete the oldest raw reports first;
                        per-day counts stay (default 1024)
  --synchronous <mode>  normal (default: acknowledged reports survive a crash
                        of the process) or full (they also survive a power
                        loss, with an fsync per commit: slower)
  --dashboard-open      serve the web dashboard without sign-in, for one person
                        on this machine: only without NBR_ADMIN_TOKEN, and the
                        server then listens on loopback only (127.0.0.1 unless
                        --hostname names another loopback address)
  -h, --help            show this help

Environment:
  DATABASE_URL          postgres://user:password@host:5432/db[?search_path=s]:
                        store everything in PostgreSQL instead of --db; several
                        instances behind a load balancer may share it (group
                        counts, the Slack budget and the outbox stay consistent;
                        per-address rate limits are per instance)
  SLACK_WEBHOOK         a Slack incoming-webhook URL: post new error groups,
                        regressions and spikes (each group at most once per 30
                        minutes, at most 20 messages per hour for the server,
                        the rest in one digest when the hour ends), retried
                        from a durable outbox; reports never wait on Slack
  NBR_PUBLIC_URL        the server's public URL, such as https://errors.example.com:
                        Slack messages then link to the group's dashboard page
  NBR_ADMIN_TOKEN       admin token: send it as "Authorization: Bearer <token>"
                        to read the lists; without it they are closed

Dashboard: with NBR_ADMIN_TOKEN set, <url>/dashboard/ shows every notebook's
error groups after signing in with the token (a session cookie: HttpOnly,
SameSite=Strict, Secure over TLS or behind --trust-proxy with
X-Forwarded-Proto: https). Without a token it is off unless --dashboard-open.

Abuse limits (defaults): per client address 30 sessions per hour and 60 reports
per minute; per session at most 100 reports and a burst of 5 refilled one per
5 s; identical reports of a session within a minute are counted, not stored.
Refused requests get 429 with Retry-After. Client addresses are never stored:
they are kept in memory as HMACs under a key that rotates daily.

On start it prints "nbr-collector listening on <url>" on stdout. SIGINT and
SIGTERM stop it after the requests in flight are answered; a report is
acknowledged only after it was committed.
`;

const POSITIVE_INTEGER_REGEXP = /^\d+$/;
const LOOPBACK_REGEXP = /^(?:localhost|127(?:\.\d{1,3}){3}|::1|\[::1\])$/i;

function integer(flag: string, text: string, min: number, max: number): number {
  const value = POSITIVE_INTEGER_REGEXP.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(
      `--${flag} must be an integer from ${min} to ${max}, got ${
        JSON.stringify(text)
      }`,
    );
  }
  return value;
}

const POSTGRES_URL_REGEXP = /^postgres(?:ql)?:\/\//i;

function databaseUrlFrom(value: string | undefined): string | undefined {
  if (!value) return undefined;
  if (!POSTGRES_URL_REGEXP.test(value)) {
    throw new RangeError(
      `DATABASE_URL must start with postgres:// or postgresql://, got ${
        JSON.stringify(value.split(":")[0])
      }:…`,
    );
  }
  return value;
}

function publicUrlFrom(value: string | undefined): string | undefined {
  if (!value) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new RangeError(
      `NBR_PUBLIC_URL must be an http(s) URL, got ${JSON.stringify(value)}`,
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new RangeError(
      `NBR_PUBLIC_URL must be an http(s) URL, got ${JSON.stringify(value)}`,
    );
  }
  return url.href;
}

function slackWebhookFrom(value: string | undefined): string | undefined {
  if (!value) return undefined;
  try {
    validateSlackWebhookUrl(value);
  } catch (error) {
    throw new RangeError(`SLACK_WEBHOOK: ${(error as Error).message}`);
  }
  return value;
}

/**
 * Reads the configuration from flags and environment.
 *
 * @param args The command-line arguments.
 * @param env The environment variables.
 * @returns The configuration, or `"help"` when help was asked for.
 * @throws {RangeError} When a flag's value is invalid.
 * @throws {TypeError} When a flag is unknown.
 *
 * @example Usage
 * ```ts
 * import { parseServerArgs } from "./cli.ts";
 *
 * parseServerArgs(["--help"], {}); // "help"
 * ```
 */
export function parseServerArgs(
  args: string[],
  env: Record<string, string | undefined>,
): ServerConfig | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      port: { type: "string" },
      hostname: { type: "string" },
      db: { type: "string" },
      "slack-retry-ms": { type: "string" },
      notebooks: { type: "string" },
      "trust-proxy": { type: "boolean" },
      "public-read": { type: "boolean" },
      "no-limits": { type: "boolean" },
      "retention-days": { type: "string" },
      "max-db-mib": { type: "string" },
      synchronous: { type: "string" },
      "dashboard-open": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const synchronous = values.synchronous ?? "normal";
  if (synchronous !== "full" && synchronous !== "normal") {
    throw new RangeError(
      `--synchronous must be full or normal, got ${
        JSON.stringify(synchronous)
      }`,
    );
  }
  const notebooks = values.notebooks?.split(",").map((s) => s.trim()).filter(
    Boolean,
  );
  const token = env.NBR_ADMIN_TOKEN;
  const dashboardOpen = values["dashboard-open"] ?? false;
  if (dashboardOpen && token) {
    throw new RangeError(
      "--dashboard-open is for a server without NBR_ADMIN_TOKEN; with a token the dashboard asks for it",
    );
  }
  const hostname = values.hostname ?? (dashboardOpen ? "127.0.0.1" : "0.0.0.0");
  if (dashboardOpen && !LOOPBACK_REGEXP.test(hostname)) {
    throw new RangeError(
      `--dashboard-open listens on loopback only, got --hostname ${
        JSON.stringify(hostname)
      }`,
    );
  }
  return {
    port: integer("port", values.port ?? "8000", 0, 65535),
    hostname,
    db: values.db ?? "./errors.db",
    databaseUrl: databaseUrlFrom(env.DATABASE_URL),
    slackWebhook: slackWebhookFrom(env.SLACK_WEBHOOK),
    publicUrl: publicUrlFrom(env.NBR_PUBLIC_URL),
    slackRetryMs: integer(
      "slack-retry-ms",
      values["slack-retry-ms"] ?? "5000",
      1,
      3_600_000,
    ),
    adminToken: token ? token : undefined,
    notebooks: notebooks && notebooks.length > 0 ? notebooks : undefined,
    trustProxy: values["trust-proxy"] ?? false,
    publicRead: values["public-read"] ?? false,
    noLimits: values["no-limits"] ?? false,
    retentionDays: integer(
      "retention-days",
      values["retention-days"] ?? "90",
      1,
      36500,
    ),
    maxDbMib: integer(
      "max-db-mib",
      values["max-db-mib"] ?? "1024",
      1,
      16 * 1024 * 1024,
    ),
    synchronous,
    dashboardOpen,
  };
}

/**
 * A collector listening on a socket.
 *
 * @example Usage
 * ```ts
 * import type { RunningServer } from "./cli.ts";
 *
 * async function stop(server: RunningServer): Promise<void> {
 *   await server.shutdown();
 * }
 * ```
 */
export interface RunningServer {
  /** The base URL, such as `http://127.0.0.1:8000/`. */
  url: string;
  /** The storage it writes to. */
  storage: Storage;
  /** The handler it serves. */
  handler: CollectorHandler;
  /** Stops accepting, answers the requests in flight, commits and closes the storage. */
  shutdown(): Promise<void>;
  /** Resolves once shut down. */
  finished: Promise<void>;
}

/**
 * Starts the collector: opens the storage, prunes it now and every ten
 * minutes, and listens.
 *
 * @param config The configuration.
 * @param options `onError` is told about unexpected errors. @default {{}}
 * @returns The running server.
 * @throws {Error} When the database cannot be opened or the port is taken.
 *
 * @example Usage
 * ```ts ignore
 * import { parseServerArgs, type ServerConfig, startServer } from "./cli.ts";
 *
 * const config = parseServerArgs(["--port", "0", "--db", ":memory:"], {}) as ServerConfig;
 * const server = await startServer(config);
 * await server.shutdown();
 * ```
 */
export async function startServer(
  config: ServerConfig,
  options: { onError?: (error: unknown) => void } = {},
): Promise<RunningServer> {
  const notices = config.slackWebhook ? DEFAULT_NOTICE_POLICY : undefined;
  const storage: Storage = config.databaseUrl
    ? await openPostgresStorage(config.databaseUrl, { notices })
    : await openSqliteStorage(config.db, {
      synchronous: config.synchronous,
      notices,
    });
  const notifier = config.slackWebhook
    ? new SlackNotifier({
      webhookUrl: config.slackWebhook,
      storage,
      retryBaseMs: config.slackRetryMs,
      onError: options.onError,
      groupLink: config.publicUrl
        ? (id) => new URL(groupUrl(id), config.publicUrl).href
        : undefined,
    })
    : undefined;
  notifier?.start();
  const handler = createCollector({
    storage,
    limits: config.noLimits ? false : {},
    adminToken: config.adminToken,
    notebooks: config.notebooks,
    trustProxy: config.trustProxy,
    publicRead: config.publicRead,
    onError: options.onError,
    dashboard: config.dashboardOpen ? { open: true } : true,
  });
  const prune = async () => {
    try {
      await storage.prune({
        now: Date.now(),
        maxAgeMs: config.retentionDays * 86_400_000,
        maxBytes: config.maxDbMib * 1024 * 1024,
      });
    } catch (error) {
      options.onError?.(error);
    }
  };
  await prune();
  const timer = setInterval(prune, 10 * 60_000);
  Deno.unrefTimer(timer);
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    onListen: () => {},
  }, handler);
  const addr = server.addr;
  const host = addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const url = `http://${host}:${addr.port}/`;
  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      clearInterval(timer);
      await server.shutdown();
      await notifier?.stop();
      await storage.close();
    })();
    return stopping;
  };
  return {
    url,
    storage,
    handler,
    shutdown,
    finished: server.finished.then(() => stopping),
  };
}

/**
 * Runs the collector from the command line until SIGINT or SIGTERM.
 *
 * @param args The command-line arguments.
 * @returns The process exit code.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "./cli.ts";
 *
 * Deno.exit(await main(["--port", "8000"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let config: ServerConfig | "help";
  try {
    config = parseServerArgs(args, Deno.env.toObject());
  } catch (error) {
    console.error(
      `nbr-collector: ${error instanceof Error ? error.message : error}`,
    );
    console.error("Try --help");
    return 2;
  }
  if (config === "help") {
    console.log(SERVER_HELP);
    return 0;
  }
  const server = await startServer(config, {
    onError: (error) =>
      console.error("nbr-collector: unexpected error:", error),
  });
  console.log(`nbr-collector listening on ${server.url}`);
  console.log(
    config.adminToken || config.dashboardOpen
      ? `nbr-collector dashboard at ${server.url}dashboard/${
        config.dashboardOpen ? " (open: no sign-in, loopback only)" : ""
      }`
      : "nbr-collector dashboard off: set NBR_ADMIN_TOKEN, or pass --dashboard-open for a local one",
  );
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const stop = () => {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    console.log("nbr-collector: shutting down");
    server.shutdown();
  };
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  await server.finished;
  return 0;
}
