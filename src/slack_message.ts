/**
 * Formats an {@linkcode ErrorPayload} as a Slack message: a short `text`
 * fallback plus Block Kit blocks, escaped and bounded for Slack.
 *
 * Decisions, so that attacker-controlled text (error messages, first lines,
 * notebook names, frames) can never ping, link or break the layout:
 *
 * - `&`, `<` and `>` in every text taken from the payload or the options are
 *   escaped ({@linkcode escapeSlackText}), in `mrkdwn` and `plain_text` alike,
 *   so `<!channel>`, `<!here>`, `<@U123>` and `<https://evil|click>` show as
 *   typed. Every `mrkdwn` text object sets `verbatim: true`, which turns off
 *   Slack's automatic linking of URLs, channel names and mentions, and a bare
 *   `@channel`, `@here` or `@everyone` gets an invisible word joiner after the
 *   `@`.
 * - User text in `mrkdwn` is only ever shown inside code formatting (inline
 *   code or a code block), where Slack applies no `*bold*`, `_italic_`,
 *   `~strike~` or `> quote` markup, or in `plain_text` (the header). Backticks
 *   in user text would close the code formatting, so they are shown as `ˋ`
 *   (U+02CB MODIFIER LETTER GRAVE ACCENT). The `text` fallback, used by Slack
 *   only for notifications and screen readers when blocks are present, is
 *   escaped the same way but keeps other markup characters as typed.
 * - Bidirectional controls (such as U+202E RIGHT-TO-LEFT OVERRIDE) become
 *   `\uFFFD` so that they cannot reorder what a reader sees; other control
 *   characters are removed, and lone surrogates become `\uFFFD`.
 * - Every string is measured after escaping (an `&` costs 5 characters) in
 *   UTF-16 code units, which never undercounts Slack's characters, and is cut
 *   with `…` between whole characters and whole entities. See
 *   {@linkcode SLACK_LIMITS}.
 *
 * @module
 */

import type { ErrorPayload, TracebackFrame } from "./types.ts";

/**
 * Slack's documented limits that {@linkcode slackMessage} respects, plus the
 * smaller budgets it uses itself. Lengths count UTF-16 code units of the
 * escaped text.
 *
 * @example Usage
 * ```ts
 * import { SLACK_LIMITS } from "@nbr/notebook-error-reporter";
 *
 * console.log(SLACK_LIMITS.sectionText); // 3000
 * ```
 */
export const SLACK_LIMITS = {
  /** Slack: a header block's `plain_text` is at most 150 characters. */
  headerText: 150,
  /** Slack: a section block's text is at most 3000 characters. */
  sectionText: 3000,
  /** Slack: any text object is at most 3000 characters (and at least 1). */
  textObject: 3000,
  /** Slack: a context block has at most 10 elements. */
  contextElements: 10,
  /** Slack: a message has at most 50 blocks. */
  blocks: 50,
  /**
   * Slack truncates a message's `text` beyond 40,000 characters; this module
   * keeps it far shorter.
   */
  messageText: 40_000,
  /** Own budget: the `text` fallback. */
  fallbackText: 300,
  /**
   * Own budget: all block text together. Slack rejects messages whose blocks
   * hold roughly 12,000 characters or more (`msg_blocks_too_long`).
   */
  totalBlockText: 9_000,
  /** Own budget: one context element's text. */
  contextElementText: 500,
  /** Own budget: one traceback line. */
  frameLine: 300,
  /** Own budget: the error message section. */
  messageSection: 2000,
  /** Own budget: the escaped dashboard link URL. */
  linkUrl: 1000,
} as const;

/**
 * A `plain_text` text object.
 *
 * @example Usage
 * ```ts
 * import type { SlackPlainText } from "@nbr/notebook-error-reporter";
 *
 * const text: SlackPlainText = { type: "plain_text", text: "TypeError", emoji: false };
 * ```
 */
export interface SlackPlainText {
  /** Always `plain_text`. */
  type: "plain_text";
  /** The text, 1 to 3000 characters (150 in a header). */
  text: string;
  /** Whether Slack turns `:shortcodes:` into emoji. */
  emoji?: boolean;
}

/**
 * A `mrkdwn` text object.
 *
 * @example Usage
 * ```ts
 * import type { SlackMrkdwnText } from "@nbr/notebook-error-reporter";
 *
 * const text: SlackMrkdwnText = { type: "mrkdwn", text: "*First line*", verbatim: true };
 * ```
 */
