import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import { createCollector } from "../src/server/app.ts";
import { openSqliteStorage } from "../src/server/sqlite_storage.ts";
import { startServerProcess } from "./support/server_process.ts";
import { seededRandom } from "./support/seeded_random.ts";

const VALID = {
  error_name: "TypeError",
  error_message: "x is not a function",
  traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
  first_line: "x()",
  execution_count: 4,
  notebook: "demo",
};

interface FuzzCase {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array<ArrayBuffer> | string | null;
  kind: string;
}

const WRONG_VALUES: unknown[] = [
  null,
  true,
  -1,
  1.5,
  1e21 + 0.5,
  "7",
  [],
  {},
  [1, 2],
  { "$gt": "" },
  "x".repeat(5000),
];

/** Builds one request that must be refused: every case carries at least one defect. */
function malformed(random: () => number, uuid: string): FuzzCase {
  const pick = <T>(items: readonly T[]): T =>
    items[Math.floor(random() * items.length)]!;
  const json = { "content-type": "application/json" };
  const errors = `/errors/${uuid}/`;
  const kind = pick([
    "bytes",
    "truncated",
    "wrong-field",
    "missing-field",
    "bad-frame",
    "nesting",
    "content-type",
    "oversize",
    "bad-utf8",
    "unknown-session",
    "bad-path",
    "usage-body",
    "scalar",
  ]);
  switch (kind) {
    case "bytes": {
      // Random bytes that do not start a JSON object (so they are never a payload).
      const bytes = new Uint8Array(Math.floor(random() * 400));
      for (let i = 0; i < bytes.length; i++) {
        bytes[i] = Math.floor(random() * 256);
      }
      if (bytes[0] === 0x7b) bytes[0] = 0x5b;
      return { method: "POST", path: errors, headers: json, body: bytes, kind };
    }
    case "truncated": {
      const text = JSON.stringify({
        ...VALID,
        execution_count: Math.floor(random() * 1e6),
      });
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: text.slice(0, Math.floor(random() * (text.length - 1))),
        kind,
      };
    }
    case "wrong-field": {
      const field = pick([
        "error_name",
        "error_message",
        "first_line",
        "execution_count",
        "traceback",
        "notebook",
      ]);
      const value = pick(WRONG_VALUES.filter((v) => {
        if (field === "error_message" && v === null) return false;
        if (field === "execution_count" && v === null) return false;
        if (field === "traceback" && Array.isArray(v) && v.length === 0) {
          return false;
        }
        if (field === "traceback" && Array.isArray(v)) return true;
        if (typeof v === "string" && v.length < 100) {
          return field === "execution_count";
        }
        return true;
      }));
      const junk = Object.fromEntries(
        Array.from(
          { length: Math.floor(random() * 4) },
          (_, i) => [`extra${i}`, random()],
        ),
      );
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: JSON.stringify({ ...junk, ...VALID, [field]: value }),
        kind,
      };
    }
    case "missing-field": {
      const body: Record<string, unknown> = {
        ...VALID,
        __proto__: { error_name: "Polluted" },
      };
      delete body[
        pick(["error_name", "first_line", "execution_count", "error_message"])
      ];
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: JSON.stringify(body),
        kind,
      };
    }
    case "bad-frame": {
      const frame = pick<unknown>([
        null,
        "frame",
        { filename: "a" },
        { filename: "a", fun_name: 3, lineno: 1 },
        { filename: "a", fun_name: "b", lineno: "1" },
        { filename: "a", fun_name: "b", lineno: -5 },
        { filename: "a".repeat(1300), fun_name: "b", lineno: 1 },
      ]);
      const frames = [...VALID.traceback, frame];
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: JSON.stringify({ ...VALID, traceback: frames }),
        kind,
      };
    }
    case "nesting": {
      const depth = 1 + Math.floor(random() * 8000);
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: "[".repeat(depth) + "]".repeat(depth),
        kind,
      };
    }
    case "content-type":
      return {
        method: "POST",
        path: errors,
        headers: pick<Record<string, string>>([
          {},
          { "content-type": "text/plain" },
          { "content-type": "application/jsonx" },
          {
            "content-type": "application/json; charset=utf-16",
          },
          { "content-type": "multipart/form-data; boundary=x" },
        ]),
        body: JSON.stringify(VALID),
        kind,
      };
    case "oversize":
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: JSON.stringify({
          ...VALID,
          error_message: "m".repeat(16_400 + Math.floor(random() * 50_000)),
        }),
        kind,
      };
    case "bad-utf8": {
      const text = new TextEncoder().encode(JSON.stringify(VALID));
      const at = text.indexOf(0x78); // inside "x is not a function"
      text[at] = pick([0xff, 0xc0, 0xed, 0x80]);
      return { method: "POST", path: errors, headers: json, body: text, kind };
    }
    case "unknown-session": {
      const other = Array.from(
        { length: 32 },
        () => "0123456789abcdef"[Math.floor(random() * 16)],
      ).join("");
      return {
        method: "POST",
        path: `/errors/${other}/`,
        headers: json,
        body: JSON.stringify(VALID),
        kind,
      };
    }
    case "bad-path": {
      const path = pick([
        `/errors/${uuid}x/`,
        `/errors/${uuid}/extra`,
        "/errors/%00/",
        `/errors/${"../".repeat(5)}`,
        "/usages/%ff%fe",
        "/api/v1/sessions/zz/reports",
        "/api/v1/notebooks/%E0%A4%A/reports",
        `/ERRORS/${uuid}/`,
      ]);
      return {
        method: pick(["POST", "PUT", "PATCH", "DELETE"]),
        path,
        headers: json,
        body: JSON.stringify(VALID),
        kind,
      };
    }
    case "usage-body":
      return {
        method: "POST",
        path: "/usages/",
        headers: json,
        body: JSON.stringify(
          pick<unknown>([
            {},
            { notebook: 5 },
            { notebook: "" },
            { notebook: "n".repeat(101) },
            [],
            "demo",
          ]),
        ),
        kind,
      };
    default:
      return {
        method: "POST",
        path: errors,
        headers: json,
        body: pick([
          "null",
          "0",
          '"text"',
          "[]",
          "true",
          "1e999",
          "-0",
          "[{}]",
        ]),
        kind,
      };
  }
}

