/**
 * The collector's abuse controls, all in memory and bounded: per client
 * address a sliding window of sessions per hour and of reports per minute,
 * and per session a token bucket. Client addresses are never kept in clear:
 * they are keyed by an HMAC whose key is random and rotates every UTC day.
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";

/**
 * The limits; every field has a default.
 *
 * @example Usage
 * ```ts
 * import type { RateLimitOptions } from "./rate_limits.ts";
 *
 * const options: RateLimitOptions = { reportsPerMinute: 120 };
 * ```
 */
export interface RateLimitOptions {
  /** Sessions one address may create per sliding hour. @default {30} */
  sessionsPerHour?: number;
  /** Reports one address may send per sliding minute. @default {60} */
  reportsPerMinute?: number;
  /** Reports a session may send in a burst (the bucket's size). @default {5} */
  sessionBurst?: number;
  /** Milliseconds to refill one report of a session's bucket. @default {5000} */
  sessionRefillMs?: number;
  /** Addresses tracked at most; the least recently seen go first. @default {50000} */
  maxAddresses?: number;
  /** Sessions tracked at most; the least recently seen go first. @default {100000} */
  maxSessions?: number;
  /** The clock, in ms since the epoch. @default {Date.now} */
  clock?: () => number;
}

/**
 * A limiter's answer: allowed, or refused with the seconds to wait.
 *
 * @example Usage
 * ```ts
 * import type { RateDecision } from "./rate_limits.ts";
 *
 * const decision: RateDecision = { allowed: false, retryAfterSeconds: 12, reason: "reports per minute" };
 * ```
 */
export type RateDecision =
  | { allowed: true }
  | {
    allowed: false;
    /** Whole seconds after which the same request would be allowed (at least 1). */
    retryAfterSeconds: number;
    /** Which limit refused it. */
    reason: string;
  };

const DAY_MS = 86_400_000;
const IPV4_MAPPED_REGEXP = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

/**
 * Keys client addresses by HMAC-SHA-256 with a random key that rotates every
 * UTC day; the previous day's key is kept so that state can move over.
 * IPv6 addresses are keyed by their /64 prefix (one host usually owns one).
 *
 * @example Usage
 * ```ts
 * import { AddressHasher } from "./rate_limits.ts";
 *
 * const hasher = new AddressHasher(() => Date.UTC(2026, 0, 1));
 * hasher.hash("192.0.2.1") === hasher.hash("192.0.2.1"); // true
 * ```
 */
export class AddressHasher {
  #clock: () => number;
  #day = -1;
  #key: Hmac | undefined;
  #previousKey: Hmac | undefined;

  /**
   * Creates a hasher.
   *
   * @param clock The clock, in ms since the epoch.
   */
  constructor(clock: () => number = Date.now) {
    this.#clock = clock;
  }

  #rotate(): void {
    const day = Math.floor(this.#clock() / DAY_MS);
    if (day === this.#day) return;
    this.#previousKey = day === this.#day + 1 ? this.#key : undefined;
    this.#day = day;
    this.#key = new Hmac(crypto.getRandomValues(new Uint8Array(32)));
  }

  /**
   * The address's key under today's HMAC key.
   *
   * @param address An IPv4 or IPv6 address, or any client identifier.
   * @returns A base64url digest.
   */
  hash(address: string): string {
    this.#rotate();
    return this.#key!.digest(normaliseAddress(address));
  }

  /**
   * The address's key under yesterday's HMAC key, when there is one.
   *
   * @param address The address.
   * @returns A base64url digest, or `undefined` right after start.
   */
  previousHash(address: string): string | undefined {
    this.#rotate();
    return this.#previousKey?.digest(normaliseAddress(address));
  }
}

/**
 * HMAC-SHA-256 (RFC 2104) with the key's padded inner and outer hash states
 * computed once and copied per message: about four times faster than
 * `createHmac` per call in Deno.
 */
class Hmac {
  #inner: Hash;
  #outer: Hash;

