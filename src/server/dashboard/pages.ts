/**
 * The dashboard's pages as functions from data to markup: sign-in,
 * overview, a notebook's groups, a group, and error pages. They read no
 * storage and no request; the routes gather the data. Every reader-
 * controlled string passes through {@linkcode userText} or the escaping
 * {@linkcode html} tag.
 *
 * @module
 */

import {
  assetUrl,
  type GroupListParams,
  groupListUrl,
  groupUrl,
  overviewUrl,
} from "./urls.ts";
import { barChart, type ChartPoint, sparkline } from "./charts.ts";
import { html, type SafeHtml, userText } from "./html.ts";
import type {
  GroupDetail,
  GroupState,
  GroupSummary,
  NotebookWindowStats,
} from "../storage.ts";

/**
 * What every page's frame needs.
 *
 * @example Usage
 * ```ts
 * import type { PageContext } from "./pages.ts";
 *
 * const context: PageContext = { now: Date.now(), csrf: "token", signedIn: true };
 * ```
 */
export interface PageContext {
  /** The current time, in ms since the epoch (for "3 h ago"). */
  now: number;
  /** The session's CSRF token for POST forms, if there is a session. */
  csrf?: string;
  /** Whether to offer "Sign out" (a form sign-in, not the open mode). */
  signedIn: boolean;
}

const STATES: readonly GroupState[] = ["open", "resolved", "ignored"];

