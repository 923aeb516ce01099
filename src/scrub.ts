/**
 * The privacy scrubber: removes home directories, the user name, e-mail
 * addresses, card numbers, IP addresses and secrets from text, and bounds it.
 *
 * Every regular expression here is written so that matching stays linear in
 * the length of the text: no nested unbounded quantifiers, bounded prefixes,
 * and character classes that cannot overlap the text that follows them.
 *
 * @module
 */

import type { PayloadContext } from "./types.ts";

/**
 * The bounds of a payload's strings and frames.
 *
 * @example Usage
 * ```ts
 * import { PAYLOAD_LIMITS } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(PAYLOAD_LIMITS.errorMessage, 1000);
 * ```
 */
export const PAYLOAD_LIMITS: {
  readonly errorName: 200;
  readonly errorMessage: 1000;
  readonly firstLine: 200;
  readonly notebook: 100;
  readonly frames: 50;
} = Object.freeze(
  {
    errorName: 200,
    errorMessage: 1000,
    firstLine: 200,
    notebook: 100,
    frames: 50,
  } as const,
);

/**
 * The bounds of one traceback frame's strings (not part of the issue's
 * limits; chosen so that a hostile frame cannot be large).
 *
 * @example Usage
 * ```ts
 * import { FRAME_LIMITS } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(FRAME_LIMITS.filename, 300);
 * ```
 */
export const FRAME_LIMITS: {
  readonly filename: 300;
  readonly funName: 200;
} = Object.freeze({ filename: 300, funName: 200 } as const);

/** The placeholders this module writes; never rewritten by a later pass. */
const PLACEHOLDER_SOURCE =
  "<(?:user|email|card|ip|redacted|cell|native|eval|data|blob|module|anonymous)>";

/** Exactly one placeholder. */
const PLACEHOLDER_REGEXP = new RegExp(`^${PLACEHOLDER_SOURCE}$`, "i");

/**
 * ANSI CSI escape sequences (colour codes), as a kernel traceback carries
 * them: parameter bytes, then intermediate bytes, then one final byte; no
 * nested quantifiers, so matching stays linear.
 *
 * @example Usage
 * ```ts
 * import { ANSI_ESCAPE_REGEXP } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual("\x1b[31mError\x1b[0m: boom".replace(ANSI_ESCAPE_REGEXP, ""), "Error: boom");
 * ```
 */
