import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { startServerProcess } from "./support/server_process.ts";

const FIXTURES = new URL("./fixtures/python_client/", import.meta.url);
const FIXTURE_UUID = "0123456789abcdef0123456789abcdef";
const TOKEN = "e2e-admin-token";

interface RawResponse {
  statusLine: string;
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends exact bytes on a fresh TCP connection and reads one HTTP/1.1 response. */
async function rawRequest(
  url: string,
  bytes: Uint8Array,
): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(bytes);
    let data = new Uint8Array(0);
    const buffer = new Uint8Array(65536);
    for (;;) {
      const text = new TextDecoder().decode(data);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = text.slice(0, end).split("\r\n");
        const headers: Record<string, string> = {};
        for (const line of head.slice(1)) {
          const colon = line.indexOf(":");
          headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1)
            .trim();
        }
        const length = Number(headers["content-length"] ?? 0);
        const bodyBytes = new TextEncoder().encode(text).length - end - 4;
        if (bodyBytes >= length) {
          return {
            statusLine: head[0]!,
            status: Number(head[0]!.split(" ")[1]),
            headers,
            body: text.slice(end + 4),
          };
        }
      }
      const n = await conn.read(buffer);
      if (n === null) {
        throw new Error(`connection closed; got ${JSON.stringify(text)}`);
      }
      const merged = new Uint8Array(data.length + n);
      merged.set(data);
      merged.set(buffer.subarray(0, n), data.length);
      data = merged;
    }
  } finally {
    conn.close();
  }
}

/** A captured python-requests request, with the host and session uuid swapped in (same lengths). */
async function fixture(
  name: string,
  host: string,
  uuid = FIXTURE_UUID,
): Promise<Uint8Array> {
  const text = new TextDecoder().decode(
    await Deno.readFile(new URL(name, FIXTURES)),
  );
  return new TextEncoder().encode(
    text.replace("Host: 127.0.0.1:18765", `Host: ${host}`).replaceAll(
      FIXTURE_UUID,
      uuid,
    ),
  );
}

async function tempDb(): Promise<{ dir: string; db: string }> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-e2e-" });
  return { dir, db: `${dir}/errors.db` };
}

function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const PAYLOAD = {
  error_name: "TypeError",
  error_message: "x is not a function",
  traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
  first_line: "x()",
  execution_count: 1,
  notebook: "demo",
};

