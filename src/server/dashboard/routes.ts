/**
 * The dashboard as a request handler, built by {@linkcode createDashboard}:
 * the collector mounts it on `/` and `/dashboard/…`
 * ({@linkcode isDashboardPath}).
 *
 * Routes:
 * - `GET /` → redirect to `/dashboard/`.
 * - `GET /dashboard/` overview; `GET /dashboard/groups?notebook=…&q=…&state=…&sort=…&page=…`
 *   a notebook's groups; `GET /dashboard/groups/<id>` a group.
 * - `POST /dashboard/groups/<id>/state` (`state`, `csrf`),
 *   `POST /dashboard/groups/<id>/delete` (`confirm=yes`, `csrf`).
 * - `GET|POST /dashboard/sign-in`, `POST /dashboard/sign-out`.
 * - `GET /dashboard/static/dashboard.css`, `GET /dashboard/static/time.js`.
 *
 * Every response carries a strict Content-Security-Policy, `nosniff`,
 * `Referrer-Policy: no-referrer` and `frame-ancestors 'none'`. Unauthenticated
 * page requests are redirected to sign-in (other methods get 401); state
 * changes are POSTs with the session's CSRF token.
 *
 * @module
 */

import { DASHBOARD_ASSETS } from "./assets.ts";
import {
  DashboardAuth,
  type DashboardAuthOptions,
  type Principal,
} from "./auth.ts";
import type { ChartPoint } from "./charts.ts";
import { SafeHtml } from "./html.ts";
import {
  errorPage,
  groupListPage,
  groupPage,
  overviewPage,
  type PageContext,
  signInPage,
} from "./pages.ts";
import {
  DASHBOARD_PREFIX,
  type GroupListParams,
  groupListUrl,
  groupUrl,
  overviewUrl,
  safeNext,
  signInUrl,
} from "./urls.ts";
import {
  GROUP_STATES,
  type GroupState,
  type Storage,
  utcDay,
} from "../storage.ts";

/**
 * The storage methods the dashboard reads and writes.
 *
 * @example Usage
 * ```ts
 * import type { DashboardStorage } from "./routes.ts";
 * import { openSqliteStorage } from "../sqlite_storage.ts";
 *
 * const storage: DashboardStorage = await openSqliteStorage(":memory:");
 * ```
 */
export type DashboardStorage = Pick<
  Storage,
  | "listGroups"
  | "getGroup"
  | "groupDailyCounts"
  | "notebookWindowStats"
  | "setGroupState"
  | "deleteGroup"
  | "dailyCounts"
>;

/**
 * Options of {@linkcode createDashboard}.
 *
 * @example Usage
 * ```ts
 * import type { DashboardOptions } from "./routes.ts";
 * import { openSqliteStorage } from "../sqlite_storage.ts";
 *
 * const options: DashboardOptions = {
 *   storage: await openSqliteStorage(":memory:"),
 *   auth: { adminToken: "s3cret-token" },
 * };
 * ```
 */
export interface DashboardOptions {
  /** Where groups and counts are read. */
  storage: DashboardStorage;
  /** The sign-in policy, or a ready {@linkcode DashboardAuth}. */
  auth: DashboardAuthOptions | DashboardAuth;
  /** The clock, in ms since the epoch. @default {Date.now} */
  clock?: () => number;
  /** Groups per page. @default {50} */
  pageSize?: number;
  /** The client's address, for throttling failed sign-ins. @default {the peer's address} */
  clientAddress?: (
    request: Request,
    info?: { remoteAddr?: { hostname?: string } },
  ) => string;
  /** Told about unexpected errors (answered 500). @default {undefined} */
  onError?: (error: unknown) => void;
}

/**
 * The dashboard as a function from request to response.
 *
 * @example Usage
 * ```ts
 * import type { DashboardHandler } from "./routes.ts";
 *
 * const handler: DashboardHandler = () => Promise.resolve(new Response(null, { status: 204 }));
 * ```
 */
export type DashboardHandler = (
  request: Request,
  info?: { remoteAddr?: { hostname?: string } },
) => Promise<Response>;

/** The Content-Security-Policy of every dashboard response. */
export const DASHBOARD_CSP: string = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers every dashboard response carries. */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = Object
  .freeze({
    "content-security-policy": DASHBOARD_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
  });

/**
 * Whether a path belongs to the dashboard: `/`, `/dashboard` and anything
 * under `/dashboard/`.
 *
 * @param pathname The URL's path.
 * @returns `true` for the dashboard's paths.
 *
 * @example Usage
 * ```ts
 * import { isDashboardPath } from "./routes.ts";
 *
 * isDashboardPath("/dashboard/groups"); // true
 * isDashboardPath("/usages/"); // false
 * ```
 */
