/**
 * A small, dependency-free ZMTP 3.x client (RFC 23/ZMTP, RFC 37/ZMTP 3.1):
 * the greeting, the NULL security mechanism, READY, short and long frames,
 * commands and multipart messages, over TCP or a unix socket (Jupyter's `ipc`
 * transport). Enough to be a SUB or DEALER peer of a Jupyter kernel.
 *
 * @module
 */

/** The socket types this client can play. */
export type ZmtpSocketType = "SUB" | "DEALER";

/** Flag bit: more frames follow in this message. */
const FLAG_MORE = 0x01;
/** Flag bit: the size is 8 bytes (long frame). */
const FLAG_LONG = 0x02;
/** Flag bit: the frame is a command. */
const FLAG_COMMAND = 0x04;
/** Length of the full ZMTP 3 greeting. */
const GREETING_LENGTH = 64;
/** Largest frame this client accepts (a bound against hostile peers). */
const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Builds the 64-byte ZMTP 3.0 greeting for the NULL mechanism, as a client.
 *
 * @returns The greeting bytes.
 *
 * @example Usage
 * ```ts
 * import { zmtpGreeting } from "./zmtp.ts";
 *
 * console.log(zmtpGreeting().length); // 64
 * ```
 */
export function zmtpGreeting(): Uint8Array {
  const greeting = new Uint8Array(GREETING_LENGTH);
  greeting[0] = 0xff;
  greeting[9] = 0x7f;
  greeting[10] = 3; // major version
  greeting[11] = 0; // minor version: 3.0 is understood by 3.0 and 3.1 peers
  greeting.set(encoder.encode("NULL"), 12); // mechanism, zero padded to 20 bytes
  greeting[32] = 0; // as-server
  return greeting;
}

/**
 * Encodes one ZMTP frame: flags, a 1- or 8-byte size, the body.
 *
 * @param body The frame body.
 * @param options `more` when other frames of the message follow, `command` for a command frame.
 * @returns The encoded frame.
 *
 * @example Usage
 * ```ts
 * import { encodeFrame } from "./zmtp.ts";
 *
 * const frame = encodeFrame(new Uint8Array([1]), { more: false });
 * console.log(frame); // Uint8Array(3) [ 0, 1, 1 ]
 * ```
 */
export function encodeFrame(
  body: Uint8Array,
  options: { more?: boolean; command?: boolean } = {},
): Uint8Array {
  const long = body.length > 255;
  const headerLength = long ? 9 : 2;
  const frame = new Uint8Array(headerLength + body.length);
  frame[0] = (options.more ? FLAG_MORE : 0) |
    (options.command ? FLAG_COMMAND : 0) | (long ? FLAG_LONG : 0);
  if (long) {
    new DataView(frame.buffer).setBigUint64(1, BigInt(body.length));
  } else {
    frame[1] = body.length;
  }
  frame.set(body, headerLength);
  return frame;
}

/**
 * Encodes a multipart message: every frame but the last has the MORE flag.
 *
 * @param parts The message's frames.
 * @returns The bytes to write.
 *
 * @example Usage
 * ```ts
 * import { encodeMessage } from "./zmtp.ts";
 *
 * const bytes = encodeMessage([new Uint8Array([1]), new Uint8Array([2])]);
 * console.log(bytes.length); // 6
 * ```
 */
export function encodeMessage(parts: Uint8Array[]): Uint8Array {
  const frames = parts.map((part, index) =>
    encodeFrame(part, { more: index < parts.length - 1 })
  );
  return concatBytes(frames);
}

/**
 * Encodes a command frame (`READY`, `SUBSCRIBE`, `PONG`, …).
 *
 * @param name The command name (ASCII, at most 255 bytes).
 * @param data The command data after the name.
 * @returns The encoded command frame.
 *
 * @example Usage
 * ```ts
 * import { encodeCommand, encodeReadyData } from "./zmtp.ts";
 *
 * const ready = encodeCommand("READY", encodeReadyData({ "Socket-Type": "SUB" }));
 * console.log(ready[0]); // 4
 * ```
 */