// deno-lint-ignore no-control-regex
export const ANSI_ESCAPE_REGEXP: RegExp = /\x1b\[[0-?]{0,64}[ -/]{0,8}[@-~]/g;

/** C0 controls except tab and line feed, DEL, C1 controls, bidi overrides and isolates. */
const CONTROL_REGEXP =
  // deno-lint-ignore no-control-regex
  /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

/** Slack incoming-webhook (and workflow) URLs: removed as a whole. */
const SLACK_WEBHOOK_REGEXP =
  /https?:\/\/hooks\.slack(?:-gov)?\.com\/(?:services|workflows|triggers)\/[A-Za-z0-9_/-]*/gi;

/** `scheme://user:password@` credentials in URLs; the scheme is kept. */
const URL_CREDENTIALS_REGEXP =
  /\b([A-Za-z][A-Za-z0-9+.-]{0,31}:\/\/)[^\s/?#@:<>"'`]{0,256}:[^\s/?#@<>"'`]{0,256}@/g;

/** Tokens recognisable by their own shape. */
const TOKEN_REGEXP = new RegExp(
  [
    // Slack bot/user/app/refresh tokens: xoxb-…, xoxp-…, xapp-…
    String.raw`\bxox[abposre]-[A-Za-z0-9-]{8,}`,
    String.raw`\bxapp-[A-Za-z0-9-]{8,}`,
    // GitHub: ghp_, gho_, ghs_, ghu_, ghr_ and fine-grained github_pat_
    String.raw`\bgh[pousr]_[A-Za-z0-9]{20,}`,
    String.raw`\bgithub_pat_[A-Za-z0-9_]{20,}`,
    // AWS access key ids
    String.raw`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`,
    // OpenAI/Anthropic-style keys: sk-…, sk-proj-…, sk-ant-…
    String.raw`\bsk-[A-Za-z0-9_-]{16,}`,
    // JSON Web Tokens: header.payload.signature
    String.raw`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`,
  ].join("|"),
  "g",
);

/** `Bearer <token>` / `Basic <token>`: the word stays. */
const AUTH_SCHEME_REGEXP =
  /\b(Bearer|Basic)([ \t]{1,8})[A-Za-z0-9._~+/-]{6,}=*/gi;

/** Names of keys whose values are secrets: `password`, `db_token`, `apiKey`… */
const SECRET_KEY_SOURCE = String
  .raw`[A-Za-z0-9_.-]{0,40}?(?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credentials?|authorization)[A-Za-z0-9_-]{0,20}`;

/** `key=value` assignments (also in query strings): the key and `=` stay. */
const SECRET_ASSIGNMENT_REGEXP = new RegExp(
  String
    .raw`(?<![A-Za-z0-9])(${SECRET_KEY_SOURCE})([ \t]{0,3}=[ \t]{0,3})(?!<redacted>)[^\s"'&,;<>)\]}]+`,
  "gi",
);

/**
 * A quoted value (at most 1000 characters; an unterminated or longer one is
 * redacted up to there).
 */
const QUOTED_VALUE_SOURCE = String
  .raw`"(?:[^"\\\n]|\\.){0,1000}"?|'(?:[^'\\\n]|\\.){0,1000}'?`;

/** JSON-ish `"password": "value"` (or single-quoted, or an unquoted value): the key stays. */
const SECRET_JSON_REGEXP = new RegExp(
  String
    .raw`(["'])(${SECRET_KEY_SOURCE})\1([ \t]{0,3}:[ \t]{0,3})(?:${QUOTED_VALUE_SOURCE}|(?!<redacted>)[^\s,}\]"']+)`,
  "gi",
);

/** Object-literal `{ password: "value" }` (as `Deno.inspect` prints it): quoted values only. */
const SECRET_PROPERTY_REGEXP = new RegExp(
  String
    .raw`(?<![A-Za-z0-9_.-])(${SECRET_KEY_SOURCE})([ \t]{0,3}:[ \t]{0,3})(?:${QUOTED_VALUE_SOURCE})`,
  "gi",
);

/** E-mail addresses (the last domain label must be letters, so `pkg@1.2.3` is not one). */
const EMAIL_REGEXP =
  /(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])/g;

/** Runs of digit groups separated by single spaces or dashes: card candidates. */
const DIGIT_RUN_REGEXP = /(?<![\w.])\d+(?:[ -]\d+)*/g;

/** One IPv4 octet, 0–255 without leading zeros beyond one digit. */
const OCTET_SOURCE = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;

/** IPv4 addresses; not part of a longer dotted number such as a 5-part version. */
const IPV4_REGEXP = new RegExp(
  String
    .raw`(?<![\w.])(?:${OCTET_SOURCE}\.){3}${OCTET_SOURCE}(?!\d|\.\d|[A-Za-z_])`,
  "g",
);

/** A compressed IPv6 address has a digit (`Abc::Def` is a name, `fe80::1` an address). */
const ANY_DIGIT_REGEXP = /\d/;

/** One IPv6 group. */
const HEX_SOURCE = String.raw`[0-9A-Fa-f]{1,4}`;

/**
 * IPv6 addresses: the full eight groups, or a form compressed with `::`.
 * Times (`12:30:45`) and positions (`file.ts:12:5`) have neither.
 */
const IPV6_REGEXP = new RegExp(
  String.raw`(?<![\w:.])(?:` +
    String.raw`(?:${HEX_SOURCE}:){7}${HEX_SOURCE}` +
    String
      .raw`|(?:${HEX_SOURCE}:){1,7}:(?:${HEX_SOURCE}(?::${HEX_SOURCE}){0,5})?` +
    String.raw`|::${HEX_SOURCE}(?::${HEX_SOURCE}){0,6}` +
    String.raw`)(?![\w:])`,
  "g",
);

/** `/home/<x>`, `/Users/<x>`, `C:\Users\<x>` (also `C:/Users/x`, JSON-escaped `C:\\Users\\x`). */
const GENERIC_HOME_REGEXP =
  /(?<![\w.%-])(?:[A-Za-z]:)?(?:\\{1,2}|\/)(?:home|Users)(?:\\{1,2}|\/)(?!<user>)[^\\/\s"'`<>|:*?]+/gi;

/**
 * Text that matches none of these alternatives is left unchanged by every
 * rule of {@linkcode scrubText} (with no home directory or user name to
 * remove), so it is returned without running them. Each alternative is a
 * part that some rule cannot match without:
 */
const MAY_NEED_SCRUBBING_REGEXP = new RegExp(
  [
    // control characters (removed); `:` of URLs (webhooks, credentials),
    // `key: value` secrets and IPv6; `=` of `key=value`; `@` of e-mail
    String.raw`[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069:=@]`,
    // the prefixes of tokens, `Bearer` and `Basic`
    String.raw`xox|xapp-|gh[pousr]_|github_pat_|akia|asia|sk-|eyj|bearer|basic`,
    // generic home directories
    String.raw`[\\/](?:home|users)[\\/]`,
    // an IPv4 address has a digit, a dot and a digit
    String.raw`\d\.\d`,
    // a card number has 13 digits, single spaces or dashes between them
    String.raw`\d(?:[ -]?\d){12}`,
  ].join("|"),
  "i",
);

/** Characters that {@linkcode removeControlCharacters} removes or rewrites. */
const CONTROL_OR_BREAK_REGEXP =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

/**
 * Removes private data from text: the home directory (exactly, then any
 * `/home/<x>`, `/Users/<x>`, `C:\Users\<x>`) becomes `~`, the user name (3+
 * characters) `<user>`, e-mail addresses `<email>`, Luhn-valid 13–19 digit
 * card numbers `<card>`, IPv4/IPv6 addresses `<ip>`, and secrets
 * `<redacted>` (Slack webhook URLs as a whole; for tokens, `Bearer` values,
 * URL credentials and `password=`-style assignments only the secret itself).
 * Control characters other than `\n` and `\t` are removed first. It does not
 * truncate and does not read the running process: what is not in `context`
 * is not looked for. Applying it twice gives the same text as once.
 *
 * @param text The text to scrub.
 * @param context The home directory and user name to remove.
 * @returns The scrubbed text.
 *
 * @example Usage
 * ```ts
 * import { scrubText } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const text = scrubText(
 *   "alice (alice@example.com) read /home/alice/nb/token.txt with token=abc123",
 *   { home: "/home/alice", user: "alice" },
 * );
 * deepEqual(text, "<user> (<email>) read ~/nb/token.txt with token=<redacted>");
 * ```
 */
export function scrubText(text: string, context: PayloadContext = {}): string {
  let out = typeof text === "string" ? text : "";
  if (out.length === 0) return out;
  if (!MAY_NEED_SCRUBBING_REGEXP.test(out) && !hasIdentity(context)) {
    return out;
  }
  out = removeControlCharacters(out, true);
  out = out.replace(SLACK_WEBHOOK_REGEXP, "<redacted>");
  out = out.replace(URL_CREDENTIALS_REGEXP, "$1<redacted>@");
  out = out.replace(TOKEN_REGEXP, "<redacted>");
  out = out.replace(AUTH_SCHEME_REGEXP, "$1$2<redacted>");
  out = out.replace(SECRET_JSON_REGEXP, (_match, quote, key, separator) => {
    return `${quote}${key}${quote}${separator}"<redacted>"`;
  });
  out = out.replace(
    SECRET_PROPERTY_REGEXP,
    (_match, key, separator) => `${key}${separator}"<redacted>"`,
  );
  out = out.replace(SECRET_ASSIGNMENT_REGEXP, "$1$2<redacted>");
  out = out.replace(EMAIL_REGEXP, "<email>");
  out = scrubIdentity(out, context);
  out = out.replace(DIGIT_RUN_REGEXP, replaceCards);
  out = out.replace(IPV4_REGEXP, "<ip>");
  out = out.replace(
    IPV6_REGEXP,
    (match) => ANY_DIGIT_REGEXP.test(match) ? "<ip>" : match,
  );
  return out;
}

/**
 * Removes only the home directory (exactly, then any `/home/<x>`,
 * `/Users/<x>`, `C:\Users\<x>` prefix → `~`) and the user name (3+
 * characters, any case → `<user>`). Placeholders such as `<module>` are left
 * alone.
 *
 * @param text The text to scrub.
 * @param context The home directory and user name to remove.
 * @returns The text without them.
 *
 * @example Usage
 * ```ts
 * import { scrubIdentity } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(
 *   scrubIdentity("/srv/home/alice/notes-alice/x.ts", { home: "/srv/home/alice", user: "alice" }),
 *   "~/notes-<user>/x.ts",
 * );
 * ```
 */
export function scrubIdentity(
  text: string,
  context: PayloadContext = {},
): string {
  let out = typeof text === "string" ? text : "";
  const home = typeof context.home === "string" ? context.home : "";
  for (const variant of homeVariants(home)) {
    out = replaceLiteral(out, variant.text, "~", variant.ignoreCase);
  }
  out = out.replace(GENERIC_HOME_REGEXP, "~");
  const user = typeof context.user === "string" ? context.user.trim() : "";
  if (user.length >= 3) {
    const userRegExp = new RegExp(
      `${PLACEHOLDER_SOURCE}|${escapeRegExp(user)}`,
      "gi",
    );
    out = out.replace(
      userRegExp,
      (match) => PLACEHOLDER_REGEXP.test(match) ? match : "<user>",
    );
  }
  return out;
}

/**
 * Cuts text to at most `max` characters (UTF-16 code units), ending a cut
 * text with `…`; never splits a surrogate pair.
 *
 * @param text The text.
 * @param max The largest length allowed.
 * @returns `text` when it fits, else its start followed by `…`.
 *
 * @example Usage
 * ```ts
 * import { truncateText } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(truncateText("abcdef", 4), "abc…");
 * deepEqual(truncateText("abc", 4), "abc");
 * ```
 */
export function truncateText(text: string, max: number): string {
  const value = typeof text === "string" ? text : "";
  const limit = Number.isFinite(max) ? Math.max(0, Math.floor(max)) : 0;
  if (value.length <= limit) return value;
  if (limit === 0) return "";
  let cut = limit - 1;
  const last = value.charCodeAt(cut - 1);
  if (cut > 0 && last >= 0xd800 && last <= 0xdbff) cut--;
  return value.slice(0, cut) + "…";
}

/**
 * Removes control characters (and ANSI colour sequences): C0 except `\t` and
 * `\n`, DEL, C1, and bidirectional overrides. `\r\n` becomes `\n`. With
 * `keepLineBreaks` false, line breaks and tabs become single spaces.
 *
 * @param text The text.
 * @param keepLineBreaks Whether `\n` and `\t` stay.
 * @returns The cleaned text.
 *
 * @example Usage
 * ```ts
 * import { removeControlCharacters } from "./scrub.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(removeControlCharacters("a\x00b\r\nc", true), "ab\nc");
 * deepEqual(removeControlCharacters("a\nb\tc", false), "a b c");
 * ```
 */
export function removeControlCharacters(
  text: string,
  keepLineBreaks: boolean,
): string {
  let out = typeof text === "string" ? text : "";
  if (!CONTROL_OR_BREAK_REGEXP.test(out)) return out;
  if (out.includes("\x1b")) out = out.replace(ANSI_ESCAPE_REGEXP, "");
  out = out.replace(/\r\n?/g, "\n");
  if (!keepLineBreaks) out = out.replace(/[\n\t]/g, " ");
  return out.replace(CONTROL_REGEXP, "");
}

/** Whether the context names a home directory or user name that {@linkcode scrubIdentity} looks for. */
function hasIdentity(context: PayloadContext): boolean {
  const home = context.home;
  const user = context.user;
  return (typeof home === "string" && home.trim() !== "") ||
    (typeof user === "string" && user.trim().length >= 3);
}

/** The forms in which a home directory can appear in text. */
function homeVariants(home: string): { text: string; ignoreCase: boolean }[] {
  let base = home.trim();
  while (base.length > 1 && (base.endsWith("/") || base.endsWith("\\"))) {
    base = base.slice(0, -1);
  }
  if (base.length < 2 || base === "/" || /^[A-Za-z]:$/.test(base)) return [];
  const windows = /^[A-Za-z]:[\\/]/.test(base) || base.startsWith("\\\\");
  const forms = new Set<string>([base]);
  if (windows) {
    const forward = base.replace(/\\/g, "/");
    forms.add(forward);
    forms.add(base.replace(/\\/g, "\\\\"));
    forms.add(base.replace(/\//g, "\\"));
    forms.add(encodeURI(forward));
  } else {
    forms.add(encodeURI(base));
  }
  return [...forms]
    .filter((form) => form.length >= 2)
    .sort((a, b) => b.length - a.length)
    .map((form) => ({ text: form, ignoreCase: windows }));
}

function replaceLiteral(
  text: string,
  search: string,
  replacement: string,
  ignoreCase: boolean,
): string {
  if (!ignoreCase) return text.split(search).join(replacement);
  return text.replace(new RegExp(escapeRegExp(search), "gi"), replacement);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

/** Replaces Luhn-valid 13–19 digit windows of whole groups in a digit run. */
function replaceCards(run: string, offset: number, whole: string): string {
  if (run.length < 13) return run;
  const groups = run.split(/[ -]/);
  // A run glued to a following letter does not end in a card.
  const glued = /[A-Za-z_]/.test(whole.charAt(offset + run.length));
  const separators: string[] = [];
  for (let i = 0, pos = 0; i < groups.length; i++) {
    pos += groups[i].length;
    separators.push(run.charAt(pos));
    pos += 1;
  }
  const parts: string[] = [];
  let i = 0;
  while (i < groups.length) {
    let end = -1;
    let count = 0;
    const first = groups[i].charCodeAt(0) - 48;
    for (let j = i; first >= 2 && first <= 6 && j < groups.length; j++) {
      count += groups[j].length;
      if (count > 19) break;
      if (glued && j === groups.length - 1) break;
      if (count >= 13 && isCardNumber(groups.slice(i, j + 1).join(""))) {
        end = j;
      }
    }
    if (end >= 0) {
      parts.push("<card>");
      if (end < groups.length - 1) parts.push(separators[end]);
      i = end + 1;
    } else {
      parts.push(groups[i]);
      if (i < groups.length - 1) parts.push(separators[i]);
      i++;
    }
  }
  return parts.join("");
}

/**
 * 13–19 digits starting like a payment card (2–6: Mastercard, Amex, Diners,
 * JCB, Visa, Discover, UnionPay, Maestro; not 1, so that 13-digit
 * millisecond timestamps stay) that pass the Luhn check.
 */
function isCardNumber(digits: string): boolean {
  const first = digits.charCodeAt(0) - 48;
  return first >= 2 && first <= 6 && luhnValid(digits);
}

function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}