export function isDashboardPath(pathname: string): boolean {
  return pathname === "/" || pathname === DASHBOARD_PREFIX ||
    pathname.startsWith(`${DASHBOARD_PREFIX}/`);
}

const GROUP_PATH_REGEXP =
  /^\/dashboard\/groups\/(\d{1,15})(?:\/(state|delete))?\/?$/;
const PAGE_REGEXP = /^\d{1,7}$/;
const MAX_FORM_BYTES = 4096;
const DAY_MS = 86_400_000;

class DashboardError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function respond(
  body: SafeHtml | string | null,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(
    body instanceof SafeHtml ? body.toString() : body,
    {
      status,
      headers: {
        ...DASHBOARD_HEADERS,
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        ...headers,
      },
    },
  );
}

function redirect(
  location: string,
  headers: Record<string, string> = {},
): Response {
  return respond(null, 303, { location, ...headers });
}

async function readForm(request: Request): Promise<URLSearchParams> {
  const type = (request.headers.get("content-type") ?? "").split(";")[0]!
    .trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    throw new DashboardError(
      415,
      "Unsupported form",
      "Forms must be sent as application/x-www-form-urlencoded.",
    );
  }
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_FORM_BYTES) {
    throw new DashboardError(413, "Form too large", "The form was too large.");
  }
  const reader = request.body?.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_FORM_BYTES) {
        await reader.cancel().catch(() => {});
        throw new DashboardError(
          413,
          "Form too large",
          "The form was too large.",
        );
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new URLSearchParams(new TextDecoder().decode(bytes));
}

function dayRange(now: number, days: number): string[] {
  const out: string[] = [];
  for (let i = days - 1; i >= 0; i--) out.push(utcDay(now - i * DAY_MS));
  return out;
}

/**
 * Builds the dashboard's request handler.
 *
 * @param options The storage, the sign-in policy and the clock.
 * @returns The handler; it never throws.
 * @throws {TypeError} When there is neither an admin token nor the open mode.
 *
 * @example Usage
 * ```ts
 * import { createDashboard } from "./routes.ts";
 * import { openSqliteStorage } from "../sqlite_storage.ts";
 *
 * const storage = await openSqliteStorage(":memory:");
 * const dashboard = createDashboard({ storage, auth: { adminToken: "s3cret-token" } });
 * const response = await dashboard(new Request("http://localhost/dashboard/"));
 * console.log(response.status, response.headers.get("location")); // 303 "/dashboard/sign-in"
 * await storage.close();
 * ```
 */
