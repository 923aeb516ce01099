import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { type CollectorOptions, createCollector } from "../src/server/app.ts";
import {
  openSqliteStorage,
  type SqliteStorage,
} from "../src/server/sqlite_storage.ts";

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const ADDRESS = "198.51.100.23";

interface Harness {
  storage: SqliteStorage;
  clock: { now: number };
  call(method: string, path: string, init?: {
    body?: BodyInit | null;
    json?: unknown;
    headers?: Record<string, string>;
    address?: string;
  }): Promise<Response>;
  session(notebook?: string, address?: string): Promise<string>;
  close(): Promise<void>;
}

async function harness(
  options: Partial<CollectorOptions> = {},
): Promise<Harness> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-app-" });
  const storage = await openSqliteStorage(`${dir}/errors.db`, {
    synchronous: "normal",
  });
  const clock = { now: T0 };
  const handler = createCollector({
    storage,
    clock: () => clock.now,
    ...options,
  });
  const call: Harness["call"] = (method, path, init = {}) => {
    const headers: Record<string, string> = { ...init.headers };
    let body = init.body ?? null;
    if (init.json !== undefined) {
      body = JSON.stringify(init.json);
      headers["content-type"] ??= "application/json";
    }
    return handler(
      new Request(`http://collector.test${path}`, { method, body, headers }),
      {
        remoteAddr: { hostname: init.address ?? ADDRESS },
      },
    );
  };
  return {
    storage,
    clock,
    call,
    async session(notebook = "demo", address = ADDRESS) {
      const response = await call("POST", "/usages/", {
        json: { notebook },
        address,
      });
      assertEquals(response.status, 200);
      return (await response.json()).uuid;
    },
    async close() {
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function payload(
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    error_name: "TypeError",
    error_message: "x is not a function",
    traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
    first_line: "x()",
    execution_count: 4,
    notebook: "demo",
    ...overrides,
  };
}

Deno.test("createCollector() POST /usages/ answers a Python-style usage without the client address", async () => {
  const h = await harness();
  try {
    const response = await h.call("POST", "/usages/", {
      json: { notebook: "demo", extra: 1 },
    });
    assertEquals(response.status, 200);
    assertEquals(response.headers.get("content-type"), "application/json");
    const text = await response.text();
    assert(!text.includes(ADDRESS), text);
    const usage = JSON.parse(text);
    assertEquals(Object.keys(usage), [
      "id",
      "uuid",
      "notebook",
      "timestamp",
      "errors",
    ]);
    assertEquals(usage.id, 1);
    assertMatch(usage.uuid, /^[0-9a-f]{32}$/);
    assertEquals(usage.notebook, "demo");
    assertEquals(usage.timestamp, new Date(T0).toISOString());
    assertEquals(usage.errors, []);
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() stores a report, with or without trailing slash, and GET /usages/<uuid> shows it", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const first = await h.call("POST", `/errors/${uuid}`, { json: payload() });
    assertEquals(first.status, 200);
    const error = await first.json();
    assertEquals(Object.keys(error), [
      "id",
      "usage_uuid",
      "timestamp",
      "error_name",
      "error_message",
      "traceback",
      "execution_count",
      "first_line",
    ]);
    assertEquals(error.usage_uuid, uuid);
    const second = await h.call("POST", `/errors/${uuid}/`, {
      json: payload({ execution_count: 5 }),
    });
    assertEquals(second.status, 200);
    for (const path of [`/usages/${uuid}`, `/usages/${uuid}/`]) {
      const usage = await (await h.call("GET", path)).json();
      assertEquals(
        usage.errors.map((e: { execution_count: number }) => e.execution_count),
        [4, 5],
      );
      assertEquals(usage.errors[0], error);
    }
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers writes with their content type only, and everything else also with nosniff and no-store", async () => {
  const h = await harness({ publicRead: true });
  try {
    const defensive = (response: Response) => [
      response.headers.get("content-type"),
      response.headers.get("x-content-type-options"),
      response.headers.get("cache-control"),
    ];
    const created = await h.call("POST", "/usages/", {
      json: { notebook: "demo" },
    });
    const uuid = (await created.json()).uuid;
    const writes = [
      created,
      await h.call("POST", `/errors/${uuid}/`, { json: payload() }),
      await h.call("POST", "/api/v1/sessions", { json: { notebook: "demo" } }),
      await h.call("POST", `/api/v1/sessions/${uuid}/reports`, {
        json: payload({ execution_count: 9 }),
      }),
    ];
    for (const response of writes) {
      assert(response.ok, String(response.status));
      assertEquals(defensive(response), ["application/json", null, null]);
      if (!response.bodyUsed) await response.body?.cancel();
    }
    const others = [
      await h.call("GET", `/usages/${uuid}`),
      await h.call("GET", "/errors/"),
      await h.call("GET", "/api/v1/health"),
      await h.call("POST", `/errors/${"0".repeat(32)}/`, { json: payload() }),
      await h.call("POST", `/errors/${uuid}/`, { json: { error_name: 1 } }),
      await h.call("DELETE", "/usages/"),
    ];
    assertEquals(others.map((r) => r.status), [200, 200, 200, 404, 422, 405]);
    for (const response of others) {
      assertEquals(defensive(response), [
        "application/json",
        "nosniff",
        "no-store",
      ]);
      if (!response.bodyUsed) await response.body?.cancel();
    }
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() re-scrubs every stored string and drops unknown fields", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const response = await h.call("POST", `/errors/${uuid}/`, {
      json: payload({
        error_message:
          "open /home/alice/data.csv failed for alice@example.com\u0007",
        traceback: [{
          filename: "/Users/bob/nb/x.ts",
          fun_name: "load",
          lineno: 2,
          secret: "s",
        }],
        first_line: "fetch('https://hooks.slack.com/services/T000/B000/XXXX')",
        ip: "203.0.113.9",
      }),
    });
    assertEquals(response.status, 200);
    const [stored] = await h.storage.listReports({ skip: 0, limit: 10 });
    assertEquals(stored!.error_message, "open ~/data.csv failed for <email>");
    assertEquals(stored!.traceback, [{
      filename: "~/nb/x.ts",
      fun_name: "load",
      lineno: 2,
    }]);
    assert(
      !stored!.first_line.includes("hooks.slack.com/services"),
      stored!.first_line,
    );
    assert(!JSON.stringify(stored).includes("203.0.113.9"));
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers 413 for a declared or streamed body over 16 KiB and stops reading", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const declared = await h.call("POST", `/errors/${uuid}/`, {
      body: "x".repeat(16 * 1024 + 1),
      headers: { "content-type": "application/json" },
    });
    assertEquals(declared.status, 413);
    let pulls = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulls++;
        controller.enqueue(new Uint8Array(1024).fill(0x20));
      },
    });
    const streamed = await h.call("POST", `/errors/${uuid}/`, {
      body: endless,
      headers: { "content-type": "application/json" },
    });
    assertEquals(streamed.status, 413);
    assert(pulls < 40, `read ${pulls} chunks of an endless body`);
    assertEquals(
      (await h.storage.listReports({ skip: 0, limit: 10 })).length,
      0,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers 400 for bodies that are not UTF-8 JSON and 415 for other content types", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const json = { "content-type": "application/json" };
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, {
        body: "{nope",
        headers: json,
      })).status,
      400,
    );
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, {
        body: new Uint8Array([0x22, 0xff, 0x22]),
        headers: json,
      })).status,
      400,
    );
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, { body: "", headers: json }))
        .status,
      400,
    );
    const form = await h.call("POST", `/errors/${uuid}/`, {
      body: "a=b",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    assertEquals(form.status, 415);
    assertEquals(
      (await h.call("POST", "/usages/", { body: '{"notebook":"x"}' })).status,
      415,
    );
    const latin1 = await h.call("POST", "/usages/", {
      body: '{"notebook":"x"}',
      headers: { "content-type": "application/json; charset=iso-8859-1" },
    });
    assertEquals(latin1.status, 415);
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers 422 naming the field for wrong, missing and over-long fields", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const cases: [Record<string, unknown> | unknown, string][] = [
      [payload({ error_name: 3 }), "error_name"],
      [{ ...payload(), error_name: undefined }, "error_name"],
      [payload({ execution_count: "4" }), "execution_count"],
      [payload({ execution_count: true }), "execution_count"],
      [payload({ execution_count: 1.5 }), "execution_count"],
      [payload({ error_message: "m".repeat(1001) }), "error_message"],
      [payload({ first_line: "f".repeat(201) }), "first_line"],
      [payload({ traceback: {} }), "traceback"],
      [
        payload({ traceback: [{ filename: "a", fun_name: "b", lineno: "1" }] }),
        "traceback[0].lineno",
      ],
      [
        payload({ traceback: [{ fun_name: "b", lineno: 1 }] }),
        "traceback[0].filename",
      ],
      [payload({ traceback: [null] }), "traceback[0]"],
      [
        payload({
          traceback: Array(51).fill({
            filename: "a",
            fun_name: "b",
            lineno: 1,
          }),
        }),
        "traceback",
      ],
      [[1, 2], "body"],
    ];
    for (const [body, field] of cases) {
      const response = await h.call("POST", `/errors/${uuid}/`, { json: body });
      assertEquals(response.status, 422, field);
      const answer = await response.json();
      assertEquals(answer.field, field);
      assertEquals(answer.detail[0].loc[0], "body");
    }
    const noNotebook = await h.call("POST", "/usages/", {
      json: { name: "demo" },
    });
    assertEquals(noNotebook.status, 422);
    assertEquals((await noNotebook.json()).field, "notebook");
    assertEquals(
      (await h.storage.listReports({ skip: 0, limit: 10 })).length,
      0,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() accepts the Python tool's nulls and a missing traceback", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const body = payload({ error_message: null, execution_count: null });
    delete body.traceback;
    delete body.notebook;
    const response = await h.call("POST", `/errors/${uuid}`, { json: body });
    assertEquals(response.status, 200);
    const error = await response.json();
    assertEquals(
      [error.error_message, error.execution_count, error.traceback],
      ["", null, []],
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers 404 for unknown or malformed session uuids and unknown paths", async () => {
  const h = await harness();
  try {
    const unknown = "0123456789abcdef0123456789abcdef";
    assertEquals(
      (await h.call("POST", `/errors/${unknown}/`, { json: payload() })).status,
      404,
    );
    assertEquals((await h.call("GET", `/usages/${unknown}`)).status, 404);
    assertEquals(
      (await h.call("POST", "/errors/not-a-uuid/", { json: payload() })).status,
      404,
    );
    assertEquals((await h.call("GET", "/usages/..%2f..%2fetc")).status, 404);
    assertEquals((await h.call("GET", "/nothing/here")).status, 404);
    const wrongMethod = await h.call("DELETE", "/usages/");
    assertEquals(wrongMethod.status, 405);
    assertEquals(wrongMethod.headers.get("allow"), "GET, POST");
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() answers 403 for notebooks outside the allow-list", async () => {
  const h = await harness({ notebooks: ["demo"] });
  try {
    assertEquals(
      (await h.call("POST", "/usages/", { json: { notebook: "other" } }))
        .status,
      403,
    );
    const uuid = await h.session("demo");
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, {
        json: payload({ notebook: "other" }),
      })).status,
      403,
    );
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, { json: payload() })).status,
      200,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() admin lists need the token unless public-read", async () => {
  const h = await harness({ adminToken: "s3cret-token" });
  try {
    const uuid = await h.session();
    await h.call("POST", `/errors/${uuid}/`, { json: payload() });
    for (
      const path of [
        "/errors/",
        "/usages/",
        "/errors",
        "/api/v1/notebooks",
        "/api/v1/counts/daily",
      ]
    ) {
      const anonymous = await h.call("GET", path);
      assertEquals(anonymous.status, 401, path);
      assertEquals(
        anonymous.headers.get("www-authenticate"),
        'Bearer realm="nbr-collector"',
      );
      const wrong = await h.call("GET", path, {
        headers: { authorization: "Bearer s3cret-tokeN" },
      });
      assertEquals(wrong.status, 401, path);
      const right = await h.call("GET", path, {
        headers: { authorization: "Bearer s3cret-token" },
      });
      assertEquals(right.status, 200, path);
    }
    const admin = { authorization: "Bearer s3cret-token" };
    const errors =
      await (await h.call("GET", "/errors/?skip=0&limit=1", { headers: admin }))
        .json();
    assertEquals(errors.length, 1);
    const usages = await (await h.call("GET", "/usages/", { headers: admin }))
      .json();
    assertEquals(usages[0].errors.length, 1);
    assert(!("ip" in usages[0]));
    const badLimit = await h.call("GET", "/errors/?limit=-1", {
      headers: admin,
    });
    assertEquals(badLimit.status, 422);
    assertEquals((await badLimit.json()).field, "limit");
    assertEquals(
      (await h.call("GET", "/errors/?skip=x", { headers: admin })).status,
      422,
    );
  } finally {
    await h.close();
  }
  const open = await harness({ publicRead: true });
  try {
    assertEquals((await open.call("GET", "/errors/")).status, 200);
  } finally {
    await open.close();
  }
  const closed = await harness();
  try {
    assertEquals(
      (await closed.call("GET", "/errors/", {
        headers: { authorization: "Bearer " },
      })).status,
      401,
    );
  } finally {
    await closed.close();
  }
});

