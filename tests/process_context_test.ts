import { deepEqual, equal, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { processContext } from "../src/process_context.ts";

const MODULE = fileURLToPath(
  new URL("../src/process_context.ts", import.meta.url),
);
const CODE = `import { processContext } from ${JSON.stringify(MODULE)};
console.log("@@" + JSON.stringify(processContext()));`;

/** Runs processContext() in a child deno with the given permission flags. */
async function childContext(
  flags: string[],
  env: Record<string, string> = {},
): Promise<Record<string, string>> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-pc-" });
  try {
    const file = `${dir}/main.ts`;
    await Deno.writeTextFile(file, CODE);
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...flags, file],
      cwd: dir,
      env: { HOME: "/home/zed", USER: "zed", ...env },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    const line = text.split("\n").find((l) => l.startsWith("@@"));
    ok(line, `no output: ${text} ${new TextDecoder().decode(output.stderr)}`);
    const context = JSON.parse(line.slice(2));
    if (context.cwd !== undefined) {
      context.cwd = context.cwd === dir ? "<dir>" : context.cwd;
    }
    return context;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("processContext() reads nothing without permissions", async () => {
  deepEqual(await childContext([]), {});
});

Deno.test("processContext() reads only what is granted", async () => {
  deepEqual(await childContext(["--allow-read"]), { cwd: "<dir>" });
  // USER is not granted: the user name comes from the home's folder name.
  deepEqual(await childContext(["--allow-env=HOME"]), {
    home: "/home/zed",
    user: "zed",
    denoDir: "/home/zed/.cache/deno",
  });
  deepEqual(
    await childContext(["--allow-env=HOME"], { HOME: "/var/lib/zed" }),
    {
      home: "/var/lib/zed",
      denoDir: "/var/lib/zed/.cache/deno",
    },
  );
  deepEqual(
    await childContext(["--allow-env", "--allow-read"], {
      DENO_DIR: "/opt/deno",
    }),
    {
      cwd: "<dir>",
      home: "/home/zed",
      user: "zed",
      denoDir: "/opt/deno",
    },
  );
  deepEqual(
    await childContext(["--allow-env"], {
      USER: "",
      LOGNAME: "zoe",
      XDG_CACHE_HOME: "/c",
    }),
    {
      home: "/home/zed",
      user: "zoe",
      denoDir: "/c/deno",
    },
  );
});

Deno.test("processContext() takes the user name from a standard home when no variable has it", async () => {
  deepEqual(await childContext(["--allow-env"], { USER: "" }), {
    home: "/home/zed",
    user: "zed",
    denoDir: "/home/zed/.cache/deno",
  });
  deepEqual(await childContext(["--allow-env"], { USER: "", HOME: "/root" }), {
    home: "/root",
    denoDir: "/root/.cache/deno",
  });
});

Deno.test("processContext() never prompts, even on a terminal", async () => {
  // `script` gives the child a pseudo-terminal, where Deno would prompt for
  // a permission (and wait) if processContext() asked for one.
  const found = await new Deno.Command("sh", {
    args: ["-c", "command -v script"],
  })
    .output()
    .then((o) => o.success)
    .catch(() => false);
  if (!found) {
    console.log("  `script` not installed: checked without a terminal only");
    deepEqual(await childContext([]), {});
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "nbr-pc-" });
  try {
    await Deno.writeTextFile(`${dir}/main.ts`, CODE);
    const output = await new Deno.Command("script", {
      args: ["-qec", `${Deno.execPath()} run ${dir}/main.ts`, "/dev/null"],
      env: {
        HOME: "/home/zed",
        USER: "zed",
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(20_000),
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    ok(!text.includes("Allow?"), `prompted: ${text}`);
    ok(text.includes("@@{}"), text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("processContext() in this test process reads the granted environment", () => {
  const context = processContext();
  equal(context.cwd, Deno.cwd());
  equal(context.home, Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE"));
  ok(typeof context.denoDir === "string" && context.denoDir.length > 0);
});
