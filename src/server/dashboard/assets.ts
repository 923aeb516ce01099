/**
 * The dashboard's static assets, served from its own origin: a small
 * stylesheet (readable from phone width up, light and dark), a small script
 * that shows `<time datetime>` elements in the viewer's time zone, and an
 * icon (so browsers do not ask for `/favicon.ico`).
 * Pages work without the script (times then read in UTC).
 *
 * @module
 */

import { createHash } from "node:crypto";

/**
 * One static asset: its body, content type, and a short hash of the body
 * used in its URL so that it can be cached forever.
 *
 * @example Usage
 * ```ts
 * import { DASHBOARD_ASSETS } from "./assets.ts";
 *
 * console.log(DASHBOARD_ASSETS["dashboard.css"].contentType); // "text/css; charset=utf-8"
 * ```
 */
export interface DashboardAsset {
  /** The asset's text. */
  body: string;
  /** Its `Content-Type`. */
  contentType: string;
  /** The first 16 hex digits of its SHA-256. */
  hash: string;
}

const CSS = `
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #5b6570; --bg: #fff;
  --line: #d8dee4; --accent: #0b63c5; --bar: #0b63c5; --bad: #b3261e; --ok: #1a7f37;
  --chip: #eef1f4; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa5b1;
  --bg: #0d1117; --line: #30363d; --accent: #58a6ff; --bar: #58a6ff; --bad: #ff7b72;
  --ok: #3fb950; --chip: #21262d; } }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); overflow-wrap: anywhere; }
header.top { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
  justify-content: space-between; padding: .6rem 1rem; border-bottom: 1px solid var(--line); }
header.top a.brand { font-weight: 600; color: var(--fg); text-decoration: none; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.35rem; margin: .2rem 0 .8rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
a { color: var(--accent); }
.muted, .tick { color: var(--muted); }
nav.crumbs { font-size: .9rem; margin-bottom: .4rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; font-size: .85rem; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.message { display: block; color: var(--muted); font-size: .9rem; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--chip);
  padding: .6rem; border-radius: 6px; margin: 0; }
.state { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .8rem;
  background: var(--chip); }
.state-open { color: var(--bad); }
.state-resolved { color: var(--ok); }
.notice { padding: .5rem .75rem; border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0 1rem; }
.notice.error { border-color: var(--bad); color: var(--bad); }
form.inline { display: inline; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: .5rem 0 1rem; }
form.filters label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
input, select, button { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line);
  border-radius: 6px; background: var(--bg); color: var(--fg); max-width: 100%; }
button { cursor: pointer; background: var(--chip); }
button.danger { color: var(--bad); }
label.confirm { font-size: .85rem; color: var(--muted); }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0 1rem; }
.pager { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; margin: 1rem 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
figure.chart { margin: 0; }
.chart-max, .chart-axis { font-size: .8rem; }
.chart-axis { display: flex; justify-content: space-between; }
svg.chart { width: 100%; height: 9rem; display: block; }
svg.chart .bar { fill: var(--bar); }
svg.chart .axis, svg.sparkline .axis { stroke: var(--line); stroke-width: 1;
  vector-effect: non-scaling-stroke; }
svg.sparkline { display: block; }
svg.sparkline .spark { fill: var(--bar); }
.sort-active { font-weight: 700; }
@media (max-width: 40rem) {
  table.cards thead { display: none; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; width: 100%; }
  table.cards tr { border-bottom: 1px solid var(--line); padding: .4rem 0; }
  table.cards td { border: 0; padding: .15rem 0; text-align: left; }
  table.cards td[data-label]::before { content: attr(data-label) ": "; color: var(--muted);
    font-size: .85rem; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: .3rem; }
}
`;

const SCRIPT = `// Shows <time datetime> elements in the viewer's time zone.
"use strict";
(function () {
  var full = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i++) {
    var el = times[i];
    var date = new Date(el.getAttribute("datetime"));
    if (isNaN(date.getTime())) continue;
    var local = full.format(date);
    el.setAttribute("title", local);
    if (el.classList.contains("absolute")) el.textContent = local;
    el.setAttribute("data-local", "1");
  }
})();
`;

const ICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">
<rect width="16" height="16" rx="3" fill="#b3261e"/>
<path d="M8 3v6M8 11.5v1.5" stroke="#fff" stroke-width="2" stroke-linecap="round"/>
</svg>
`;

function asset(body: string, contentType: string): DashboardAsset {
  return {
    body,
    contentType,
    hash: createHash("sha256").update(body).digest("hex").slice(0, 16),
  };
}

/**
 * The static assets by file name.
 *
 * @example Usage
 * ```ts
 * import { DASHBOARD_ASSETS } from "./assets.ts";
 *
 * console.log(Object.keys(DASHBOARD_ASSETS)); // ["dashboard.css", "time.js"]
 * ```
 */
export const DASHBOARD_ASSETS: Readonly<
  Record<"dashboard.css" | "time.js" | "icon.svg", DashboardAsset>
> = Object.freeze({
  "dashboard.css": asset(CSS, "text/css; charset=utf-8"),
  "time.js": asset(SCRIPT, "text/javascript; charset=utf-8"),
  "icon.svg": asset(ICON, "image/svg+xml"),
});
