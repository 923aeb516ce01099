import { equal } from "node:assert/strict";
import { removeControlCharacters, scrubText } from "../src/scrub.ts";

// scrubText() returns text that no rule can match without running the rules.
// A user name (3+ characters) turns that shortcut off; "qzqzq" never occurs
// in the texts below (no q, no z), so with it the rules run and must change
// nothing more than without it.
const RULES_RUN = { user: "qzqzq" };

/** Pieces of text that are, or nearly are, what some rule looks for. */
const PIECES = [
  "@",
  ".",
  ":",
  "::",
  "=",
  "/",
  "\\",
  "\\\\",
  "home",
  "Users",
  "/home/",
  "C:\\Users\\",
  "HOME",
  "token",
  "password",
  '"',
  "'",
  "Bearer",
  "BASIC",
  " ",
  "  ",
  "\t",
  "\n",
  "\r",
  "\x1b[31m",
  "\x00",
  "\x7f",
  "\x85",
  "\u202e",
  "\u2067",
  "-",
  "_",
  "0",
  "1",
  "4",
  "9",
  "255",
  "4111",
  "1111",
  "12.34",
  "fe80",
  "a",
  "ab",
  "f",
  "x",
  "xo",
  "xox",
  "b",
  "app",
  "gh",
  "p_",
  "github",
  "pat_",
  "AK",
  "IA",
  "AS",
  "sk",
  "ey",
  "J",
  "eyJ",
  "https",
  "hooks.slack.com/services/",
  "<user>",
  "<redacted>",
  "mail",
  "example.com",
  "é",
  "😀",
];

function randomTexts(count: number, seed: number): string[] {
  const next = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const texts: string[] = [];
  for (let i = 0; i < count; i++) {
    let text = "";
    const pieces = 1 + Math.floor(next() * 24);
    for (let j = 0; j < pieces; j++) {
      text += PIECES[Math.floor(next() * PIECES.length)];
    }
    texts.push(text);
  }
  return texts;
}

Deno.test("scrubText() gives the same text with and without its shortcut for text no rule matches", () => {
  const texts = [
    "Cannot read properties of undefined (reading 'rows')",
    "<cell>",
    "loadTable",
    "# load the table",
    "ask alice at alice@example.com",
    "call 4111 1111 1111 1111 now",
    "from 10.0.0.1 and fe80::1",
    "Authorization Bearer abcdefgh",
    "key xoxb-abcdefghij and sk-abcdefghijklmnopqrst",
    "AKIAABCDEFGHIJKLMNOP",
    "eyJhbGciOi.eyJzdWIiOi.sig",
    "see /home/bob/x and C:\\Users\\Eve\\y",
    "red \x1b[31mtext\x1b[0m\r\nnext",
    // Texts with exactly one thing to scrub.
    "Basic abcdefgh",
    "bearer abcdefgh",
    "visa 4222222222222 end",
    "amex 3782 822463 10005 end",
    "ip 10.0.0.1 end",
    "mail bob at b@example.org",
    "db_password=hunter2",
    "token xoxp-abcdefgh",
    "ghp_abcdefghijklmnopqrstuv",
    "github_pat_abcdefghijklmnopqrstuv",
    "ASIAABCDEFGHIJKLMNOP",
    "sk-abcdefghijklmnopqr",
    "eyJabcd.efgh.ijkl",
    "xapp-abcdefghij",
    "open /Users/eve/x",
    "open \\home\\eve\\x",
    "bidi \u202eevil",
    ...randomTexts(20_000, 11),
  ];
  for (const text of texts) {
    equal(scrubText(text), scrubText(text, RULES_RUN), JSON.stringify(text));
  }
});

Deno.test("removeControlCharacters() leaves text without control characters as it is", () => {
  for (const text of randomTexts(5_000, 23)) {
    for (const keepLineBreaks of [true, false]) {
      // deno-lint-ignore no-control-regex
      let expected = text.replace(/\x1b\[[0-?]{0,64}[ -/]{0,8}[@-~]/g, "")
        .replace(/\r\n?/g, "\n");
      if (!keepLineBreaks) expected = expected.replace(/[\n\t]/g, " ");
      expected = expected.replace(
        // deno-lint-ignore no-control-regex
        /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g,
        "",
      );
      equal(
        removeControlCharacters(text, keepLineBreaks),
        expected,
        JSON.stringify(text),
      );
    }
  }
});
