import { equal } from "node:assert/strict";
import { frameFilename, sourceFilename } from "../src/source_location.ts";
import type { PayloadContext } from "../src/types.ts";

const POSIX = { cwd: "/home/alice/nb", denoDir: "/home/alice/.cache/deno" };
const WINDOWS = {
  cwd: "C:\\Users\\Alice\\nb",
  denoDir: "C:\\Users\\Alice\\AppData\\Local\\deno",
};

const CASES: [string, string, PayloadContext][] = [
  ["<anonymous>", "<cell>", POSIX],
  ["eval at f (file:///home/alice/nb/a.ts:1:1), <anonymous>", "<eval>", POSIX],
  ["node:fs", "node:fs", POSIX],
  ["ext:deno_fs/30_fs.js", "ext:deno_fs/30_fs.js", POSIX],
  [
    "https://esm.sh/preact@10.19.3?target=deno#x",
    "https://esm.sh/preact@10.19.3",
    POSIX,
  ],
  [
    "http://user:secret@example.com:8000/mod.ts",
    "http://example.com:8000/mod.ts",
    POSIX,
  ],
  ["data:application/javascript,throw 1", "<data>", POSIX],
  ["blob:null/0d86e864", "<blob>", POSIX],
  ["file:///home/alice/nb/lib/a.ts", "lib/a.ts", POSIX],
  ["/home/alice/nb/lib/a.ts", "lib/a.ts", POSIX],
  ["file:///home/alice/nb-other/a.ts", "…/a.ts", POSIX],
  ["file:///home/alice/nb/my%20dir%20(1)/%C3%BC.ts", "my dir (1)/ü.ts", POSIX],
  ["file:///home/alice/nb/odd dir (1)/ünï.ts", "odd dir (1)/ünï.ts", POSIX],
  ["file:///home/alice/nb/bad%E0%A4%A.ts", "bad%E0%A4%A.ts", POSIX],
  ["file:///etc/x.ts", "…/x.ts", POSIX],
  ["file:///etc/x.ts", "…/x.ts", {}],
  ["file:///home/alice/secret-plan/x.ts", "…/x.ts", { cwd: "/" }],
  ["file:///C:/Users/Alice/secret-plan/x.ts", "…/x.ts", { cwd: "C:\\" }],
  ["//server/share/plan/x.ts", "…/x.ts", { cwd: "\\\\server\\share" }],
  ["file://server/share/x.ts", "…/x.ts", POSIX],
  [
    "file:///home/alice/.cache/deno/npm/registry.npmjs.org/zod/3.23.8/lib/index.js",
    "npm:zod@3.23.8/lib/index.js",
    POSIX,
  ],
  [
    "file:///opt/cache/npm/registry.npmjs.org/@scope/pkg/1.0.0/i.js",
    "npm:@scope/pkg@1.0.0/i.js",
    {},
  ],
  [
    "file:///home/alice/nb/node_modules/.deno/@scope+name@1.2.3/node_modules/@scope/name/dist/x.js",
    "npm:@scope/name@1.2.3/dist/x.js",
    POSIX,
  ],
  [
    "file:///home/alice/nb/node_modules/.deno/react-dom@18.2.0_react@18.2.0/node_modules/react-dom/index.js",
    "npm:react-dom@18.2.0/index.js",
    POSIX,
  ],
  ["/srv/app/node_modules/lodash/lodash.js", "npm:lodash/lodash.js", POSIX],
  ["/srv/app/node_modules/a/node_modules/@s/b/x.js", "npm:@s/b/x.js", POSIX],
  ["file:///C:/Users/Alice/nb/lib/a.ts", "lib/a.ts", WINDOWS],
  ["file:///c:/users/alice/NB/lib/a.ts", "lib/a.ts", WINDOWS],
  ["C:\\Users\\Alice\\nb\\lib\\a.ts", "lib/a.ts", WINDOWS],
  ["C:\\Program Files\\x\\y.js", "…/y.js", WINDOWS],
  [
    "file:///C:/Users/Alice/AppData/Local/deno/npm/registry.npmjs.org/zod/3.23.8/index.js",
    "npm:zod@3.23.8/index.js",
    WINDOWS,
  ],
  [
    "wasm://wasm/8c2f4a2e:wasm-function[3]:0x1a2",
    "wasm://wasm/8c2f4a2e:wasm-function[3]:0x1a2",
    POSIX,
  ],
  ["", "<native>", POSIX],
];

Deno.test("sourceFilename() applies the issue's filename rules", async (t) => {
  for (const [file, expected, context] of CASES) {
    await t.step(file.slice(0, 70) || "(empty)", () => {
      equal(sourceFilename(file, context), expected);
    });
  }
});

Deno.test("frameFilename() reports native frames as <native>", () => {
  const base = {
    function: "JSON.parse",
    line: null,
    column: null,
    async: false,
    constructor: false,
  };
  equal(frameFilename({ ...base, file: null, native: true }), "<native>");
  equal(
    frameFilename({ ...base, file: "file:///x.ts", native: true }),
    "<native>",
  );
  equal(
    frameFilename({ ...base, file: "<anonymous>", native: false }),
    "<cell>",
  );
});
