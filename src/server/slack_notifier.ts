/**
 * Forwards the collector's notices to Slack from the durable outbox.
 *
 * The storage queues a notice in the same transaction that stores a report
 * (a new group, a resolved group that came back, a spike; each group at most
 * once per 30 minutes: {@linkcode DEFAULT_NOTICE_POLICY}). This notifier
 * claims due notices from the storage under the server-wide budget (20
 * messages per UTC hour, the rest rolled into one digest when the hour ends),
 * posts them with {@linkcode postSlackMessage}, and records each outcome:
 * sent; retried with exponential backoff after a failure; every send paused
 * for `Retry-After` after a 429; given up after a permanent refusal or too
 * many attempts. All of that state lives in the storage, so several
 * instances share one budget and a restart loses no pending notice. Storing
 * a report never waits on Slack.
 *
 * @module
 */

import {
  type SlackMessage,
  slackMessage,
  type SlackMessageOptions,
} from "../slack_message.ts";
import { postSlackMessage } from "../slack_webhook.ts";
import type { ErrorPayload } from "../types.ts";
import type {
  NoticeOutcome,
  NoticePolicy,
  OutboxNotice,
  Storage,
} from "./storage.ts";

/**
 * The notice policy of the issue: each group at most once per 30 minutes; a
 * spike is more than 10× the group's hourly average and at least 20 reports
 * in the current hour.
 *
 * @example Usage
 * ```ts
 * import { DEFAULT_NOTICE_POLICY } from "./slack_notifier.ts";
 *
 * console.log(DEFAULT_NOTICE_POLICY.spikeMinimum); // 20
 * ```
 */
export const DEFAULT_NOTICE_POLICY: NoticePolicy = Object.freeze({
  minGroupIntervalMs: 30 * 60_000,
  spikeFactor: 10,
  spikeMinimum: 20,
});

/** Slack statuses that retrying cannot fix (bad payload, gone webhook). */
const PERMANENT_STATUSES = new Set([400, 401, 403, 404, 410]);

/**
 * Options of {@linkcode SlackNotifier}.
 *
 * @example Usage
 * ```ts
 * import type { SlackNotifierOptions } from "./slack_notifier.ts";
 * import { openSqliteStorage } from "./sqlite_storage.ts";
 *
 * const options: SlackNotifierOptions = {
 *   webhookUrl: "https://hooks.slack.com/services/T0/B0/secret",
 *   storage: await openSqliteStorage(":memory:"),
 * };
 * await options.storage.close();
 * ```
 */
export interface SlackNotifierOptions {
  /** The Slack incoming-webhook URL (kept on the server). */
  webhookUrl: string;
  /** The storage holding the outbox. */
  storage: Storage;
  /** The clock, in ms since the epoch. @default {Date.now} */
  clock?: () => number;
  /** The `fetch` used to post. @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** Messages per UTC hour for the whole server, digests included. @default {20} */
  hourlyCap?: number;
  /** The first retry's delay; each next one doubles. @default {5000} */
  retryBaseMs?: number;
  /** The longest delay between retries. @default {900000} */
  retryMaxMs?: number;
  /** Attempts before a notice is given up. @default {12} */
  maxAttempts?: number;
  /** How long a post may take. @default {5000} */
  timeoutMs?: number;
  /** How often {@linkcode SlackNotifier.start}'s loop looks for due notices. @default {1000} */
  pollIntervalMs?: number;
  /** Seconds to pause after a 429 without a valid `Retry-After`. @default {30} */
  defaultRetryAfterSeconds?: number;
  /** A dashboard URL for a group, linked from its messages. @default {undefined} */
  groupLink?: (groupId: number) => string | undefined;
  /** Told about unexpected errors of the loop (such as a storage outage). @default {undefined} */
  onError?: (error: unknown) => void;
}

/**
 * Sends the outbox's notices to Slack. Call {@linkcode SlackNotifier.start}
 * for the polling loop, or {@linkcode SlackNotifier.runOnce} to do one round
 * (tests drive it with an injected clock).
 *
 * @example Usage
 * ```ts
 * import { SlackNotifier } from "./slack_notifier.ts";
 * import { openSqliteStorage } from "./sqlite_storage.ts";
 *
 * const storage = await openSqliteStorage(":memory:");
 * const notifier = new SlackNotifier({
 *   webhookUrl: "https://hooks.slack.com/services/T0/B0/secret",
 *   storage,
 *   fetch: () => Promise.resolve(new Response("ok")),
 * });
 * console.log(await notifier.runOnce()); // 0: nothing queued
 * await storage.close();
 * ```
 */
export class SlackNotifier {
  #options: SlackNotifierOptions;
  #clock: () => number;
  #stopped = true;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #abort = new AbortController();

