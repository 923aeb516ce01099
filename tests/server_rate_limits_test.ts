import {
  deepEqual as assertEquals,
  notEqual as assertNotEquals,
} from "node:assert/strict";
import {
  AddressHasher,
  normaliseAddress,
  RateLimiter,
} from "../src/server/rate_limits.ts";

const T0 = Date.UTC(2026, 10, 25, 23, 59, 0);

Deno.test("RateLimiter sliding window allows exactly the limit in any window", () => {
  const clock = { now: T0 };
  const limiter = new RateLimiter({
    reportsPerMinute: 3,
    clock: () => clock.now,
  });
  const seen: (boolean | number)[] = [];
  for (
    const at of [0, 10_000, 20_000, 30_000, 60_000, 60_001, 70_000, 80_001]
  ) {
    clock.now = T0 + at;
    const decision = limiter.checkReport("192.0.2.7");
    seen.push(decision.allowed ? true : decision.retryAfterSeconds);
  }
  // 4th at 30 s waits until the first leaves at 60 s; at 60 s the window is (0, 60] so the first is out.
  assertEquals(seen, [true, true, true, 30, true, 10, true, true]);
});

Deno.test("RateLimiter keeps an address's window across the daily key rotation", () => {
  const clock = { now: T0 };
  const limiter = new RateLimiter({
    reportsPerMinute: 2,
    clock: () => clock.now,
  });
  limiter.checkReport("192.0.2.7");
  limiter.checkReport("192.0.2.7");
  clock.now = T0 + 30_000; // past midnight UTC: a new HMAC key
  const decision = limiter.checkReport("192.0.2.7");
  assertEquals(decision.allowed, false);
});

Deno.test("RateLimiter session buckets refill one token per interval up to the burst", () => {
  const clock = { now: T0 };
  const limiter = new RateLimiter({
    sessionBurst: 2,
    sessionRefillMs: 5000,
    clock: () => clock.now,
  });
  const take = () => {
    const d = limiter.checkSessionReport("s1");
    return d.allowed ? true : d.retryAfterSeconds;
  };
  assertEquals([take(), take(), take()], [true, true, 5]);
  clock.now += 2500;
  assertEquals(take(), 3);
  clock.now += 2500;
  assertEquals([take(), take()], [true, 5]);
  clock.now += 60_000;
  assertEquals([take(), take(), take()], [true, true, 5]);
  assertEquals(limiter.checkSessionReport("s2").allowed, true);
});

Deno.test("RateLimiter memory stays bounded: least recently seen addresses go first, idle ones are swept", () => {
  const clock = { now: T0 };
  const limiter = new RateLimiter({
    maxAddresses: 100,
    maxSessions: 50,
    clock: () => clock.now,
  });
  for (let i = 0; i < 10_000; i++) {
    limiter.checkReport(`10.0.${i >> 8}.${i & 255}`);
    limiter.checkSessionReport(`session-${i}`);
  }
  assertEquals(limiter.size.reportAddresses, 100);
  assertEquals(limiter.size.sessions, 50);
  clock.now += 120_000;
  limiter.checkReport("192.0.2.1");
  limiter.checkSessionReport("fresh");
  assertEquals(limiter.size.reportAddresses, 1);
  assertEquals(limiter.size.sessions, 1);
});

Deno.test("AddressHasher keys addresses by an HMAC that changes every UTC day", () => {
  const clock = { now: T0 };
  const hasher = new AddressHasher(() => clock.now);
  const today = hasher.hash("192.0.2.7");
  assertEquals(today, hasher.hash("192.0.2.7"));
  assertEquals(today.includes("192"), false);
  assertNotEquals(today, hasher.hash("192.0.2.8"));
  clock.now += 120_000;
  const tomorrow = hasher.hash("192.0.2.7");
  assertNotEquals(tomorrow, today);
  assertEquals(hasher.previousHash("192.0.2.7"), today);
  // A fresh hasher (another process) never derives the same key.
  assertNotEquals(
    new AddressHasher(() => clock.now).hash("192.0.2.7"),
    tomorrow,
  );
});

Deno.test("normaliseAddress() groups an IPv6 /64 and unwraps IPv4-mapped addresses", () => {
  assertEquals(normaliseAddress("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assertEquals(normaliseAddress("2001:0db8:0001:0002::9"), "2001:db8:1:2::/64");
  assertEquals(normaliseAddress("[2001:db8::1]"), "2001:db8:0:0::/64");
  assertEquals(normaliseAddress("::ffff:192.0.2.1"), "192.0.2.1");
  assertEquals(normaliseAddress(" 192.0.2.1 "), "192.0.2.1");
});
