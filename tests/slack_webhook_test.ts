import assert from "node:assert/strict";
import { slackMessage } from "../src/slack_message.ts";
import {
  describeWebhookHost,
  postSlackMessage,
  type SlackPostResult,
  validateSlackWebhookUrl,
} from "../src/slack_webhook.ts";
import {
  type SlackReceiver,
  startSlackReceiver,
} from "./support/slack_receiver.ts";

const message = slackMessage({
  error_name: "TypeError",
  error_message: "x is not a function <!channel>",
  traceback: [{ filename: "<cell>", fun_name: "<module>", lineno: 1 }],
  first_line: "x()",
  execution_count: 2,
  notebook: "demo",
});

/** The host of a receiver, as error strings name it. */
function hostOf(receiver: SlackReceiver): string {
  return new URL(receiver.url).host;
}

/** Asserts a failed result whose error names the host but not the secret. */
function assertFailure(
  result: SlackPostResult,
  receiver: SlackReceiver,
): asserts result is Extract<SlackPostResult, { ok: false }> {
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.ok(result.error.includes(hostOf(receiver)), result.error);
  assert.ok(!result.error.includes(receiver.secret), result.error);
  assert.ok(!result.error.includes("B0TEST"), result.error);
  assert.ok(!result.error.includes("\n"), result.error);
}

Deno.test("postSlackMessage() posts the message as JSON and resolves ok on 200", async () => {
  await using receiver = await startSlackReceiver();
  const result = await postSlackMessage(receiver.url, message);
  assert.deepEqual(result, { ok: true });
  const [request] = await receiver.waitFor(1);
  assert.ok(request);
  assert.equal(request.method, "POST");
  assert.equal(request.path, new URL(receiver.url).pathname);
  assert.match(request.headers["content-type"] ?? "", /^application\/json/);
  assert.deepEqual(request.body, message);
  assert.equal(receiver.requests.length, 1);
});

Deno.test("postSlackMessage() reports a 500 answer with host and status, not the secret", async () => {
  await using receiver = await startSlackReceiver({ mode: "fail500" });
  const result = await postSlackMessage(receiver.url, message);
  assertFailure(result, receiver);
  assert.equal(result.status, 500);
  assert.equal(result.retryAfterSeconds, undefined);
  assert.equal(
    result.error,
    `Slack webhook at ${hostOf(receiver)} answered HTTP 500 (internal_error)`,
  );
  assert.equal(receiver.requests.length, 1);
});

Deno.test("postSlackMessage() gives up on a stalled webhook after timeoutMs", async () => {
  await using receiver = await startSlackReceiver({ mode: "stall" });
  const timeoutMs = 300;
  const started = performance.now();
  const result = await postSlackMessage(receiver.url, message, { timeoutMs });
  const elapsed = performance.now() - started;
  assertFailure(result, receiver);
  assert.equal(result.status, undefined);
  assert.equal(
    result.error,
    `Slack webhook at ${hostOf(receiver)} did not answer within 300 ms`,
  );
  // A bound, not a benchmark: the post ends at the timeout, not much later.
  assert.ok(elapsed >= timeoutMs - 50, `returned after ${elapsed} ms`);
  assert.ok(elapsed < timeoutMs + 2000, `returned after ${elapsed} ms`);
  assert.equal((await receiver.waitFor(1)).length, 1);
});

Deno.test("postSlackMessage() returns retryAfterSeconds from a 429 answer", async () => {
  await using receiver = await startSlackReceiver({
    mode: { status: 429, retryAfter: 17 },
  });
  const result = await postSlackMessage(receiver.url, message);
  assertFailure(result, receiver);
  assert.equal(result.status, 429);
  assert.equal(result.retryAfterSeconds, 17);
  assert.match(result.error, /answered HTTP 429 \(rate_limited\)$/);

  receiver.setMode({ status: 429 });
  const without = await postSlackMessage(receiver.url, message);
  assertFailure(without, receiver);
  assert.equal(without.status, 429);
  assert.equal("retryAfterSeconds" in without, false);

  receiver.setMode({ status: 429, retryAfter: -5 });
  const invalid = await postSlackMessage(receiver.url, message);
  assertFailure(invalid, receiver);
  assert.equal("retryAfterSeconds" in invalid, false);
});

