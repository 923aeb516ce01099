/**
 * Turns a stack frame's location into the filename a payload reports: no
 * absolute local path leaves the machine.
 *
 * @module
 */

import type { PayloadContext, StackFrame } from "./types.ts";

/** A URL scheme such as `https:`; a single letter is a Windows drive instead. */
const SCHEME_REGEXP = /^([A-Za-z][A-Za-z0-9+.-]{1,31}):/;

/** A Windows drive path: `C:\x`, `C:/x`. */
const DRIVE_PATH_REGEXP = /^[A-Za-z]:[\\/]/;

/** `/C:/…` as left by a `file:///C:/…` URL. */
const SLASH_DRIVE_REGEXP = /^\/[A-Za-z]:\//;

/** A root directory, once normalised: ``, `/`, `C:`, `C:/`, `//host`, `//host/share`. */
const ROOT_DIR_REGEXP = /^(?:\/?|[A-Za-z]:\/?|\/\/[^/]*(?:\/[^/]*)?)$/;

/** Deno's npm cache below DENO_DIR: `npm/<registry host>/<name or @scope/name>/<version>/<path>`. */
const DENO_NPM_CACHE_SEGMENT = "/npm/";

/** The default registry folder, found even when DENO_DIR is not known. */
const NPM_REGISTRY_SEGMENT = "/npm/registry.npmjs.org/";

/**
 * The filename a payload reports for a frame:
 * cell code → `<cell>`, native frames → `<native>`, `eval`/`new Function` →
 * `<eval>`; `ext:`/`node:` specifiers as they are; `http(s):` URLs without
 * query, fragment or credentials; npm packages (in Deno's cache, in
 * `node_modules/.deno/` or in `node_modules/`) → `npm:<name>@<version>/<path>`
 * (`npm:<name>/<path>` without a known version); local files under `cwd` →
 * relative to it with forward slashes; other local files → `…/<basename>`;
 * `data:` → `<data>`, `blob:` → `<blob>`. No home or user-name scrubbing is
 * done here.
 *
 * @param frame The parsed frame.
 * @param context `cwd` and `denoDir` (used as given; nothing is read from the process).
 * @returns The filename to report.
 *
 * @example Usage
 * ```ts
 * import { frameFilename } from "./source_location.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * const frame = {
 *   function: "parse",
 *   file: "file:///home/alice/.cache/deno/npm/registry.npmjs.org/zod/3.23.8/lib/types.js",
 *   line: 3,
 *   column: 7,
 *   native: false,
 *   async: false,
 *   constructor: false,
 * };
 * deepEqual(
 *   frameFilename(frame, { denoDir: "/home/alice/.cache/deno" }),
 *   "npm:zod@3.23.8/lib/types.js",
 * );
 * ```
 */
export function frameFilename(
  frame: StackFrame,
  context: PayloadContext = {},
): string {
  if (frame.native || frame.file === null || frame.file === "") {
    return "<native>";
  }
  return sourceFilename(frame.file, context);
}

/**
 * The filename a payload reports for a location as V8 prints it (a URL, a
 * specifier or a path); see {@linkcode frameFilename} for the rules.
 *
 * @param file The location without its `:line:column`.
 * @param context `cwd` and `denoDir` (used as given).
 * @returns The filename to report.
 *
 * @example Usage
 * ```ts
 * import { sourceFilename } from "./source_location.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(sourceFilename("file:///work/nb/lib/util.ts", { cwd: "/work/nb" }), "lib/util.ts");
 * deepEqual(sourceFilename("file:///etc/x/secret%20dir/a.ts", { cwd: "/work/nb" }), "…/a.ts");
 * deepEqual(sourceFilename("https://esm.sh/x@1/mod.ts?target=deno#a"), "https://esm.sh/x@1/mod.ts");
 * ```
 */