export interface SlackMrkdwnText {
  /** Always `mrkdwn`. */
  type: "mrkdwn";
  /** The text, 1 to 3000 characters. */
  text: string;
  /** `true` turns off Slack's automatic linking of URLs, channels and mentions. */
  verbatim?: boolean;
}

/**
 * Either kind of Slack text object.
 *
 * @example Usage
 * ```ts
 * import type { SlackTextObject } from "@nbr/notebook-error-reporter";
 *
 * const text: SlackTextObject = { type: "mrkdwn", text: "`demo`", verbatim: true };
 * ```
 */
export type SlackTextObject = SlackPlainText | SlackMrkdwnText;

/**
 * A header block: large bold `plain_text`.
 *
 * @example Usage
 * ```ts
 * import type { SlackHeaderBlock } from "@nbr/notebook-error-reporter";
 *
 * const block: SlackHeaderBlock = { type: "header", text: { type: "plain_text", text: "TypeError" } };
 * ```
 */
export interface SlackHeaderBlock {
  /** Always `header`. */
  type: "header";
  /** At most 150 characters. */
  text: SlackPlainText;
}

/**
 * A section block with one text.
 *
 * @example Usage
 * ```ts
 * import type { SlackSectionBlock } from "@nbr/notebook-error-reporter";
 *
 * const block: SlackSectionBlock = {
 *   type: "section",
 *   text: { type: "mrkdwn", text: "*Traceback*", verbatim: true },
 * };
 * ```
 */
export interface SlackSectionBlock {
  /** Always `section`. */
  type: "section";
  /** At most 3000 characters. */
  text: SlackTextObject;
}

/**
 * A context block: a line of small text elements.
 *
 * @example Usage
 * ```ts
 * import type { SlackContextBlock } from "@nbr/notebook-error-reporter";
 *
 * const block: SlackContextBlock = {
 *   type: "context",
 *   elements: [{ type: "mrkdwn", text: "Notebook `demo`", verbatim: true }],
 * };
 * ```
 */
export interface SlackContextBlock {
  /** Always `context`. */
  type: "context";
  /** At most 10 elements. */
  elements: SlackTextObject[];
}

/**
 * The Block Kit blocks that {@linkcode slackMessage} produces.
 *
 * @example Usage
 * ```ts
 * import type { SlackBlock } from "@nbr/notebook-error-reporter";
 *
 * const blocks: SlackBlock[] = [{ type: "header", text: { type: "plain_text", text: "Error" } }];
 * ```
 */
export type SlackBlock =
  | SlackHeaderBlock
  | SlackSectionBlock
  | SlackContextBlock;

/**
 * The JSON body of one Slack incoming-webhook post.
 *
 * @example Usage
 * ```ts
 * import type { SlackMessage } from "@nbr/notebook-error-reporter";
 *
 * const message: SlackMessage = { text: "TypeError: boom", blocks: [] };
 * ```
 */
export interface SlackMessage {
  /** The fallback shown in notifications, escaped, at most 300 characters. */
  text: string;
  /** The blocks shown in the channel, at most 50. */
  blocks: SlackBlock[];
}

/**
 * Options for {@linkcode slackMessage}.
 *
 * @example Usage
 * ```ts
 * import type { SlackMessageOptions } from "@nbr/notebook-error-reporter";
 *
 * const options: SlackMessageOptions = {
 *   title: "New error group",
 *   countLine: "12 reports from 3 sessions",
 *   link: "https://errors.example.com/groups/42",
 * };
 * ```
 */
export interface SlackMessageOptions {
  /**
   * The header, such as `"New error group"`; the error name then moves into
   * the message section.
   *
   * @default {undefined} (the header is the error name)
   */
  title?: string;
  /**
   * A context line such as `"12 reports from 3 sessions"`.
   *
   * @default {undefined}
   */
  countLine?: string;
  /**
   * An `http:` or `https:` URL without credentials, at most 1000 characters,
   * linked as "Open in dashboard". Anything else is left out (never thrown).
   *
   * @default {undefined}
   */
  link?: string;
}

/**
 * Escapes Slack's three control characters: `&` → `&amp;`, `<` → `&lt;`,
 * `>` → `&gt;`. Slack decodes exactly these for display, so escaped text shows
 * as typed and can never form a mention (`<!channel>`, `<@U123>`) or a link.
 *
 * @param text The text to escape.
 * @returns The escaped text.
 *
 * @example Usage
 * ```ts
 * import { escapeSlackText } from "@nbr/notebook-error-reporter";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(escapeSlackText("<!channel> & co"), "&lt;!channel&gt; &amp; co");
 * ```
 */