Deno.test("postSlackMessage() reads an HTTP-date Retry-After as seconds from now", async () => {
  const at = new Date(Date.now() + 120_000).toUTCString();
  await using receiver = await startSlackReceiver();
  const fetchWithDate: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    await response.body?.cancel();
    return new Response("rate_limited", {
      status: 429,
      headers: { "retry-after": at },
    });
  };
  const result = await postSlackMessage(receiver.url, message, {
    fetch: fetchWithDate,
  });
  assertFailure(result, receiver);
  assert.ok(
    result.retryAfterSeconds !== undefined &&
      result.retryAfterSeconds >= 115 && result.retryAfterSeconds <= 120,
    String(result.retryAfterSeconds),
  );
  assert.equal(receiver.requests.length, 1);
});

Deno.test("postSlackMessage() recovers when the receiver goes from 500 to ok", async () => {
  await using receiver = await startSlackReceiver({ mode: "fail500" });
  assert.equal((await postSlackMessage(receiver.url, message)).ok, false);
  receiver.setMode("ok");
  assert.deepEqual(await postSlackMessage(receiver.url, message), { ok: true });
  assert.equal((await receiver.waitFor(2)).length, 2);
});

Deno.test("postSlackMessage() names Slack's error word for a 400 answer", async () => {
  await using receiver = await startSlackReceiver({
    mode: { status: 400, body: "invalid_blocks" },
  });
  const result = await postSlackMessage(receiver.url, message);
  assertFailure(result, receiver);
  assert.equal(result.status, 400);
  assert.match(result.error, /answered HTTP 400 \(invalid_blocks\)$/);
});

Deno.test("postSlackMessage() does not echo an answer that is not a short word", async () => {
  await using receiver = await startSlackReceiver();
  receiver.setMode({
    status: 500,
    body: `<html>${receiver.secret} ${"x".repeat(200_000)}</html>`,
  });
  const result = await postSlackMessage(receiver.url, message);
  assertFailure(result, receiver);
  assert.equal(
    result.error,
    `Slack webhook at ${hostOf(receiver)} answered HTTP 500`,
  );
});

Deno.test("postSlackMessage() does not follow a redirect", async () => {
  await using target = await startSlackReceiver();
  await using receiver = await startSlackReceiver({
    mode: { status: 302, body: "moved" },
  });
  const fetchRedirect: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    await response.body?.cancel();
    return new Response(null, {
      status: 302,
      headers: { location: target.url },
    });
  };
  const direct = await postSlackMessage(receiver.url, message);
  assertFailure(direct, receiver);
  assert.equal(direct.status, 302);
  const injected = await postSlackMessage(receiver.url, message, {
    fetch: fetchRedirect,
  });
  assertFailure(injected, receiver);
  assert.equal(target.requests.length, 0);
});

Deno.test("postSlackMessage() keeps the secret out of a connection error", async () => {
  const receiver = await startSlackReceiver();
  await receiver.close();
  const result = await postSlackMessage(
    receiver.url + "?token=abcdef",
    message,
    {
      timeoutMs: 2000,
    },
  );
  assertFailure(result, receiver);
  assert.equal(result.status, undefined);
  assert.ok(!result.error.includes("abcdef"), result.error);
  assert.match(
    result.error,
    /^posting to Slack webhook at 127\.0\.0\.1:\d+ failed: /,
  );
});

Deno.test("postSlackMessage() stops when the caller's signal aborts", async () => {
  await using receiver = await startSlackReceiver({ mode: "stall" });
  const controller = new AbortController();
  const pending = postSlackMessage(receiver.url, message, {
    signal: controller.signal,
    timeoutMs: 60_000,
  });
  await receiver.waitFor(1);
  controller.abort();
  const result = await pending;
  assertFailure(result, receiver);
  assert.equal(
    result.error,
    `posting to Slack webhook at ${hostOf(receiver)} was aborted`,
  );
});

Deno.test("postSlackMessage() uses the injected fetch", async () => {
  await using receiver = await startSlackReceiver();
  const seen: string[] = [];
  const counting: typeof fetch = (input, init) => {
    seen.push(String(init?.method));
    return fetch(input, init);
  };
  assert.deepEqual(
    await postSlackMessage(receiver.url, message, { fetch: counting }),
    { ok: true },
  );
  assert.deepEqual(seen, ["POST"]);
  assert.equal(receiver.requests.length, 1);
});

