/**
 * Reads where the running process keeps private paths and names, without
 * ever prompting for a permission or throwing.
 *
 * @module
 */

import type { PayloadContext } from "./types.ts";

/** A home directory directly inside a standard users folder; captures the user's folder name. */
const USERS_DIR_HOME_REGEXP =
  /^(?:[A-Za-z]:)?[\\/](?:home|Users)[\\/]([^\\/]+)[\\/]?$/i;

/**
 * The running process's context for scrubbing: `cwd` from `Deno.cwd()`,
 * `home` from `HOME` (or `USERPROFILE`), `user` from `USER` (or `USERNAME`,
 * `LOGNAME`, else the home's folder name when it is `/home/<x>`,
 * `/Users/<x>` or `C:\Users\<x>`), `denoDir` from `DENO_DIR` or Deno's default cache directory
 * (`$XDG_CACHE_HOME/deno` or `~/.cache/deno` on Linux,
 * `~/Library/Caches/deno` on macOS, `%LOCALAPPDATA%\deno` on Windows).
 * Each value is read only when its permission is already granted (checked
 * with `Deno.permissions.querySync`); a field that cannot be read is left
 * undefined. Never prompts, never throws.
 *
 * @returns What could be read.
 *
 * @example Usage
 * ```ts
 * import { processContext } from "./process_context.ts";
 *
 * const context = processContext();
 * console.log(context.cwd !== undefined); // true when --allow-read is granted
 * ```
 */
export function processContext(): PayloadContext {
  const context: PayloadContext = {};
  const deno = denoNamespace();
  if (deno === undefined) return context;
  const cwd = attempt(() => granted({ name: "read" }) ? deno.cwd() : undefined);
  if (cwd) context.cwd = cwd;
  const home = env("HOME") ?? env("USERPROFILE");
  if (home) context.home = home;
  const user = env("USER") ?? env("USERNAME") ?? env("LOGNAME") ??
    userFromHome(home);
  if (user) context.user = user;
  const denoDir = env("DENO_DIR") ?? defaultDenoDir(home);
  if (denoDir) context.denoDir = denoDir;
  return context;
}

/** `/home/<x>`, `/Users/<x>`, `C:\Users\<x>` → `<x>`, when no variable names the user. */
function userFromHome(home: string | undefined): string | undefined {
  if (home === undefined) return undefined;
  const match = USERS_DIR_HOME_REGEXP.exec(home);
  return match?.[1];
}

function defaultDenoDir(home: string | undefined): string | undefined {
  const os = attempt(() => denoNamespace()?.build.os);
  if (os === "windows") {
    const local = env("LOCALAPPDATA");
    return local ? `${local}\\deno` : undefined;
  }
  if (os === "darwin") return home ? `${home}/Library/Caches/deno` : undefined;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/deno`;
  return home ? `${home}/.cache/deno` : undefined;
}

function env(variable: string): string | undefined {
  return attempt(() => {
    const deno = denoNamespace();
    if (deno === undefined || !granted({ name: "env", variable })) {
      return undefined;
    }
    const value = deno.env.get(variable);
    return value === undefined || value === "" ? undefined : value;
  });
}

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  const deno = denoNamespace();
  if (deno === undefined) return false;
  return deno.permissions.querySync(descriptor).state === "granted";
}

function denoNamespace(): typeof Deno | undefined {
  return typeof Deno === "object" && Deno !== null ? Deno : undefined;
}

function attempt<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}
