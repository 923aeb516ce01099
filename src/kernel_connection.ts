/**
 * Finds and reads the connection file of the Jupyter kernel this code runs in.
 *
 * @module
 */

/** A run of white space, between the arguments `ps` prints. */
const WHITESPACE_RUN_REGEXP = /\s+/;

/** The fields of a Jupyter connection file that this library uses. */
export interface KernelConnectionInfo {
  /** `tcp` or `ipc`. */
  transport: "tcp" | "ipc";
  /** The host (tcp) or path prefix (ipc). */
  ip: string;
  /** The IOPub port. */
  iopub_port: number;
  /** The shell port. */
  shell_port: number;
  /** The control port. */
  control_port: number;
  /** The stdin port. */
  stdin_port: number;
  /** The heartbeat port. */
  hb_port: number;
  /** The HMAC key; `""` when messages are not signed. */
  key: string;
  /** The signature scheme, such as `hmac-sha256`. */
  signature_scheme: string;
}

/** Options for {@linkcode findConnectionFile}. */
export interface FindConnectionFileOptions {
  /** An explicit connection file path, which overrides discovery. @default {undefined} */
  connectionFile?: string;
}

/**
 * Finds the running kernel's connection file: an explicit path, else the
 * argument after `--conn` (or `--connection-file`, `-f`) on the process's
 * command line (`/proc/self/cmdline`, or `ps` on macOS when permitted).
 * Never throws and never prompts for permissions.
 *
 * @param options Discovery options.
 * @returns The path, or `undefined` outside a kernel.
 *
 * @example Usage
 * ```ts
 * import { findConnectionFile } from "./kernel_connection.ts";
 *
 * // In `deno run`, there is no kernel:
 * console.log(await findConnectionFile()); // undefined
 * ```
 */
export async function findConnectionFile(
  options: FindConnectionFileOptions = {},
): Promise<string | undefined> {
  if (options.connectionFile !== undefined) return options.connectionFile;
  const args = await readCommandLine();
  if (args === undefined) return undefined;
  return connectionFileFromArgs(args);
}

/**
 * Picks the connection file out of a kernel's command-line arguments.
 *
 * @param args The command line, program first.
 * @returns The path after `--conn`, or `undefined` when the line is not a Deno kernel's.
 *
 * @example Usage
 * ```ts
 * import { connectionFileFromArgs } from "./kernel_connection.ts";
 *
 * const args = ["deno", "jupyter", "--kernel", "--conn", "/tmp/k.json"];
 * console.log(connectionFileFromArgs(args)); // "/tmp/k.json"
 * ```
 */
export function connectionFileFromArgs(args: string[]): string | undefined {
  if (!args.includes("--kernel")) return undefined;
  for (let index = 0; index < args.length; index++) {
    const arg = args[index];
    if (arg === "--conn" || arg === "--connection-file" || arg === "-f") {
      return args[index + 1] || undefined;
    }
    for (const flag of ["--conn=", "--connection-file="]) {
      if (arg.startsWith(flag)) return arg.slice(flag.length) || undefined;
    }
  }
  return undefined;
}

/**
 * Reads and validates a connection file.
 *
 * @param path The connection file's path.
 * @returns The connection information.
 * @throws {Error} When the file cannot be read, is not a JSON object (its
 * text is never quoted: it holds the HMAC key) or lacks a field.
 *
 * @example Usage
 * ```ts ignore
 * import { readConnectionInfo } from "./kernel_connection.ts";
 *
 * const info = await readConnectionInfo("/tmp/kernel.json");
 * console.log(info.iopub_port);
 * ```
 */
export async function readConnectionInfo(
  path: string,
): Promise<KernelConnectionInfo> {
  const text = await Deno.readTextFile(path);
  let raw;
  try {
    raw = JSON.parse(text);
  } catch {
    // V8's message quotes the text, which may hold the HMAC key.
    throw new Error(`Connection file ${path} is not valid JSON`);
  }
  if (typeof raw !== "object" || raw === null) {
    throw new Error(`Connection file ${path} is not a JSON object`);
  }
  const transport = raw.transport ?? "tcp";
  if (transport !== "tcp" && transport !== "ipc") {
    throw new Error(`Unsupported kernel transport in ${path}: ${transport}`);
  }
  for (const port of ["iopub_port", "shell_port"]) {
    if (typeof raw[port] !== "number") {
      throw new Error(
        `Connection file ${path} has no numeric ${port}: ${raw[port]}`,
      );
    }
  }
  return {
    transport,
    ip: String(raw.ip ?? "127.0.0.1"),
    iopub_port: raw.iopub_port,
    shell_port: raw.shell_port,
    control_port: raw.control_port,
    stdin_port: raw.stdin_port,
    hb_port: raw.hb_port,
    key: String(raw.key ?? ""),
    signature_scheme: String(raw.signature_scheme ?? "hmac-sha256"),
  };
}

async function readCommandLine(): Promise<string[] | undefined> {
  try {
    if (Deno.build.os !== "darwin") {
      const status = await Deno.permissions.query({
        name: "read",
        path: "/proc/self/cmdline",
      });
      if (status.state !== "granted") return undefined;
      const raw = await Deno.readTextFile("/proc/self/cmdline");
      return raw.split("\0").filter((arg, index, all) =>
        arg !== "" || index < all.length - 1
      );
    }
    const status = await Deno.permissions.query({ name: "run", command: "ps" });
    if (status.state !== "granted") return undefined;
    const output = await new Deno.Command("ps", {
      args: ["-o", "command=", "-p", String(Deno.pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!output.success) return undefined;
    // `ps` joins arguments with spaces: good enough for paths without spaces.
    return new TextDecoder().decode(output.stdout).trim().split(
      WHITESPACE_RUN_REGEXP,
    );
  } catch {
    return undefined;
  }
}
