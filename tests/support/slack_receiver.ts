/**
 * A stand-in for Slack's incoming webhooks in tests: a real HTTP server on
 * `127.0.0.1` (a free port) that records every request and answers as told:
 * `"ok"` (200 `ok`, like Slack), `"fail500"` (500), `"stall"` (never answers
 * until the receiver closes), or a given status such
 * as `{ status: 429, retryAfter: 30 }` (with `Retry-After`).
 *
 * @module
 */

/**
 * How the receiver answers. A `{ status }` mode answers that status with the
 * body `body` (default `rate_limited` for 429, else `error`) and, when
 * `retryAfter` is set, a `Retry-After` header of that many seconds.
 *
 * @example Usage
 * ```ts
 * import type { SlackReceiverMode } from "./slack_receiver.ts";
 *
 * const mode: SlackReceiverMode = { status: 429, retryAfter: 30 };
 * ```
 */
export type SlackReceiverMode =
  | "ok"
  | "fail500"
  | "stall"
  | { status: number; retryAfter?: number; body?: string };

/**
 * One recorded request.
 *
 * @example Usage
 * ```ts
 * import type { SlackReceivedRequest } from "./slack_receiver.ts";
 *
 * const request: SlackReceivedRequest = {
 *   at: Date.now(), method: "POST", path: "/services/T/B/x", headers: {}, text: "{}", body: {},
 * };
 * ```
 */
export interface SlackReceivedRequest {
  /** When the body had arrived: epoch milliseconds with a fraction (`performance.timeOrigin + performance.now()`). */
  at: number;
  /** The HTTP method. */
  method: string;
  /** The request path and query. */
  path: string;
  /** The request headers, lower-case names. */
  headers: Record<string, string>;
  /** The raw body text. */
  text: string;
  /** The body parsed as JSON, or the raw text when it is not JSON. */
  body: unknown;
}

/**
 * Options for {@linkcode startSlackReceiver}.
 *
 * @example Usage
 * ```ts
 * import type { SlackReceiverOptions } from "./slack_receiver.ts";
 *
 * const options: SlackReceiverOptions = { mode: "fail500" };
 * ```
 */
export interface SlackReceiverOptions {
  /**
   * The first mode.
   *
   * @default {"ok"}
   */
  mode?: SlackReceiverMode;
  /**
   * The webhook path in {@linkcode SlackReceiver.url}.
   *
   * @default {"/services/T0TEST/B0TEST/<random secret>"}
   */
  path?: string;
}

/**
 * A running receiver.
 *
 * @example Usage
 * ```ts ignore
 * import { startSlackReceiver } from "./slack_receiver.ts";
 *
 * await using receiver = await startSlackReceiver();
 * await fetch(receiver.url, { method: "POST", body: "{}" }).then((r) => r.body?.cancel());
 * await receiver.waitFor(1);
 * ```
 */
export interface SlackReceiver extends AsyncDisposable {
  /** The webhook URL, `http://127.0.0.1:<port>/services/T0TEST/B0TEST/<secret>`. */
  readonly url: string;
  /** The secret last path segment of {@linkcode url}. */
  readonly secret: string;
  /** Every request so far, in arrival order. */
  readonly requests: SlackReceivedRequest[];
  /** Changes how later requests (and no earlier stalled one) are answered. */
  setMode(mode: SlackReceiverMode): void;
  /**
   * Resolves with the requests once at least `n` have arrived.
   *
   * @throws {Error} If fewer than `n` arrived within `timeoutMs` (default 5000).
   */
  waitFor(n: number, timeoutMs?: number): Promise<SlackReceivedRequest[]>;
  /** Releases stalled requests and stops the server; idempotent. */
  close(): Promise<void>;
}

/**
 * Starts a recording Slack stand-in on `127.0.0.1` and a free port.
 *
 * @param options The first mode and the webhook path.
 * @returns The running receiver; close it when done.
 *
 * @example Usage
 * ```ts ignore
 * import { startSlackReceiver } from "./slack_receiver.ts";
 *
 * const receiver = await startSlackReceiver({ mode: "stall" });
 * await receiver.close();
 * ```
 */
export async function startSlackReceiver(
  options: SlackReceiverOptions = {},
): Promise<SlackReceiver> {
  let mode: SlackReceiverMode = options.mode ?? "ok";
  const secret = crypto.randomUUID().replaceAll("-", "");
  const path = options.path ?? `/services/T0TEST/B0TEST/${secret}`;
  const requests: SlackReceivedRequest[] = [];
  const waiters = new Set<() => void>();
  const closing = Promise.withResolvers<void>();
  let closed: Promise<void> | undefined;

  const handler = async (request: Request): Promise<Response> => {
    const text = await request.text();
    const url = new URL(request.url);
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Keep the raw text.
    }
    requests.push({
      at: performance.timeOrigin + performance.now(),
      method: request.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(request.headers),
      text,
      body,
    });
    for (const wake of [...waiters]) wake();

    const current = mode;
    if (current === "stall") {
      // Never answer until the receiver closes (even if the client gave up).
      await closing.promise;
      return new Response("stalled", { status: 503 });
    }
    if (current === "ok") return new Response("ok");
    if (current === "fail500") {
      return new Response("internal_error", { status: 500 });
    }
    const headers = new Headers();
    if (current.retryAfter !== undefined) {
      headers.set("retry-after", String(current.retryAfter));
    }
    return new Response(
      current.body ?? (current.status === 429 ? "rate_limited" : "error"),
      { status: current.status, headers },
    );
  };

  const { promise: listening, resolve: onListening } = Promise.withResolvers<
    Deno.NetAddr
  >();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: (addr) => onListening(addr as Deno.NetAddr),
  }, handler);
  const addr = await listening;

  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing.resolve();
      await server.shutdown();
    })();
    return closed;
  };

  return {
    url: `http://127.0.0.1:${addr.port}${path}`,
    secret: path.split("/").at(-1) ?? "",
    requests,
    setMode(next: SlackReceiverMode): void {
      mode = next;
    },
    waitFor(n: number, timeoutMs = 5000): Promise<SlackReceivedRequest[]> {
      if (requests.length >= n) return Promise.resolve(requests.slice());
      return new Promise((resolve, reject) => {
        const wake = () => {
          if (requests.length < n) return;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(requests.slice());
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(
            new Error(
              `Slack receiver got ${requests.length} of ${n} requests within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
        waiters.add(wake);
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