export function escapeSlackText(text: string): string {
  return text.replace(SLACK_CONTROL_REGEXP, (char) => SLACK_ENTITIES[char]!);
}

/**
 * Builds the Slack message for one error: a header (the title, else the
 * error name), the error message in a code block, a context line with the
 * notebook and cell number (and the optional count line and dashboard link),
 * the failing cell's first line in a code block, and the traceback frames
 * (outermost first, `filename:lineno in fun_name`) in a code block.
 *
 * It never throws: odd, empty or huge input is shown escaped and cut to
 * {@linkcode SLACK_LIMITS} with `…`; an invalid `link` is left out.
 *
 * @param payload The error payload (treated as untrusted).
 * @param options Title, count line and dashboard link.
 * @returns The `text` fallback and the blocks.
 *
 * @example Usage
 * ```ts
 * import { slackMessage } from "@nbr/notebook-error-reporter";
 * import assert from "node:assert/strict";
 *
 * const message = slackMessage({
 *   error_name: "TypeError",
 *   error_message: "x is not a function",
 *   traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
 *   first_line: "x()",
 *   execution_count: 4,
 *   notebook: "demo",
 * });
 * assert.deepEqual(message.text, "TypeError: x is not a function (demo, cell [4])");
 * assert.deepEqual(message.blocks[0], {
 *   type: "header",
 *   text: { type: "plain_text", text: "TypeError", emoji: false },
 * });
 * ```
 */
export function slackMessage(
  payload: ErrorPayload,
  options: SlackMessageOptions = {},
): SlackMessage {
  const p = (payload ?? {}) as Partial<Record<keyof ErrorPayload, unknown>>;
  const o = (options ?? {}) as Partial<
    Record<keyof SlackMessageOptions, unknown>
  >;
  const name = asText(p.error_name);
  const errorMessage = asText(p.error_message);
  const firstLine = asText(p.first_line);
  const notebook = asText(p.notebook);
  const cell = cellLabel(p.execution_count);
  const frames = Array.isArray(p.traceback) ? p.traceback : [];
  const title = asText(o.title);
  const countLine = asText(o.countLine);
  const link = safeLink(o.link);

  const blocks: SlackBlock[] = [];

  // Header: the title, else the error name.
  const headerSource = title !== "" ? title : name !== "" ? name : "Error";
  blocks.push({
    type: "header",
    text: {
      type: "plain_text",
      text: fit(clean(headerSource, INLINE), SLACK_LIMITS.headerText),
      emoji: false,
    },
  });

  // The error (name when a title took the header) and message.
  let messageText = "";
  if (title !== "") {
    messageText += name === "" ? "_Error_\n" : inlineCode(name, 400) + "\n";
  }
  const messageBudget = SLACK_LIMITS.messageSection - messageText.length;
  messageText += errorMessage.trim() === ""
    ? "_(no message)_"
    : codeBlock(errorMessage, messageBudget);
  blocks.push(section(messageText));

  // Context: notebook and cell, count line, dashboard link.
  const elements: SlackTextObject[] = [
    mrkdwn(
      `Notebook ${
        notebook.trim() === "" ? "_(unnamed)_" : inlineCode(notebook, 400)
      } · ${cell}`,
    ),
  ];
  if (countLine.trim() !== "") {
    elements.push({
      type: "plain_text",
      text: fit(clean(countLine, INLINE), SLACK_LIMITS.contextElementText),
      emoji: false,
    });
  }
  if (link !== undefined) elements.push(mrkdwn(`<${link}|Open in dashboard>`));
  blocks.push({ type: "context", elements });

  // The failing cell's first line.
  if (firstLine.trim() !== "") {
    const heading = "*First line*\n";
    blocks.push(
      section(heading + codeBlock(firstLine, 1000, INLINE)),
    );
  }

  // The traceback, outermost first.
  if (frames.length > 0) {
    const heading = "*Traceback* (outermost first)\n";
    blocks.push(
      section(
        heading +
          tracebackBlock(frames, SLACK_LIMITS.sectionText - heading.length),
      ),
    );
  }

  return {
    text: fallbackText(name, errorMessage, notebook, cell, title),
    blocks,
  };
}

// ---------------------------------------------------------------- internals

/** Slack's control characters, escaped by {@linkcode escapeSlackText}. */
const SLACK_CONTROL_REGEXP = /[&<>]/g;
const SLACK_ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
};

