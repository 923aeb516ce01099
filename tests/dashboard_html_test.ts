import {
  deepEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import {
  escapeHtml,
  html,
  SafeHtml,
  userText,
} from "../src/server/dashboard/html.ts";
import { barChart, sparkline } from "../src/server/dashboard/charts.ts";
import {
  constantTimeEqual,
  DashboardAuth,
} from "../src/server/dashboard/auth.ts";

const HOSTILE = [
  "<img src=x onerror=alert(1)>",
  "</script><script>window.__pwned=1</script>",
  `" onmouseover="alert(1)`,
  "' autofocus onfocus='alert(1)",
  "javascript:alert(1)",
  "{{7*7}}",
  "`${1}`",
];

Deno.test("escapeHtml() escapes the characters that end text and quoted attributes", () => {
  assertEquals(
    escapeHtml(`<a href="x" title='y'>&\`</a>`),
    "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&#96;&lt;/a&gt;",
  );
});

Deno.test("html`` escapes every interpolated string, in text and in attributes", () => {
  for (const text of HOSTILE) {
    const out = html`<p title="${text}">${text}</p>`.toString();
    assert(!out.slice(3).includes("<img"), out);
    assert(!out.includes("<script"), out);
    // The attribute value stays one attribute: no raw quote inside it.
    const inner = out.slice('<p title="'.length, out.indexOf('">'));
    assert(!inner.includes('"') && !inner.includes("'"), out);
  }
});

Deno.test("html`` keeps nested templates and renders arrays, null and false as expected", () => {
  const items = ["<a>", "b"].map((x) => html`<li>${x}</li>`);
  assertEquals(
    html`<ul>${items}</ul>${null}${undefined}${false}${0}`.toString(),
    "<ul><li>&lt;a&gt;</li><li>b</li></ul>0",
  );
});

Deno.test("SafeHtml cannot be made from an arbitrary string outside html.ts", () => {
  assertThrows(
    () => new SafeHtml("<script>", Symbol("SafeHtml")),
    TypeError,
  );
  assertThrows(
    // deno-lint-ignore no-explicit-any
    () => (html as any)(["<b>"], 1),
    TypeError,
  );
});

Deno.test("userText() isolates direction and shows invisible characters", () => {
  assertEquals(
    userText("a\u202Eb\u2066c\u200Bd\x07").toString(),
    "<bdi>a⟨U+202E⟩b⟨U+2066⟩c⟨U+200B⟩d⟨U+0007⟩</bdi>",
  );
  assertEquals(userText("x".repeat(10), 5).toString(), "<bdi>xxxx…</bdi>");
  assertEquals(userText("<b>").toString(), "<bdi>&lt;b&gt;</bdi>");
});

Deno.test("barChart() draws one bar per point scaled to the largest and escapes labels", () => {
  const svg = barChart([
    { label: "2026-11-24", value: 2 },
    { label: "<x>", value: 4 },
    { label: "2026-11-26", value: 0 },
  ], { title: "Reports <per> day", height: 120 }).toString();
  const heights = [...svg.matchAll(/<rect class="bar"[^>]* height="([\d.]+)"/g)]
    .map((m) => Number(m[1]));
  assertEquals(heights.length, 3);
  // 4 units above the tallest bar, 1 for the baseline.
  assertEquals(heights[1], 115);
  assertEquals(heights[0], 57.5);
  assertEquals(heights[2], 0);
  assert(svg.includes("&lt;x&gt;: 4 reports"));
  assert(svg.includes('aria-label="Reports &lt;per&gt; day"'));
  assert(!svg.includes("<x>"));
});

Deno.test("sparkline() draws one bar per value and names the total", () => {
  const svg = sparkline([0, 3, 1], "reports").toString();
  assertEquals([...svg.matchAll(/<rect /g)].length, 3);
  assert(svg.includes("reports: 4 in total"));
  assert(sparkline([], "none").toString().trim().startsWith("<svg"));
});

Deno.test("constantTimeEqual() compares strings of any length", () => {
  assert(constantTimeEqual("token", "token"));
  assert(!constantTimeEqual("token", "token2"));
  assert(!constantTimeEqual("", "x"));
});

Deno.test("DashboardAuth refuses to exist without a token or the open mode", () => {
  assertThrows(() => new DashboardAuth({}), TypeError);
  assert(new DashboardAuth({ open: true }).open);
  assert(!new DashboardAuth({ adminToken: "t", open: true }).open);
});

Deno.test("DashboardAuth sessions: signed, expiring, HttpOnly SameSite=Strict, Secure over TLS", () => {
  const clock = { now: 1_000_000 };
  const auth = new DashboardAuth({
    adminToken: "tok",
    clock: () => clock.now,
    sessionTtlMs: 60_000,
  });
  const plain = auth.issueSession(new Request("http://h/dashboard/"));
  assert(plain.cookie.startsWith("nbr_dashboard="));
  assert(
    plain.cookie.includes("HttpOnly") &&
      plain.cookie.includes("SameSite=Strict"),
  );
  assert(!plain.cookie.includes("Secure"));
  const value = plain.cookie.split(";")[0]!;
  const withCookie = (cookie: string) =>
    new Request("http://h/dashboard/", { headers: { cookie } });
  assertEquals(auth.authenticate(withCookie(value)), {
    kind: "session",
    csrf: plain.csrf,
  });
  // Tampering with the expiry or the MAC fails.
  const [name, body] = value.split("=") as [string, string];
  const [expires, nonce, mac] = body.split(".");
  assertEquals(
    auth.authenticate(
      withCookie(`${name}=${Number(expires) + 1}.${nonce}.${mac}`),
    ),
    undefined,
  );
  assertEquals(
    auth.authenticate(
      withCookie(`${name}=${expires}.${nonce}.${"0".repeat(64)}`),
    ),
    undefined,
  );
  // Another token's sessions are not accepted.
  const other = new DashboardAuth({
    adminToken: "other",
    clock: () => clock.now,
  });
  assertEquals(other.authenticate(withCookie(value)), undefined);
  // Expiry.
  clock.now += 60_001;
  assertEquals(auth.authenticate(withCookie(value)), undefined);

  const tls = auth.issueSession(new Request("https://h/dashboard/"));
  assert(
    tls.cookie.startsWith("__Host-nbr_dashboard=") &&
      tls.cookie.includes("; Secure"),
  );
  const proxied = new DashboardAuth({ adminToken: "tok", trustProxy: true });
  assert(
    proxied.issueSession(
      new Request("http://h/", { headers: { "x-forwarded-proto": "https" } }),
    ).cookie.includes("; Secure"),
  );
  // Without --trust-proxy the header is not believed.
  assert(
    !auth.issueSession(
      new Request("http://h/", { headers: { "x-forwarded-proto": "https" } }),
    ).cookie.includes("Secure"),
  );
});

Deno.test("DashboardAuth accepts the bearer token and checks CSRF tokens of sessions", () => {
  const auth = new DashboardAuth({ adminToken: "tok" });
  assertEquals(
    auth.authenticate(
      new Request("http://h/", { headers: { authorization: "Bearer tok" } }),
    ),
    { kind: "bearer" },
  );
  assertEquals(
    auth.authenticate(
      new Request("http://h/", { headers: { authorization: "Bearer tok2" } }),
    ),
    undefined,
  );
  const { csrf, cookie } = auth.issueSession(new Request("http://h/"));
  const principal = auth.authenticate(
    new Request("http://h/", { headers: { cookie: cookie.split(";")[0]! } }),
  )!;
  const post = (headers: Record<string, string> = {}) =>
    new Request("http://h/x", {
      method: "POST",
      headers: { host: "h", ...headers },
    });
  assert(auth.verifyPost(post(), principal, csrf));
  assert(!auth.verifyPost(post(), principal, csrf + "x"));
  assert(!auth.verifyPost(post(), principal, undefined));
  assert(auth.verifyPost(post({ origin: "http://h" }), principal, csrf));
  assert(
    !auth.verifyPost(post({ origin: "http://evil.example" }), principal, csrf),
  );
  assert(
    !auth.verifyPost(post({ "sec-fetch-site": "cross-site" }), principal, csrf),
  );
  assert(auth.verifyPost(post(), { kind: "bearer" }, undefined));
});

Deno.test("DashboardAuth.checkSignIn() throttles an address after 5 failures a minute", () => {
  const clock = { now: 0 };
  const auth = new DashboardAuth({ adminToken: "tok", clock: () => clock.now });
  for (let i = 0; i < 5; i++) {
    assertEquals(auth.checkSignIn("nope", "a"), "wrong");
  }
  assertEquals(auth.checkSignIn("tok", "a"), "throttled");
  assertEquals(auth.checkSignIn("tok", "b"), "ok");
  clock.now += 60_001;
  assertEquals(auth.checkSignIn("tok", "a"), "ok");
});

Deno.test("DashboardAuth in the open mode answers only loopback host names", () => {
  const auth = new DashboardAuth({ open: true });
  const at = (host: string) =>
    auth.isAllowedHost(
      new Request(`http://${host}/dashboard/`, { headers: { host } }),
    );
  assert(at("127.0.0.1:8000"));
  assert(at("localhost:8000"));
  assert(at("[::1]:8000"));
  assert(!at("evil.example:8000"));
  assert(!at("127.0.0.1.evil.example"));
  assert(new DashboardAuth({ adminToken: "t" }).isAllowedHost(
    new Request("http://evil.example/", { headers: { host: "evil.example" } }),
  ));
});
