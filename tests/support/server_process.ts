/**
 * Test support: runs the collector (`server.ts`) as a real child process on
 * a loopback port, reading the bound address from its first stdout line.
 *
 * @module
 */

const SERVER_ENTRY = new URL("../../server.ts", import.meta.url).pathname;
const LISTENING_REGEXP = /nbr-collector listening on (http:\/\/\S+)/;

/** A collector child process. */
export interface ServerProcess {
  /** The base URL without trailing slash, such as `http://127.0.0.1:40123`. */
  url: string;
  /** The child's pid. */
  pid: number;
  /** Everything the child printed on stdout so far. */
  stdout(): string;
  /** Sends a signal. */
  kill(signal: Deno.Signal): void;
  /** Resolves with the exit status. */
  status: Promise<Deno.CommandStatus>;
  /** SIGTERM if still running, then waits for the exit. */
  stop(): Promise<Deno.CommandStatus>;
}

/**
 * Starts `server.ts` with the given flags plus `--port 0 --hostname 127.0.0.1`.
 *
 * @param args Extra flags, such as `["--db", file]`.
 * @param env Extra environment variables.
 * @returns The running child, once it printed its address.
 */
export async function startServerProcess(
  args: string[],
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      SERVER_ENTRY,
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      ...args,
    ],
    env,
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  let out = "";
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const { promise: listening, resolve, reject } = Promise.withResolvers<
    string
  >();
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      out += decoder.decode(chunk, { stream: true });
      const match = LISTENING_REGEXP.exec(out);
      if (match) resolve(match[1]!.replace(/\/$/, ""));
    }
    reject(
      new Error(
        `the server exited before listening; stdout: ${JSON.stringify(out)}`,
      ),
    );
  })();
  const timeout = setTimeout(
    () => reject(new Error("the server did not start within 30 s")),
    30_000,
  );
  let url: string;
  try {
    url = await listening;
  } catch (error) {
    if (!exited) child.kill("SIGKILL");
    await status;
    throw error;
  } finally {
    clearTimeout(timeout);
  }
  return {
    url,
    pid: child.pid,
    stdout: () => out,
    kill: (signal) => {
      if (!exited) child.kill(signal);
    },
    status,
    async stop() {
      if (!exited) child.kill("SIGTERM");
      return await status;
    },
  };
}
