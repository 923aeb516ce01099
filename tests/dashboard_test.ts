import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { createCollector } from "../src/server/app.ts";
import {
  createDashboard,
  DASHBOARD_CSP,
  type DashboardHandler,
} from "../src/server/dashboard/routes.ts";
import type { Storage } from "../src/server/storage.ts";
import { type EngineContext, engineTest } from "./support/storage_engines.ts";
import type { CollectorHandler } from "../src/server/app.ts";

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const TOKEN = "dashboard-test-token-0123456789";
const ORIGIN = "http://collector.test";

interface Harness {
  storage: Storage;
  clock: { now: number };
  collector: CollectorHandler;
  dashboard: DashboardHandler;
  /** Sends a report through the collector's real API, in a new session unless given one. */
  report(payload: Record<string, unknown>, session?: string): Promise<string>;
  session(notebook: string): Promise<string>;
  get(path: string, headers?: Record<string, string>): Promise<Response>;
  post(
    path: string,
    form: Record<string, string>,
    headers?: Record<string, string>,
  ): Promise<Response>;
  signIn(): Promise<{ cookie: string; csrf: string }>;
}

async function harness(
  engine: EngineContext,
  options: { pageSize?: number; open?: boolean } = {},
): Promise<Harness> {
  const storage = await engine.open();
  const clock = { now: T0 };
  const collector = createCollector({
    storage,
    clock: () => clock.now,
    limits: false,
    adminToken: options.open ? undefined : TOKEN,
    dashboard: options.open ? { open: true } : true,
  });
  const dashboard = createDashboard({
    storage,
    clock: () => clock.now,
    auth: options.open ? { open: true } : { adminToken: TOKEN },
    pageSize: options.pageSize ?? 50,
  });
  const session = async (notebook: string) => {
    const response = await collector(
      new Request(`${ORIGIN}/usages/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ notebook }),
      }),
      { remoteAddr: { hostname: "192.0.2.1" } },
    );
    assertEquals(response.status, 200);
    return (await response.json()).uuid as string;
  };
  const h: Harness = {
    storage,
    clock,
    collector,
    dashboard,
    session,
    async report(payload, uuid) {
      uuid ??= await session(String(payload.notebook ?? "demo"));
      const response = await collector(
        new Request(`${ORIGIN}/errors/${uuid}/`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(payload),
        }),
        { remoteAddr: { hostname: "192.0.2.1" } },
      );
      assertEquals(response.status, 200, await response.clone().text());
      await response.body?.cancel();
      return uuid;
    },
    get(path, headers = {}) {
      return dashboard(
        new Request(`${ORIGIN}${path}`, {
          headers: { host: "collector.test", ...headers },
        }),
        { remoteAddr: { hostname: "192.0.2.9" } },
      );
    },
    post(path, form, headers = {}) {
      return dashboard(
        new Request(`${ORIGIN}${path}`, {
          method: "POST",
          headers: {
            host: "collector.test",
            "content-type": "application/x-www-form-urlencoded",
            ...headers,
          },
          body: new URLSearchParams(form).toString(),
        }),
        { remoteAddr: { hostname: "192.0.2.9" } },
      );
    },
    async signIn() {
      const response = await h.post("/dashboard/sign-in", {
        token: TOKEN,
        next: "/dashboard/",
      }, { origin: ORIGIN });
      assertEquals(response.status, 303);
      const cookie = response.headers.get("set-cookie")!.split(";")[0]!;
      const page = await h.get("/dashboard/", { cookie });
      const csrf = /name="csrf" value="([^"]+)"/.exec(await page.text())?.[1];
      assert(csrf, "the overview has a sign-out form with a CSRF token");
      return { cookie, csrf };
    },
  };
  return h;
}

function payload(
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    error_name: "TypeError",
    error_message: "x is not a function",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 3 },
      { filename: "<cell>", fun_name: "helper", lineno: 7 },
    ],
    first_line: "helper(x)",
    execution_count: 4,
    notebook: "demo",
    ...overrides,
  };
}

function assertSecurityHeaders(response: Response): void {
  assertEquals(response.headers.get("content-security-policy"), DASHBOARD_CSP);
  assertEquals(response.headers.get("x-content-type-options"), "nosniff");
  assertEquals(response.headers.get("referrer-policy"), "no-referrer");
  const csp = DASHBOARD_CSP;
  for (
    const directive of [
      "default-src 'self'",
      "script-src 'self'",
      "frame-ancestors 'none'",
      "form-action 'self'",
      "base-uri 'none'",
    ]
  ) assert(csp.includes(directive), directive);
  assert(!csp.includes("unsafe-inline") && !csp.includes("unsafe-eval"));
}

function groupIds(body: string): number[] {
  return [...body.matchAll(/href="\/dashboard\/groups\/(\d+)"/g)].map((m) =>
    Number(m[1])
  );
}

engineTest(
  "dashboard: unauthenticated requests are redirected or refused, never given data",
  async (engine) => {
    const h = await harness(engine);
    await h.report(payload({ error_message: "SECRET-MESSAGE" }));
    const group = (await h.storage.listGroups({
      notebook: "demo",
      sort: "lastSeen",
      skip: 0,
      limit: 1,
    })).groups[0]!;
    for (
      const path of [
        "/dashboard/",
        "/dashboard/groups?notebook=demo",
        `/dashboard/groups/${group.id}`,
      ]
    ) {
      const response = await h.get(path);
      assertEquals(response.status, 303, path);
      assertSecurityHeaders(response);
      const location = response.headers.get("location")!;
      assert(location.startsWith("/dashboard/sign-in"), location);
      assert(!(await response.text()).includes("SECRET"));
    }
    assertEquals(
      (await h.get("/dashboard/groups?notebook=demo")).headers.get("location"),
      "/dashboard/sign-in?next=%2Fdashboard%2Fgroups%3Fnotebook%3Ddemo",
    );
    for (
      const path of [
        `/dashboard/groups/${group.id}/state`,
        `/dashboard/groups/${group.id}/delete`,
      ]
    ) {
      const response = await h.post(path, { state: "resolved", csrf: "x" });
      assertEquals(response.status, 401, path);
      assertSecurityHeaders(response);
      assert(!(await response.text()).includes("SECRET"));
    }
    assertEquals((await h.storage.getGroup(group.id))?.state, "open");
    // A forged cookie and a wrong bearer token are not accepted either.
    for (
      const headers of [
        {
          cookie: `nbr_dashboard=9999999999999.${"0".repeat(32)}.${
            "0".repeat(64)
          }`,
        },
        { authorization: "Bearer wrong-token" },
      ] as Record<string, string>[]
    ) {
      const response = await h.get("/dashboard/", headers);
      assertEquals(response.status, 303);
      await response.body?.cancel();
    }
  },
);

engineTest(
  "dashboard: sign-in sets an HttpOnly SameSite=Strict cookie and refuses a wrong token",
  async (engine) => {
    const h = await harness(engine);
    const form = await h.get(
      "/dashboard/sign-in?next=%2Fdashboard%2Fgroups%3Fnotebook%3Ddemo",
    );
    assertEquals(form.status, 200);
    assertSecurityHeaders(form);
    const formBody = await form.text();
    assert(
      formBody.includes('name="token"') && formBody.includes('type="password"'),
    );
    assert(formBody.includes('value="/dashboard/groups?notebook=demo"'));

    const wrong = await h.post("/dashboard/sign-in", {
      token: "nope",
      next: "/dashboard/",
    });
    assertEquals(wrong.status, 401);
    assertEquals(wrong.headers.get("set-cookie"), null);
    assertMatch(await wrong.text(), /not right/);

    const right = await h.post("/dashboard/sign-in", {
      token: TOKEN,
      next: "/dashboard/groups?notebook=demo",
    });
    assertEquals(right.status, 303);
    assertEquals(
      right.headers.get("location"),
      "/dashboard/groups?notebook=demo",
    );
    const cookie = right.headers.get("set-cookie")!;
    assertMatch(
      cookie,
      /^nbr_dashboard=\d+\.[0-9a-f]{32}\.[0-9a-f]{64}; Path=\/; /,
    );
    assert(cookie.includes("HttpOnly") && cookie.includes("SameSite=Strict"));
    assert(!cookie.includes("Secure"), "no Secure flag over plain HTTP");
    const page = await h.get("/dashboard/", { cookie: cookie.split(";")[0]! });
    assertEquals(page.status, 200);
    assertSecurityHeaders(page);

    // An open redirect through `next` is not possible.
    for (
      const next of [
        "//evil.example/",
        "https://evil.example/",
        "/dashboard/\\evil",
        "javascript:alert(1)",
      ]
    ) {
      const response = await h.post("/dashboard/sign-in", {
        token: TOKEN,
        next,
      });
      assertEquals(response.headers.get("location"), "/dashboard/", next);
    }
    // A sign-in form posted from another site is refused.
    const crossSite = await h.post("/dashboard/sign-in", { token: TOKEN }, {
      origin: "http://evil.example",
    });
    assertEquals(crossSite.status, 403);
    assertEquals(crossSite.headers.get("set-cookie"), null);

    // Over TLS the cookie is Secure and __Host- prefixed.
    const tls = await h.dashboard(
      new Request("https://collector.test/dashboard/sign-in", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: TOKEN }).toString(),
      }),
    );
    const tlsCookie = tls.headers.get("set-cookie")!;
    assert(
      tlsCookie.startsWith("__Host-nbr_dashboard=") &&
        tlsCookie.includes("; Secure"),
      tlsCookie,
    );

    // Sign-out clears the cookie, and needs the CSRF token.
    const { cookie: session, csrf } = await h.signIn();
    const refused = await h.post("/dashboard/sign-out", { csrf: "wrong" }, {
      cookie: session,
    });
    assertEquals(refused.status, 403);
    const out = await h.post("/dashboard/sign-out", { csrf }, {
      cookie: session,
    });
    assertEquals(out.status, 303);
    assertMatch(out.headers.get("set-cookie")!, /^nbr_dashboard=; .*Max-Age=0/);
  },
);

engineTest(
  "dashboard: failed sign-ins are throttled per address",
  async (engine) => {
    const h = await harness(engine);
    for (let i = 0; i < 5; i++) {
      const r = await h.post("/dashboard/sign-in", { token: `guess-${i}` });
      assertEquals(r.status, 401);
      await r.body?.cancel();
    }
    const throttled = await h.post("/dashboard/sign-in", { token: TOKEN });
    assertEquals(throttled.status, 429);
    assertEquals(throttled.headers.get("set-cookie"), null);
    await throttled.body?.cancel();
    h.clock.now += 61_000;
    const ok = await h.post("/dashboard/sign-in", { token: TOKEN });
    assertEquals(ok.status, 303);
  },
);

engineTest(
  "dashboard: the overview shows every notebook's windows and a 30-day chart",
  async (engine) => {
    const h = await harness(engine);
    h.clock.now = T0 - 10 * 86_400_000;
    await h.report(payload({ notebook: "alpha", error_message: "old one" }));
    h.clock.now = T0 - 2 * 86_400_000;
    await h.report(payload({ notebook: "alpha", error_message: "two days" }));
    h.clock.now = T0 - 3_600_000;
    const s = await h.report(payload({ notebook: "alpha" }));
    await h.report(payload({ notebook: "alpha", error_name: "RangeError" }), s);
    await h.report(payload({ notebook: "beta" }));
    h.clock.now = T0;
    const { cookie } = await h.signIn();
    const response = await h.get("/dashboard/", { cookie });
    assertEquals(response.status, 200);
    assertSecurityHeaders(response);
    const body = await response.text();
    const rows = [...body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) =>
      [...m[1]!.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) =>
        c[1]!.replace(/<[^>]+>/g, "").trim()
      )
    ).filter((r) => r.length > 0);
    // notebook, groups, reports 24h/7d/30d, sessions 24h/7d/30d, sparkline
    assertEquals(rows.map((r) => r.slice(0, 8)), [
      ["alpha", "4", "2", "3", "4", "1", "2", "3"],
      ["beta", "1", "1", "1", "1", "1", "1", "1"],
    ]);
    const bars = [
      ...body.matchAll(/<rect class="bar"[^>]*>\s*<title>([^<]*)<\/title>/g),
    ]
      .map((m) => m[1]!);
    assertEquals(bars.length, 30);
    assertEquals(bars[29], "2026-11-25: 3 reports");
    assertEquals(bars[28], "2026-11-24: 0 reports");
    assertEquals(bars[27], "2026-11-23: 1 reports");
    assertEquals(bars[19], "2026-11-15: 1 reports");
    assertEquals(
      rows.map((r) => r[8]),
      [
        "reports per day, last 30 days: 4 in total",
        "reports per day, last 30 days: 1 in total",
      ],
    );
    assert(body.includes('href="/dashboard/groups?notebook=beta"'));
    // The bearer token works too.
    const bearer = await h.get("/dashboard/", {
      authorization: `Bearer ${TOKEN}`,
    });
    assertEquals(bearer.status, 200);
    await bearer.body?.cancel();
  },
);

engineTest(
  "dashboard: a notebook's groups sort, filter and page through query-string links",
  async (engine) => {
    const h = await harness(engine, { pageSize: 2 });
    // Five groups; group i gets i+1 reports, the last reported first.
    for (let i = 0; i < 5; i++) {
      h.clock.now = T0 - (10 - i) * 3_600_000;
      const s = await h.session("demo");
      for (let n = 0; n <= i; n++) {
        await h.report(
          payload({
            error_message: `problem number ${"abcde"[i]}`,
            execution_count: n,
          }),
          s,
        );
      }
    }
    // Group "a" is reported again last, so it is the most recent.
    h.clock.now = T0 - 3_600_000;
    await h.report(
      payload({ error_message: "problem number a", execution_count: 99 }),
    );
    h.clock.now = T0;
    const { cookie } = await h.signIn();
    const text = async (path: string) => {
      const response = await h.get(path, { cookie });
      assertEquals(response.status, 200, path);
      assertSecurityHeaders(response);
      return await response.text();
    };
    const messages = (body: string) =>
      [...body.matchAll(/problem number (\w)/g)].map((m) => m[1]);
    const byLastSeen = await text("/dashboard/groups?notebook=demo");
    assertEquals(messages(byLastSeen), ["a", "e"]);
    assert(byLastSeen.includes("1–2 of 5"));
    assert(
      byLastSeen.includes('href="/dashboard/groups?notebook=demo&amp;page=2"'),
    );
    assert(
      byLastSeen.includes(
        'href="/dashboard/groups?notebook=demo&amp;sort=count"',
      ),
    );
    assert(byLastSeen.includes("1 h ago"));
    assertEquals(
      messages(await text("/dashboard/groups?notebook=demo&page=2")),
      ["d", "c"],
    );
    const last = await text("/dashboard/groups?notebook=demo&page=3");
    assertEquals(messages(last), ["b"]);
    assert(!last.includes('rel="next"'));
    assertEquals(
      messages(await text("/dashboard/groups?notebook=demo&sort=count")),
      ["e", "d"],
    );
    assertEquals(
      messages(await text("/dashboard/groups?notebook=demo&sort=count&page=3")),
      ["a"],
    );
    // Text filter, case-insensitive; the pager keeps the filter.
    const filtered = await text("/dashboard/groups?notebook=demo&q=NUMBER+C");
    assertEquals(messages(filtered), ["c"]);
    assert(filtered.includes('value="NUMBER C"'));
    // State filter.
    const ids = groupIds(byLastSeen);
    assert(await h.storage.setGroupState(ids[0]!, "resolved", T0));
    assertEquals(
      messages(await text("/dashboard/groups?notebook=demo&state=resolved")),
      ["a"],
    );
    const open = await text(
      "/dashboard/groups?notebook=demo&state=open&sort=count&page=2",
    );
    assertEquals(messages(open), ["c", "b"]);
    assert(open.includes("3–4 of 4"));
    // The 14-day sparkline counts the group's reports per day.
    const e = await text("/dashboard/groups?notebook=demo&q=number+e");
    assertMatch(e, /reports per day, last 14 days: 5 in total/);
    // Nonsense parameters fall back to defaults instead of failing.
    const odd = await h.get(
      "/dashboard/groups?notebook=demo&sort=evil&state=x&page=-3",
      { cookie },
    );
    assertEquals(odd.status, 200);
    assertEquals(messages(await odd.text()), ["a", "e"]);
    const none = await text("/dashboard/groups?notebook=nobody");
    assert(none.includes("No groups match."));
    const missing = await h.get("/dashboard/groups", { cookie });
    assertEquals(missing.status, 404);
    await missing.body?.cancel();
  },
);

engineTest(
  "dashboard: a group shows its traceback, first lines, cells and histogram",
  async (engine) => {
    const h = await harness(engine);
    h.clock.now = T0 - 2 * 86_400_000;
    await h.report(payload({ first_line: "first()", execution_count: 2 }));
    h.clock.now = T0 - 3_600_000;
    await h.report(payload({
      first_line: "second()",
      execution_count: 5,
      traceback: [
        { filename: "<cell>", fun_name: "<module>", lineno: 9 },
        { filename: "<cell>", fun_name: "helper", lineno: 12 },
        {
          filename: "npm:lodash@4.17.21/lodash.js",
          fun_name: "map",
          lineno: null,
        },
      ],
    }));
    h.clock.now = T0;
    const { cookie } = await h.signIn();
    const list =
      await (await h.get("/dashboard/groups?notebook=demo", { cookie })).text();
    const [id] = groupIds(list);
    const response = await h.get(`/dashboard/groups/${id}`, { cookie });
    assertEquals(response.status, 200);
    assertSecurityHeaders(response);
    const body = await response.text();
    const traceback = /<table[^>]*id="traceback"[^>]*>([\s\S]*?)<\/table>/.exec(
      body,
    )![1]!;
    const frames = [...traceback.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) =>
      [...m[1]!.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) =>
        c[1]!.replace(/<[^>]+>/g, "").trim()
      )
    ).filter((r) => r.length > 0);
    assertEquals(frames, [
      ["1", "&lt;cell&gt;", "&lt;module&gt;", "9"],
      ["2", "&lt;cell&gt;", "helper", "12"],
      ["3", "npm:lodash@4.17.21/lodash.js", "map", "–"],
    ]);
    const firstLines = /<ul id="first-lines">([\s\S]*?)<\/ul>/.exec(body)![1]!;
    assert(firstLines.includes("first()") && firstLines.includes("second()"));
    assertMatch(body, /<p id="cell-numbers">\s*2, 5\s*<\/p>/);
    const bars = [
      ...body.matchAll(/<rect class="bar"[^>]*>\s*<title>([^<]*)<\/title>/g),
    ]
      .map((m) => m[1]!);
    assertEquals(bars.length, 30);
    assertEquals(bars[27], "2026-11-23: 1 reports");
    assertEquals(bars[28], "2026-11-24: 0 reports");
    assertEquals(bars[29], "2026-11-25: 1 reports");
    assert(
      body.includes("2026-11-23 12:00 UTC"),
      "first seen in UTC without script",
    );
    assert(body.includes('datetime="2026-11-23T12:00:00.000Z"'));
    const missing = await h.get("/dashboard/groups/999999", { cookie });
    assertEquals(missing.status, 404);
    assertSecurityHeaders(missing);
    await missing.body?.cancel();
  },
);

engineTest(
  "dashboard: resolve needs POST with the session's CSRF token, and a new report reopens the group",
  async (engine) => {
    const h = await harness(engine);
    await h.report(payload());
    const { cookie, csrf } = await h.signIn();
    const [id] = groupIds(
      await (await h.get("/dashboard/groups?notebook=demo", { cookie })).text(),
    );
    const page = await (await h.get(`/dashboard/groups/${id}`, { cookie }))
      .text();
    assert(page.includes(`action="/dashboard/groups/${id}/state"`));
    assert(page.includes(`name="csrf" value="${csrf}"`));
    const path = `/dashboard/groups/${id}/state`;
    // Refused: no token, a wrong token, another session's token, a cross-site
    // request, GET, another content type.
    const other = await h.signIn();
    assert(other.csrf !== csrf);
    for (
      const [form, headers] of [
        [{ state: "resolved" }, { cookie }],
        [{ state: "resolved", csrf: "x" + csrf }, { cookie }],
        [{ state: "resolved", csrf: other.csrf }, { cookie }],
        [{ state: "resolved", csrf }, {
          cookie,
          origin: "http://evil.example",
        }],
        [{ state: "resolved", csrf }, {
          cookie,
          "sec-fetch-site": "cross-site",
        }],
      ] as [Record<string, string>, Record<string, string>][]
    ) {
      const response = await h.post(path, form, headers);
      assertEquals(response.status, 403, JSON.stringify(headers));
      await response.body?.cancel();
    }
    const get = await h.get(path, { cookie });
    assertEquals(get.status, 405);
    await get.body?.cancel();
    const json = await h.dashboard(
      new Request(`${ORIGIN}${path}`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: JSON.stringify({ state: "resolved", csrf }),
      }),
    );
    assertEquals(json.status, 415);
    await json.body?.cancel();
    const bad = await h.post(path, { state: "deleted", csrf }, { cookie });
    assertEquals(bad.status, 400);
    await bad.body?.cancel();
    assertEquals((await h.storage.getGroup(id!))?.state, "open");

    const resolved = await h.post(path, { state: "resolved", csrf }, {
      cookie,
      origin: ORIGIN,
    });
    assertEquals(resolved.status, 303);
    assertEquals(
      resolved.headers.get("location"),
      `/dashboard/groups/${id}?done=resolved`,
    );
    assertEquals((await h.storage.getGroup(id!))?.state, "resolved");
    const after =
      await (await h.get(`/dashboard/groups/${id}?done=resolved`, { cookie }))
        .text();
    assert(
      after.includes("state-resolved") && after.includes("Marked resolved"),
    );
    assert(
      !after.includes('value="resolved"'),
      "no Resolve button on a resolved group",
    );

    h.clock.now += 3_600_000;
    await h.report(payload());
    assertEquals((await h.storage.getGroup(id!))?.state, "open");
    const reopened = await (await h.get(`/dashboard/groups/${id}`, { cookie }))
      .text();
    assert(reopened.includes("state-open"));

    // Ignore, then the bearer token (no cookie, so no CSRF needed).
    const ignored = await h.post(path, { state: "ignored" }, {
      authorization: `Bearer ${TOKEN}`,
    });
    assertEquals(ignored.status, 303);
    assertEquals((await h.storage.getGroup(id!))?.state, "ignored");
  },
);

engineTest(
  "dashboard: delete removes the group and returns to the notebook's list",
  async (engine) => {
    const h = await harness(engine);
    await h.report(payload());
    await h.report(payload({ error_message: "another" }));
    const { cookie, csrf } = await h.signIn();
    const [id] = groupIds(
      await (await h.get("/dashboard/groups?notebook=demo", { cookie })).text(),
    );
    const page = await (await h.get(`/dashboard/groups/${id}`, { cookie }))
      .text();
    assert(page.includes('name="confirm" value="yes" required'));
    const refused = await h.post(`/dashboard/groups/${id}/delete`, {
      confirm: "yes",
    }, { cookie });
    assertEquals(refused.status, 403);
    await refused.body?.cancel();
    const unconfirmed = await h.post(`/dashboard/groups/${id}/delete`, {
      csrf,
    }, { cookie });
    assertEquals(unconfirmed.status, 400);
    await unconfirmed.body?.cancel();
    assert(await h.storage.getGroup(id!));
    const deleted = await h.post(`/dashboard/groups/${id}/delete`, {
      csrf,
      confirm: "yes",
    }, { cookie });
    assertEquals(deleted.status, 303);
    assertEquals(
      deleted.headers.get("location"),
      "/dashboard/groups?notebook=demo",
    );
    assertEquals(await h.storage.getGroup(id!), undefined);
    const gone = await h.get(`/dashboard/groups/${id}`, { cookie });
    assertEquals(gone.status, 404);
    await gone.body?.cancel();
    const again = await h.post(`/dashboard/groups/${id}/delete`, {
      csrf,
      confirm: "yes",
    }, { cookie });
    assertEquals(again.status, 404);
    await again.body?.cancel();
    assertEquals(
      groupIds(
        await (await h.get("/dashboard/groups?notebook=demo", { cookie }))
          .text(),
      ).length,
      1,
    );
  },
);

const TAG_REGEXP = /<[^>]*>/g;
const END_TAG_REGEXP = /^<\/[a-z][a-z0-9]*>$/;
const START_TAG_REGEXP =
  /^<([a-z][a-z0-9]*)((?:\s+[a-z][a-z0-9-]*(?:="[^"<>]*")?)*)\s*>$/i;
const ATTRIBUTE_REGEXP = /\s+([a-z][a-z0-9-]*)(?:="[^"<>]*")?/gi;

/**
 * Every tag in the document is one the dashboard writes: well-formed,
 * attributes double-quoted, and no event-handler attribute anywhere.
 */
function assertOnlyKnownMarkup(body: string): void {
  for (const [tag] of body.matchAll(TAG_REGEXP)) {
    if (tag.toLowerCase() === "<!doctype html>" || END_TAG_REGEXP.test(tag)) {
      continue;
    }
    const match = START_TAG_REGEXP.exec(tag);
    assert(match, `unexpected markup: ${tag.slice(0, 200)}`);
    for (const [, name] of match[2]!.matchAll(ATTRIBUTE_REGEXP)) {
      assert(!/^on/i.test(name!), `event handler attribute in ${tag}`);
    }
  }
}

const HOSTILE = [
  "<img src=x onerror=alert(1)>",
  "</script><script>window.__pwned=1</script>",
  `"><svg onload=alert(1)>`,
  "' onmouseover='alert(1)",
  "javascript:alert(1)",
  "{{7*7}}${7*7}",
  "abc\u202Eevil\u2066",
];

engineTest(
  "dashboard: reader-controlled text is escaped on every page",
  async (engine) => {
    const h = await harness(engine);
    for (const text of HOSTILE) {
      await h.report(payload({
        notebook: text.slice(0, 100),
        error_name: text,
        error_message: (text + " ").repeat(200).slice(0, 1000),
        first_line: text,
        traceback: [{ filename: text, fun_name: text, lineno: 1 }],
      }));
    }
    const { cookie } = await h.signIn();
    const pages: string[] = [
      await (await h.get("/dashboard/", { cookie })).text(),
    ];
    const links = [
      ...pages[0]!.matchAll(/href="(\/dashboard\/groups\?notebook=[^"]*)"/g),
    ].map((m) => m[1]!.replaceAll("&amp;", "&"));
    assertEquals(links.length, HOSTILE.length);
    for (const link of links) {
      const notebook = new URL(link, ORIGIN).searchParams.get("notebook")!;
      for (
        const path of [
          link,
          // The filter echoes hostile text back into the form.
          `/dashboard/groups?${new URLSearchParams({ notebook, q: notebook })}`,
        ]
      ) {
        const list = await h.get(path, { cookie });
        assertEquals(list.status, 200);
        const body = await list.text();
        pages.push(body);
        if (path === link) {
          for (const id of groupIds(body)) {
            pages.push(
              await (await h.get(`/dashboard/groups/${id}`, { cookie })).text(),
            );
          }
        }
      }
    }
    assertEquals(pages.length, 1 + 3 * HOSTILE.length);
    for (const body of pages) {
      assert(!body.includes("<img src=x"), "no raw img");
      assert(!body.includes("<script>window"), "no raw script");
      assert(!/<svg onload/i.test(body), "no raw svg onload");
      assertOnlyKnownMarkup(body);
      assert(!body.includes('href="javascript:'), "no javascript: link");
      assert(!body.includes("\u202E"), "no raw bidi override");
      // The only scripts are the dashboard's own file.
      const scripts = [...body.matchAll(/<script\b[^>]*>/g)].map((m) => m[0]);
      assertEquals(scripts.length, 1);
      assertMatch(
        scripts[0]!,
        /^<script src="\/dashboard\/static\/time\.js\?v=[0-9a-f]{16}" defer>$/,
      );
    }
    assert(pages.some((b) => b.includes("&lt;img src=x onerror=alert(1)&gt;")));
    assert(pages.some((b) => b.includes("{{7*7}}$")), "shown literally");
  },
);

engineTest(
  "dashboard: static assets, redirects from /, and 404s carry the security headers",
  async (engine) => {
    const h = await harness(engine);
    const root = await h.collector(new Request(`${ORIGIN}/`));
    assertEquals(root.status, 303);
    assertEquals(root.headers.get("location"), "/dashboard/");
    assertSecurityHeaders(root);
    const { cookie } = await h.signIn();
    const page = await (await h.get("/dashboard/", { cookie })).text();
    const css = /href="(\/dashboard\/static\/dashboard\.css\?v=[0-9a-f]{16})"/
      .exec(page)![1]!;
    const js = /src="(\/dashboard\/static\/time\.js\?v=[0-9a-f]{16})"/.exec(
      page,
    )![1]!;
    const cssResponse = await h.get(css);
    assertEquals(cssResponse.status, 200);
    assertEquals(
      cssResponse.headers.get("content-type"),
      "text/css; charset=utf-8",
    );
    assertMatch(cssResponse.headers.get("cache-control")!, /immutable/);
    assertSecurityHeaders(cssResponse);
    assertMatch(await cssResponse.text(), /@media \(max-width/);
    const jsResponse = await h.get(js);
    assertEquals(
      jsResponse.headers.get("content-type"),
      "text/javascript; charset=utf-8",
    );
    assertMatch(await jsResponse.text(), /time\[datetime\]/);
    const unknown = await h.get("/dashboard/static/%2e%2e%2fapp.ts");
    assertEquals(unknown.status, 404);
    assertSecurityHeaders(unknown);
    await unknown.body?.cancel();
    const nowhere = await h.get("/dashboard/nowhere", { cookie });
    assertEquals(nowhere.status, 404);
    await nowhere.body?.cancel();
    // The collector's own routes still answer as before.
    const health = await h.collector(new Request(`${ORIGIN}/api/v1/health`));
    assertEquals(health.status, 200);
    assertEquals(health.headers.get("content-type"), "application/json");
    await health.body?.cancel();
  },
);

engineTest(
  "dashboard: without a token it stays off unless opened, and the open mode answers loopback names only",
  async (engine) => {
    const off = createCollector({ storage: await engine.open() });
    const response = await off(new Request(`${ORIGIN}/dashboard/`));
    assertEquals(response.status, 404);
    assertEquals(response.headers.get("content-type"), "application/json");
    await response.body?.cancel();
    const h = await harness(engine, { open: true });
    {
      await h.report(payload());
      const local = (path: string, headers: Record<string, string> = {}) =>
        h.collector(
          new Request(`http://127.0.0.1:8000${path}`, {
            headers: { host: "127.0.0.1:8000", ...headers },
          }),
        );
      const first = await local("/dashboard/");
      assertEquals(first.status, 200);
      const cookie = first.headers.get("set-cookie")!.split(";")[0]!;
      const body = await first.text();
      assert(body.includes(">demo<"));
      assert(!body.includes("Sign out"), "nothing to sign out of");
      const rebound = await h.collector(
        new Request("http://evil.example:8000/dashboard/", {
          headers: { host: "evil.example:8000" },
        }),
      );
      assertEquals(rebound.status, 421);
      assert(!(await rebound.text()).includes("demo"));
      // POSTs still need the session's CSRF token.
      const [id] = groupIds(
        await (await local("/dashboard/groups?notebook=demo", { cookie }))
          .text(),
      );
      const page = await (await local(`/dashboard/groups/${id}`, { cookie }))
        .text();
      const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
      const post = (
        form: Record<string, string>,
        headers: Record<string, string>,
      ) =>
        h.collector(
          new Request(`http://127.0.0.1:8000/dashboard/groups/${id}/state`, {
            method: "POST",
            headers: {
              host: "127.0.0.1:8000",
              "content-type": "application/x-www-form-urlencoded",
              ...headers,
            },
            body: new URLSearchParams(form).toString(),
          }),
        );
      const noCookie = await post({ state: "resolved", csrf }, {});
      assertEquals(noCookie.status, 401);
      await noCookie.body?.cancel();
      const ok = await post({ state: "resolved", csrf }, { cookie });
      assertEquals(ok.status, 303);
      assertEquals((await h.storage.getGroup(id!))?.state, "resolved");
    }
  },
);

Deno.test("parseServerArgs() --dashboard-open binds loopback only and needs no token", async () => {
  const { parseServerArgs, SERVER_HELP } = await import(
    "../src/server/cli.ts"
  );
  const open = parseServerArgs(["--dashboard-open"], {});
  assert(open !== "help");
  assertEquals([open.dashboardOpen, open.hostname], [true, "127.0.0.1"]);
  const v6 = parseServerArgs(["--dashboard-open", "--hostname", "::1"], {});
  assert(v6 !== "help" && v6.hostname === "::1");
  for (const hostname of ["0.0.0.0", "192.0.2.1", "example.com", "::"]) {
    let error: unknown;
    try {
      parseServerArgs(["--dashboard-open", "--hostname", hostname], {});
    } catch (e) {
      error = e;
    }
    assert(error instanceof RangeError, hostname);
    assertMatch(error.message, /loopback only/);
  }
  let withToken: unknown;
  try {
    parseServerArgs(["--dashboard-open"], { NBR_ADMIN_TOKEN: "t" });
  } catch (e) {
    withToken = e;
  }
  assert(withToken instanceof RangeError);
  const plain = parseServerArgs([], {});
  assert(plain !== "help");
  assertEquals([plain.dashboardOpen, plain.hostname], [false, "0.0.0.0"]);
  assert(SERVER_HELP.includes("--dashboard-open"));
});
