import { equal, ok } from "node:assert/strict";
import {
  PAYLOAD_LIMITS,
  removeControlCharacters,
  scrubIdentity,
  scrubText,
  truncateText,
} from "../src/scrub.ts";

const ALICE = { home: "/home/alice", user: "alice" };

/** [input, expected, context?] */
const CASES: [string, string, { home?: string; user?: string }?][] = [
  // Home directories and user names.
  ["open /home/alice/nb/data.csv", "open ~/nb/data.csv", ALICE],
  ["open /srv/home/alice/x", "open ~/x", {
    home: "/srv/home/alice",
    user: "alice",
  }],
  ["/home/bob/x and /Users/carol/y", "~/x and ~/y"],
  ["file:///home/bob/x.ts:1:2", "file://~/x.ts:1:2"],
  ["C:\\Users\\Dave\\nb\\x.ts", "~\\nb\\x.ts"],
  ["C:/Users/Dave/nb/x.ts", "~/nb/x.ts"],
  ['{"path":"C:\\\\Users\\\\Dave\\\\x"}', '{"path":"~\\\\x"}'],
  [
    "C:\\USERS\\DAVE\\nb and file:///C:/Users/Dave/nb",
    "~\\nb and file:///~/nb",
    { home: "C:\\Users\\Dave", user: "Dave" },
  ],
  [
    "see https://example.com/home/index.html",
    "see https://example.com/home/index.html",
  ],
  ["hello Alice, notes-alice/x.ts", "hello <user>, notes-<user>/x.ts", ALICE],
  ["al is short", "al is short", { user: "al" }],
  // Placeholders are never rewritten, whatever the user name.
  [
    "<module> <anonymous> <user> <redacted>",
    "<module> <anonymous> <user> <redacted>",
    {
      user: "module",
    },
  ],
  ["user: user", "<user>: <user>", { user: "user" }],
  // E-mail addresses; package versions are not e-mails.
  ["mail alice.b+x@mail.example.co.uk now", "mail <email> now"],
  [
    "npm:zod@3.23.8 and npm:@scope/pkg@1.2.3-beta.1 and git@github.com:o/r",
    "npm:zod@3.23.8 and npm:@scope/pkg@1.2.3-beta.1 and <email>:o/r",
  ],
  // Card numbers (Luhn), not other numbers.
  ["card 4111 1111 1111 1111.", "card <card>."],
  [
    "card 4111-1111-1111-1111, amex 378282246310005",
    "card <card>, amex <card>",
  ],
  ["visa 4012888888881881 then 12", "visa <card> then 12"],
  ["not luhn 4111111111111112", "not luhn 4111111111111112"],
  [
    "timestamp 1732540000000 id 12345678901234567",
    "timestamp 1732540000000 id 12345678901234567",
  ],
  ["hash a4111111111111111b", "hash a4111111111111111b"],
  ["date 2024-01-15 12:30:45.123", "date 2024-01-15 12:30:45.123"],
  // IP addresses, not versions, times or positions.
  ["connect 192.168.1.20:5432 failed", "connect <ip>:5432 failed"],
  ["from 10.0.0.1.", "from <ip>."],
  ["v1.2.3 and 1.2.3.4.5 and 300.1.1.1", "v1.2.3 and 1.2.3.4.5 and 300.1.1.1"],
  [
    "at 12:30:45 in file.ts:12:5 and Foo::Bar and dead::beef",
    "at 12:30:45 in file.ts:12:5 and Foo::Bar and dead::beef",
  ],
  [
    "ipv6 ::1 and [fe80::1%eth0]:80 and 2001:db8::8a2e:370:7334",
    "ipv6 <ip> and [<ip>%eth0]:80 and <ip>",
  ],
  ["full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 end", "full <ip> end"],
  // Secrets.
  [
    "POST https://hooks.slack.com/services/T0001/B0002/abcdefSECRET failed",
    "POST <redacted> failed",
  ],
  ["xoxb-123456789012-123456789012-abcdefghijklmnop", "<redacted>"],
  ["token ghp_0123456789abcdefghijABCDEFGHIJ012345.", "token <redacted>."],
  ["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "<redacted>"],
  ["key AKIAIOSFODNN7EXAMPLE here", "key <redacted> here"],
  ["OPENAI sk-proj-abcdefghijklmnop1234_XYZ", "OPENAI <redacted>"],
  [
    "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpM",
    "jwt <redacted>",
  ],
  ["Authorization: Bearer abc.def-123_456", "Authorization: Bearer <redacted>"],
  [
    "postgres://bob:s3cr3t@db.internal:5432/app",
    "postgres://<redacted>@db.internal:5432/app",
  ],
  ["https://user:pa:ss@host/x", "https://<redacted>@host/x"],
  ["?access_token=abc123&page=2", "?access_token=<redacted>&page=2"],
  [
    "password=hunter2 PASSWORD = hunter3; api_key=k1, apikey=k2 secret=s",
    "password=<redacted> PASSWORD = <redacted>; api_key=<redacted>, apikey=<redacted> secret=<redacted>",
  ],
  [
    '{"password": "hun\\"ter2", "apiKey":"x", "token": 12345}',
    '{"password": "<redacted>", "apiKey":"<redacted>", "token": "<redacted>"}',
  ],
  ["{'client_secret': 'abc'}", "{'client_secret': \"<redacted>\"}"],
  [
    'config { user: "x", password: "hunter2", apiKey: \'k\' } and "token": "' +
    "t".repeat(1200),
    'config { user: "x", password: "<redacted>", apiKey: "<redacted>" } and "token": "<redacted>"' +
    "t".repeat(200),
  ],
  ["password: too short", "password: too short"],
  [
    "Unexpected token '}' in JSON at position 4",
    "Unexpected token '}' in JSON at position 4",
  ],
  // Control characters.
  ["a\x00b\x07c\x1b[31mred\x1b[0m\u202etxt\r\nline\tok", "abcredtxt\nline\tok"],
];

Deno.test("scrubText() scrubs every kind of private data", async (t) => {
  for (const [input, expected, context] of CASES) {
    await t.step(JSON.stringify(input).slice(0, 70), () => {
      equal(scrubText(input, context), expected);
    });
  }
});

Deno.test("scrubText() is idempotent", () => {
  for (const [input, , context] of CASES) {
    const once = scrubText(input, context);
    equal(scrubText(once, context), once, input);
  }
});

Deno.test("scrubText() does not read the running process", () => {
  const home = Deno.env.get("HOME");
  if (home === undefined || home.length < 2) return;
  const text = `${home}/x`;
  // Without a context, only the generic /home/<x> rule applies.
  equal(
    scrubText(text),
    /^\/(home|Users)\//.test(home) ? "~/x" : text,
  );
});

Deno.test("scrubIdentity() replaces the exact home before the generic rule", () => {
  equal(
    scrubIdentity("/srv/home/alice/notes-alice/x.ts", {
      home: "/srv/home/alice/",
      user: "alice",
    }),
    "~/notes-<user>/x.ts",
  );
  equal(scrubIdentity("/", { home: "/" }), "/");
  equal(scrubIdentity("mail bob@example.com", {}), "mail bob@example.com");
});

Deno.test("truncateText() ends cut text with … within the limit", () => {
  equal(truncateText("abcdef", 4), "abc…");
  equal(truncateText("abcd", 4), "abcd");
  equal(truncateText("abc", 0), "");
  equal(truncateText("abc", 1), "…");
  equal(truncateText("ab😀cd", 4), "ab…");
  equal(
    truncateText("x".repeat(5000), PAYLOAD_LIMITS.errorMessage).length,
    1000,
  );
  equal(truncateText(undefined as unknown as string, 3), "");
  equal(truncateText("abc", Number.NaN), "");
});

Deno.test("removeControlCharacters() keeps or folds line breaks", () => {
  equal(removeControlCharacters("a\r\nb\tc\x7f\x85", true), "a\nb\tc");
  equal(removeControlCharacters("a\r\nb\tc", false), "a b c");
});

Deno.test("scrubText() returns '' for non-strings and never throws on random input", () => {
  equal(scrubText(undefined as unknown as string), "");
  equal(scrubText(42 as unknown as string), "");
  let seed = 7;
  const next = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const tokens = [
    "@",
    ".",
    ":",
    "::",
    "/home/",
    "C:\\Users\\",
    "token=",
    '"password":"',
    "Bearer ",
    "4111",
    " ",
    "-",
    "1",
    "eyJ",
    "xoxb-",
    "ghp_",
    "://",
    "a",
    "<user>",
    "\n",
    "\x00",
  ];
  for (let i = 0; i < 2000; i++) {
    let text = "";
    const count = Math.floor(next() * 40);
    for (let j = 0; j < count; j++) {
      text += tokens[Math.floor(next() * tokens.length)];
    }
    const once = scrubText(text, ALICE);
    ok(typeof once === "string");
    ok(!once.toLowerCase().includes("alice"), text);
  }
});

const ADVERSARIAL: [string, (n: number) => string][] = [
  ["underscores", (n) => "_".repeat(n)],
  ["local part without @", (n) => "a".repeat(n) + "@"],
  ["digit groups", (n) => "1 ".repeat(n / 2)],
  ["colon digits", (n) => "1:".repeat(n / 2)],
  ["hex colons", (n) => "f:".repeat(n / 2)],
  ["double colons", (n) => "::".repeat(n / 2)],
  ["dotted digits", (n) => "1.".repeat(n / 2)],
  ["dotted letters", (n) => "a.".repeat(n / 2)],
  ["home prefixes", (n) => "/home/".repeat(n / 6)],
  ["backslashes", (n) => "\\".repeat(n)],
  ["assignments", (n) => "token=".repeat(n / 6)],
  ["json keys", (n) => '"token":"'.repeat(n / 9)],
  ["json unterminated", (n) => '"token": "' + "\\a".repeat(n / 2)],
  ["jwt-ish", (n) => "eyJaaaa.".repeat(n / 8)],
  ["schemes", (n) => "a://:".repeat(n / 5)],
  ["mail-ish", (n) => "x@a.".repeat(n / 4)],
  ["bearer", (n) => "Bearer ".repeat(n / 7)],
  ["user name", (n) => "alic".repeat(n / 4)],
];

Deno.test("scrubText() stays linear on 1 MB adversarial input (ReDoS guard)", () => {
  const size = 1 << 20;
  for (const [name, make] of ADVERSARIAL) {
    const small = make(size / 4);
    const large = make(size);
    const t0 = performance.now();
    scrubText(small, ALICE);
    const t1 = performance.now();
    scrubText(large, ALICE);
    const t2 = performance.now();
    console.log(
      `  ${name}: 256 KB ${(t1 - t0).toFixed(1)} ms, 1 MB ${
        (t2 - t1).toFixed(1)
      } ms, ratio ${
        ((t2 - t1) / Math.max(t1 - t0, 0.01)).toFixed(1)
      } (linear ≈ 4)`,
    );
    // A generous bound: quadratic behaviour on 1 MB would take minutes.
    ok(t2 - t1 < 5000, `${name}: 1 MB took ${t2 - t1} ms`);
  }
});
