/**
 * The Jupyter wire protocol on top of ZMTP frames: the `<IDS|MSG>` delimiter,
 * the HMAC signature, and the four JSON parts (header, parent header,
 * metadata, content).
 *
 * @module
 */

import { concatBytes } from "./zmtp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The frame that separates routing identities from the message. */
export const DELIMITER = "<IDS|MSG>";
const DELIMITER_BYTES = encoder.encode(DELIMITER);
/** An even-length run of hex digits (a signature). */
const HEX_REGEXP = /^(?:[0-9a-fA-F]{2})*$/;

/** A Jupyter message header. */
export interface JupyterHeader {
  /** Unique id of this message. */
  msg_id: string;
  /** The sender's session id. */
  session: string;
  /** The sender's user name. */
  username: string;
  /** ISO 8601 timestamp. */
  date: string;
  /** The message type, such as `execute_request`. */
  msg_type: string;
  /** The protocol version. */
  version: string;
}

/** One Jupyter message. */
export interface JupyterMessage {
  /** Routing identities (frames before the delimiter). */
  identities: Uint8Array[];
  /** The header. */
  header: JupyterHeader;
  /** The header of the request this message answers, or `{}`. */
  parent_header: Partial<JupyterHeader>;
  /** Metadata. */
  metadata: Record<string, unknown>;
  /** The content, whose shape depends on `header.msg_type`. */
  content: Record<string, unknown>;
  /** Extra binary buffers. */
  buffers: Uint8Array[];
}

/**
 * Signs and verifies Jupyter messages with the connection file's key. An
 * empty key means messages are neither signed nor verified.
 *
 * @example Usage
 * ```ts
 * import { MessageSigner } from "./jupyter_message.ts";
 *
 * const signer = await MessageSigner.create("secret", "hmac-sha256");
 * const parts = [new TextEncoder().encode("{}")];
 * const signature = await signer.sign(parts);
 * console.log(await signer.verify(signature, parts)); // true
 * ```
 */
export class MessageSigner {
  #key: CryptoKey | undefined;

  private constructor(key: CryptoKey | undefined) {
    this.#key = key;
  }

  /**
   * Creates a signer.
   *
   * @param key The connection file's `key`; `""` disables signing.
   * @param scheme The connection file's `signature_scheme`.
   * @returns The signer.
   * @throws {RangeError} When the scheme is not `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
   */
  static async create(
    key: string,
    scheme = "hmac-sha256",
  ): Promise<MessageSigner> {
    if (key === "") return new MessageSigner(undefined);
    const hash = {
      "hmac-sha256": "SHA-256",
      "hmac-sha384": "SHA-384",
      "hmac-sha512": "SHA-512",
    }[
      scheme
    ];
    if (hash === undefined) {
      throw new RangeError(`Unsupported Jupyter signature scheme: ${scheme}`);
    }
    const cryptoKey = await crypto.subtle.importKey(
      "raw",
      encoder.encode(key),
      { name: "HMAC", hash },
      false,
      ["sign", "verify"],
    );
    return new MessageSigner(cryptoKey);
  }

  /** Whether messages are signed (a key is set). */
  get enabled(): boolean {
    return this.#key !== undefined;
  }

