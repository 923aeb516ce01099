/**
 * Report failing Jupyter notebook cells on the Deno kernel, without collecting
 * anything private about the reader.
 *
 * @module
 */

export type * from "./src/types.ts";
export { parseStack } from "./src/parse_stack.ts";
export { buildPayload, scrubPayload } from "./src/build_payload.ts";
export { PAYLOAD_LIMITS, scrubText, truncateText } from "./src/scrub.ts";
export * from "./src/slack_message.ts";
export * from "./src/slack_webhook.ts";