export function createDashboard(options: DashboardOptions): DashboardHandler {
  const storage = options.storage;
  const clock = options.clock ?? Date.now;
  const auth = options.auth instanceof DashboardAuth
    ? options.auth
    : new DashboardAuth({ clock, ...options.auth });
  const pageSize = options.pageSize ?? 50;
  const clientAddress = options.clientAddress ??
    ((_request, info) => info?.remoteAddr?.hostname ?? "unknown");

  function context(principal: Principal | undefined): PageContext {
    return {
      now: clock(),
      csrf: principal?.kind === "session" ? principal.csrf : undefined,
      signedIn: !auth.open && principal?.kind === "session",
    };
  }

  async function overview(principal: Principal): Promise<Response> {
    const now = clock();
    const days = dayRange(now, 30);
    const [notebooks, counts] = await Promise.all([
      storage.notebookWindowStats(now),
      storage.dailyCounts({ fromDay: days[0]!, toDay: days[days.length - 1]! }),
    ]);
    const dayIndex = new Map(days.map((d, i) => [d, i]));
    const totals = days.map(() => 0);
    const sparklines = new Map<string, number[]>();
    for (const c of counts) {
      const i = dayIndex.get(c.day);
      if (i === undefined) continue;
      totals[i]! += c.reports;
      let line = sparklines.get(c.notebook);
      if (!line) sparklines.set(c.notebook, line = days.map(() => 0));
      line[i] = c.reports;
    }
    const points: ChartPoint[] = days.map((day, i) => ({
      label: day,
      value: totals[i]!,
    }));
    return respond(
      overviewPage(context(principal), {
        notebooks,
        days: points,
        sparklines,
      }),
    );
  }

  function listParams(url: URL): GroupListParams {
    const notebook = url.searchParams.get("notebook");
    if (notebook === null || notebook.length > 1000) {
      throw new DashboardError(
        404,
        "Notebook not found",
        "Choose a notebook on the overview.",
      );
    }
    const text = (url.searchParams.get("q") ?? "").trim().slice(0, 200);
    const stateText = url.searchParams.get("state") ?? "";
    const state = (GROUP_STATES as readonly string[]).includes(stateText)
      ? stateText as GroupState
      : undefined;
    const sort = url.searchParams.get("sort") === "count"
      ? "count"
      : "lastSeen";
    const pageText = url.searchParams.get("page") ?? "1";
    const page = PAGE_REGEXP.test(pageText) ? Math.max(1, Number(pageText)) : 1;
    return { notebook, text, state, sort, page };
  }

  async function groups(url: URL, principal: Principal): Promise<Response> {
    const params = listParams(url);
    const page = params.page ?? 1;
    const result = await storage.listGroups({
      notebook: params.notebook,
      state: params.state,
      text: params.text || undefined,
      sort: params.sort ?? "lastSeen",
      skip: (page - 1) * pageSize,
      limit: pageSize,
    });
    const days = dayRange(clock(), 14);
    const dayIndex = new Map(days.map((d, i) => [d, i]));
    const sparklines = new Map<number, number[]>();
    for (const g of result.groups) sparklines.set(g.id, days.map(() => 0));
    if (result.groups.length > 0) {
      const counts = await storage.groupDailyCounts(
        result.groups.map((g) => g.id),
        days[0]!,
        days[days.length - 1]!,
      );
      for (const c of counts) {
        const i = dayIndex.get(c.day);
        const line = sparklines.get(c.groupId);
        if (i !== undefined && line) line[i] = c.count;
      }
    }
    return respond(groupListPage(context(principal), {
      params,
      total: result.total,
      groups: result.groups,
      sparklines,
      pageSize,
    }));
  }

  async function group(
    id: number,
    url: URL,
    principal: Principal,
  ): Promise<Response> {
    const detail = await storage.getGroup(id);
    if (!detail) {
      throw new DashboardError(
        404,
        "Group not found",
        "No group has this id; it may have been deleted.",
      );
    }
    const days = dayRange(clock(), 30);
    const counts = await storage.groupDailyCounts(
      [id],
      days[0]!,
      days[days.length - 1]!,
    );
    const byDay = new Map(counts.map((c) => [c.day, c.count]));
    return respond(groupPage(context(principal), {
      group: detail,
      days: days.map((day) => ({ label: day, value: byDay.get(day) ?? 0 })),
      done: url.searchParams.get("done") ?? undefined,
    }));
  }

  async function groupAction(
    request: Request,
    id: number,
    action: "state" | "delete",
    principal: Principal,
  ): Promise<Response> {
    const form = await readForm(request);
    if (!auth.verifyPost(request, principal, form.get("csrf") ?? undefined)) {
      throw new DashboardError(
        403,
        "Form expired",
        "This form is no longer valid (or did not come from this dashboard). Reload the page and try again.",
      );
    }
    if (action === "delete") {
      if (form.get("confirm") !== "yes") {
        throw new DashboardError(
          400,
          "Not deleted",
          "Tick the box next to the Delete button to confirm.",
        );
      }
      const detail = await storage.getGroup(id);
      if (!detail || !(await storage.deleteGroup(id))) {
        throw new DashboardError(
          404,
          "Group not found",
          "No group has this id; it may have been deleted.",
        );
      }
      return redirect(groupListUrl({ notebook: detail.notebook }));
    }
    const state = form.get("state") ?? "";
    if (!(GROUP_STATES as readonly string[]).includes(state)) {
      throw new DashboardError(
        400,
        "Unknown state",
        "The state must be open, resolved or ignored.",
      );
    }
    if (!(await storage.setGroupState(id, state as GroupState, clock()))) {
      throw new DashboardError(
        404,
        "Group not found",
        "No group has this id; it may have been deleted.",
      );
    }
    return redirect(`${groupUrl(id)}?done=${state}`);
  }

  async function signIn(
    request: Request,
    info?: { remoteAddr?: { hostname?: string } },
  ): Promise<Response> {
    if (auth.open) return redirect(overviewUrl());
    if (!auth.isSameOrigin(request)) {
      throw new DashboardError(
        403,
        "Sign-in refused",
        "The sign-in form must be sent from this dashboard.",
      );
    }
    const form = await readForm(request);
    const next = safeNext(form.get("next"));
    const outcome = auth.checkSignIn(
      form.get("token") ?? "",
      clientAddress(request, info),
    );
    if (outcome === "ok") {
      const { cookie } = auth.issueSession(request);
      return redirect(next, { "set-cookie": cookie });
    }
    return respond(
      signInPage({
        next,
        now: clock(),
        error: outcome === "throttled"
          ? "Too many failed attempts from your address. Wait a minute and try again."
          : "That token is not right.",
      }),
      outcome === "throttled" ? 429 : 401,
      outcome === "throttled" ? { "retry-after": "60" } : {},
    );
  }

  async function route(
    request: Request,
    info?: { remoteAddr?: { hostname?: string } },
  ): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (!auth.isAllowedHost(request)) {
      throw new DashboardError(
        421,
        "Wrong host",
        "This open dashboard answers only on a loopback address such as 127.0.0.1 or localhost.",
      );
    }
    if (path === "/" || path === DASHBOARD_PREFIX) {
      if (method !== "GET" && method !== "HEAD") throw notAllowed("GET");
      return redirect(overviewUrl());
    }
    if (path.startsWith(`${DASHBOARD_PREFIX}/static/`)) {
      const name = path.slice(`${DASHBOARD_PREFIX}/static/`.length);
      const asset = Object.hasOwn(DASHBOARD_ASSETS, name)
        ? DASHBOARD_ASSETS[name as keyof typeof DASHBOARD_ASSETS]
        : undefined;
      if (!asset) {
        throw new DashboardError(404, "Not found", "There is no such file.");
      }
      if (method !== "GET" && method !== "HEAD") throw notAllowed("GET");
      const fresh = url.searchParams.get("v") === asset.hash;
      return respond(method === "HEAD" ? null : asset.body, 200, {
        "content-type": asset.contentType,
        "cache-control": fresh
          ? "public, max-age=31536000, immutable"
          : "no-cache",
        etag: `"${asset.hash}"`,
      });
    }
    if (path === `${DASHBOARD_PREFIX}/sign-in`) {
      if (method === "POST") return await signIn(request, info);
      if (method !== "GET") throw notAllowed("GET, POST");
      const next = safeNext(url.searchParams.get("next"));
      if (auth.open || auth.authenticate(request)) return redirect(next);
      return respond(signInPage({ next, now: clock() }));
    }

    let principal = auth.authenticate(request);
    let setCookie: string | undefined;
    if (!principal && auth.open && (method === "GET" || method === "HEAD")) {
      // The open mode signs the viewer in silently: the session exists only
      // to carry a CSRF token for the forms.
      const issued = auth.issueSession(request);
      principal = { kind: "session", csrf: issued.csrf };
      setCookie = issued.cookie;
    }
    if (!principal) {
      if (method === "GET" || method === "HEAD") {
        return redirect(signInUrl(`${path}${url.search}`));
      }
      throw new DashboardError(
        401,
        "Sign-in required",
        "Sign in to use the dashboard.",
      );
    }
    const response = await authenticated(request, url, principal);
    if (setCookie) response.headers.append("set-cookie", setCookie);
    return response;
  }

  async function authenticated(
    request: Request,
    url: URL,
    principal: Principal,
  ): Promise<Response> {
    const path = url.pathname;
    const method = request.method;
    if (path === `${DASHBOARD_PREFIX}/sign-out`) {
      if (method !== "POST") throw notAllowed("POST");
      const form = await readForm(request);
      if (!auth.verifyPost(request, principal, form.get("csrf") ?? undefined)) {
        throw new DashboardError(
          403,
          "Form expired",
          "Reload the page and try again.",
        );
      }
      return redirect(signInUrl(), {
        "set-cookie": auth.clearSession(request),
      });
    }
    if (path === `${DASHBOARD_PREFIX}/`) {
      if (method !== "GET" && method !== "HEAD") throw notAllowed("GET");
      return await overview(principal);
    }
    if (
      path === `${DASHBOARD_PREFIX}/groups` ||
      path === `${DASHBOARD_PREFIX}/groups/`
    ) {
      if (method !== "GET" && method !== "HEAD") throw notAllowed("GET");
      return await groups(url, principal);
    }
    const match = GROUP_PATH_REGEXP.exec(path);
    if (match) {
      const id = Number(match[1]);
      const action = match[2] as "state" | "delete" | undefined;
      if (action) {
        if (method !== "POST") throw notAllowed("POST");
        return await groupAction(request, id, action, principal);
      }
      if (method !== "GET" && method !== "HEAD") throw notAllowed("GET");
      return await group(id, url, principal);
    }
    throw new DashboardError(404, "Not found", "There is no such page.");
  }

  return async function dashboard(
    request: Request,
    info?: { remoteAddr?: { hostname?: string } },
  ): Promise<Response> {
    try {
      return await route(request, info);
    } catch (error) {
      if (error instanceof DashboardError) {
        return respond(
          errorPage(
            { now: clock(), signedIn: false },
            error.title,
            error.message,
          ),
          error.status,
          error.headers,
        );
      }
      options.onError?.(error);
      return respond(
        errorPage(
          { now: clock(), signedIn: false },
          "Server error",
          "Something went wrong on the server. Try again later.",
        ),
        500,
      );
    }
  };
}

function notAllowed(allow: string): DashboardError {
  return new DashboardError(405, "Method not allowed", `Use ${allow}.`, {
    allow,
  });
}