  /**
   * Signs the header, parent header, metadata and content frames.
   *
   * @param parts The four serialized parts, in order.
   * @returns The lowercase hex signature, or `""` without a key.
   */
  async sign(parts: Uint8Array[]): Promise<string> {
    if (this.#key === undefined) return "";
    const mac = await crypto.subtle.sign("HMAC", this.#key, concatBytes(parts));
    return Array.from(
      new Uint8Array(mac),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join("");
  }

  /**
   * Verifies a signature in constant time.
   *
   * @param signature The hex signature received.
   * @param parts The four serialized parts, in order.
   * @returns Whether the signature is valid; always `true` without a key.
   */
  async verify(signature: string, parts: Uint8Array[]): Promise<boolean> {
    if (this.#key === undefined) return true;
    const bytes = hexToBytes(signature);
    if (bytes === undefined) return false;
    return await crypto.subtle.verify(
      "HMAC",
      this.#key,
      bytes,
      concatBytes(parts),
    );
  }
}

/**
 * Builds a fresh header.
 *
 * @param msgType The message type.
 * @param session The session id.
 * @param username The user name. @default {"nbr"}
 * @returns The header.
 *
 * @example Usage
 * ```ts
 * import { makeHeader } from "./jupyter_message.ts";
 *
 * console.log(makeHeader("kernel_info_request", crypto.randomUUID()).version); // "5.3"
 * ```
 */
export function makeHeader(
  msgType: string,
  session: string,
  username = "nbr",
): JupyterHeader {
  return {
    msg_id: crypto.randomUUID(),
    session,
    username,
    date: new Date().toISOString(),
    msg_type: msgType,
    version: "5.3",
  };
}

/**
 * Serializes and signs a message into its frames.
 *
 * @param message The message; `identities` and `buffers` are optional.
 * @param signer The signer.
 * @returns The frames: identities, delimiter, signature, four JSON parts, buffers.
 *
 * @example Usage
 * ```ts
 * import { MessageSigner, makeHeader, serializeMessage } from "./jupyter_message.ts";
 *
 * const signer = await MessageSigner.create("", "hmac-sha256");
 * const frames = await serializeMessage({
 *   header: makeHeader("kernel_info_request", "s"),
 *   parent_header: {},
 *   metadata: {},
 *   content: {},
 * }, signer);
 * console.log(frames.length); // 6
 * ```
 */
export async function serializeMessage(
  message:
    & Omit<JupyterMessage, "identities" | "buffers">
    & Partial<JupyterMessage>,
  signer: MessageSigner,
): Promise<Uint8Array[]> {
  const parts = [
    message.header,
    message.parent_header,
    message.metadata,
    message.content,
  ].map((part) => encoder.encode(JSON.stringify(part)));
  const signature = await signer.sign(parts);
  return [
    ...(message.identities ?? []),
    DELIMITER_BYTES,
    encoder.encode(signature),
    ...parts,
    ...(message.buffers ?? []),
  ];
}

/**
 * Finds the `<IDS|MSG>` delimiter frame (its index varies with the number of identities).
 *
 * @param frames A message's frames.
 * @returns The delimiter's index, or `-1`.
 *
 * @example Usage
 * ```ts
 * import { findDelimiter } from "./jupyter_message.ts";
 *
 * const frames = ["topic", "<IDS|MSG>", "sig"].map((s) => new TextEncoder().encode(s));
 * console.log(findDelimiter(frames)); // 1
 * ```
 */
export function findDelimiter(frames: Uint8Array[]): number {
  for (let index = 0; index < frames.length; index++) {
    if (bytesEqual(frames[index], DELIMITER_BYTES)) return index;
  }
  return -1;
}

/**
 * Reads only the header of a message (cheap: the content frame is not parsed).
 *
 * @param frames A message's frames, possibly incomplete.
 * @returns The header, or `undefined` when absent or malformed.
 *
 * @example Usage
 * ```ts
 * import { peekHeader } from "./jupyter_message.ts";
 *
 * const frames = ["<IDS|MSG>", "", '{"msg_type":"error"}'].map((s) => new TextEncoder().encode(s));
 * console.log(peekHeader(frames)?.msg_type); // "error"
 * ```
 */
export function peekHeader(frames: Uint8Array[]): JupyterHeader | undefined {
  const delimiter = findDelimiter(frames);
  if (delimiter < 0 || frames.length < delimiter + 3) return undefined;
  try {
    const header = JSON.parse(decoder.decode(frames[delimiter + 2]));
    return typeof header === "object" && header !== null &&
        typeof header.msg_type === "string"
      ? header
      : undefined;
  } catch {
    return undefined;
  }
}

const MSG_TYPE_KEY = encoder.encode('"msg_type":');

/**
 * Reads only the `msg_type` of a message's header, without decoding or
 * parsing it: the bytes that follow `"msg_type":` up to the closing quote
 * (that byte sequence cannot occur inside a JSON string, where the quotes
 * are escaped). A header laid out otherwise (an escape or a non-ASCII byte
 * in the value, no such key) falls back to {@linkcode peekHeader}. It does
 * not validate the rest of the header: a message it keeps is verified when
 * parsed.
 *
 * @param frames A message's frames, possibly incomplete.
 * @returns The message type, or `undefined` when absent or malformed.
 *
 * @example Usage
 * ```ts
 * import { peekMsgType } from "./jupyter_message.ts";
 *
 * const frames = ["<IDS|MSG>", "", '{"msg_id":"1","msg_type":"status"}'].map((s) => new TextEncoder().encode(s));
 * console.log(peekMsgType(frames)); // "status"
 * ```
 */
export function peekMsgType(frames: Uint8Array[]): string | undefined {
  const delimiter = findDelimiter(frames);
  if (delimiter < 0 || frames.length < delimiter + 3) return undefined;
  const header = frames[delimiter + 2];
  const at = indexOfBytes(header, MSG_TYPE_KEY);
  if (at >= 0) {
    let start = at + MSG_TYPE_KEY.length;
    while (start < header.length && isJsonSpace(header[start])) start++;
    if (header[start] === 0x22) {
      let end = start + 1;
      while (
        end < header.length && header[end] !== 0x22 &&
        header[end] !== 0x5c && header[end] < 0x80
      ) {
        end++;
      }
      if (header[end] === 0x22) {
        let type = "";
        for (let i = start + 1; i < end; i++) {
          type += String.fromCharCode(header[i]);
        }
        return type;
      }
    }
  }
  const type = peekHeader(frames)?.msg_type;
  return typeof type === "string" ? type : undefined;
}

function isJsonSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  const first = needle[0];
  const last = haystack.length - needle.length;
  outer: for (let i = 0; i <= last; i++) {
    if (haystack[i] !== first) continue;
    for (let j = 1; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/**
 * Parses a message's frames, verifying the signature when the signer has a key.
 *
 * @param frames The message's frames.
 * @param signer The signer.
 * @returns The message, or `undefined` when malformed or not validly signed.
 *
 * @example Usage
 * ```ts
 * import { MessageSigner, makeHeader, parseMessage, serializeMessage } from "./jupyter_message.ts";
 *
 * const signer = await MessageSigner.create("key", "hmac-sha256");
 * const frames = await serializeMessage({
 *   header: makeHeader("status", "s"), parent_header: {}, metadata: {}, content: { execution_state: "idle" },
 * }, signer);
 * console.log((await parseMessage(frames, signer))?.content.execution_state); // "idle"
 * ```
 */
export async function parseMessage(
  frames: Uint8Array[],
  signer: MessageSigner,
): Promise<JupyterMessage | undefined> {
  const delimiter = findDelimiter(frames);
  if (delimiter < 0 || frames.length < delimiter + 6) return undefined;
  const signature = decoder.decode(frames[delimiter + 1]);
  const parts = frames.slice(delimiter + 2, delimiter + 6);
  if (!(await signer.verify(signature, parts))) return undefined;
  try {
    const [header, parent_header, metadata, content] = parts.map((part) =>
      JSON.parse(decoder.decode(part))
    );
    if (
      typeof header !== "object" || header === null ||
      typeof header.msg_type !== "string"
    ) {
      return undefined;
    }
    return {
      identities: frames.slice(0, delimiter),
      header,
      parent_header: parent_header ?? {},
      metadata: metadata ?? {},
      content: content ?? {},
      buffers: frames.slice(delimiter + 6),
    };
  } catch {
    return undefined;
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) {
    if (a[index] !== b[index]) return false;
  }
  return true;
}

function hexToBytes(hex: string): Uint8Array<ArrayBuffer> | undefined {
  if (hex.length % 2 !== 0 || !HEX_REGEXP.test(hex)) return undefined;
  const bytes = new Uint8Array(hex.length / 2);
  for (let index = 0; index < bytes.length; index++) {
    bytes[index] = parseInt(hex.slice(index * 2, index * 2 + 2), 16);
  }
  return bytes;
}