export function encodeCommand(name: string, data: Uint8Array): Uint8Array {
  const nameBytes = encoder.encode(name);
  const body = new Uint8Array(1 + nameBytes.length + data.length);
  body[0] = nameBytes.length;
  body.set(nameBytes, 1);
  body.set(data, 1 + nameBytes.length);
  return encodeFrame(body, { command: true });
}

/**
 * Encodes READY metadata properties (short name, 4-byte big-endian value length, value).
 *
 * @param properties Property names to values.
 * @returns The encoded properties.
 *
 * @example Usage
 * ```ts
 * import { encodeReadyData } from "./zmtp.ts";
 *
 * console.log(encodeReadyData({ "Socket-Type": "SUB" }).length); // 19
 * ```
 */
export function encodeReadyData(
  properties: Record<string, string | Uint8Array>,
): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, value] of Object.entries(properties)) {
    const nameBytes = encoder.encode(name);
    const valueBytes = typeof value === "string"
      ? encoder.encode(value)
      : value;
    const head = new Uint8Array(1 + nameBytes.length + 4);
    head[0] = nameBytes.length;
    head.set(nameBytes, 1);
    new DataView(head.buffer).setUint32(
      1 + nameBytes.length,
      valueBytes.length,
    );
    parts.push(head, valueBytes);
  }
  return concatBytes(parts);
}

/**
 * Decodes READY metadata properties.
 *
 * @param data The bytes after the command name.
 * @returns Property names (as sent) to values.
 * @throws {RangeError} When a property runs past the end of the data.
 *
 * @example Usage
 * ```ts
 * import { decodeReadyData, encodeReadyData } from "./zmtp.ts";
 *
 * const properties = decodeReadyData(encodeReadyData({ "Socket-Type": "PUB" }));
 * console.log(new TextDecoder().decode(properties["Socket-Type"])); // "PUB"
 * ```
 */
export function decodeReadyData(data: Uint8Array): Record<string, Uint8Array> {
  const properties: Record<string, Uint8Array> = {};
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let offset = 0;
  while (offset < data.length) {
    const nameLength = data[offset];
    if (offset + 1 + nameLength + 4 > data.length) {
      throw new RangeError(`Malformed ZMTP property at offset ${offset}`);
    }
    const name = decoder.decode(
      data.subarray(offset + 1, offset + 1 + nameLength),
    );
    offset += 1 + nameLength;
    const valueLength = view.getUint32(offset);
    offset += 4;
    if (offset + valueLength > data.length) {
      throw new RangeError(
        `Malformed ZMTP property value of length ${valueLength}`,
      );
    }
    properties[name] = data.subarray(offset, offset + valueLength);
    offset += valueLength;
  }
  return properties;
}

/** One decoded frame, as {@linkcode ZmtpParser} delivers it. */
export interface ZmtpFrame {
  /** Whether more frames of the same message follow. */
  more: boolean;
  /** Whether the frame is a command. */
  command: boolean;
  /** The frame body; empty when the frame was skipped. */
  body: Uint8Array;
  /** Whether the body was skipped (not copied) at the consumer's request. */
  skipped: boolean;
}

/** Options for {@linkcode ZmtpParser}. */
export interface ZmtpParserOptions {
  /** Whether the stream starts with a 64-byte greeting. @default {true} */
  greeting?: boolean;
  /** Largest accepted frame body in bytes. @default {1073741824} */
  maxFrameBytes?: number;
}

/**
 * An incremental ZMTP stream parser. Feed it the bytes of each read, in order,
 * however they are split; it calls `onFrame` for every complete frame. Each
 * byte is copied at most once (frame bodies are allocated at their final size),
 * and a consumer can ask to skip the rest of a message, whose bytes are then
 * counted but never copied.
 *
 * @example Usage
 * ```ts
 * import { encodeMessage, ZmtpParser } from "./zmtp.ts";
 *
 * const parser = new ZmtpParser({ greeting: false });
 * const bytes = encodeMessage([new TextEncoder().encode("hi")]);
 * parser.onFrame = (frame) => console.log(new TextDecoder().decode(frame.body));
 * parser.push(bytes.subarray(0, 1));
 * parser.push(bytes.subarray(1)); // logs "hi"
 * ```
 */