Deno.test("server.ts answers the original Python client's exact requests", async () => {
  const { dir, db } = await tempDb();
  const server = await startServerProcess(["--db", db]);
  try {
    const host = new URL(server.url).host;
    const created = await rawRequest(
      server.url,
      await fixture("1_post_usages.http", host),
    );
    assertEquals(created.statusLine, "HTTP/1.1 200 OK");
    assertEquals(created.headers["content-type"], "application/json");
    const usage = JSON.parse(created.body);
    assertEquals(Object.keys(usage), [
      "id",
      "uuid",
      "notebook",
      "timestamp",
      "errors",
    ]);
    assertMatch(usage.uuid, /^[0-9a-f]{32}$/);
    assertEquals([usage.notebook, usage.errors], ["demo", []]);
    assert(!Number.isNaN(Date.parse(usage.timestamp)));
    assert(!created.body.includes("127.0.0.1"));

    // The Python client posts to /errors/<uuid> without the trailing slash.
    const reported = await rawRequest(
      server.url,
      await fixture("2_post_error.http", host, usage.uuid),
    );
    assertEquals(reported.statusLine, "HTTP/1.1 200 OK");
    const error = JSON.parse(reported.body);
    assertEquals(error, {
      id: 1,
      usage_uuid: usage.uuid,
      timestamp: error.timestamp,
      error_name: "NameError",
      error_message: "name 'café' is not defined",
      traceback: [
        { filename: "<ipython-input-3-1b2c>", fun_name: "<module>", lineno: 1 },
        { filename: "site-packages/foo/bar.py", fun_name: "run", lineno: 42 },
      ],
      execution_count: 3,
      first_line: "# compute the café table",
    });

    const read = await rawRequest(
      server.url,
      await fixture("3_get_usage.http", host, usage.uuid),
    );
    assertEquals(read.status, 200);
    assertEquals(JSON.parse(read.body), { ...usage, errors: [error] });
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.ts gives clear answers to bad input over real HTTP", async () => {
  const { dir, db } = await tempDb();
  const server = await startServerProcess([
    "--db",
    db,
    "--notebooks",
    "demo,other",
  ], { NBR_ADMIN_TOKEN: TOKEN });
  try {
    const usage =
      await (await post(`${server.url}/usages/`, { notebook: "demo" })).json();
    const errors = `${server.url}/errors/${usage.uuid}/`;
    const big = await post(errors, {
      ...PAYLOAD,
      error_message: "x".repeat(20_000),
    });
    assertEquals(big.status, 413);
    await big.body?.cancel();
    const form = await fetch(errors, {
      method: "POST",
      body: "a=b",
      headers: { "content-type": "text/plain" },
    });
    assertEquals(form.status, 415);
    await form.body?.cancel();
    const notJson = await post(errors, "{'single': 'quotes'}");
    assertEquals(notJson.status, 400);
    await notJson.body?.cancel();
    const wrong = await post(errors, {
      ...PAYLOAD,
      traceback: [{ filename: 1, fun_name: "f", lineno: 1 }],
    });
    assertEquals(wrong.status, 422);
    assertEquals((await wrong.json()).field, "traceback[0].filename");
    const unknown = await post(
      `${server.url}/errors/${"f".repeat(32)}/`,
      PAYLOAD,
    );
    assertEquals(unknown.status, 404);
    await unknown.body?.cancel();
    const forbidden = await post(`${server.url}/usages/`, {
      notebook: "secret-notebook",
    });
    assertEquals(forbidden.status, 403);
    await forbidden.body?.cancel();
    const anonymous = await fetch(`${server.url}/errors/`);
    assertEquals(anonymous.status, 401);
    await anonymous.body?.cancel();
    const admin = await fetch(`${server.url}/errors/`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assertEquals(await admin.json(), []);
    // A session's burst of 5, then 429 with Retry-After.
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const response = await post(errors, { ...PAYLOAD, execution_count: i });
      statuses.push(response.status);
      if (response.status === 429) {
        assertEquals(response.headers.get("retry-after"), "5");
      }
      await response.body?.cancel();
    }
    assertEquals(statuses, [200, 200, 200, 200, 200, 429]);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.ts --help documents every flag and bad flags exit 2", async () => {
  const entry = new URL("../server.ts", import.meta.url).pathname;
  const help = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      entry,
      "--help",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(help.code, 0);
  const text = new TextDecoder().decode(help.stdout);
  for (
    const flag of [
      "--port",
      "--hostname",
      "--db",
      "--notebooks",
      "--trust-proxy",
      "--public-read",
      "--no-limits",
      "NBR_ADMIN_TOKEN",
      "SIGTERM",
    ]
  ) {
    assert(text.includes(flag), flag);
  }
  const bad = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      entry,
      "--port",
      "http",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(bad.code, 2);
  assertMatch(
    new TextDecoder().decode(bad.stderr),
    /--port must be an integer from 0 to 65535, got "http"/,
  );
});

interface Acked {
  id: number;
  uuid: string;
  executionCount: number;
}

/** Posts reports from `sessions` with `concurrency` workers until `stop` resolves; returns the 2xx ones. */
async function flood(
  url: string,
  sessions: string[],
  concurrency: number,
  stop: Promise<void>,
): Promise<Acked[]> {
  const acked: Acked[] = [];
  let stopped = false;
  stop.then(() => stopped = true);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const n = next++;
      const uuid = sessions[n % sessions.length]!;
      try {
        const response = await post(`${url}/errors/${uuid}/`, {
          ...PAYLOAD,
          execution_count: n,
        });
        if (response.ok) {
          const body = await response.json();
          acked.push({ id: body.id, uuid, executionCount: n });
        } else {
          await response.body?.cancel();
        }
      } catch {
        // The connection died with the server: not acknowledged.
        return;
      }
    }
  }));
  return acked;
}

