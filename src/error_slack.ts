/**
 * A reporter that posts one Slack message per failing cell to an incoming
 * webhook.
 *
 * @module
 */

import {
  type ErrorRecord,
  ErrorReporter,
  type ReporterOptions,
} from "./error_reporter.ts";
import { slackMessage } from "./slack_message.ts";
import {
  describeWebhookHost,
  postSlackMessage,
  validateSlackWebhookUrl,
} from "./slack_webhook.ts";

/**
 * Options for {@linkcode ErrorSlack}.
 *
 * @example Usage
 * ```ts
 * import type { ErrorSlackOptions } from "./error_slack.ts";
 *
 * const options: ErrorSlackOptions = { notebook: "demo", timeoutMs: 2000 };
 * ```
 */
export interface ErrorSlackOptions extends ReporterOptions {
  /** How long one post may take, in milliseconds. @default {5000} */
  timeoutMs?: number;
  /** The `fetch` used to post (tests inject one). @default {globalThis.fetch} */
  fetch?: typeof fetch;
}

/**
 * Posts each failing cell's report to a Slack incoming webhook. Posting is
 * asynchronous and bounded by `timeoutMs`: a webhook that is down, slow or
 * answers 4xx/5xx never blocks the notebook and becomes one warning line.
 *
 * @example Usage
 * ```ts ignore
 * import { ErrorSlack } from "./error_slack.ts";
 *
 * const slack = new ErrorSlack(Deno.env.get("SLACK_WEBHOOK")!, { notebook: "demo" });
 * await slack.loadExtension();
 * ```
 */
export class ErrorSlack extends ErrorReporter {
  #webhookUrl: string;
  #timeoutMs: number | undefined;
  #fetch: typeof fetch | undefined;
  #pending = new Set<Promise<unknown>>();

  /**
   * Creates a Slack reporter.
   *
   * @param webhookUrl The incoming-webhook URL (kept private: only its host is ever shown).
   * @param options Reporter and posting options.
   */
  constructor(webhookUrl: string, options: ErrorSlackOptions = {}) {
    super(options);
    this.#webhookUrl = webhookUrl;
    this.#timeoutMs = options.timeoutMs;
    this.#fetch = options.fetch;
  }

  /**
   * Posts the record's payload as a Slack message.
   *
   * @param record The record.
   * @returns Once Slack accepted the message.
   * @throws {Error} When the post fails (the message never holds the webhook's secret path).
   */
  protected async deliver(record: ErrorRecord): Promise<void> {
    const { timestamp: _timestamp, traceback_text: _text, ...payload } = record;
    const post = postSlackMessage(this.#webhookUrl, slackMessage(payload), {
      fetch: this.#fetch,
      timeoutMs: this.#timeoutMs,
    });
    this.#pending.add(post);
    try {
      const result = await post;
      if (!result.ok) {
        throw new Error(`Slack webhook post failed: ${result.error}`);
      }
    } finally {
      this.#pending.delete(post);
    }
  }

  /**
   * Checks the webhook URL when the extension loads, so that a missing or
   * wrong one (such as an unset `SLACK_WEBHOOK`) is one warning line then,
   * not only a failed post per failing cell.
   *
   * @returns Once checked.
   * @throws {TypeError} When the URL is not an `https:` URL (or `http:` on a
   * loopback host); the message never holds the secret path.
   */
  protected override prepare(): Promise<void> {
    try {
      validateSlackWebhookUrl(this.#webhookUrl);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Names the destination for the load notice: the webhook's host only.
   *
   * @returns Such as `"Slack (hooks.slack.com)"`.
   */
  protected describeDestination(): string {
    return `Slack (${describeWebhookHost(this.#webhookUrl)})`;
  }

  /**
   * Waits for posts in flight (each bounded by `timeoutMs`).
   *
   * @returns Once no post is pending.
   */
  protected override async dispose(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }
}