function layout(
  context: PageContext,
  title: string,
  body: SafeHtml,
): SafeHtml {
  const signOut = context.signedIn && context.csrf
    ? html`
      <form class="inline" method="post"
        action="/dashboard/sign-out"><input type="hidden" name="csrf" value="${context
          .csrf}"><button type="submit">Sign out</button></form>
    `
    : null;
  return html`
    <!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="referrer" content="no-referrer">
        <title>${title} · nbr dashboard</title>
        <link rel="stylesheet" href="${assetUrl("dashboard.css")}">
        <link rel="icon" href="${assetUrl("icon.svg")}" type="image/svg+xml">
        <script src="${assetUrl("time.js")}" defer></script>
      </head>
      <body>
        <header
          class="top"><a class="brand" href="${overviewUrl()}">nbr · notebook errors</a>${signOut}</header>
        <main>
    ${body}
        </main>
      </body>
    </html>
  `;
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

function utcText(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/**
 * How long ago a time was, in words: `just now`, `5 min ago`, `3 h ago`,
 * `2 d ago`, `5 mo ago`, `2 y ago`.
 *
 * @param ms The time, in ms since the epoch.
 * @param now The current time.
 * @returns The words.
 *
 * @example Usage
 * ```ts
 * import { relativeTime } from "./pages.ts";
 *
 * relativeTime(0, 3 * 3_600_000); // "3 h ago"
 * ```
 */
export function relativeTime(ms: number, now: number): string {
  const seconds = Math.floor((now - ms) / 1000);
  if (seconds < 0) return "in the future";
  if (seconds < 60) return "just now";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  const days = Math.floor(hours / 24);
  if (days < 60) return `${days} d ago`;
  if (days < 730) return `${Math.floor(days / 30)} mo ago`;
  return `${Math.floor(days / 365)} y ago`;
}

/** A `<time>` with UTC text; the script shows it in the viewer's zone. */
function absoluteTime(ms: number): SafeHtml {
  return html`<time class="absolute" datetime="${isoTime(ms)}">${
    utcText(ms)
  }</time>`;
}

/** A `<time>` with relative text and the absolute time as its tooltip. */
function agoTime(ms: number, now: number): SafeHtml {
  return html`<time datetime="${isoTime(ms)}" title="${utcText(ms)}">${
    relativeTime(ms, now)
  }</time>`;
}

function count(n: number): string {
  return n.toLocaleString("en-US");
}

function stateBadge(state: GroupState): SafeHtml {
  return html`<span class="state state-${state}">${state}</span>`;
}

function notebookLabel(name: string): SafeHtml {
  return name === "" ? html`<em>(unnamed)</em>` : userText(name, 100);
}

/**
 * The sign-in page.
 *
 * @param options `next`: where to go after signing in; `error`: a fixed message to show.
 * @returns The document.
 *
 * @example Usage
 * ```ts
 * import { signInPage } from "./pages.ts";
 *
 * signInPage({ next: "/dashboard/" }).toString().includes('name="token"'); // true
 * ```
 */
export function signInPage(
  options: { next: string; error?: string; now?: number },
): SafeHtml {
  const error = options.error
    ? html`<p class="notice error" role="alert">${options.error}</p>`
    : null;
  return layout(
    { now: options.now ?? Date.now(), signedIn: false },
    "Sign in",
    html`
      <h1>Sign in</h1>
      ${error}
      <form method="post" action="/dashboard/sign-in">
        <input type="hidden" name="next" value="${options.next}">
        <p><label for="token">Admin token (NBR_ADMIN_TOKEN)</label><br>
      <input id="token" name="token" type="password" autocomplete="current-password" required autofocus></p>
        <p><button type="submit">Sign in</button></p>
      </form>
    `,
  );
}

/**
 * The data of {@linkcode overviewPage}.
 *
 * @example Usage
 * ```ts
 * import type { OverviewData } from "./pages.ts";
 *
 * const data: OverviewData = { notebooks: [], days: [] };
 * ```
 */
export interface OverviewData {
  /** Every notebook with its window counts. */
  notebooks: readonly NotebookWindowStats[];
  /** Reports per UTC day over the last 30 days, every notebook, oldest first. */
  days: readonly ChartPoint[];
  /** Reports per UTC day over the last 30 days by notebook, oldest first. @default {undefined} (none drawn) */
  sparklines?: ReadonlyMap<string, readonly number[]>;
}

/**
 * The overview: a chart of reports per day and a table of every notebook.
 *
 * @param context The frame's data.
 * @param data The notebooks and the days.
 * @returns The document.
 *
 * @example Usage
 * ```ts
 * import { overviewPage } from "./pages.ts";
 *
 * overviewPage({ now: Date.now(), signedIn: false }, { notebooks: [], days: [] });
 * ```
 */
export function overviewPage(
  context: PageContext,
  data: OverviewData,
): SafeHtml {
  const total = data.days.reduce((a, d) => a + d.value, 0);
  const rows = data.notebooks.map((n) =>
    html`
      <tr>
        <td data-label="Notebook"><a href="${groupListUrl({
          notebook: n.notebook,
        })}">${notebookLabel(n.notebook)}</a></td>
        <td class="num" data-label="Groups">${count(n.groups)}</td>
        <td class="num" data-label="Reports 24 h">${count(n.reports24h)}</td>
        <td class="num" data-label="Reports 7 d">${count(n.reports7d)}</td>
        <td class="num" data-label="Reports 30 d">${count(n.reports30d)}</td>
        <td class="num" data-label="Sessions 24 h">${count(n.sessions24h)}</td>
        <td class="num" data-label="Sessions 7 d">${count(n.sessions7d)}</td>
        <td class="num" data-label="Sessions 30 d">${count(n.sessions30d)}</td>
        <td data-label="30 days">${sparkline(
          data.sparklines?.get(n.notebook) ?? [],
          "reports per day, last 30 days",
        )}</td>
      </tr>
    `
  );
  const table = data.notebooks.length === 0
    ? html`
      <p
        class="muted">No reports yet. Notebooks that use <code>ErrorServer</code> with this collector's URL appear here.</p>
    `
    : html`
      <table class="cards" id="notebooks">
        <thead>
          <tr>
            <th>Notebook</th>
            <th class="num">Groups</th>
            <th class="num">Reports 24 h</th>
            <th class="num">7 d</th>
            <th class="num">30 d</th>
            <th class="num">Sessions 24 h</th>
            <th class="num">7 d</th>
            <th class="num">30 d</th>
            <th>30 days</th>
          </tr>
        </thead>
        <tbody>${rows}</tbody>
      </table>
    `;
  return layout(
    context,
    "Overview",
    html`<h1>Overview</h1>
<section aria-labelledby="chart-title">
<h2 id="chart-title">Reports per day, last 30 days <span class="muted">(${
      count(total)
    } in total, UTC days)</span></h2>
${barChart(data.days, { title: "Reports per day, last 30 days" })}
</section>
<section aria-labelledby="notebooks-title">
<h2 id="notebooks-title">Notebooks</h2>
${table}
</section>`,
  );
}

/**
 * The data of {@linkcode groupListPage}.
 *
 * @example Usage
 * ```ts
 * import type { GroupListData } from "./pages.ts";
 *
 * const data: GroupListData = {
 *   params: { notebook: "demo" },
 *   total: 0,
 *   groups: [],
 *   sparklines: new Map(),
 *   pageSize: 50,
 * };
 * ```
 */
export interface GroupListData {
  /** The notebook, filter, sort and page shown. */
  params: GroupListParams;
  /** Groups matching the filter, over every page. */
  total: number;
  /** This page's groups. */
  groups: readonly GroupSummary[];
  /** Reports per day over the last 14 days, oldest first, by group id. */
  sparklines: ReadonlyMap<number, readonly number[]>;
  /** Groups per page. */
  pageSize: number;
}

/**
 * A notebook's groups: filter form, sortable table, pages.
 *
 * @param context The frame's data.
 * @param data The groups.
 * @returns The document.
 *
 * @example Usage
 * ```ts
 * import { groupListPage } from "./pages.ts";
 *
 * groupListPage({ now: Date.now(), signedIn: false }, {
 *   params: { notebook: "demo" },
 *   total: 0,
 *   groups: [],
 *   sparklines: new Map(),
 *   pageSize: 50,
 * });
 * ```
 */
export function groupListPage(
  context: PageContext,
  data: GroupListData,
): SafeHtml {
  const p = data.params;
  const page = p.page ?? 1;
  const sort = p.sort ?? "lastSeen";
  const pages = Math.max(1, Math.ceil(data.total / data.pageSize));
  const sortLink = (key: "lastSeen" | "count", label: string) =>
    sort === key
      ? html`<span class="sort-active" aria-sort="descending">${label} ↓</span>`
      : html`<a href="${
        groupListUrl({ ...p, sort: key, page: 1 })
      }">${label}</a>`;
  const rows = data.groups.map((g) =>
    html`
      <tr>
        <td
          data-label="Error"><a href="${groupUrl(g.id)}">${userText(
            g.errorName || "(no name)",
            120,
          )}</a><span class="message">${userText(
            g.errorMessage,
            200,
          )}</span></td>
        <td class="num" data-label="Count">${count(g.count)}</td>
        <td class="num" data-label="Sessions">${count(g.sessions)}</td>
        <td data-label="First seen">${agoTime(g.firstSeen, context.now)}</td>
        <td data-label="Last seen">${agoTime(g.lastSeen, context.now)}</td>
        <td data-label="14 days">${sparkline(
          data.sparklines.get(g.id) ?? [],
          "reports per day, last 14 days",
        )}</td>
        <td data-label="State">${stateBadge(g.state)}</td>
      </tr>
    `
  );
  const from = data.total === 0 ? 0 : (page - 1) * data.pageSize + 1;
  const to = Math.min(data.total, page * data.pageSize);
  const pager = html`<nav class="pager" aria-label="Pages">
<span>${count(from)}–${count(to)} of ${count(data.total)}</span>
${
    page > 1
      ? html`<a rel="prev" href="${
        groupListUrl({ ...p, page: page - 1 })
      }">← Newer page</a>`
      : null
  }
<span>Page ${count(page)} of ${count(pages)}</span>
${
    page < pages
      ? html`<a rel="next" href="${
        groupListUrl({ ...p, page: page + 1 })
      }">Next page →</a>`
      : null
  }
</nav>`;
  const options = STATES.map((s) =>
    html`
      <option value="${s}" ${p.state === s
        ? html`
          selected
        `
        : null}>${s}</option>
    `
  );
  const table = data.groups.length === 0
    ? html`<p class="muted" id="no-groups">No groups match.</p>`
    : html`
      <table class="cards" id="groups">
        <thead>
          <tr>
            <th>Error</th>
            <th class="num">${sortLink("count", "Count")}</th>
            <th class="num">Sessions</th>
            <th>First seen</th>
            <th>${sortLink("lastSeen", "Last seen")}</th>
            <th>14 days</th>
            <th>State</th>
          </tr>
        </thead>
        <tbody>${rows}</tbody>
      </table>
    `;
  return layout(
    context,
    p.notebook === "" ? "(unnamed)" : p.notebook,
    html`
      <nav class="crumbs"><a href="${overviewUrl()}">Overview</a> › notebook</nav>
      <h1>${notebookLabel(p.notebook)}</h1>
      <form class="filters" method="get" action="/dashboard/groups" role="search">
        <input type="hidden" name="notebook" value="${p.notebook}">
        <label>Text <input type="search" name="q" value="${p.text ??
          ""}" maxlength="200" placeholder="name or message"></label>
        <label>State <select name="state"><option value="">any</option>${options}</select></label>
        <label>Sort <select name="sort"><option value="lastSeen"${sort ===
            "lastSeen"
          ? html`
            selected
          `
          : null}>last seen</option><option value="count"${sort === "count"
          ? html`
            selected
          `
          : null}>count</option></select></label>
        <button type="submit">Filter</button>
      </form>
      ${table}
      ${pager}
    `,
  );
}

const DONE_MESSAGES: Readonly<Record<string, string>> = {
  resolved:
    "Marked resolved. A new report of this error reopens it and sends a regression notice.",
  ignored: "Ignored. New reports are still counted but raise no notice.",
  open: "Reopened.",
};

/**
 * The data of {@linkcode groupPage}.
 *
 * @example Usage
 * ```ts
 * import type { GroupPageData } from "./pages.ts";
 *
 * function data(group: GroupPageData["group"]): GroupPageData {
 *   return { group, days: [] };
 * }
 * ```
 */
export interface GroupPageData {
  /** The group. */
  group: GroupDetail;
  /** Reports per UTC day over the last 30 days, oldest first. */
  days: readonly ChartPoint[];
  /** The action just done (`resolved`, `ignored`, `open`), for a notice. */
  done?: string;
}

/**
 * A group: its facts, actions, histogram, latest payload and variants.
 *
 * @param context The frame's data.
 * @param data The group.
 * @returns The document.
 *
 * @example Usage
 * ```ts ignore
 * import { groupPage } from "./pages.ts";
 *
 * groupPage({ now: Date.now(), signedIn: true, csrf: "t" }, { group, days: [] });
 * ```
 */
export function groupPage(
  context: PageContext,
  data: GroupPageData,
): SafeHtml {
  const g = data.group;
  const latest = g.latest;
  const csrf = context.csrf ?? "";
  const stateButton = (state: GroupState, label: string) =>
    g.state === state ? null : html`
      <form class="inline" method="post"
        action="${groupUrl(
          g.id,
          "state",
        )}"><input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="state" value="${state}"><button type="submit" name="action" value="${state}">${label}</button></form>
    `;
  const frames = latest.traceback.map((f, i) =>
    html`
      <tr>
        <td class="num" data-label="#">${i + 1}</td>
        <td data-label="File"><code>${userText(f.filename)}</code></td>
        <td data-label="Function"><code>${userText(f.fun_name)}</code></td>
        <td class="num" data-label="Line">${f.lineno ?? "–"}</td>
      </tr>
    `
  );
  const done = data.done && DONE_MESSAGES[data.done]
    ? html`<p class="notice" role="status">${DONE_MESSAGES[data.done]}</p>`
    : null;
  return layout(
    context,
    g.errorName || "(no name)",
    html`
      <nav
        class="crumbs"><a href="${overviewUrl()}">Overview</a> › <a href="${groupListUrl(
          { notebook: g.notebook },
        )}">${notebookLabel(g.notebook)}</a> › group</nav>
      ${done}
      <h1>${userText(g.errorName || "(no name)")} ${stateBadge(g.state)}</h1>
      <pre id="message">${userText(g.errorMessage)}</pre>
      <div class="actions">
      ${stateButton("resolved", "Resolve")}
      ${stateButton("ignored", "Ignore")}
      ${stateButton("open", "Reopen")}
      <form class="inline" method="post" action="${groupUrl(
        g.id,
        "delete",
      )}"><input type="hidden" name="csrf" value="${csrf}"><label class="confirm"><input type="checkbox" name="confirm" value="yes" required> and its reports</label> <button class="danger" type="submit">Delete group</button></form>
      </div>
      <dl class="facts">
        <dt>Reports</dt>
        <dd>${count(g.count)}</dd>
        <dt>Sessions</dt>
        <dd>${count(g.sessions)}</dd>
        <dt>First seen</dt>
        <dd>${absoluteTime(g.firstSeen)} (${agoTime(
          g.firstSeen,
          context.now,
        )})</dd>
        <dt>Last seen</dt>
        <dd>${absoluteTime(g.lastSeen)} (${agoTime(
          g.lastSeen,
          context.now,
        )})</dd>
        <dt>Fingerprint</dt>
        <dd><code>${g.fingerprint}</code></dd>
      </dl>
      <section aria-labelledby="days-title">
      <h2 id="days-title">Reports per day, last 30 days <span class="muted">(UTC days)</span></h2>
      ${barChart(data.days, {
        title: "Reports per day of this group, last 30 days",
      })}
      </section>
      <section aria-labelledby="latest-title">
      <h2 id="latest-title">Latest report</h2>
      <dl class="facts">
      <dt>Cell</dt><dd>${latest.execution_count ?? "unknown"}</dd>
      <dt>First line</dt><dd><code>${userText(latest.first_line)}</code></dd>
      </dl>
      ${frames.length === 0
        ? html`<p class="muted">No traceback frames.</p>`
        : html`
          <table class="cards" id="traceback">
            <thead>
              <tr>
                <th class="num">#</th>
                <th>File</th>
                <th>Function</th>
                <th class="num">Line</th>
              </tr>
            </thead>
            <tbody>${frames}</tbody>
          </table>
        `}
      </section>
      <section aria-labelledby="variants-title">
        <h2 id="variants-title">Seen in</h2>
        <h3>First lines of the failing cells</h3>
        <ul id="first-lines">${g.firstLines.map((line) =>
          html`<li><code>${
            userText(line === "" ? "(empty)" : line)
          }</code></li>`
        )}</ul>
        <h3>Cell numbers</h3>
        <p id="cell-numbers">${g.cellNumbers.length === 0
          ? "none known"
          : g.cellNumbers.join(", ")}</p>
      </section>
    `,
  );
}

/**
 * A short error page (404, 403, 401, 500) in the dashboard's frame.
 *
 * @param context The frame's data.
 * @param title The heading.
 * @param message A fixed explanation (never reader-controlled text).
 * @returns The document.
 *
 * @example Usage
 * ```ts
 * import { errorPage } from "./pages.ts";
 *
 * errorPage({ now: 0, signedIn: false }, "Not found", "No such group.");
 * ```
 */
export function errorPage(
  context: PageContext,
  title: string,
  message: string,
): SafeHtml {
  return layout(
    context,
    title,
    html`
      <h1>${title}</h1>
      <p>${message}</p>
      <p><a href="${overviewUrl()}">Back to the overview</a></p>
    `,
  );
}
