/**
 * A tiny HTML template helper that escapes by default: every value put into
 * an {@linkcode html} template is escaped, except values that are
 * themselves {@linkcode SafeHtml} made by an {@linkcode html} template. The
 * only trusted markup is therefore the literal text of templates written in
 * this code base; no function turns an arbitrary string into markup.
 *
 * Rules for templates: quote every attribute (`href="${url}"`), never put a
 * value inside `<script>`, `<style>` or an event-handler attribute, and build
 * URLs with the helpers of `urls.ts`, which encode every part.
 *
 * @module
 */

const MINT = Symbol("SafeHtml");

/**
 * Markup produced by an {@linkcode html} template. Its text can be inserted
 * into another template unescaped.
 *
 * @example Usage
 * ```ts
 * import { html, SafeHtml } from "./html.ts";
 *
 * const part = html`<b>${"<i>"}</b>`;
 * console.log(part instanceof SafeHtml, part.toString()); // true "<b>&lt;i&gt;</b>"
 * ```
 */
export class SafeHtml {
  readonly #markup: string;

  /**
   * Wraps markup; only this module can call it.
   *
   * @param markup The markup.
   * @param mint The module's private token.
   * @throws {TypeError} When called from outside this module.
   */
  constructor(markup: string, mint: symbol) {
    if (mint !== MINT) {
      throw new TypeError(
        "SafeHtml cannot be constructed directly: use the html template tag",
      );
    }
    this.#markup = markup;
  }

  /**
   * The markup.
   *
   * @returns The markup text.
   */
  toString(): string {
    return this.#markup;
  }
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
  "`": "&#96;",
};
const ESCAPE_REGEXP = /[&<>"'`]/g;

/**
 * Escapes text for HTML element content and quoted attribute values.
 *
 * @param text Any text.
 * @returns The text with `&`, `<`, `>`, `"`, `'` and `` ` `` escaped.
 *
 * @example Usage
 * ```ts
 * import { escapeHtml } from "./html.ts";
 *
 * escapeHtml(`<img src=x onerror="alert(1)">`);
 * // "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
 * ```
 */
export function escapeHtml(text: string): string {
  return text.replace(ESCAPE_REGEXP, (c) => ESCAPES[c]!);
}

/** What an {@linkcode html} template accepts as a value. */
export type HtmlValue =
  | SafeHtml
  | string
  | number
  | boolean
  | null
  | undefined
  | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value instanceof SafeHtml) return value.toString();
  if (value === null || value === undefined || value === false) return "";
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(String(value));
}

/**
 * The template tag: literal parts are kept, values are escaped unless they
 * are {@linkcode SafeHtml}; arrays are rendered element by element;
 * `null`, `undefined` and `false` render as nothing.
 *
 * @param strings The template's literal parts.
 * @param values The interpolated values.
 * @returns The markup.
 * @throws {TypeError} When called with something other than a template literal.
 *
 * @example Usage
 * ```ts
 * import { html } from "./html.ts";
 *
 * const name = "<img src=x onerror=alert(1)>";
 * const rows = ["a", "b"].map((x) => html`<li>${x}</li>`);
 * html`<p title="${name}">${name}</p><ul>${rows}</ul>`.toString();
 * // '<p title="&lt;img src=x onerror=alert(1)&gt;">&lt;img…</p><ul><li>a</li><li>b</li></ul>'
 * ```
 */
export function html(
  strings: TemplateStringsArray,
  ...values: HtmlValue[]
): SafeHtml {
  if (!Array.isArray(strings) || !Array.isArray(strings.raw)) {
    throw new TypeError("html must be used as a template tag");
  }
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) {
    out += render(values[i]!) + strings[i + 1]!;
  }
  return new SafeHtml(out, MINT);
}

const INVISIBLE_REGEXP =
  // C0/C1 controls (tab and newline kept), bidi embeddings, overrides and
  // isolates, marks, and zero-width characters.
  // deno-lint-ignore no-control-regex
  /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;

/**
 * Reader-controlled text for display: invisible and direction-changing
 * characters become visible `⟨U+202E⟩` markers, and the text is wrapped in
 * `<bdi>` so it cannot reorder what surrounds it.
 *
 * @param text Reader-controlled text.
 * @param max Characters shown at most; longer text ends with `…`. @default {Infinity}
 * @returns The markup.
 *
 * @example Usage
 * ```ts
 * import { userText } from "./html.ts";
 *
 * userText("abc\u202Edef").toString(); // "<bdi>abc⟨U+202E⟩def</bdi>"
 * ```
 */
export function userText(text: string, max = Infinity): SafeHtml {
  let shown = text;
  if (shown.length > max) shown = shown.slice(0, Math.max(0, max - 1)) + "…";
  shown = shown.replace(
    INVISIBLE_REGEXP,
    (c) =>
      `⟨U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}⟩`,
  );
  return html`<bdi>${shown}</bdi>`;
}
