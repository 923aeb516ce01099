/**
 * The dashboard's URLs, built in one place. Every reader-controlled part
 * goes through `URLSearchParams` or `encodeURIComponent`, and every URL
 * starts with the dashboard's own absolute path, so none can become a
 * `javascript:` or foreign URL.
 *
 * @module
 */

import { DASHBOARD_ASSETS } from "./assets.ts";
import type { GroupState } from "../storage.ts";

/** The path every dashboard page lives under. */
export const DASHBOARD_PREFIX = "/dashboard";

/**
 * What a notebook's group list shows: filter, sort and page.
 *
 * @example Usage
 * ```ts
 * import type { GroupListParams } from "./urls.ts";
 *
 * const params: GroupListParams = { notebook: "demo", sort: "count", page: 2 };
 * ```
 */
export interface GroupListParams {
  /** The notebook. */
  notebook: string;
  /** Text the error name or message contains. @default {""} */
  text?: string;
  /** Only groups in this state. @default {undefined} (all) */
  state?: GroupState;
  /** The order. @default {"lastSeen"} */
  sort?: "lastSeen" | "count";
  /** The 1-based page. @default {1} */
  page?: number;
}

/**
 * The overview's URL.
 *
 * @returns `/dashboard/`.
 *
 * @example Usage
 * ```ts
 * import { overviewUrl } from "./urls.ts";
 *
 * overviewUrl(); // "/dashboard/"
 * ```
 */
export function overviewUrl(): string {
  return `${DASHBOARD_PREFIX}/`;
}

/**
 * A notebook's group list URL; defaults are left out.
 *
 * @param params The notebook, filter, sort and page.
 * @returns The URL (path and query).
 *
 * @example Usage
 * ```ts
 * import { groupListUrl } from "./urls.ts";
 *
 * groupListUrl({ notebook: "a&b", sort: "count" }); // "/dashboard/groups?notebook=a%26b&sort=count"
 * ```
 */
export function groupListUrl(params: GroupListParams): string {
  const query = new URLSearchParams({ notebook: params.notebook });
  if (params.text) query.set("q", params.text);
  if (params.state) query.set("state", params.state);
  if (params.sort && params.sort !== "lastSeen") query.set("sort", params.sort);
  if (params.page && params.page > 1) query.set("page", String(params.page));
  return `${DASHBOARD_PREFIX}/groups?${query}`;
}

/**
 * A group's URL, or the URL of one of its actions.
 *
 * @param id The group's id.
 * @param action `state` or `delete` for the POST targets.
 * @returns The path.
 *
 * @example Usage
 * ```ts
 * import { groupUrl } from "./urls.ts";
 *
 * groupUrl(7); // "/dashboard/groups/7"
 * groupUrl(7, "state"); // "/dashboard/groups/7/state"
 * ```
 */
export function groupUrl(id: number, action?: "state" | "delete"): string {
  const base = `${DASHBOARD_PREFIX}/groups/${encodeURIComponent(String(id))}`;
  return action ? `${base}/${action}` : base;
}

/**
 * The sign-in page's URL, remembering where to go afterwards.
 *
 * @param next A dashboard path to return to.
 * @returns The URL.
 *
 * @example Usage
 * ```ts
 * import { signInUrl } from "./urls.ts";
 *
 * signInUrl("/dashboard/groups/7"); // "/dashboard/sign-in?next=%2Fdashboard%2Fgroups%2F7"
 * ```
 */
export function signInUrl(next?: string): string {
  const safe = next !== undefined ? safeNext(next) : undefined;
  return safe && safe !== overviewUrl()
    ? `${DASHBOARD_PREFIX}/sign-in?${new URLSearchParams({ next: safe })}`
    : `${DASHBOARD_PREFIX}/sign-in`;
}

const NEXT_REGEXP = /^\/dashboard\/[^\\\s]*$/;

/**
 * A return path that is safe to redirect to: a path under `/dashboard/` on
 * this origin (no scheme, no `//host`, no backslashes), else the overview.
 *
 * @param next The requested return path.
 * @returns A safe path.
 *
 * @example Usage
 * ```ts
 * import { safeNext } from "./urls.ts";
 *
 * safeNext("//evil.example/"); // "/dashboard/"
 * safeNext("/dashboard/groups/3"); // "/dashboard/groups/3"
 * ```
 */
export function safeNext(next: string | null | undefined): string {
  if (!next || next.length > 2000 || !NEXT_REGEXP.test(next)) {
    return overviewUrl();
  }
  return next;
}

/**
 * A static asset's URL, with its content hash as cache buster.
 *
 * @param name The asset.
 * @returns The path and query.
 *
 * @example Usage
 * ```ts
 * import { assetUrl } from "./urls.ts";
 *
 * assetUrl("time.js").startsWith("/dashboard/static/time.js?v="); // true
 * ```
 */
export function assetUrl(name: keyof typeof DASHBOARD_ASSETS): string {
  return `${DASHBOARD_PREFIX}/static/${name}?v=${DASHBOARD_ASSETS[name].hash}`;
}