async function storedReports(
  url: string,
): Promise<Map<number, { usage_uuid: string; execution_count: number }>> {
  const stored = new Map<
    number,
    { usage_uuid: string; execution_count: number }
  >();
  for (let skip = 0;; skip += 1000) {
    const page = await (await fetch(`${url}/errors/?skip=${skip}&limit=1000`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    })).json();
    for (const error of page) stored.set(error.id, error);
    if (page.length < 1000) return stored;
  }
}

// The default (synchronous=NORMAL) and FULL: both survive a crash of the
// process (FULL also a power loss, which no test here can cause).
for (
  const [mode, flags] of [
    ["the default synchronous=NORMAL", []],
    ["synchronous=FULL", ["--synchronous", "full"]],
  ] as const
) {
  Deno.test(`server.ts with ${mode} loses no acknowledged report when killed with SIGKILL mid-flood`, async () => {
    await killMidFlood([...flags]);
  });
}

async function killMidFlood(flags: string[]): Promise<void> {
  const { dir, db } = await tempDb();
  const env = { NBR_ADMIN_TOKEN: TOKEN };
  const server = await startServerProcess(
    ["--db", db, "--no-limits", ...flags],
    env,
  );
  let acked: Acked[];
  try {
    const sessions: string[] = [];
    for (let i = 0; i < 4; i++) {
      sessions.push(
        (await (await post(`${server.url}/usages/`, { notebook: "crash" }))
          .json()).uuid,
      );
    }
    const { promise: stop, resolve } = Promise.withResolvers<void>();
    const flooding = flood(server.url, sessions, 24, stop);
    await new Promise((r) => setTimeout(r, 1500));
    server.kill("SIGKILL");
    const status = await server.status;
    resolve();
    acked = await flooding;
    assertEquals(status.signal, "SIGKILL");
  } finally {
    server.kill("SIGKILL");
  }
  assert(
    acked.length > 50,
    `only ${acked.length} reports were acknowledged before the kill`,
  );
  const restarted = await startServerProcess(["--db", db], env);
  try {
    const stored = await storedReports(restarted.url);
    const missing = acked.filter((a) =>
      stored.get(a.id)?.usage_uuid !== a.uuid ||
      stored.get(a.id)?.execution_count !== a.executionCount
    );
    assertEquals(
      missing,
      [],
      `${missing.length} of ${acked.length} acknowledged reports are missing`,
    );
  } finally {
    await restarted.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("server.ts shuts down on SIGTERM after answering the requests in flight", async () => {
  const { dir, db } = await tempDb();
  const env = { NBR_ADMIN_TOKEN: TOKEN };
  const server = await startServerProcess(["--db", db, "--no-limits"], env);
  const session =
    (await (await post(`${server.url}/usages/`, { notebook: "term" })).json())
      .uuid;
  const { promise: stop, resolve } = Promise.withResolvers<void>();
  const flooding = flood(server.url, [session], 16, stop);
  await new Promise((r) => setTimeout(r, 800));
  server.kill("SIGTERM");
  const status = await server.status;
  resolve();
  const acked = await flooding;
  assertEquals(status.code, 0);
  assertMatch(server.stdout(), /shutting down/);
  assert(acked.length > 20, `only ${acked.length} acknowledged`);
  const restarted = await startServerProcess(["--db", db], env);
  try {
    const stored = await storedReports(restarted.url);
    assertEquals(acked.filter((a) => !stored.has(a.id)), []);
  } finally {
    await restarted.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