export function sourceFilename(
  file: string,
  context: PayloadContext = {},
): string {
  if (typeof file !== "string" || file.length === 0) return "<native>";
  if (file === "<anonymous>") return "<cell>";
  if (file.startsWith("eval at ") || file === "<eval>") return "<eval>";
  const scheme = SCHEME_REGEXP.exec(file)?.[1]?.toLowerCase();
  if (scheme === "ext" || scheme === "node") return file;
  if (scheme === "data") return "<data>";
  if (scheme === "blob") return "<blob>";
  if (scheme === "npm" || scheme === "jsr") return file;
  if (scheme === "http" || scheme === "https") return cleanUrl(file);
  let path: string;
  if (scheme === "file") {
    path = fileUrlToPath(file);
  } else if (scheme !== undefined) {
    // Another URL scheme (wasm:, chrome-extension:, …): keep, minus query/credentials.
    return cleanUrl(file);
  } else {
    path = file;
  }
  return localFilename(path, context);
}

/** Decodes a `file:` URL into a path (Windows drives as `C:/…`, UNC as `//host/…`). */
function fileUrlToPath(url: string): string {
  let rest = url.slice(url.indexOf(":") + 1);
  rest = stripQueryAndFragment(rest);
  let path: string;
  if (rest.startsWith("//")) {
    const slash = rest.indexOf("/", 2);
    const host = slash === -1 ? rest.slice(2) : rest.slice(2, slash);
    const after = slash === -1 ? "/" : rest.slice(slash);
    path = host === "" || host.toLowerCase() === "localhost"
      ? after
      : `//${host}${after}`;
  } else {
    path = rest;
  }
  path = safeDecode(path);
  if (SLASH_DRIVE_REGEXP.test(path)) path = path.slice(1);
  return path;
}

function localFilename(rawPath: string, context: PayloadContext): string {
  const windows = isWindowsPath(rawPath);
  const path = windows ? rawPath.replaceAll("\\", "/") : rawPath;
  const npm = npmFilename(path, context, windows);
  if (npm !== undefined) return npm;
  const cwd = typeof context.cwd === "string"
    ? normalizeDir(context.cwd)
    : undefined;
  // A root working directory (`/`, `C:/`, a UNC share) is no notebook
  // folder: a path "relative" to it is the whole absolute path.
  if (cwd !== undefined && !ROOT_DIR_REGEXP.test(cwd)) {
    const prefix = `${cwd}/`;
    const windowsCwd = isWindowsPath(cwd);
    const under = windows || windowsCwd
      ? path.toLowerCase().startsWith(prefix.toLowerCase())
      : path.startsWith(prefix);
    if (under && path.length > prefix.length) return path.slice(prefix.length);
  }
  return `…/${basename(path)}`;
}

function npmFilename(
  path: string,
  context: PayloadContext,
  windows: boolean,
): string | undefined {
  // Deno's global npm cache.
  const denoDir = typeof context.denoDir === "string" && context.denoDir !== ""
    ? normalizeDir(context.denoDir)
    : undefined;
  let cacheRest: string | undefined;
  if (denoDir !== undefined) {
    const prefix = `${denoDir}${DENO_NPM_CACHE_SEGMENT}`;
    const matches = windows
      ? path.toLowerCase().startsWith(prefix.toLowerCase())
      : path.startsWith(prefix);
    if (matches) cacheRest = path.slice(prefix.length);
  }
  if (cacheRest === undefined) {
    const at = path.indexOf(NPM_REGISTRY_SEGMENT);
    if (at !== -1) cacheRest = path.slice(at + "/npm/".length);
  }
  if (cacheRest !== undefined) {
    // <registry host>/<name | @scope/name>/<version>/<path>
    const parts = cacheRest.split("/");
    const nameLength = parts[1]?.startsWith("@") ? 2 : 1;
    const name = parts.slice(1, 1 + nameLength).join("/");
    const version = parts[1 + nameLength];
    const rest = parts.slice(2 + nameLength).join("/");
    if (name !== "" && version !== undefined && version !== "") {
      return `npm:${name}@${version}${rest === "" ? "" : `/${rest}`}`;
    }
  }
  // node_modules/.deno/<folder>@<version>/node_modules/<name>/<path>
  const denoLayout = path.lastIndexOf("/node_modules/.deno/");
  if (denoLayout !== -1) {
    const after = path.slice(denoLayout + "/node_modules/.deno/".length);
    const slash = after.indexOf("/");
    const folder = slash === -1 ? after : after.slice(0, slash);
    const inner = slash === -1 ? "" : after.slice(slash);
    const version = folderVersion(folder);
    if (inner.startsWith("/node_modules/")) {
      const found = splitPackagePath(inner.slice("/node_modules/".length));
      if (found !== undefined) {
        return npmSpecifier(found.name, version, found.rest);
      }
    }
  }
  // node_modules/<name>/<path> (innermost)
  const flat = path.lastIndexOf("/node_modules/");
  if (flat !== -1) {
    const found = splitPackagePath(path.slice(flat + "/node_modules/".length));
    if (found !== undefined && !found.name.startsWith(".")) {
      return npmSpecifier(found.name, undefined, found.rest);
    }
  }
  return undefined;
}