/**
 * Bidirectional formatting characters: ALM, LRM, RLM, the embeddings and
 * overrides (LRE, RLE, PDF, LRO, RLO) and the isolates (LRI, RLI, FSI, PDI).
 */
const BIDI_CONTROL_REGEXP = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;
/** C0 and C1 control characters except tab and line feed, plus DEL. */
// deno-lint-ignore no-control-regex
const CONTROL_REGEXP = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/g;
/** Every kind of line break, normalised to `\n` first. */
const LINE_BREAK_REGEXP = /\r\n|[\r\u0085\u2028\u2029]/g;
/** A bare broadcast mention, which some Slack surfaces parse on their own. */
const BROADCAST_MENTION_REGEXP = /@(?=(?:channel|here|everyone)\b)/gi;
/** What must never appear in a Slack link's URL (the serializer encodes these). */
const UNSAFE_LINK_REGEXP = /[\s<>|]/;
/** Backticks, which would close inline code or a code block. */
/** A line break or tab, folded to a space in one-line text. */
const LINE_BREAK_OR_TAB_REGEXP = /[\n\t]/g;
/** Any line break, Unicode ones included. */
const ANY_LINE_BREAK_REGEXP = /\r\n|[\r\n\u0085\u2028\u2029]/;
const BACKTICK_REGEXP = /`/g;

/** How much of a string {@linkcode clean} looks at (more than any budget). */
const MAX_CLEANED = 4000;

/** How {@linkcode clean} treats line breaks and backticks. */
interface CleanMode {
  /** Keep `\n` and `\t` (code blocks); else they become spaces. */
  multiline: boolean;
  /** The text is shown inside code formatting: backticks become `ˋ`. */
  code: boolean;
}
const INLINE: CleanMode = { multiline: false, code: false };
const INLINE_CODE: CleanMode = { multiline: false, code: true };
const BLOCK_CODE: CleanMode = { multiline: true, code: true };

/** A string from an untrusted value; never throws. */
function asText(value: unknown): string {
  if (typeof value === "string") return value;
  if (value === undefined || value === null) return "";
  try {
    return String(value);
  } catch {
    return "";
  }
}

/** Makes untrusted text safe to show (before escaping and cutting). */
function clean(text: string, mode: CleanMode, keepEnd = false): string {
  // No budget exceeds 3000 characters, so longer input is cut first, which
  // bounds the work on hostile input; `fit` still adds the `…`.
  const cut = text.length <= MAX_CLEANED
    ? text
    : keepEnd
    ? text.slice(-MAX_CLEANED)
    : text.slice(0, MAX_CLEANED);
  let out = cut.toWellFormed()
    .replace(LINE_BREAK_REGEXP, "\n")
    .replace(BIDI_CONTROL_REGEXP, "\uFFFD")
    .replace(CONTROL_REGEXP, "")
    .replace(BROADCAST_MENTION_REGEXP, "@\u2060");
  if (!mode.multiline) out = out.replace(LINE_BREAK_OR_TAB_REGEXP, " ");
  if (mode.code) out = out.replace(BACKTICK_REGEXP, "\u02CB");
  return out;
}

/**
 * Escapes `text` and cuts it to at most `max` UTF-16 code units, between
 * whole code points and whole entities, ending with `…` when cut.
 */
function fit(text: string, max: number): string {
  const escaped = escapeSlackText(text);
  if (escaped.length <= max) return escaped;
  let out = "";
  for (const char of text) {
    const piece = SLACK_ENTITIES[char] ?? char;
    if (out.length + piece.length > max - 1) break;
    out += piece;
  }
  return out + "…";
}

/**
 * Like {@linkcode fit}, but keeps the end of `text`, starting with `…` when
 * cut.
 */
function fitEnd(text: string, max: number): string {
  const escaped = escapeSlackText(text);
  if (escaped.length <= max) return escaped;
  const chars = Array.from(text);
  let out = "";
  for (let i = chars.length - 1; i >= 0; i--) {
    const piece = SLACK_ENTITIES[chars[i]!] ?? chars[i]!;
    if (out.length + piece.length > max - 1) break;
    out = piece + out;
  }
  return "…" + out;
}

/** Inline code of untrusted single-line text, at most `max` characters. */
function inlineCode(text: string, max: number): string {
  return "`" + fit(clean(text, INLINE_CODE), max - 2) + "`";
}

/** A code block of untrusted text, at most `max` characters. */
function codeBlock(
  text: string,
  max: number,
  mode: CleanMode = BLOCK_CODE,
): string {
  return "```" + fit(clean(text, { ...mode, code: true }), max - 6) + "```";
}

/** A `mrkdwn` text object with Slack's automatic parsing turned off. */
function mrkdwn(text: string): SlackMrkdwnText {
  return { type: "mrkdwn", text, verbatim: true };
}

/** A section block of already safe `mrkdwn`. */
function section(text: string): SlackSectionBlock {
  return { type: "section", text: mrkdwn(text) };
}

/** `cell [4]`, or `cell unknown` for a missing or odd count. */
function cellLabel(count: unknown): string {
  return typeof count === "number" && Number.isSafeInteger(count) && count >= 0
    ? `cell [${count}]`
    : "cell unknown";
}

/** One frame as `filename:lineno in fun_name`, cleaned, escaped and cut. */
function frameLine(frame: unknown): string {
  const f =
    (typeof frame === "object" && frame !== null ? frame : {}) as Partial<
      Record<keyof TracebackFrame, unknown>
    >;
  const filename = asText(f.filename) || "?";
  const fun = asText(f.fun_name) || "?";
  const line = typeof f.lineno === "number" && Number.isFinite(f.lineno)
    ? `:${f.lineno}`
    : "";
  // The end of a long path and the position matter most: cut the path's start.
  const suffix = fit(clean(`${line} in ${fun}`, INLINE_CODE), 120);
  return fitEnd(
    clean(filename, INLINE_CODE, true),
    SLACK_LIMITS.frameLine - suffix.length,
  ) + suffix;
}

/**
 * The frames in a code block of at most `max` characters. When they do not
 * all fit, the first three (outermost) and as many of the last (where the
 * error was thrown) as fit are kept, around an `… N frames omitted …` line.
 */
function tracebackBlock(frames: unknown[], max: number): string {
  const lines = frames.map(frameLine);
  const budget = max - 6;
  const joined = lines.join("\n");
  if (joined.length <= budget) return "```" + joined + "```";
  const marker = (omitted: number) => `… ${omitted} frames omitted …`;
  // Reserve room for the marker line with the largest possible count.
  let used = marker(lines.length).length;
  const head: string[] = [];
  for (const line of lines.slice(0, 3)) {
    if (used + line.length + 1 > budget / 2) break;
    head.push(line);
    used += line.length + 1;
  }
  const tail: string[] = [];
  for (let i = lines.length - 1; i >= head.length; i--) {
    if (used + lines[i]!.length + 1 > budget) break;
    tail.unshift(lines[i]!);
    used += lines[i]!.length + 1;
  }
  const omitted = lines.length - head.length - tail.length;
  return "```" + [...head, marker(omitted), ...tail].join("\n") + "```";
}

/** `[title: ]name: first line of message (notebook, cell [n])`, escaped. */
function fallbackText(
  name: string,
  message: string,
  notebook: string,
  cell: string,
  title: string,
): string {
  const firstMessageLine = message.trim().split(ANY_LINE_BREAK_REGEXP)[0] ?? "";
  let head = name.trim() === "" ? "Error" : name;
  if (firstMessageLine !== "") head += `: ${firstMessageLine}`;
  if (title.trim() !== "") head = `${title}: ${head}`;
  const tail = ` (${
    notebook.trim() === "" ? "unnamed notebook" : notebook
  }, ${cell})`;
  const safeTail = fit(clean(tail, INLINE), 120);
  return fit(clean(head, INLINE), SLACK_LIMITS.fallbackText - safeTail.length) +
    safeTail;
}

/**
 * The escaped `href` of an `http:`/`https:` URL without credentials, at most
 * 1000 characters, or `undefined`. `|` (which would end a Slack link's URL)
 * is percent-encoded; the URL serializer already encodes spaces, `<`, `>`.
 */
function safeLink(link: unknown): string | undefined {
  if (typeof link !== "string" || link.length > SLACK_LIMITS.linkUrl) {
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(link);
  } catch {
    return undefined;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return undefined;
  if (url.username !== "" || url.password !== "" || url.hostname === "") {
    return undefined;
  }
  const href = url.href.replaceAll("|", "%7C");
  if (UNSAFE_LINK_REGEXP.test(href)) return undefined;
  const escaped = escapeSlackText(href);
  return escaped.length <= SLACK_LIMITS.linkUrl ? escaped : undefined;
}
