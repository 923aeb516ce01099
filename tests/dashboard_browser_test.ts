/// <reference lib="dom" />
/**
 * The dashboard in a real browser: Debian's Chromium, driven headless by
 * playwright-core, against the real collector process (server.ts) on a real
 * SQLite file, filled through the real HTTP API. Screenshots go to
 * tests/artifacts/ (not committed).
 *
 * Under CI=true a missing Chromium fails; elsewhere these tests are skipped.
 */

import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import * as playwright from "npm:playwright-core@1.65.1";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import {
  type ServerProcess,
  startServerProcess,
} from "./support/server_process.ts";

type Browser = playwright.Browser;
type BrowserContext = playwright.BrowserContext;
type Page = playwright.Page;
const chromium = playwright.chromium;

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const TOKEN = "browser-test-token-5f2c9a61d4e8";
const ARTIFACTS = new URL("./artifacts/", import.meta.url).pathname;

function chromiumAvailable(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

const available = chromiumAvailable();
if (!available && Deno.env.get("CI") === "true") {
  throw new Error(
    `Chromium is required under CI=true, not found at ${CHROMIUM}`,
  );
}

interface Watch {
  dialogs: string[];
  foreign: string[];
  consoleErrors: string[];
  pageErrors: string[];
}

/** Records dialogs, requests that leave the server's origin (and blocks them), and errors. */
async function watch(context: BrowserContext, origin: string): Promise<Watch> {
  const w: Watch = {
    dialogs: [],
    foreign: [],
    consoleErrors: [],
    pageErrors: [],
  };
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(`${origin}/`)) return route.continue();
    w.foreign.push(url);
    return route.abort();
  });
  context.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !w.foreign.includes(url)) {
      w.foreign.push(url);
    }
  });
  context.on("page", (page) => observe(page, w));
  return w;
}

