/**
 * The collector as a plain request handler, built by a factory from its
 * options (storage, clock, limits, admin token, allow-list): no socket here,
 * so tests call it with `new Request(...)` and the entry point hands it to
 * `Deno.serve`.
 *
 * Routes (trailing slashes optional, as the Python server's redirects made them):
 * - `POST /usages/`, `POST /errors/<uuid>/`, `GET /usages/<uuid>`: the
 *   original Python tool's API, byte-compatible.
 * - `GET /usages/`, `GET /errors/` (`skip`, `limit`): admin lists.
 * - `/api/v1/…`: the native JSON API (health, sessions, reports by notebook,
 *   per-day counts).
 * - `/` and `/dashboard/…`: the web dashboard (src/server/dashboard/), when
 *   an admin token is set or the dashboard is opened explicitly.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { scrubPayload } from "../build_payload.ts";
import type { ErrorPayload } from "../types.ts";
import { createDashboard, isDashboardPath } from "./dashboard/routes.ts";
import {
  errorResponse,
  HttpError,
  jsonResponse,
  writeResponse,
} from "./http_error.ts";
import {
  type RateDecision,
  RateLimiter,
  type RateLimitOptions,
} from "./rate_limits.ts";
import type { Storage, StoredReport, StoredUsage } from "./storage.ts";
import { utcDay } from "./storage.ts";
import {
  MAX_BODY_BYTES,
  parsePage,
  queryInteger,
  readJsonBody,
  validatePayload,
  validateUsageCreate,
} from "./validate.ts";

/**
 * The connection facts a handler may receive (a subset of
 * `Deno.ServeHandlerInfo`).
 *
 * @example Usage
 * ```ts
 * import type { ConnectionInfo } from "./app.ts";
 *
 * const info: ConnectionInfo = { remoteAddr: { hostname: "192.0.2.1" } };
 * ```
 */
export interface ConnectionInfo {
  /** The peer's address. */
  remoteAddr?: { hostname?: string };
}

/**
 * The collector as a function from request to response.
 *
 * @example Usage
 * ```ts
 * import type { CollectorHandler } from "./app.ts";
 *
 * const handler: CollectorHandler = () => Promise.resolve(new Response(null, { status: 204 }));
 * ```
 */
export type CollectorHandler = (
  request: Request,
  info?: ConnectionInfo,
) => Promise<Response>;

/**
 * Options of {@linkcode createCollector}.
 *
 * @example Usage
 * ```ts
 * import type { CollectorOptions } from "./app.ts";
 * import { openSqliteStorage } from "./sqlite_storage.ts";
 *
 * const options: CollectorOptions = {
 *   storage: await openSqliteStorage(":memory:"),
 *   notebooks: ["demo"],
 * };
 * ```
 */
export interface CollectorOptions {
  /** Where sessions and reports are kept. */
  storage: Storage;
  /** The clock, in ms since the epoch. @default {Date.now} */
  clock?: () => number;
  /** The abuse limits, or `false` to turn them all off (including the per-session cap). @default {{}} */
  limits?: RateLimitOptions | false;
  /** Reports accepted per session at most. @default {100} */
  maxReportsPerSession?: number;
  /** Identical reports of a session within this window are counted, not stored. @default {60000} */
  dedupeWindowMs?: number;
  /** The admin token (`Authorization: Bearer <token>`); without one the admin routes answer 401. */
  adminToken?: string;
  /** Only these notebooks may open sessions and send reports. @default {undefined} (all) */
  notebooks?: readonly string[];
  /** Read the client address from the last `X-Forwarded-For` entry. @default {false} */
  trustProxy?: boolean;
  /** Let everyone read the admin lists. @default {false} */
  publicRead?: boolean;
  /** The largest body accepted, in bytes. @default {16384} */
  maxBodyBytes?: number;
  /** Told about unexpected errors (answered 500). @default {undefined} */
  onError?: (error: unknown) => void;
  /**
   * The web dashboard on `/` and `/dashboard/…`: `true` with an admin token
   * (sign-in required), `{ open: true }` without sign-in (for one person on
   * loopback), `false` to leave it off.
   * @default {true when adminToken is set, else false}
   */
  dashboard?: boolean | { open: true };
}

