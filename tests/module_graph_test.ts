/**
 * The in-kernel module stays light: a reader opening a shared notebook must
 * not download npm packages or the collector's code to run its first cell.
 */

import assert from "node:assert/strict";

interface ModuleInfo {
  specifier: string;
  size?: number;
}

async function moduleGraph(entry: string): Promise<ModuleInfo[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout));
  return info.modules as ModuleInfo[];
}

Deno.test("mod.ts imports no npm package, no node: module and no server code", async () => {
  const entry = new URL("../mod.ts", import.meta.url).href;
  const modules = await moduleGraph(entry);
  const specifiers = modules.map((module) => module.specifier);
  assert.ok(specifiers.includes(entry), `graph of ${entry}: ${specifiers}`);
  const local = new URL("../src/", import.meta.url).href;
  for (const specifier of specifiers) {
    assert.ok(
      specifier === entry || specifier.startsWith(local),
      `mod.ts reaches ${specifier}`,
    );
    assert.ok(
      !specifier.includes("/src/server/"),
      `mod.ts reaches ${specifier}`,
    );
    assert.ok(
      !specifier.endsWith("/kernel_client.ts"),
      `mod.ts reaches ${specifier}`,
    );
  }
  const bytes = modules.reduce((sum, module) => sum + (module.size ?? 0), 0);
  assert.ok(bytes < 512 * 1024, `mod.ts graph is ${bytes} bytes`);
});