  /**
   * Creates a notifier; nothing is sent before {@linkcode start} or
   * {@linkcode runOnce}.
   *
   * @param options The webhook, the storage and the policies.
   */
  constructor(options: SlackNotifierOptions) {
    this.#options = options;
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * Claims the due notices and sends them, one after the other.
   *
   * @returns How many messages Slack accepted.
   * @throws {Error} When the storage fails (the loop reports it to `onError`).
   */
  async runOnce(): Promise<number> {
    const o = this.#options;
    const timeoutMs = o.timeoutMs ?? 5000;
    const notices = await o.storage.claimNotices({
      now: this.#clock(),
      hourlyCap: o.hourlyCap ?? 20,
      limit: 10,
      leaseMs: timeoutMs + 5000,
    });
    let sent = 0;
    let pausedUntil: number | undefined;
    for (const notice of notices) {
      if (pausedUntil !== undefined) {
        await o.storage.settleNotice(notice.id, {
          status: "retry",
          at: pausedUntil,
          error: "held while Slack asked to slow down",
        }, this.#clock());
        continue;
      }
      const link = notice.groupId === null
        ? undefined
        : o.groupLink?.(notice.groupId);
      const result = await postSlackMessage(
        o.webhookUrl,
        noticeMessage(notice, { link }),
        { fetch: o.fetch, timeoutMs, signal: this.#abort.signal },
      );
      const now = this.#clock();
      let outcome: NoticeOutcome;
      if (result.ok) {
        outcome = { status: "sent" };
        sent++;
      } else if (result.status === 429) {
        const seconds = result.retryAfterSeconds ??
          o.defaultRetryAfterSeconds ?? 30;
        pausedUntil = now + seconds * 1000;
        outcome = {
          status: "retry",
          at: pausedUntil,
          error: result.error,
          pauseUntil: pausedUntil,
        };
      } else if (
        (result.status !== undefined &&
          PERMANENT_STATUSES.has(result.status)) ||
        notice.attempts >= (o.maxAttempts ?? 12)
      ) {
        outcome = { status: "failed", error: result.error };
      } else {
        const delay = Math.min(
          o.retryMaxMs ?? 900_000,
          (o.retryBaseMs ?? 5000) * 2 ** Math.max(0, notice.attempts - 1),
        );
        outcome = { status: "retry", at: now + delay, error: result.error };
      }
      await o.storage.settleNotice(notice.id, outcome, now);
    }
    return sent;
  }

  /** Starts the polling loop (idempotent). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#abort = new AbortController();
    this.#loop = this.#run();
  }

  /** Makes the loop look for due notices now instead of at its next tick. */
  poke(): void {
    this.#wake?.();
  }

  /**
   * Stops the loop; a post in flight is aborted (its notice is retried later).
   *
   * @returns Resolves once the loop ended.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    this.#wake?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const interval = this.#options.pollIntervalMs ?? 1000;
    while (!this.#stopped) {
      try {
        await this.runOnce();
      } catch (error) {
        if (!this.#stopped) this.#options.onError?.(error);
      }
      if (this.#stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, interval);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#wake = done;
      });
      this.#wake = undefined;
    }
  }
}

/**
 * The Slack message for a notice, built with {@linkcode slackMessage} (the
 * same escaping and limits as `ErrorSlack`).
 *
 * @param notice The notice.
 * @param options `link`: a dashboard URL for the group. @default {{}}
 * @returns The message.
 *
 * @example Usage
 * ```ts
 * import { noticeMessage } from "./slack_notifier.ts";
 *
 * const message = noticeMessage({
 *   id: 1, kind: "digest", groupId: null, createdAt: 0, attempts: 1,
 *   data: { kind: "digest", hour: 0, items: [] },
 * });
 * console.log(message.blocks.length > 0); // true
 * ```
 */
export function noticeMessage(
  notice: OutboxNotice,
  options: { link?: string } = {},
): SlackMessage {
  const data = notice.data;
  if (data.kind === "digest") {
    const items = data.items;
    const start = new Date(data.hour * 3_600_000).toISOString();
    const hour = `${start.slice(0, 10)} ${start.slice(11, 16)} UTC`;
    const notebooks = [...new Set(items.map((i) => i.notebook))];
    const kinds = countKinds(items.map((i) => i.kind));
    const lines = items.slice(0, 40).map((i) =>
      `${KIND_WORDS[i.kind]} · ${i.notebook} · ${i.errorName}: ${
        i.errorMessage.split("\n")[0]!.slice(0, 160)
      } (${plural(i.count, "report")})`
    );
    if (items.length > 40) lines.push(`… and ${items.length - 40} more`);
    const payload: ErrorPayload = {
      error_name: `${plural(items.length, "notice")} held back`,
      error_message: lines.join("\n"),
      traceback: [],
      first_line: "",
      execution_count: null,
      notebook: notebooks.length === 1 ? notebooks[0]! : "(several notebooks)",
    };
    return slackMessage(payload, {
      title: `Digest: ${
        plural(items.length, "notice")
      } held back in the hour from ${hour}`,
      countLine: `${kinds} · Slack messages are limited per hour`,
      link: options.link,
    });
  }
  const group = data.group;
  const counts = `${plural(group.count, "report")} from ${
    plural(group.sessions, "session")
  }`;
  const messageOptions: SlackMessageOptions = { link: options.link };
  if (data.kind === "new") {
    messageOptions.title = "New error group";
    messageOptions.countLine = counts;
  } else if (data.kind === "regression") {
    messageOptions.title = "Regression: a resolved error is back";
    messageOptions.countLine = `${counts} · first seen ${
      new Date(group.firstSeen).toISOString().slice(0, 16).replace("T", " ")
    } UTC`;
  } else {
    messageOptions.title = "Error spike";
    messageOptions.countLine = `${
      plural(data.hourCount ?? 0, "report")
    } this hour, about ${
      (data.hourlyAverage ?? 0).toFixed(1)
    } per hour before · ${counts}`;
  }
  return slackMessage(data.latest, messageOptions);
}

const KIND_WORDS = {
  new: "new",
  regression: "regression",
  spike: "spike",
} as const;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function countKinds(kinds: ("new" | "regression" | "spike")[]): string {
  const parts: string[] = [];
  for (
    const [kind, word] of [
      ["new", "new group"],
      ["regression", "regression"],
      ["spike", "spike"],
    ] as const
  ) {
    const n = kinds.filter((k) => k === kind).length;
    if (n > 0) parts.push(plural(n, word));
  }
  return parts.join(", ") || "nothing";
}