export class ZmtpParser {
  /** Called with the peer's 64-byte greeting. */
  onGreeting: (greeting: Uint8Array) => void = () => {};
  /** Called for each complete frame. */
  onFrame: (frame: ZmtpFrame) => void = () => {};
  #maxFrameBytes: number;
  #greeting: Uint8Array | undefined;
  #greetingFilled = 0;
  /** Pending frame header bytes (at most 9). */
  #header = new Uint8Array(9);
  #headerFilled = 0;
  #body: Uint8Array | undefined;
  #bodyFilled = 0;
  #bodyLength = 0;
  #flags = 0;
  #skipping = false;
  #skipMessage = false;
  /** Whether a frame with the MORE flag was the last one delivered. */
  #inMessage = false;

  /**
   * Creates a parser.
   *
   * @param options Parser options.
   */
  constructor(options: ZmtpParserOptions = {}) {
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (options.greeting ?? true) {
      this.#greeting = new Uint8Array(GREETING_LENGTH);
    }
  }

  /**
   * Skips the bodies of the remaining frames of the current message. Call it
   * from `onFrame` for a frame with `more: true`; the skipped frames are still
   * delivered, with an empty body and `skipped: true`.
   */
  skipRestOfMessage(): void {
    this.#skipMessage = true;
  }

  /**
   * Whether the bytes fed so far end exactly between two messages: the
   * greeting is complete and no frame header, frame body or further frame of
   * a multipart message is pending.
   */
  get atMessageBoundary(): boolean {
    return this.#greeting === undefined && this.#headerFilled === 0 &&
      this.#body === undefined && !this.#skipping && !this.#inMessage;
  }