Deno.test("createCollector() limits an address to 30 sessions per sliding hour with Retry-After", async () => {
  const h = await harness();
  try {
    for (let i = 0; i < 30; i++) {
      await h.session();
      h.clock.now += 1000;
    }
    const refused = await h.call("POST", "/usages/", {
      json: { notebook: "demo" },
    });
    assertEquals(refused.status, 429);
    assertEquals(refused.headers.get("retry-after"), String(3600 - 30));
    const other = await h.call("POST", "/usages/", {
      json: { notebook: "demo" },
      address: "198.51.100.24",
    });
    assertEquals(other.status, 200);
    h.clock.now = T0 + 3600_000 + 1;
    assertEquals(
      (await h.call("POST", "/usages/", { json: { notebook: "demo" } })).status,
      200,
    );
    assertEquals(
      (await h.storage.listUsages({ skip: 0, limit: 100 })).length,
      32,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() limits an address to 60 reports per minute across sessions", async () => {
  const h = await harness();
  try {
    const sessions: string[] = [];
    for (let i = 0; i < 13; i++) sessions.push(await h.session());
    for (let i = 0; i < 60; i++) {
      const response = await h.call("POST", `/errors/${sessions[i % 13]}/`, {
        json: payload({ execution_count: i }),
      });
      assertEquals(response.status, 200, `report ${i}`);
      h.clock.now += 100;
    }
    const refused = await h.call("POST", `/errors/${sessions[12]}/`, {
      json: payload(),
    });
    assertEquals(refused.status, 429);
    assertEquals(refused.headers.get("retry-after"), "54");
    h.clock.now = T0 + 60_001;
    assertEquals(
      (await h.call("POST", `/errors/${sessions[12]}/`, {
        json: payload({ execution_count: 99 }),
      })).status,
      200,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() gives each session a bucket of 5 refilled one per 5 s", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    for (let i = 0; i < 5; i++) {
      assertEquals(
        (await h.call("POST", `/errors/${uuid}/`, {
          json: payload({ execution_count: i }),
        })).status,
        200,
      );
    }
    const refused = await h.call("POST", `/errors/${uuid}/`, {
      json: payload({ execution_count: 5 }),
    });
    assertEquals(refused.status, 429);
    assertEquals(refused.headers.get("retry-after"), "5");
    h.clock.now += 5000;
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, {
        json: payload({ execution_count: 6 }),
      })).status,
      200,
    );
    assertEquals(
      (await h.call("POST", `/errors/${uuid}/`, {
        json: payload({ execution_count: 7 }),
      })).status,
      429,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() caps a session at 100 reports", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    for (let i = 0; i < 100; i++) {
      const response = await h.call("POST", `/errors/${uuid}/`, {
        json: payload({ execution_count: i }),
      });
      assertEquals(response.status, 200, `report ${i}`);
      h.clock.now += 5000;
    }
    const refused = await h.call("POST", `/errors/${uuid}/`, {
      json: payload({ execution_count: 100 }),
    });
    assertEquals(refused.status, 429);
    assertMatch((await refused.json()).detail, /limit of 100/);
    assertEquals(
      (await h.storage.listReports({ skip: 0, limit: 1000 })).length,
      100,
    );
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() counts identical reports of a session within a minute instead of storing them", async () => {
  const h = await harness();
  try {
    const uuid = await h.session();
    const first =
      await (await h.call("POST", `/errors/${uuid}/`, { json: payload() }))
        .json();
    h.clock.now += 30_000;
    const again =
      await (await h.call("POST", `/errors/${uuid}/`, { json: payload() }))
        .json();
    assertEquals(again.id, first.id);
    h.clock.now += 30_001;
    const later =
      await (await h.call("POST", `/errors/${uuid}/`, { json: payload() }))
        .json();
    assert(later.id !== first.id);
    const other = await h.session();
    const otherSession =
      await (await h.call("POST", `/errors/${other}/`, { json: payload() }))
        .json();
    assert(otherSession.id !== later.id);
    const reports = await h.storage.listReports({ skip: 0, limit: 10 });
    assertEquals(reports.map((r) => r.occurrences), [2, 1, 1]);
    const native = await h.call("POST", `/api/v1/sessions/${uuid}/reports`, {
      json: payload(),
    });
    assertEquals(native.status, 200);
    assertEquals((await native.json()).duplicate, true);
    const counts = await h.storage.dailyCounts({
      fromDay: "2026-11-25",
      toDay: "2026-11-25",
    });
    assertEquals(counts, [{
      day: "2026-11-25",
      notebook: "demo",
      reports: 5,
      sessions: 2,
    }]);
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() with limits off accepts floods from one address", async () => {
  const h = await harness({ limits: false });
  try {
    const uuid = await h.session();
    for (let i = 0; i < 150; i++) {
      const response = await h.call("POST", `/errors/${uuid}/`, {
        json: payload({ execution_count: i }),
      });
      assertEquals(response.status, 200, `report ${i}`);
    }
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() reads X-Forwarded-For only with trustProxy", async () => {
  const trusting = await harness({
    trustProxy: true,
    limits: { sessionsPerHour: 1 },
  });
  try {
    const forwarded = (ip: string) => ({
      json: { notebook: "demo" },
      headers: { "x-forwarded-for": `10.0.0.1, ${ip}` },
    });
    assertEquals(
      (await trusting.call("POST", "/usages/", forwarded("203.0.113.1")))
        .status,
      200,
    );
    assertEquals(
      (await trusting.call("POST", "/usages/", forwarded("203.0.113.2")))
        .status,
      200,
    );
    assertEquals(
      (await trusting.call("POST", "/usages/", forwarded("203.0.113.1")))
        .status,
      429,
    );
  } finally {
    await trusting.close();
  }
  const direct = await harness({ limits: { sessionsPerHour: 1 } });
  try {
    const forwarded = (ip: string) => ({
      json: { notebook: "demo" },
      headers: { "x-forwarded-for": ip },
    });
    assertEquals(
      (await direct.call("POST", "/usages/", forwarded("203.0.113.1"))).status,
      200,
    );
    assertEquals(
      (await direct.call("POST", "/usages/", forwarded("203.0.113.2"))).status,
      429,
    );
  } finally {
    await direct.close();
  }
});

Deno.test("createCollector() native API lists reports by notebook and per-day counts", async () => {
  const h = await harness({ publicRead: true });
  try {
    const health = await h.call("GET", "/api/v1/health");
    assertEquals(await health.json(), { status: "ok", storage: "sqlite" });
    const created = await h.call("POST", "/api/v1/sessions", {
      json: { notebook: "a b" },
    });
    assertEquals(created.status, 201);
    const session = await created.json();
    const posted = await h.call(
      "POST",
      `/api/v1/sessions/${session.uuid}/reports`,
      { json: payload() },
    );
    assertEquals(posted.status, 201);
    const b = await h.session("other");
    h.clock.now += 86_400_000;
    await h.call("POST", `/errors/${b}/`, {
      json: payload({ notebook: "other" }),
    });
    const byNotebook =
      await (await h.call("GET", "/api/v1/notebooks/a%20b/reports")).json();
    assertEquals(byNotebook.reports.length, 1);
    assertEquals(byNotebook.reports[0].session, session.uuid);
    const own =
      await (await h.call("GET", `/api/v1/sessions/${session.uuid}/reports`))
        .json();
    assertEquals(own.reports.length, 1);
    const notebooks = await (await h.call("GET", "/api/v1/notebooks")).json();
    assertEquals(
      notebooks.notebooks.map((n: { notebook: string }) => n.notebook),
      ["a b", "other"],
    );
    const counts = await (await h.call("GET", "/api/v1/counts/daily?days=2"))
      .json();
    assertEquals(counts.counts, [
      { day: "2026-11-25", notebook: "a b", reports: 1, sessions: 1 },
      { day: "2026-11-25", notebook: "other", reports: 0, sessions: 1 },
      { day: "2026-11-26", notebook: "other", reports: 1, sessions: 0 },
    ]);
    const one =
      await (await h.call("GET", "/api/v1/counts/daily?days=1&notebook=other"))
        .json();
    assertEquals(one.counts.length, 1);
  } finally {
    await h.close();
  }
});

Deno.test("createCollector() turns a failing storage into a 500 reported to onError, never an exception", async () => {
  const errors: unknown[] = [];
  const h = await harness({ onError: (e) => errors.push(e) });
  const uuid = await h.session();
  await h.close();
  const response = await h.call("POST", `/errors/${uuid}/`, {
    json: payload(),
  });
  assertEquals(response.status, 500);
  assertEquals(await response.json(), { detail: "internal error" });
  assertEquals(errors.length, 1);
});