/** `name@1.2.3`, `@scope+name@1.2.3`, `name@1.2.3_peer@4.5.6` → `1.2.3`. */
function folderVersion(folder: string): string | undefined {
  const at = folder.indexOf("@", 1);
  if (at === -1) return undefined;
  let version = folder.slice(at + 1);
  const underscore = version.indexOf("_");
  if (underscore !== -1) version = version.slice(0, underscore);
  return version === "" ? undefined : version;
}

function splitPackagePath(
  text: string,
): { name: string; rest: string } | undefined {
  const parts = text.split("/");
  const nameLength = parts[0]?.startsWith("@") ? 2 : 1;
  if (parts.length < nameLength) return undefined;
  const name = parts.slice(0, nameLength).join("/");
  if (name === "" || name.endsWith("/")) return undefined;
  return { name, rest: parts.slice(nameLength).join("/") };
}

function npmSpecifier(
  name: string,
  version: string | undefined,
  rest: string,
): string {
  const base = version === undefined ? `npm:${name}` : `npm:${name}@${version}`;
  return rest === "" ? base : `${base}/${rest}`;
}

function cleanUrl(url: string): string {
  let out = stripQueryAndFragment(url);
  // scheme://user:pass@host/… → scheme://host/…
  const authority = out.indexOf("://");
  if (authority !== -1) {
    const start = authority + 3;
    let end = out.indexOf("/", start);
    if (end === -1) end = out.length;
    const at = out.lastIndexOf("@", end);
    if (at >= start) out = out.slice(0, start) + out.slice(at + 1);
  }
  return out;
}

function stripQueryAndFragment(url: string): string {
  let end = url.length;
  const query = url.indexOf("?");
  if (query !== -1) end = query;
  const hash = url.indexOf("#");
  if (hash !== -1 && hash < end) end = hash;
  return url.slice(0, end);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function isWindowsPath(path: string): boolean {
  return DRIVE_PATH_REGEXP.test(path) || path.startsWith("\\\\");
}

function normalizeDir(dir: string): string {
  let out = dir.trim();
  if (out.startsWith("file:")) out = fileUrlToPath(out);
  if (isWindowsPath(out)) out = out.replaceAll("\\", "/");
  while (out.length > 1 && out.endsWith("/")) out = out.slice(0, -1);
  return out;
}

function basename(path: string): string {
  let end = path.length;
  while (end > 1 && path.charAt(end - 1) === "/") end--;
  const trimmed = path.slice(0, end);
  const slash = trimmed.lastIndexOf("/");
  const name = slash === -1 ? trimmed : trimmed.slice(slash + 1);
  return name === "" ? "<unknown>" : name;
}