  constructor(key: Uint8Array) {
    const block = new Uint8Array(64);
    block.set(
      key.length > 64 ? createHash("sha256").update(key).digest() : key,
    );
    this.#inner = createHash("sha256").update(block.map((b) => b ^ 0x36));
    this.#outer = createHash("sha256").update(block.map((b) => b ^ 0x5c));
  }

  digest(text: string): string {
    const inner = this.#inner.copy().update(text).digest();
    return this.#outer.copy().update(inner).digest("base64url").slice(0, 22);
  }
}

/**
 * The part of an address that identifies a client: IPv4 as is (also when
 * IPv4-mapped), IPv6 reduced to its /64 prefix.
 *
 * @param address The address.
 * @returns The normalised form.
 *
 * @example Usage
 * ```ts
 * import { normaliseAddress } from "./rate_limits.ts";
 *
 * normaliseAddress("2001:db8:1:2:3:4:5:6"); // "2001:db8:1:2::/64"
 * ```
 */
export function normaliseAddress(address: string): string {
  const trimmed = address.trim().toLowerCase().replace(/^\[|\]$/g, "")
    .slice(0, 100);
  const mapped = IPV4_MAPPED_REGEXP.exec(trimmed);
  if (mapped) return mapped[1]!;
  if (!trimmed.includes(":")) return trimmed;
  const [head = "", tail] = trimmed.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups = tail === undefined
    ? headGroups
    : [...headGroups, ...Array(Math.max(0, missing)).fill("0"), ...tailGroups];
  return `${
    groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")
  }::/64`;
}

class SlidingWindow {
  #limit: number;
  #windowMs: number;
  #max: number;
  #entries = new Map<string, number[]>();
  #lastSweep = 0;