Deno.test("postSlackMessage() resolves to an error for an invalid URL or fetch, never throws", async () => {
  const secretish = "not a url/services/T1/B2/SECRETVALUE";
  const invalid = await postSlackMessage(secretish, message);
  assert.equal(invalid.ok, false);
  assert.ok(!invalid.ok && !invalid.error.includes("SECRETVALUE"));

  const plain = await postSlackMessage(
    "http://hooks.example.com/services/T1/B2/SECRETVALUE",
    message,
  );
  assert.ok(!plain.ok && plain.error.includes("hooks.example.com"));
  assert.ok(!plain.ok && !plain.error.includes("SECRETVALUE"));

  const throwing: typeof fetch = () => {
    throw new Error(
      "boom at https://hooks.slack.com/services/T1/B2/SECRETVALUE",
    );
  };
  const thrown = await postSlackMessage(
    "https://hooks.slack.com/services/T1/B2/SECRETVALUE",
    message,
    { fetch: throwing },
  );
  assert.equal(thrown.ok, false);
  assert.ok(
    !thrown.ok && !thrown.error.includes("SECRETVALUE"),
    !thrown.ok ? thrown.error : "",
  );
  assert.ok(!thrown.ok && thrown.error.includes("hooks.slack.com"));

  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const unserialisable = await postSlackMessage(
    "https://hooks.slack.com/services/T1/B2/SECRETVALUE",
    circular as unknown as typeof message,
    { fetch: throwing },
  );
  assert.equal(unserialisable.ok, false);
});

Deno.test("validateSlackWebhookUrl() allows https anywhere and http only on loopback", () => {
  for (
    const url of [
      "https://hooks.slack.com/services/T0/B0/x",
      "http://127.0.0.1:8080/services/T0/B0/x",
      "http://localhost:1/x",
      "http://[::1]:9/x",
    ]
  ) {
    assert.equal(validateSlackWebhookUrl(url).href, new URL(url).href);
  }
  assert.throws(
    () =>
      validateSlackWebhookUrl("http://hooks.slack.com/services/T0/B0/SECRET"),
    (error: unknown) =>
      error instanceof TypeError &&
      error.message ===
        'Slack webhook URL must use https: (http: only on a loopback host), got http: for host "hooks.slack.com"',
  );
  assert.throws(
    () => validateSlackWebhookUrl("ftp://hooks.slack.com/SECRET"),
    (error: unknown) =>
      error instanceof TypeError &&
      error.message === 'Slack webhook URL must use https:, got "ftp:"',
  );
  assert.throws(
    () => validateSlackWebhookUrl("hooks.slack.com/services/SECRET"),
    (error: unknown) =>
      error instanceof TypeError && !error.message.includes("SECRET") &&
      error.message.includes("not a URL"),
  );
  assert.throws(
    () => validateSlackWebhookUrl("http://127.0.0.1.evil.com/x"),
    TypeError,
  );
  assert.throws(
    () => validateSlackWebhookUrl("javascript:alert(1)"),
    TypeError,
  );
});

Deno.test("describeWebhookHost() shows the host only", () => {
  assert.equal(
    describeWebhookHost("https://hooks.slack.com/services/T0/B0/SECRET"),
    "hooks.slack.com",
  );
  assert.equal(
    describeWebhookHost("http://127.0.0.1:4000/x/SECRET"),
    "127.0.0.1:4000",
  );
  assert.equal(describeWebhookHost("nope SECRET"), "invalid URL");
});

Deno.test("startSlackReceiver() close() releases a stalled request without hanging", async () => {
  const receiver = await startSlackReceiver({ mode: "stall" });
  const pending = fetch(receiver.url, { method: "POST", body: "{}" }).then(
    async (response) => {
      await response.body?.cancel();
      return response.status;
    },
    (error: unknown) => error,
  );
  await receiver.waitFor(1);
  await receiver.close();
  const outcome = await pending;
  assert.ok(outcome === 503 || outcome instanceof Error, String(outcome));
  await receiver.close(); // idempotent
});

Deno.test("startSlackReceiver() waitFor() rejects after its timeout", async () => {
  await using receiver = await startSlackReceiver();
  await assert.rejects(
    receiver.waitFor(1, 50),
    /Slack receiver got 0 of 1 requests within 50 ms/,
  );
  await fetch(receiver.url, { method: "POST", body: "not json" }).then((r) =>
    r.body?.cancel()
  );
  const [request] = await receiver.waitFor(1, 1000);
  assert.equal(request?.body, "not json");
  assert.equal(request?.text, "not json");
  assert.ok(request !== undefined && request.at <= Date.now() + 1);
});
