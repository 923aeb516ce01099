/**
 * Inline SVG charts for the dashboard: a bar chart of counts per day and a
 * small sparkline. They are plain markup (no script, no external asset,
 * colours from the dashboard's stylesheet through classes), built with the
 * escaping {@linkcode html} tag so that labels can never inject markup.
 *
 * @module
 */

import { html, type SafeHtml } from "./html.ts";

/**
 * One bar of a {@linkcode barChart}.
 *
 * @example Usage
 * ```ts
 * import type { ChartPoint } from "./charts.ts";
 *
 * const point: ChartPoint = { label: "2026-11-25", value: 12 };
 * ```
 */
export interface ChartPoint {
  /** The bar's label, such as a UTC day. */
  label: string;
  /** The bar's value, 0 or more. */
  value: number;
}

/**
 * Options of {@linkcode barChart}.
 *
 * @example Usage
 * ```ts
 * import type { BarChartOptions } from "./charts.ts";
 *
 * const options: BarChartOptions = { title: "Reports per day", unit: "reports" };
 * ```
 */
export interface BarChartOptions {
  /** The chart's accessible title. */
  title: string;
  /** What a value counts, used in each bar's tooltip. @default {"reports"} */
  unit?: string;
  /** The drawing's width in SVG units (it scales to its container). @default {600} */
  width?: number;
  /** The drawing's height in SVG units. @default {160} */
  height?: number;
}

function formatNumber(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

/**
 * A bar chart as inline SVG, one bar per point (each with a tooltip), in
 * a `<figure>` that shows the largest value above and the first and last
 * labels below.
 *
 * @param points The bars, left to right.
 * @param options The title and size.
 * @returns The `<figure>` element.
 *
 * @example Usage
 * ```ts
 * import { barChart } from "./charts.ts";
 *
 * const svg = barChart(
 *   [{ label: "2026-11-24", value: 3 }, { label: "2026-11-25", value: 5 }],
 *   { title: "Reports per day" },
 * );
 * console.log(svg.toString().includes("<svg")); // true
 * ```
 */
export function barChart(
  points: readonly ChartPoint[],
  options: BarChartOptions,
): SafeHtml {
  // The SVG stretches to its box (preserveAspectRatio="none"), so it holds
  // only bars and the baseline; the labels are HTML around it and keep
  // their shape at any width.
  const width = options.width ?? 600;
  const height = options.height ?? 160;
  const unit = options.unit ?? "reports";
  const top = 4;
  const plotHeight = height - top - 1;
  const max = Math.max(0, ...points.map((p) => p.value));
  const slot = points.length > 0 ? width / points.length : width;
  const barWidth = Math.max(1, slot * 0.8);
  const bars = points.map((point, i) => {
    const h = max > 0 ? (Math.max(0, point.value) / max) * plotHeight : 0;
    const x = i * slot + (slot - barWidth) / 2;
    const shown = Math.max(h, point.value > 0 ? 1 : 0);
    return html`
      <rect class="bar" x="${x.toFixed(1)}" y="${(top + plotHeight - shown)
        .toFixed(1)}" width="${barWidth.toFixed(1)}"
        height="${shown.toFixed(1)}">
        <title>${point.label}: ${formatNumber(point.value)} ${unit}</title>
      </rect>
    `;
  });
  const first = points[0]?.label ?? "";
  const last = points[points.length - 1]?.label ?? "";
  return html`
    <figure class="chart">
      <div class="chart-max tick">${formatNumber(max)}</div>
      <svg class="chart" viewBox="0 0 ${width} ${height}" role="img"
        aria-label="${options.title}"
        preserveAspectRatio="none"><title>${options
          .title}</title><line class="axis" x1="0" y1="${height -
          0.5}" x2="${width}" y2="${height - 0.5}"></line>${bars}</svg>
      <div
        class="chart-axis tick"><span>${first}</span><span>${last}</span></div>
    </figure>
  `;
}

/**
 * A sparkline: small bars of counts, oldest first, with a tooltip naming the
 * total.
 *
 * @param values The counts, oldest first.
 * @param label What the counts are, for the tooltip and screen readers.
 * @returns The `<svg>` element.
 *
 * @example Usage
 * ```ts
 * import { sparkline } from "./charts.ts";
 *
 * sparkline([0, 1, 4, 2], "reports per day, last 4 days").toString().includes("<rect"); // true
 * ```
 */
export function sparkline(values: readonly number[], label: string): SafeHtml {
  const barWidth = 4;
  const gap = 1;
  const height = 20;
  const width = Math.max(1, values.length * (barWidth + gap) - gap);
  const max = Math.max(0, ...values);
  const total = values.reduce((a, b) => a + Math.max(0, b), 0);
  const bars = values.map((value, i) => {
    const h = max > 0 ? Math.max(value > 0 ? 1 : 0, (value / max) * height) : 0;
    return html`
      <rect class="spark" x="${i * (barWidth + gap)}" y="${(height - h).toFixed(
        1,
      )}" width="${barWidth}"
        height="${h.toFixed(1)}"></rect>
    `;
  });
  const text = `${label}: ${formatNumber(total)} in total`;
  return html`
    <svg class="sparkline" viewBox="0 0 ${width} ${height}" width="${width}"
      height="${height}" role="img"
      aria-label="${text}"><title>${text}</title><line class="axis" x1="0" y1="${height}" x2="${width}" y2="${height}"></line>${bars}</svg>
  `;
}