const UUID_REGEXP = /^[0-9a-f]{32}$/;
const DASHED_UUID_REGEXP =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BEARER_REGEXP = /^Bearer\s+(\S+)\s*$/i;
const NOTEBOOK_REPORTS_PATH_REGEXP = /^\/api\/v1\/notebooks\/([^/]+)\/reports$/;
const SESSION_REPORTS_PATH_REGEXP = /^\/api\/v1\/sessions\/([^/]+)\/reports$/;

/**
 * Builds the collector's request handler.
 *
 * @param options The storage and the policies.
 * @returns The handler; it never throws and answers 5xx only for faults of the server.
 *
 * @example Usage
 * ```ts
 * import { createCollector } from "./app.ts";
 * import { openSqliteStorage } from "./sqlite_storage.ts";
 *
 * const storage = await openSqliteStorage(":memory:");
 * const handler = createCollector({ storage });
 * const response = await handler(
 *   new Request("http://localhost/usages/", {
 *     method: "POST",
 *     headers: { "content-type": "application/json" },
 *     body: JSON.stringify({ notebook: "demo" }),
 *   }),
 *   { remoteAddr: { hostname: "192.0.2.1" } },
 * );
 * console.log(response.status); // 200
 * await storage.close();
 * ```
 */
export function createCollector(options: CollectorOptions): CollectorHandler {
  const storage = options.storage;
  const clock = options.clock ?? Date.now;
  const limiter = options.limits === false ? undefined : new RateLimiter({
    ...options.limits,
    clock: options.limits?.clock ?? clock,
  });
  const maxReportsPerSession = options.limits === false
    ? Infinity
    : options.maxReportsPerSession ?? 100;
  const dedupeWindowMs = options.dedupeWindowMs ?? 60_000;
  const allowList = options.notebooks ? new Set(options.notebooks) : undefined;
  const maxBodyBytes = options.maxBodyBytes ?? MAX_BODY_BYTES;
  const dashboardOpen = typeof options.dashboard === "object" &&
    options.dashboard.open === true && !options.adminToken;
  const dashboard = (options.dashboard ?? true) !== false &&
      (options.adminToken || dashboardOpen)
    ? createDashboard({
      storage,
      clock,
      auth: {
        adminToken: options.adminToken,
        open: dashboardOpen,
        trustProxy: options.trustProxy,
      },
      clientAddress: (request, info) => clientAddress(request, info),
      onError: options.onError,
    })
    : undefined;
  const adminDigest = options.adminToken
    ? createHash("sha256").update(options.adminToken).digest()
    : undefined;

  function clientAddress(request: Request, info?: ConnectionInfo): string {
    if (options.trustProxy) {
      const forwarded = request.headers.get("x-forwarded-for");
      if (forwarded) {
        const entries = forwarded.split(",").map((s) => s.trim()).filter(
          Boolean,
        );
        const last = entries[entries.length - 1];
        if (last) return last;
      }
    }
    return info?.remoteAddr?.hostname ?? "unknown";
  }

  function enforce(decision: RateDecision): void {
    if (!decision.allowed) {
      throw new HttpError(
        429,
        `Too many requests: ${decision.reason}; retry after ${decision.retryAfterSeconds} s`,
        { "retry-after": String(decision.retryAfterSeconds) },
      );
    }
  }

  function requireAdmin(request: Request): void {
    if (options.publicRead) return;
    const match = BEARER_REGEXP.exec(
      request.headers.get("authorization") ?? "",
    );
    if (adminDigest && match) {
      const given = createHash("sha256").update(match[1]!).digest();
      if (timingSafeEqual(given, adminDigest)) return;
    }
    throw new HttpError(
      401,
      adminDigest
        ? "an admin token is required (Authorization: Bearer <token>)"
        : "admin access is disabled: the server has no NBR_ADMIN_TOKEN",
      { "www-authenticate": 'Bearer realm="nbr-collector"' },
    );
  }

  function checkNotebook(notebook: string): void {
    if (allowList && !allowList.has(notebook)) {
      throw new HttpError(
        403,
        `notebook ${JSON.stringify(notebook)} is not accepted by this server`,
      );
    }
  }

  function cleanNotebook(notebook: string): string {
    return scrubPayload({
      error_name: "",
      error_message: "",
      traceback: [],
      first_line: "",
      execution_count: null,
      notebook,
    }).notebook;
  }

  async function createSession(
    request: Request,
    info?: ConnectionInfo,
  ): Promise<StoredUsage> {
    if (limiter) {
      enforce(limiter.checkSessionCreation(clientAddress(request, info)));
    }
    const { notebook } = validateUsageCreate(
      await readJsonBody(request, { maxBytes: maxBodyBytes }),
    );
    checkNotebook(notebook);
    return await storage.createUsage(cleanNotebook(notebook), clock());
  }

  async function addReport(
    uuidText: string,
    request: Request,
    info?: ConnectionInfo,
  ): Promise<{ report: StoredReport; duplicate: boolean }> {
    const uuid = parseUuid(uuidText);
    if (limiter) enforce(limiter.checkReport(clientAddress(request, info)));
    const raw = validatePayload(
      await readJsonBody(request, { maxBytes: maxBodyBytes }),
    );
    if (raw.notebook !== "") checkNotebook(raw.notebook);
    if (limiter) enforce(limiter.checkSessionReport(uuid));
    const payload: ErrorPayload = scrubPayload(raw);
    const result = await storage.addReport({
      usageUuid: uuid,
      payload,
      now: clock(),
      dedupeWindowMs,
      maxReportsPerSession,
    });
    switch (result.status) {
      case "unknown-session":
        throw new HttpError(404, "Usage not found");
      case "session-limit":
        throw new HttpError(
          429,
          `Too many reports: this session reached its limit of ${result.limit}`,
        );
      default:
        return {
          report: result.report,
          duplicate: result.status === "duplicate",
        };
    }
  }

  async function usageWithErrors(usage: StoredUsage): Promise<unknown> {
    const reports = await storage.listUsageReports([usage.uuid]);
    return pythonUsage(usage, reports);
  }

  async function route(
    request: Request,
    info?: ConnectionInfo,
  ): Promise<Response> {
    const url = new URL(request.url);
    if (dashboard && isDashboardPath(url.pathname)) {
      return await dashboard(request, info);
    }
    const path = url.pathname.length > 1
      ? url.pathname.replace(/\/+$/, "")
      : url.pathname;
    const method = request.method;
    const parts = path.split("/");

    // The original Python tool's API.
    if (path === "/usages") {
      if (method === "POST") {
        return writeResponse(
          pythonUsage(await createSession(request, info), []),
        );
      }
      if (method === "GET") {
        requireAdmin(request);
        const usages = await storage.listUsages(parsePage(url));
        const reports = await storage.listUsageReports(
          usages.map((u) => u.uuid),
        );
        return jsonResponse(
          usages.map((usage) =>
            pythonUsage(
              usage,
              reports.filter((r) => r.usageUuid === usage.uuid),
            )
          ),
        );
      }
      return notAllowed("GET, POST");
    }
    if (parts.length === 3 && parts[1] === "usages") {
      if (method !== "GET") return notAllowed("GET");
      const usage = await storage.getUsage(parseUuid(parts[2]!));
      if (!usage) throw new HttpError(404, "Usage not found");
      return jsonResponse(await usageWithErrors(usage));
    }
    if (path === "/errors") {
      if (method !== "GET") return notAllowed("GET");
      requireAdmin(request);
      const reports = await storage.listReports(parsePage(url));
      return jsonResponse(reports.map(pythonError));
    }
    if (parts.length === 3 && parts[1] === "errors") {
      if (method !== "POST") return notAllowed("POST");
      const { report } = await addReport(parts[2]!, request, info);
      return writeResponse(pythonError(report));
    }

    // The native API.
    if (path === "/api/v1/health") {
      if (method !== "GET") return notAllowed("GET");
      try {
        await storage.ping();
      } catch {
        return jsonResponse(
          { status: "unavailable", storage: storage.engine },
          503,
        );
      }
      return jsonResponse({ status: "ok", storage: storage.engine });
    }
    if (path === "/api/v1/sessions") {
      if (method !== "POST") return notAllowed("POST");
      return writeResponse(
        nativeSession(await createSession(request, info)),
        201,
      );
    }
    let match = SESSION_REPORTS_PATH_REGEXP.exec(path);
    if (match) {
      if (method === "POST") {
        const { report, duplicate } = await addReport(match[1]!, request, info);
        return writeResponse(
          { ...nativeReport(report), duplicate },
          duplicate ? 200 : 201,
        );
      }
      if (method === "GET") {
        const usage = await storage.getUsage(parseUuid(match[1]!));
        if (!usage) throw new HttpError(404, "Session not found");
        const reports = await storage.listUsageReports([usage.uuid]);
        return jsonResponse({
          session: nativeSession(usage),
          reports: reports.map(nativeReport),
        });
      }
      return notAllowed("GET, POST");
    }
    if (path === "/api/v1/notebooks") {
      if (method !== "GET") return notAllowed("GET");
      requireAdmin(request);
      const notebooks = await storage.notebooks();
      return jsonResponse({
        notebooks: notebooks.map((n) => ({
          notebook: n.notebook,
          reports: n.reports,
          sessions: n.sessions,
          last_report_at: n.lastReportAt === null ? null : iso(n.lastReportAt),
        })),
      });
    }
    match = NOTEBOOK_REPORTS_PATH_REGEXP.exec(path);
    if (match) {
      if (method !== "GET") return notAllowed("GET");
      requireAdmin(request);
      let notebook: string;
      try {
        notebook = decodeURIComponent(match[1]!);
      } catch {
        throw new HttpError(404, "Notebook not found");
      }
      const page = parsePage(url);
      const reports = await storage.listReports({
        ...page,
        notebook,
        order: "desc",
      });
      return jsonResponse({
        notebook,
        ...page,
        reports: reports.map(nativeReport),
      });
    }
    if (path === "/api/v1/counts/daily") {
      if (method !== "GET") return notAllowed("GET");
      requireAdmin(request);
      const days = queryInteger(url, "days", 30, 3660);
      const now = clock();
      const notebook = url.searchParams.get("notebook") ?? undefined;
      const counts = await storage.dailyCounts({
        notebook,
        fromDay: utcDay(now - Math.max(0, days - 1) * 86_400_000),
        toDay: utcDay(now),
      });
      return jsonResponse({ days, counts });
    }
    throw new HttpError(404, "Not Found");
  }

  return async function collector(
    request: Request,
    info?: ConnectionInfo,
  ): Promise<Response> {
    try {
      return await route(request, info);
    } catch (error) {
      return errorResponse(error, options.onError);
    }
  };
}