const REFUSALS = new Set([400, 404, 405, 413, 415, 422]);

Deno.test("createCollector() refuses 10,000 random and malformed bodies without a 5xx, storing nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-fuzz-" });
  const storage = await openSqliteStorage(`${dir}/errors.db`, {
    synchronous: "normal",
  });
  const unexpected: unknown[] = [];
  const handler = createCollector({
    storage,
    limits: false,
    onError: (e) => unexpected.push(e),
  });
  try {
    const usage = await (await handler(
      new Request("http://fuzz.test/usages/", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"notebook":"demo"}',
      }),
    )).json();
    const seed = Number(Deno.env.get("FUZZ_SEED") ?? 20261125);
    const random = seededRandom(seed);
    const byKind = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const c = malformed(random, usage.uuid);
      const response = await handler(
        new Request(`http://fuzz.test${c.path}`, {
          method: c.method,
          headers: c.headers,
          body: c.body,
        }),
        { remoteAddr: { hostname: `10.0.${i >> 8 & 255}.${i & 255}` } },
      );
      await response.body?.cancel();
      assert(
        REFUSALS.has(response.status),
        `case ${i} (seed ${seed}, ${c.kind}) answered ${response.status}: ${c.method} ${c.path} ${
          String(c.body).slice(0, 300)
        }`,
      );
      byKind.set(c.kind, (byKind.get(c.kind) ?? 0) + 1);
    }
    assertEquals(unexpected, []);
    assertEquals((await storage.listReports({ skip: 0, limit: 10 })).length, 0);
    assertEquals((await storage.listUsages({ skip: 0, limit: 10 })).length, 1);
    assert(byKind.size >= 13, JSON.stringify([...byKind]));
  } finally {
    await storage.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.ts stays up and stores nothing under 1,000 malformed requests over HTTP", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-fuzz-http-" });
  const server = await startServerProcess([
    "--db",
    `${dir}/errors.db`,
    "--no-limits",
  ], { NBR_ADMIN_TOKEN: "t" });
  try {
    const usage = await (await fetch(`${server.url}/usages/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"notebook":"demo"}',
    })).json();
    const random = seededRandom(7);
    for (let i = 0; i < 1000; i++) {
      const c = malformed(random, usage.uuid);
      const response = await fetch(`${server.url}${c.path}`, {
        method: c.method,
        headers: c.headers,
        body: c.body,
      });
      await response.body?.cancel();
      assert(
        REFUSALS.has(response.status),
        `case ${i} (${c.kind}) answered ${response.status}: ${
          String(c.body).slice(0, 300)
        }`,
      );
    }
    const health = await fetch(`${server.url}/api/v1/health`);
    assertEquals(await health.json(), { status: "ok", storage: "sqlite" });
    const stored = await (await fetch(`${server.url}/errors/`, {
      headers: { authorization: "Bearer t" },
    })).json();
    assertEquals(stored, []);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
