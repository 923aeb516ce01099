/**
 * Who may see the dashboard: the admin token (`NBR_ADMIN_TOKEN`) typed into
 * a sign-in form once, then a signed session cookie (`HttpOnly`,
 * `SameSite=Strict`, `Secure` over TLS); or `Authorization: Bearer <token>`
 * for scripts; or nobody at all in the open mode meant for one person on
 * loopback.
 *
 * Sessions are stateless: the cookie carries an expiry and a random nonce,
 * signed with HMAC-SHA-256 under a key derived from the admin token, so
 * several collector instances sharing the token accept each other's
 * sessions, and changing the token signs everyone out. Each session has its
 * own CSRF token (an HMAC of its nonce) that every POST form must carry.
 * Tokens and MACs are compared in constant time.
 *
 * @module
 */

import {
  createHash,
  createHmac,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";

/**
 * Options of {@linkcode DashboardAuth}.
 *
 * @example Usage
 * ```ts
 * import type { DashboardAuthOptions } from "./auth.ts";
 *
 * const options: DashboardAuthOptions = { adminToken: "s3cret-token" };
 * ```
 */
export interface DashboardAuthOptions {
  /** The admin token. Without one, `open` must be `true`. */
  adminToken?: string;
  /** No sign-in: everyone who reaches the server is the admin (loopback only). @default {false} */
  open?: boolean;
  /** Honour `X-Forwarded-Proto`/`X-Forwarded-Host` from a reverse proxy. @default {false} */
  trustProxy?: boolean;
  /** The clock, in ms since the epoch. @default {Date.now} */
  clock?: () => number;
  /** How long a sign-in lasts, in ms. @default {43200000} (12 h) */
  sessionTtlMs?: number;
  /** Failed sign-ins accepted per client address per minute. @default {5} */
  maxFailuresPerMinute?: number;
}

/**
 * Who a request comes from, once authenticated.
 *
 * @example Usage
 * ```ts
 * import type { Principal } from "./auth.ts";
 *
 * const principal: Principal = { kind: "bearer" };
 * ```
 */
export type Principal =
  | {
    /** Signed in through the form (or the open mode's automatic session). */
    kind: "session";
    /** The session's CSRF token, to put in every POST form. */
    csrf: string;
  }
  | {
    /** `Authorization: Bearer <token>`: no cookie, so no CSRF token needed. */
    kind: "bearer";
  };

const BEARER_REGEXP = /^Bearer\s+(\S+)\s*$/i;
const COOKIE_VALUE_REGEXP = /^(\d{1,16})\.([0-9a-f]{32})\.([0-9a-f]{64})$/;
const LOOPBACK_HOST_REGEXP =
  /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/**
 * Compares two strings in time independent of where they differ (both are
 * hashed first, so their lengths leak nothing either).
 *
 * @param a One string.
 * @param b The other.
 * @returns Whether they are equal.
 *
 * @example Usage
 * ```ts
 * import { constantTimeEqual } from "./auth.ts";
 *
 * constantTimeEqual("abc", "abc"); // true
 * constantTimeEqual("abc", "abd"); // false
 * ```
 */
export function constantTimeEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/**
 * The dashboard's authentication: sign-in, session cookies, bearer tokens,
 * CSRF tokens.
 *
 * @example Usage
 * ```ts
 * import { DashboardAuth } from "./auth.ts";
 *
 * const auth = new DashboardAuth({ adminToken: "s3cret-token" });
 * const request = new Request("http://localhost/dashboard/");
 * console.log(auth.authenticate(request)); // undefined: not signed in
 * const { cookie } = auth.issueSession(request);
 * const signedIn = new Request("http://localhost/dashboard/", {
 *   headers: { cookie: cookie.split(";")[0]! },
 * });
 * console.log(auth.authenticate(signedIn)?.kind); // "session"
 * ```
 */
export class DashboardAuth {
  readonly #token: string | undefined;
  readonly #open: boolean;
  readonly #trustProxy: boolean;
  readonly #clock: () => number;
  readonly #ttl: number;
  readonly #key: Buffer;
  readonly #maxFailures: number;
  readonly #failures = new Map<string, { start: number; count: number }>();

  /**
   * Sets up the keys.
   *
   * @param options The token or the open mode.
   * @throws {TypeError} When there is neither a token nor the open mode.
   */
  constructor(options: DashboardAuthOptions) {
    if (!options.adminToken && !options.open) {
      throw new TypeError(
        "The dashboard needs an admin token (NBR_ADMIN_TOKEN) or the open mode (--dashboard-open)",
      );
    }
    this.#token = options.adminToken || undefined;
    this.#open = !this.#token && options.open === true;
    this.#trustProxy = options.trustProxy ?? false;
    this.#clock = options.clock ?? Date.now;
    this.#ttl = options.sessionTtlMs ?? 12 * 3_600_000;
    this.#maxFailures = options.maxFailuresPerMinute ?? 5;
    this.#key = this.#token
      ? createHmac("sha256", this.#token).update("nbr-dashboard-session-v1")
        .digest()
      : randomBytes(32);
  }

  /** Whether no sign-in is needed (the open mode). */
  get open(): boolean {
    return this.#open;
  }

  /**
   * Whether the request reached the server over TLS (directly, or through
   * a trusted proxy that says so in `X-Forwarded-Proto`).
   *
   * @param request The request.
   * @returns `true` over HTTPS.
   */
  isSecure(request: Request): boolean {
    if (new URL(request.url).protocol === "https:") return true;
    if (!this.#trustProxy) return false;
    const proto = request.headers.get("x-forwarded-proto") ?? "";
    return proto.split(",")[0]!.trim().toLowerCase() === "https";
  }

  #cookieName(request: Request): string {
    // The __Host- prefix makes browsers refuse the cookie unless it is
    // Secure, host-only and for path /: only usable over TLS.
    return this.isSecure(request) ? "__Host-nbr_dashboard" : "nbr_dashboard";
  }

  #mac(text: string): string {
    return createHmac("sha256", this.#key).update(text).digest("hex");
  }

  #csrfFor(nonce: string): string {
    return createHmac("sha256", this.#key).update(`csrf|${nonce}`).digest(
      "base64url",
    );
  }

  /**
   * Who the request comes from: a valid, unexpired session cookie or a
   * bearer token equal to the admin token.
   *
   * @param request The request.
   * @returns The principal, or `undefined` when not authenticated.
   */
  authenticate(request: Request): Principal | undefined {
    const bearer = BEARER_REGEXP.exec(
      request.headers.get("authorization") ?? "",
    );
    if (bearer && this.#token && constantTimeEqual(bearer[1]!, this.#token)) {
      return { kind: "bearer" };
    }
    const value = readCookie(
      request.headers.get("cookie") ?? "",
      this.#cookieName(request),
    );
    const match = value ? COOKIE_VALUE_REGEXP.exec(value) : null;
    if (!match) return undefined;
    const [, expires, nonce, mac] = match;
    if (!constantTimeEqual(mac!, this.#mac(`s1|${expires}|${nonce}`))) {
      return undefined;
    }
    if (Number(expires) <= this.#clock()) return undefined;
    return { kind: "session", csrf: this.#csrfFor(nonce!) };
  }

  /**
   * Checks a token typed into the sign-in form, in constant time, and
   * counts failures per client address.
   *
   * @param given The token typed.
   * @param address The client's address (kept in memory for a minute).
   * @returns `ok`, `wrong`, or `throttled` after too many failures.
   */
  checkSignIn(given: string, address: string): "ok" | "wrong" | "throttled" {
    const now = this.#clock();
    const entry = this.#failures.get(address);
    if (entry && now - entry.start < 60_000) {
      if (entry.count >= this.#maxFailures) return "throttled";
    } else if (entry) {
      this.#failures.delete(address);
    }
    if (this.#token && constantTimeEqual(given, this.#token)) return "ok";
    if (this.#failures.size > 10_000) this.#failures.clear();
    const current = this.#failures.get(address);
    if (current) current.count++;
    else this.#failures.set(address, { start: now, count: 1 });
    return "wrong";
  }

  /**
   * Starts a session: a fresh nonce, signed, in a `Set-Cookie` value.
   *
   * @param request The request that signed in (decides `Secure`).
   * @returns The `Set-Cookie` header value and the session's CSRF token.
   */
  issueSession(request: Request): { cookie: string; csrf: string } {
    const expires = String(this.#clock() + this.#ttl);
    const nonce = randomBytes(16).toString("hex");
    const value = `${expires}.${nonce}.${this.#mac(`s1|${expires}|${nonce}`)}`;
    const secure = this.isSecure(request) ? "; Secure" : "";
    return {
      cookie: `${this.#cookieName(request)}=${value}; Path=/; Max-Age=${
        Math.floor(this.#ttl / 1000)
      }; HttpOnly; SameSite=Strict${secure}`,
      csrf: this.#csrfFor(nonce),
    };
  }

  /**
   * A `Set-Cookie` value that removes the session cookie.
   *
   * @param request The request (decides the cookie's name).
   * @returns The header value.
   */
  clearSession(request: Request): string {
    const secure = this.isSecure(request) ? "; Secure" : "";
    return `${
      this.#cookieName(request)
    }=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict${secure}`;
  }

  /**
   * Whether a POST may change state: a bearer principal, or a session
   * principal whose CSRF token matches the form's (in constant time), and
   * a browser that does not say the request is cross-site.
   *
   * @param request The POST request.
   * @param principal Who sent it.
   * @param formToken The form's `csrf` field.
   * @returns `true` when the change may proceed.
   */
  verifyPost(
    request: Request,
    principal: Principal,
    formToken: string | undefined,
  ): boolean {
    if (principal.kind === "bearer") return true;
    if (!this.isSameOrigin(request)) return false;
    return formToken !== undefined &&
      constantTimeEqual(formToken, principal.csrf);
  }

  /**
   * Whether a browser request comes from the dashboard's own origin: when
   * `Sec-Fetch-Site` or a non-null `Origin` are sent they must say so.
   *
   * @param request The request.
   * @returns `false` when the browser says the request is cross-origin.
   */
  isSameOrigin(request: Request): boolean {
    const site = request.headers.get("sec-fetch-site");
    if (site && site !== "same-origin" && site !== "none") return false;
    const origin = request.headers.get("origin");
    // Under `Referrer-Policy: no-referrer` browsers send `Origin: null` even
    // for same-origin form posts; `Sec-Fetch-Site` (checked above) and the
    // CSRF token then decide.
    if (origin === null || origin === "null") return true;
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      return false;
    }
    const host = this.#trustProxy
      ? request.headers.get("x-forwarded-host") ?? request.headers.get("host")
      : request.headers.get("host");
    return host !== null &&
      originHost.toLowerCase() === host.split(",")[0]!.trim().toLowerCase();
  }

  /**
   * In the open mode, whether the request is addressed to a loopback name
   * (refuses DNS-rebinding pages that reach the loopback server under a
   * foreign name). Always `true` with a token.
   *
   * @param request The request.
   * @returns `false` when an open dashboard is reached under another name.
   */
  isAllowedHost(request: Request): boolean {
    if (!this.#open) return true;
    const host = request.headers.get("host") ?? new URL(request.url).host;
    return LOOPBACK_HOST_REGEXP.test(host);
  }
}

function readCookie(header: string, name: string): string | undefined {
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