function notAllowed(allow: string): Response {
  return jsonResponse({ detail: "Method Not Allowed" }, 405, { allow });
}

function parseUuid(text: string): string {
  const lower = text.toLowerCase();
  if (UUID_REGEXP.test(lower)) return lower;
  if (DASHED_UUID_REGEXP.test(lower)) return lower.replaceAll("-", "");
  throw new HttpError(404, "Usage not found");
}

/** The last time formatted: a batch's answers share their time. */
let lastIso: { ms: number; text: string } = { ms: NaN, text: "" };

function iso(ms: number): string {
  if (ms !== lastIso.ms) lastIso = { ms, text: new Date(ms).toISOString() };
  return lastIso.text;
}

/** A stored report in the Python tool's `Error` shape, keys in its order. */
function pythonError(report: StoredReport): Record<string, unknown> {
  return {
    id: report.id,
    usage_uuid: report.usageUuid,
    timestamp: iso(report.createdAt),
    error_name: report.error_name,
    error_message: report.error_message,
    traceback: report.traceback,
    execution_count: report.execution_count,
    first_line: report.first_line,
  };
}

/** A session in the Python tool's `Usage` shape, without its client address. */
function pythonUsage(
  usage: StoredUsage,
  reports: StoredReport[],
): Record<string, unknown> {
  return {
    id: usage.id,
    uuid: usage.uuid,
    notebook: usage.notebook,
    timestamp: iso(usage.createdAt),
    errors: reports.map(pythonError),
  };
}

function nativeSession(usage: StoredUsage): Record<string, unknown> {
  return {
    uuid: usage.uuid,
    notebook: usage.notebook,
    created_at: iso(usage.createdAt),
    report_count: usage.reportCount,
  };
}

function nativeReport(report: StoredReport): Record<string, unknown> {
  return {
    id: report.id,
    session: report.usageUuid,
    notebook: report.notebook,
    created_at: iso(report.createdAt),
    last_seen_at: iso(report.lastSeenAt),
    occurrences: report.occurrences,
    error_name: report.error_name,
    error_message: report.error_message,
    traceback: report.traceback,
    first_line: report.first_line,
    execution_count: report.execution_count,
  };
}
