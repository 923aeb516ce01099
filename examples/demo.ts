/**
 * `deno task demo`: starts the collector on a SQLite file in a temporary
 * directory, runs `examples/demo.ipynb` (which reports through
 * `ErrorServer`) in a real Deno Jupyter kernel, prints what the collector
 * stored and where to browse it, then stops. `--keep` keeps serving until
 * Ctrl-C.
 *
 * @module
 */

import { parseServerArgs, type ServerConfig, startServer } from "../server.ts";
import { runNotebook } from "../src/kernel_client.ts";

const NOTEBOOK = new URL("./demo.ipynb", import.meta.url).pathname;

/**
 * Runs the demo.
 *
 * @param args `--keep` to keep serving after the notebook ran.
 * @returns The process exit code.
 */
export async function main(args: string[] = []): Promise<number> {
  const keep = args.includes("--keep");
  const dir = await Deno.makeTempDir({ prefix: "nbr-demo-" });
  const config = parseServerArgs([
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--db",
    `${dir}/errors.db`,
    "--dashboard-open",
    "--public-read",
  ], {}) as ServerConfig;
  const server = await startServer(config, {
    onError: (error) => console.error("collector error:", error),
  });
  const url = server.url.replace(/\/$/, "");
  console.log(`Collector listening on ${url} (SQLite file ${dir}/errors.db)`);
  let code = 0;
  try {
    console.log(`Running ${NOTEBOOK} in a Deno Jupyter kernel…`);
    const cells = await runNotebook(NOTEBOOK, {
      env: { NBR_COLLECTOR_URL: url },
      settleMs: 500,
    });
    for (const { result, source } of cells) {
      const first = source.split("\n")[0]!;
      const outcome = result.status === "ok"
        ? "ok"
        : `failed: ${result.error?.ename}: ${result.error?.evalue}`;
      console.log(
        `  [${result.executionCount}] ${
          first.slice(0, 60).padEnd(60)
        } ${outcome}`,
      );
    }
    const reports = await server.storage.listReports({
      skip: 0,
      limit: 100,
      notebook: "demo",
    });
    console.log(
      `\nThe collector stored ${reports.length} report(s) for notebook "demo":`,
    );
    for (const report of reports) {
      console.log(
        `\n#${report.id}  cell [${report.execution_count}]  ${report.error_name}: ${report.error_message}`,
      );
      console.log(`    first line: ${report.first_line}`);
      console.log("    traceback (outermost call first):");
      for (const frame of report.traceback) {
        console.log(
          `      ${frame.filename}, line ${
            frame.lineno ?? "?"
          }, in ${frame.fun_name}`,
        );
      }
    }
    if (reports.length === 0) {
      console.error("No report arrived: see the warnings above.");
      code = 1;
    }
    console.log(`\nBrowse them:`);
    console.log(`  dashboard:  ${url}/dashboard/`);
    console.log(`  JSON:       ${url}/api/v1/notebooks/demo/reports`);
    console.log(`  per day:    ${url}/api/v1/counts/daily`);
    if (keep) {
      console.log("\nServing until Ctrl-C (--keep).");
      const { promise, resolve } = Promise.withResolvers<void>();
      Deno.addSignalListener("SIGINT", resolve);
      Deno.addSignalListener("SIGTERM", resolve);
      await promise;
    } else {
      console.log(
        "\n(Stopping now; run `deno task demo --keep` to keep it serving.)",
      );
    }
  } catch (error) {
    console.error(
      `The demo failed: ${error instanceof Error ? error.message : error}`,
    );
    code = 1;
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