  constructor(limit: number, windowMs: number, max: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  adopt(from: string, to: string): void {
    const entry = this.#entries.get(from);
    if (entry && !this.#entries.has(to)) {
      this.#entries.delete(from);
      this.#entries.set(to, entry);
    }
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  take(key: string, now: number): RateDecision {
    this.#sweep(now);
    let times = this.#entries.get(key);
    if (times) this.#entries.delete(key);
    else times = [];
    const start = now - this.#windowMs;
    let expired = 0;
    while (expired < times.length && times[expired]! <= start) expired++;
    if (expired) times.splice(0, expired);
    this.#entries.set(key, times);
    if (times.length >= this.#limit) {
      return {
        allowed: false,
        retryAfterSeconds: Math.max(
          1,
          Math.ceil((times[0]! + this.#windowMs - now) / 1000),
        ),
        reason: "",
      };
    }
    times.push(now);
    while (this.#entries.size > this.#max) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return { allowed: true };
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < Math.min(this.#windowMs, 60_000)) return;
    this.#lastSweep = now;
    const start = now - this.#windowMs;
    for (const [key, times] of this.#entries) {
      // Entries are kept in order of last use: stop at the first live one.
      if (times.length > 0 && times[times.length - 1]! > start) break;
      this.#entries.delete(key);
    }
  }
}

interface Bucket {
  tokens: number;
  at: number;
}

class TokenBuckets {
  #burst: number;
  #refillMs: number;
  #max: number;
  #entries = new Map<string, Bucket>();
  #lastSweep = 0;

  constructor(burst: number, refillMs: number, max: number) {
    this.#burst = burst;
    this.#refillMs = refillMs;
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  take(key: string, now: number): RateDecision {
    this.#sweep(now);
    let bucket = this.#entries.get(key);
    if (bucket) {
      this.#entries.delete(key);
      const refilled = (now - bucket.at) / this.#refillMs;
      bucket.tokens = Math.min(
        this.#burst,
        bucket.tokens + Math.max(0, refilled),
      );
      bucket.at = now;
    } else {
      bucket = { tokens: this.#burst, at: now };
    }
    this.#entries.set(key, bucket);
    while (this.#entries.size > this.#max) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    if (bucket.tokens < 1) {
      return {
        allowed: false,
        retryAfterSeconds: Math.max(
          1,
          Math.ceil((1 - bucket.tokens) * this.#refillMs / 1000),
        ),
        reason: "",
      };
    }
    bucket.tokens -= 1;
    return { allowed: true };
  }

  #sweep(now: number): void {
    const fullAfter = this.#burst * this.#refillMs;
    if (now - this.#lastSweep < fullAfter) return;
    this.#lastSweep = now;
    for (const [key, bucket] of this.#entries) {
      // A bucket untouched for a full refill is full: forgetting it changes nothing.
      if (now - bucket.at < fullAfter) break;
      this.#entries.delete(key);
    }
  }
}

/**
 * The collector's rate limits, in memory, with an injected clock.
 *
 * @example Usage
 * ```ts
 * import { RateLimiter } from "./rate_limits.ts";
 *
 * let now = Date.UTC(2026, 0, 1);
 * const limiter = new RateLimiter({ reportsPerMinute: 2, clock: () => now });
 * limiter.checkReport("192.0.2.1").allowed; // true
 * limiter.checkReport("192.0.2.1").allowed; // true
 * limiter.checkReport("192.0.2.1").allowed; // false
 * now += 60_000;
 * limiter.checkReport("192.0.2.1").allowed; // true
 * ```
 */
export class RateLimiter {
  #clock: () => number;
  #hasher: AddressHasher;
  #sessions: SlidingWindow;
  #reports: SlidingWindow;
  #buckets: TokenBuckets;

  /**
   * Creates a limiter.
   *
   * @param options The limits and the clock.
   */
  constructor(options: RateLimitOptions = {}) {
    this.#clock = options.clock ?? Date.now;
    this.#hasher = new AddressHasher(this.#clock);
    const maxAddresses = options.maxAddresses ?? 50_000;
    this.#sessions = new SlidingWindow(
      options.sessionsPerHour ?? 30,
      3_600_000,
      maxAddresses,
    );
    this.#reports = new SlidingWindow(
      options.reportsPerMinute ?? 60,
      60_000,
      maxAddresses,
    );
    this.#buckets = new TokenBuckets(
      options.sessionBurst ?? 5,
      options.sessionRefillMs ?? 5000,
      options.maxSessions ?? 100_000,
    );
  }

  /** How many addresses and sessions are tracked now. */
  get size(): {
    sessionAddresses: number;
    reportAddresses: number;
    sessions: number;
  } {
    return {
      sessionAddresses: this.#sessions.size,
      reportAddresses: this.#reports.size,
      sessions: this.#buckets.size,
    };
  }

  #key(window: SlidingWindow, address: string): string {
    const key = this.#hasher.hash(address);
    if (!window.has(key)) {
      const previous = this.#hasher.previousHash(address);
      if (previous !== undefined) window.adopt(previous, key);
    }
    return key;
  }

  /**
   * Counts a session creation by an address.
   *
   * @param address The client's address.
   * @returns Whether it is allowed.
   */
  checkSessionCreation(address: string): RateDecision {
    const decision = this.#sessions.take(
      this.#key(this.#sessions, address),
      this.#clock(),
    );
    return decision.allowed
      ? decision
      : { ...decision, reason: "sessions per hour from this address" };
  }

  /**
   * Counts a report by an address.
   *
   * @param address The client's address.
   * @returns Whether it is allowed.
   */
  checkReport(address: string): RateDecision {
    const decision = this.#reports.take(
      this.#key(this.#reports, address),
      this.#clock(),
    );
    return decision.allowed
      ? decision
      : { ...decision, reason: "reports per minute from this address" };
  }

  /**
   * Takes a token from a session's bucket.
   *
   * @param session The session's uuid.
   * @returns Whether it is allowed.
   */
  checkSessionReport(session: string): RateDecision {
    const decision = this.#buckets.take(session, this.#clock());
    return decision.allowed
      ? decision
      : { ...decision, reason: "reports per session burst" };
  }
}