function observe(page: Page, w: Watch): void {
  page.on("dialog", (dialog) => {
    w.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on("console", (message) => {
    if (message.type() === "error") w.consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => w.pageErrors.push(String(error)));
}

function assertClean(w: Watch): void {
  assertEquals(w.dialogs, [], "no dialog opened");
  assertEquals(w.foreign, [], "no request left for a foreign origin");
  assertEquals(w.pageErrors, [], "no script error");
  assertEquals(
    w.consoleErrors,
    [],
    `no console error (CSP violations show here): ${
      JSON.stringify(w.consoleErrors)
    }`,
  );
}

async function api(
  server: ServerProcess,
  path: string,
  body: unknown,
): Promise<Record<string, unknown>> {
  const response = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  assert(response.ok, `${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function report(
  server: ServerProcess,
  payload: Record<string, unknown>,
): Promise<void> {
  const usage = await api(server, "/usages/", { notebook: payload.notebook });
  await api(server, `/errors/${usage.uuid}/`, payload);
}

function payload(
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    error_name: "TypeError",
    error_message: "Cannot read properties of undefined (reading 'map')",
    traceback: [
      { filename: "<cell>", fun_name: "<module>", lineno: 4 },
      { filename: "<cell>", fun_name: "loadRows", lineno: 12 },
    ],
    first_line: "const rows = loadRows(data)",
    execution_count: 7,
    notebook: "sales-report",
    ...overrides,
  };
}

const HOSTILE_TEXTS = [
  "<img src=x onerror=\"window.__pwned='img';alert(1)\">",
  "</script><script>window.__pwned='script';alert(2)</script>",
  "javascript:window.__pwned='js'",
  "{{7*7}} ${7*7} <%= 7*7 %>",
  "\u202Etxt.exe\u202C and \u2066isolate\u2069",
  '"><svg onload="window.__pwned=\'svg\'"></svg>',
];

/** The page's horizontal overflow and the widest element's right edge. */
async function layoutAtPhoneWidth(page: Page): Promise<{
  scrollWidth: number;
  widest: { right: number; tag: string };
}> {
  return await page.evaluate(() => {
    let widest = { right: 0, tag: "" };
    for (const el of Array.from(document.querySelectorAll("body *"))) {
      const box = el.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      // Elements inside an SVG are scaled with it; the svg itself is checked.
      if (el.closest("svg") && el.tagName.toLowerCase() !== "svg") continue;
      if (box.right > widest.right) {
        widest = { right: box.right, tag: `${el.tagName}.${el.className}` };
      }
    }
    return { scrollWidth: document.documentElement.scrollWidth, widest };
  });
}

async function assertFitsPhone(page: Page, label: string): Promise<void> {
  await page.waitForLoadState("load");
  const layout = await layoutAtPhoneWidth(page);
  assert(
    layout.scrollWidth <= 375,
    `${label}: page scrolls sideways (${layout.scrollWidth} px; widest ${layout.widest.tag} ends at ${layout.widest.right} px)`,
  );
  assert(
    layout.widest.right <= 375.5,
    `${label}: ${layout.widest.tag} ends at ${layout.widest.right} px`,
  );
}

async function pwned(page: Page): Promise<unknown> {
  return await page.evaluate(() =>
    (globalThis as unknown as { __pwned?: unknown }).__pwned
  );
}

Deno.test({
  name:
    "dashboard in Chromium: sign in, overview chart, sort, filter, group, resolve, reopen",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  const dir = await Deno.makeTempDir({ prefix: "nbr-browser-" });
  const server = await startServerProcess(
    ["--db", `${dir}/errors.db`, "--no-limits"],
    { NBR_ADMIN_TOKEN: TOKEN },
  );
  let browser: Browser | undefined;
  try {
    // Three groups in sales-report with 5, 2 and 1 reports; one in etl.
    for (let i = 0; i < 5; i++) {
      await report(server, payload({ execution_count: 7 + i }));
    }
    for (let i = 0; i < 2; i++) {
      await report(
        server,
        payload({
          error_name: "RangeError",
          error_message: "Invalid array length",
          first_line: "new Array(-1)",
        }),
      );
    }
    await report(
      server,
      payload({
        error_name: "SyntaxError",
        error_message: "Unexpected token '}' in JSON at position 12",
        traceback: [{ filename: "<cell>", fun_name: "parseConfig", lineno: 2 }],
      }),
    );
    await report(server, payload({ notebook: "etl" }));

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    });
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
    });
    const w = await watch(context, server.url);
    const page = await context.newPage();

    await page.goto(`${server.url}/`);
    assert(page.url().endsWith("/dashboard/sign-in"), page.url());
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-sign-in.png`,
      fullPage: true,
    });
    await page.fill("input[name=token]", "wrong-token");
    await page.click("button[type=submit]");
    assert((await page.textContent("main"))!.includes("not right"));
    // The wrong token's 401 is the one error the console shows.
    assertEquals(w.consoleErrors, [
      "Failed to load resource: the server responded with a status of 401 (Unauthorized)",
    ]);
    w.consoleErrors.length = 0;
    await page.fill("input[name=token]", TOKEN);
    await page.click("button[type=submit]");
    assert(page.url().endsWith("/dashboard/"), page.url());
    const cookies = await context.cookies();
    assertEquals(cookies.length, 1);
    assertEquals([cookies[0]!.httpOnly, cookies[0]!.sameSite], [
      true,
      "Strict",
    ]);
    assertEquals(
      await page.evaluate(() => document.cookie),
      "",
      "HttpOnly: not readable by script",
    );

    // Overview: the chart's 30 bars, today's holding all 9 reports.
    assertEquals(await page.locator("svg.chart rect.bar").count(), 30);
    const today = await page.locator("svg.chart rect.bar").last().boundingBox();
    assert(today && today.height > 50, "today's bar is drawn tall");
    assertEquals(
      await page.locator("#notebooks tbody tr").evaluateAll((rows) =>
        rows.map((r) => r.querySelector("td")!.textContent!.trim())
      ),
      ["etl", "sales-report"],
    );
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-overview.png`,
      fullPage: true,
    });

    // A notebook's groups, sorted by last seen, then by count.
    await page.click("text=sales-report");
    const names = () =>
      page.locator("#groups tbody tr td:first-child a").allTextContents();
    assertEquals(await names(), ["SyntaxError", "RangeError", "TypeError"]);
    assertEquals(await page.locator("#groups svg.sparkline").count(), 3);
    await page.click("#groups thead a:has-text('Count')");
    assert(page.url().includes("sort=count"));
    assertEquals(await names(), ["TypeError", "RangeError", "SyntaxError"]);
    assertEquals(
      await page.locator("#groups tbody tr td:nth-child(2)").allTextContents(),
      ["5", "2", "1"],
    );
    // The script showed times in the viewer's zone (same-origin script ran).
    assert(await page.locator("time[data-local='1']").count() >= 6);
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-groups.png`,
      fullPage: true,
    });
    // Filter by text through the GET form.
    await page.fill("input[name=q]", "array");
    await page.click("form.filters button[type=submit]");
    assert(page.url().includes("q=array"));
    assertEquals(await names(), ["RangeError"]);

    // The group, then resolve it.
    await page.click("#groups tbody a");
    assertEquals(
      await page.locator("#traceback tbody tr").evaluateAll((rows) =>
        rows.map((r) =>
          Array.from(r.querySelectorAll("td")).map((td) =>
            td.textContent!.trim()
          )
        )
      ),
      [["1", "<cell>", "<module>", "4"], ["2", "<cell>", "loadRows", "12"]],
    );
    assertEquals(await page.locator("svg.chart rect.bar").count(), 30);
    const groupUrl = page.url();
    await page.click("button:has-text('Resolve')");
    assert(page.url().includes("done=resolved"));
    assertEquals((await page.textContent("h1 .state"))!.trim(), "resolved");
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-group-resolved.png`,
      fullPage: true,
    });

    // The same error again reopens it.
    await report(
      server,
      payload({
        error_name: "RangeError",
        error_message: "Invalid array length",
        first_line: "new Array(-2)",
      }),
    );
    await page.goto(groupUrl);
    assertEquals((await page.textContent("h1 .state"))!.trim(), "open");
    assert((await page.textContent("#first-lines"))!.includes("new Array(-2)"));
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-group-reopened.png`,
      fullPage: true,
    });

    // Filter by state.
    await page.goto(
      `${server.url}/dashboard/groups?notebook=sales-report&state=resolved`,
    );
    assertEquals(await page.locator("#no-groups").count(), 1);

    // Sign out: the dashboard asks for the token again.
    await page.goto(`${server.url}/dashboard/`);
    await page.click("button:has-text('Sign out')");
    assert(page.url().includes("/dashboard/sign-in"));
    await page.goto(`${server.url}/dashboard/`);
    assert(page.url().includes("/dashboard/sign-in"));
    assertEquals(await pwned(page), undefined);
    assertClean(w);

    // With JavaScript off everything still works, with times in UTC.
    const noScript = await browser.newContext({ javaScriptEnabled: false });
    const w2 = await watch(noScript, server.url);
    const plain = await noScript.newPage();
    await plain.goto(`${server.url}/dashboard/sign-in`);
    await plain.fill("input[name=token]", TOKEN);
    await plain.click("button[type=submit]");
    await plain.click("text=sales-report");
    await plain.click("#groups thead a:has-text('Count')");
    assertEquals(await names.call(null).catch(() => []), await names());
    assertEquals(
      await plain.locator("#groups tbody tr td:first-child a")
        .allTextContents(),
      ["TypeError", "RangeError", "SyntaxError"],
    );
    await plain.click("#groups tbody a >> nth=0");
    assert((await plain.textContent("dl.facts"))!.includes("UTC"));
    assertEquals(await plain.locator("time[data-local]").count(), 0);
    await plain.click("button:has-text('Ignore')");
    assertEquals((await plain.textContent("h1 .state"))!.trim(), "ignored");
    await plain.screenshot({
      path: `${ARTIFACTS}dashboard-group-no-js.png`,
      fullPage: true,
    });
    // Delete needs the confirmation box ticked (HTML validation, no script).
    const ignoredUrl = plain.url();
    await plain.click("button:has-text('Delete group')");
    assertEquals(plain.url(), ignoredUrl);
    await plain.check("input[name=confirm]");
    await plain.click("button:has-text('Delete group')");
    assert(plain.url().includes("/dashboard/groups?notebook=sales-report"));
    assertEquals(
      await plain.locator("#groups tbody tr td:first-child a")
        .allTextContents(),
      ["RangeError", "SyntaxError"],
    );
    assertClean(w2);
    await noScript.close();
    await context.close();
  } finally {
    await browser?.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "dashboard in Chromium: hostile reports run no script, open no dialog, call no foreign origin, and fit a 375 px screen",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  const dir = await Deno.makeTempDir({ prefix: "nbr-browser-" });
  const db = `${dir}/errors.db`;
  // One report written straight into the store with a 10,000-character
  // message and name: the HTTP API refuses such fields (422), but the
  // dashboard must hold even for rows it did not validate.
  {
    const storage = await openSqliteStorage(db);
    const usage = await storage.createUsage("long-notebook", Date.now());
    const long = "W".repeat(2_000) + " " + "<b>x</b>".repeat(1_000);
    const result = await storage.addReport({
      usageUuid: usage.uuid,
      payload: {
        error_name: "E".repeat(10_000),
        error_message: long.slice(0, 10_000),
        traceback: [{
          filename: "f".repeat(10_000),
          fun_name: "g".repeat(5_000),
          lineno: 1,
        }],
        first_line: "L".repeat(10_000),
        execution_count: 1,
        notebook: "long-notebook",
      },
      now: Date.now(),
      dedupeWindowMs: 60_000,
      maxReportsPerSession: 100,
    });
    assertEquals(result.status, "stored");
    await storage.close();
  }
  const server = await startServerProcess(["--db", db, "--no-limits"], {
    NBR_ADMIN_TOKEN: TOKEN,
  });
  let browser: Browser | undefined;
  try {
    for (const text of HOSTILE_TEXTS) {
      await report(
        server,
        payload({
          notebook: text.slice(0, 100),
          error_name: text.slice(0, 200),
          error_message: (text + " ").repeat(100).slice(0, 1000),
          first_line: text.slice(0, 200),
          traceback: [
            {
              filename: text.slice(0, 200),
              fun_name: text.slice(0, 200),
              lineno: 1,
            },
            {
              filename: "javascript:alert(1)",
              fun_name: "<script>",
              lineno: 2,
            },
          ],
        }),
      );
    }
    // The longest message the API accepts, without spaces to break at.
    await report(
      server,
      payload({ notebook: "long-notebook", error_message: "M".repeat(1000) }),
    );

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    });
    const context = await browser.newContext({
      viewport: { width: 375, height: 740 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    const w = await watch(context, server.url);
    const page = await context.newPage();
    await page.goto(`${server.url}/dashboard/sign-in`);
    await page.fill("input[name=token]", TOKEN);
    await page.click("button[type=submit]");
    await assertFitsPhone(page, "overview");
    await page.screenshot({
      path: `${ARTIFACTS}dashboard-phone-overview.png`,
      fullPage: true,
    });

    const lists = await page.locator("#notebooks tbody a").evaluateAll((
      links,
    ) => links.map((a) => (a as HTMLAnchorElement).href));
    assertEquals(lists.length, HOSTILE_TEXTS.length + 1);
    let groupPages = 0;
    for (const [i, list] of lists.entries()) {
      assert(list.startsWith(`${server.url}/dashboard/groups?notebook=`), list);
      await page.goto(list);
      await assertFitsPhone(page, `list ${list}`);
      await page.screenshot({
        path: `${ARTIFACTS}dashboard-phone-groups-${i}.png`,
        fullPage: true,
      });
      const groups = await page.locator("#groups tbody td:first-child a")
        .evaluateAll((links) =>
          links.map((a) => (a as HTMLAnchorElement).href)
        );
      assert(groups.length >= 1);
      for (const [j, group] of groups.entries()) {
        assert(group.startsWith(`${server.url}/dashboard/groups/`), group);
        await page.goto(group);
        groupPages++;
        await assertFitsPhone(page, `group ${group}`);
        await page.screenshot({
          path: `${ARTIFACTS}dashboard-phone-group-${i}-${j}.png`,
          fullPage: true,
        });
        // Every link on the page stays on the dashboard's origin.
        const hrefs = await page.locator("a[href]").evaluateAll((links) =>
          links.map((a) => (a as HTMLAnchorElement).href)
        );
        for (const href of hrefs) {
          assert(href.startsWith(`${server.url}/dashboard/`), href);
        }
        // Hover and focus everything: no handler may fire.
        for (
          const el of (await page.locator("main a, main code, main td").all())
            .slice(0, 30)
        ) {
          await el.hover({ timeout: 200, force: true }).catch(() => {});
        }
        assertEquals(await pwned(page), undefined);
      }
    }
    assertEquals(groupPages, HOSTILE_TEXTS.length + 2);
    // The filter echoes hostile text back into the page.
    for (const text of HOSTILE_TEXTS) {
      await page.goto(
        `${server.url}/dashboard/groups?${new URLSearchParams({
          notebook: "x",
          q: text,
        })}`,
      );
      assertEquals(
        await page.inputValue("input[name=q]"),
        text.trim().slice(0, 200),
      );
      assertEquals(await pwned(page), undefined);
    }
    // The page's text shows the hostile input literally.
    await page.goto(lists[0]!);
    assertEquals(await pwned(page), undefined);
    assertClean(w);
    await context.close();
  } finally {
    await browser?.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