  /**
   * Feeds the next bytes of the stream.
   *
   * @param chunk Bytes as read; the parser copies what it keeps.
   * @throws {RangeError} When a frame is larger than `maxFrameBytes`.
   */
  push(chunk: Uint8Array): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#greeting !== undefined) {
        const take = Math.min(
          GREETING_LENGTH - this.#greetingFilled,
          chunk.length - offset,
        );
        this.#greeting.set(
          chunk.subarray(offset, offset + take),
          this.#greetingFilled,
        );
        this.#greetingFilled += take;
        offset += take;
        if (this.#greetingFilled === GREETING_LENGTH) {
          const greeting = this.#greeting;
          this.#greeting = undefined;
          if (
            greeting[0] !== 0xff || greeting[9] !== 0x7f || greeting[10] < 3
          ) {
            throw new RangeError(
              `Peer greeting is not ZMTP 3.x: signature ${greeting[0]}/${
                greeting[9]
              }, version ${greeting[10]}`,
            );
          }
          this.onGreeting(greeting);
        }
        continue;
      }
      if (this.#body === undefined && !this.#skipping) {
        // Reading a frame header: flags, then 1 or 8 size bytes.
        this.#header[this.#headerFilled++] = chunk[offset++];
        const needed = (this.#header[0] & FLAG_LONG) ? 9 : 2;
        if (this.#headerFilled < needed) continue;
        this.#flags = this.#header[0];
        const length = needed === 9
          ? Number(new DataView(this.#header.buffer).getBigUint64(1))
          : this.#header[1];
        this.#headerFilled = 0;
        if (length > this.#maxFrameBytes) {
          throw new RangeError(
            `ZMTP frame of ${length} bytes exceeds the limit of ${this.#maxFrameBytes}`,
          );
        }
        this.#bodyLength = length;
        this.#bodyFilled = 0;
        const command = (this.#flags & FLAG_COMMAND) !== 0;
        if (this.#skipMessage && !command) {
          this.#skipping = true;
        } else {
          this.#body = new Uint8Array(length);
        }
        if (length === 0) this.#finishFrame();
        continue;
      }
      const take = Math.min(
        this.#bodyLength - this.#bodyFilled,
        chunk.length - offset,
      );
      if (this.#body !== undefined) {
        this.#body.set(chunk.subarray(offset, offset + take), this.#bodyFilled);
      }
      this.#bodyFilled += take;
      offset += take;
      if (this.#bodyFilled === this.#bodyLength) this.#finishFrame();
    }
  }

  #finishFrame(): void {
    const more = (this.#flags & FLAG_MORE) !== 0;
    const command = (this.#flags & FLAG_COMMAND) !== 0;
    const skipped = this.#skipping;
    const body = this.#body ?? new Uint8Array(0);
    this.#body = undefined;
    this.#skipping = false;
    if (!command) {
      this.#inMessage = more;
      if (!more) this.#skipMessage = false;
    }
    this.onFrame({ more: command ? false : more, command, body, skipped });
  }
}

/** Where a ZMTP peer listens. */
export interface ZmtpEndpoint {
  /** `tcp`, or `ipc` for a unix socket at `ip + "-" + port` (Jupyter's convention). */
  transport: "tcp" | "ipc";
  /** Host (tcp) or path prefix (ipc). */
  ip: string;
  /** Port (tcp) or path suffix (ipc). */
  port: number;
}

/** Options for {@linkcode ZmtpSocket.connect}. */
export interface ZmtpSocketOptions {
  /** The socket type announced in READY. */
  type: ZmtpSocketType;
  /** The identity announced in READY (DEALER). @default {undefined} */
  identity?: Uint8Array;
  /**
   * Called after each frame of an incomplete message with the frames so far;
   * returning `false` skips (never copies) the rest of the message, which is
   * then not delivered. @default {undefined}
   */
  accept?: (frames: Uint8Array[]) => boolean;
  /** Called with each complete multipart message. */
  onMessage: (frames: Uint8Array[]) => void;
  /** Called once when the connection ends (closed by either side, or an error). @default {undefined} */
  onClose?: (error?: unknown) => void;
  /** How long to wait for the peer's greeting and READY, in milliseconds. @default {5000} */
  handshakeTimeoutMs?: number;
  /** Largest accepted frame body in bytes. @default {1073741824} */
  maxFrameBytes?: number;
  /** Size of the read buffer in bytes. @default {1048576} */
  readBufferBytes?: number;
  /**
   * After a read that ends between two messages (and did not fill the read
   * buffer), wait this many milliseconds before reading again, so that the
   * messages of a burst are read together in one wake-up instead of one each;
   * meanwhile they wait in the operating system's socket buffer. Reads that
   * end inside a message continue at once, so a long message is drained at
   * full speed. `0` reads again at once. @default {0}
   */
  coalesceMs?: number;
  /**
   * While traffic goes on without a gap (the data was already waiting when a
   * pause ended, more than twice in a row), each pause doubles, up to this
   * many milliseconds; a read that has to wait for data brings the pause
   * back to `coalesceMs`. So a steady stream (cells run back to back) wakes
   * the reader less often, and a message after a quiet moment still waits
   * `coalesceMs` at most.
   * @default {coalesceMs}
   */
  coalesceMaxMs?: number;
  /**
   * Waits out one pause (see `coalesceMs`). The default, a timer, waits in
   * the event loop, where the socket stays registered with the operating
   * system's readiness queue: every message that arrives during the pause
   * still wakes the thread, which then finds nothing to do until the timer
   * fires. A thread whose only job is this socket can block instead (for
   * example with `Atomics.wait`), and the messages then wait in the socket
   * buffer without waking it.
   * @default {a timer}
   */
  pause?: (ms: number) => Promise<void>;
}

/** A read that took longer than this waited for data: the traffic had a gap. */
const READ_WAITED_MS = 1;
/**
 * Reads that find data waiting before the pause starts to grow: one cell's
 * messages (its input, then its error a few ms later) take two or three,
 * and must not wait longer than `coalesceMs`.
 */
const STEADY_AFTER_READS = 2;

/**
 * The pause before the next read, given how many reads in a row found data
 * already waiting when their pause ended (see
 * {@linkcode ZmtpSocketOptions.coalesceMaxMs}): `minMs` for the first
 * two, then doubling up to `maxMs`.
 *
 * @param streak Reads in a row that found data waiting (0 after a read waited).
 * @param minMs The shortest pause (`coalesceMs`).
 * @param maxMs The longest pause (`coalesceMaxMs`).
 * @returns The next pause in milliseconds.
 *
 * @example Usage
 * ```ts
 * import { pauseAfterSteadyReads } from "./zmtp.ts";
 *
 * console.log(pauseAfterSteadyReads(0, 10, 40)); // 10: after a quiet moment
 * console.log(pauseAfterSteadyReads(3, 10, 40)); // 20
 * console.log(pauseAfterSteadyReads(9, 10, 40)); // 40
 * ```
 */
export function pauseAfterSteadyReads(
  streak: number,
  minMs: number,
  maxMs: number,
): number {
  const doublings = Math.min(Math.max(0, streak - STEADY_AFTER_READS), 16);
  return Math.min(maxMs, minMs * 2 ** doublings);
}

/**
 * A connected ZMTP 3 socket (SUB or DEALER) with NULL security.
 *
 * @example Subscribe to a publisher
 * ```ts ignore
 * import { ZmtpSocket } from "./zmtp.ts";
 *
 * const socket = await ZmtpSocket.connect(
 *   { transport: "tcp", ip: "127.0.0.1", port: 5556 },
 *   { type: "SUB", onMessage: (frames) => console.log(frames.length) },
 * );
 * await socket.subscribe("");
 * await socket.close();
 * ```
 */
export class ZmtpSocket {
  #conn: Deno.Conn;
  #options: ZmtpSocketOptions;
  #parser: ZmtpParser;
  #frames: Uint8Array[] = [];
  #skipping = false;
  #closed = false;
  #readLoop: Promise<void> | undefined;
  #writeChain: Promise<void> = Promise.resolve();
  #peerReady: PromiseWithResolvers<Record<string, Uint8Array>> = Promise
    .withResolvers();
  #peerType = "";

  private constructor(conn: Deno.Conn, options: ZmtpSocketOptions) {
    this.#conn = conn;
    this.#options = options;
    this.#parser = new ZmtpParser({ maxFrameBytes: options.maxFrameBytes });
    this.#parser.onFrame = (frame) => this.#onFrame(frame);
    this.#peerReady.promise.catch(() => {});
  }

  /**
   * Connects, exchanges greetings and READY, and starts reading.
   *
   * @param endpoint Where the peer listens.
   * @param options Socket options.
   * @returns The socket, once the peer's READY arrived.
   * @throws {Error} When the connection or the handshake fails or times out.
   */
  static async connect(
    endpoint: ZmtpEndpoint,
    options: ZmtpSocketOptions,
  ): Promise<ZmtpSocket> {
    const conn = endpoint.transport === "ipc"
      ? await Deno.connect({
        transport: "unix",
        path: `${endpoint.ip}-${endpoint.port}`,
      })
      : await Deno.connect({ hostname: endpoint.ip, port: endpoint.port });
    const socket = new ZmtpSocket(conn, options);
    const properties: Record<string, string | Uint8Array> = {
      "Socket-Type": options.type,
    };
    if (options.identity !== undefined) properties.Identity = options.identity;
    socket.#readLoop = socket.#read();
    const timeoutMs = options.handshakeTimeoutMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await socket.#write(
        concatBytes([
          zmtpGreeting(),
          encodeCommand("READY", encodeReadyData(properties)),
        ]),
      );
      await Promise.race([
        socket.#peerReady.promise,
        new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(`ZMTP handshake timed out after ${timeoutMs} ms`),
              ),
            timeoutMs,
          );
        }),
      ]);
    } catch (error) {
      await socket.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return socket;
  }

  /** The peer's Socket-Type from its READY, such as `PUB` or `ROUTER`. */
  get peerType(): string {
    return this.#peerType;
  }

  /** Whether the socket is closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Subscribes to messages starting with `topic` (SUB sockets), using the
   * subscription message form that ZMTP 3.0 and 3.1 publishers both accept.
   *
   * @param topic The topic prefix; `""` subscribes to everything.
   * @returns Once the subscription is written.
   */
  subscribe(topic: string | Uint8Array = ""): Promise<void> {
    const topicBytes = typeof topic === "string"
      ? encoder.encode(topic)
      : topic;
    const body = new Uint8Array(1 + topicBytes.length);
    body[0] = 1;
    body.set(topicBytes, 1);
    return this.#write(encodeFrame(body));
  }

  /**
   * Sends one multipart message.
   *
   * @param parts The frames.
   * @returns Once the bytes are written.
   * @throws {Error} When the socket is closed or the write fails.
   */
  send(parts: Uint8Array[]): Promise<void> {
    return this.#write(encodeMessage(parts));
  }

  /**
   * Closes the connection and waits for the read loop to end. Idempotent.
   *
   * @returns Once closed.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed by the peer
      }
    }
    await this.#readLoop;
  }

  #write(bytes: Uint8Array): Promise<void> {
    const write = this.#writeChain.then(async () => {
      if (this.#closed) throw new Error("ZMTP socket is closed");
      let written = 0;
      while (written < bytes.length) {
        written += await this.#conn.write(bytes.subarray(written));
      }
    });
    this.#writeChain = write.catch(() => {});
    return write;
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(
      this.#options.readBufferBytes ?? 1024 * 1024,
    );
    const coalesceMs = this.#options.coalesceMs ?? 0;
    const maxPauseMs = Math.max(
      coalesceMs,
      this.#options.coalesceMaxMs ?? coalesceMs,
    );
    let pauseMs = coalesceMs;
    let streak = 0;
    let paused = false;
    let failure: unknown;
    try {
      while (true) {
        const readStart = paused ? performance.now() : 0;
        const count = await this.#conn.read(buffer);
        if (count === null) break;
        if (paused) {
          streak = performance.now() - readStart < READ_WAITED_MS
            ? streak + 1
            : 0;
          pauseMs = pauseAfterSteadyReads(streak, coalesceMs, maxPauseMs);
        }
        this.#parser.push(buffer.subarray(0, count));
        paused = coalesceMs > 0 && count < buffer.length &&
          this.#peerType !== "" && this.#parser.atMessageBoundary &&
          !this.#closed;
        if (paused) {
          await (this.#options.pause?.(pauseMs) ??
            new Promise((resolve) => setTimeout(resolve, pauseMs)));
        }
      }
    } catch (error) {
      if (!this.#closed) failure = error;
    }
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    }
    this.#peerReady.reject(
      failure ?? new Error("ZMTP connection closed by the peer"),
    );
    try {
      this.#options.onClose?.(failure);
    } catch {
      // a consumer's failure must not escape the read loop
    }
  }

  #onFrame(frame: ZmtpFrame): void {
    if (frame.command) {
      this.#onCommand(frame.body);
      return;
    }
    if (this.#skipping) {
      if (!frame.more) this.#skipping = false;
      return;
    }
    this.#frames.push(frame.body);
    if (!frame.more) {
      const frames = this.#frames;
      this.#frames = [];
      this.#options.onMessage(frames);
      return;
    }
    if (
      this.#options.accept !== undefined && !this.#options.accept(this.#frames)
    ) {
      this.#frames = [];
      this.#skipping = true;
      this.#parser.skipRestOfMessage();
    }
  }

  #onCommand(body: Uint8Array): void {
    if (body.length === 0) return;
    const nameLength = body[0];
    const name = decoder.decode(body.subarray(1, 1 + nameLength));
    const data = body.subarray(1 + nameLength);
    if (name === "READY") {
      const properties = decodeReadyData(data);
      this.#peerType = decoder.decode(
        properties["Socket-Type"] ?? new Uint8Array(0),
      );
      this.#peerReady.resolve(properties);
    } else if (name === "ERROR") {
      const reason = decoder.decode(data.subarray(1, 1 + (data[0] ?? 0)));
      this.#peerReady.reject(
        new Error(`ZMTP peer refused the handshake: ${reason}`),
      );
    } else if (name === "PING" && data.length >= 2) {
      // ZMTP 3.1 heartbeat: answer with PONG and the ping's context.
      this.#write(encodeCommand("PONG", data.subarray(2))).catch(() => {});
    }
  }
}

/**
 * Concatenates byte arrays into one.
 *
 * @param parts The arrays.
 * @returns One array holding them in order.
 *
 * @example Usage
 * ```ts
 * import { concatBytes } from "./zmtp.ts";
 *
 * console.log(concatBytes([new Uint8Array([1]), new Uint8Array([2])])); // Uint8Array(2) [ 1, 2 ]
 * ```
 */
export function concatBytes(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of parts) length += part.length;
  const result = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return result;
}
