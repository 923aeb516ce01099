/**
 * Runs one storage test against every engine: SQLite (a fresh file in a
 * temporary directory) and PostgreSQL (a fresh schema in the database named
 * by `TEST_DATABASE_URL`, dropped afterwards).
 *
 * Without `TEST_DATABASE_URL` the PostgreSQL variant is registered with
 * `ignore: true` and a name that says why; under `CI=true` it fails instead.
 *
 * @module
 */

import type { NoticePolicy, Storage } from "../../src/server/storage.ts";

/** What a test gets: a fresh storage and a way to reopen the same data. */
export interface EngineContext {
  /** `sqlite` or `postgres`. */
  engine: "sqlite" | "postgres";
  /** Opens (another) storage on this test's data: a second instance on PostgreSQL. */
  open(options?: { notices?: NoticePolicy }): Promise<Storage>;
  /** The SQLite file, or the PostgreSQL URL with this test's `search_path`. */
  location: string;
}

/** The PostgreSQL URL for tests, or `undefined`. */
export const TEST_DATABASE_URL: string | undefined = Deno.env.get(
  "TEST_DATABASE_URL",
);
const IN_CI = Deno.env.get("CI") === "true";

/**
 * Registers `name [sqlite]` and `name [postgres]` tests.
 *
 * @param name The test's name, without the engine.
 * @param run The test body; storages it opened are closed afterwards.
 * @param engines Which engines. @default {["sqlite", "postgres"]}
 */
export function engineTest(
  name: string,
  run: (context: EngineContext) => Promise<void>,
  engines: ("sqlite" | "postgres")[] = ["sqlite", "postgres"],
): void {
  if (engines.includes("sqlite")) {
    Deno.test(`${name} [sqlite]`, async () => {
      await withSqlite(run);
    });
  }
  if (engines.includes("postgres")) {
    if (TEST_DATABASE_URL === undefined && !IN_CI) {
      Deno.test({
        name: `${name} [postgres: skipped, TEST_DATABASE_URL is not set]`,
        ignore: true,
        fn: () => {},
      });
    } else {
      Deno.test(`${name} [postgres]`, async () => {
        if (TEST_DATABASE_URL === undefined) {
          throw new Error(
            "TEST_DATABASE_URL is not set: under CI=true a missing PostgreSQL is a failure",
          );
        }
        await withPostgres(TEST_DATABASE_URL, run);
      });
    }
  }
}

/**
 * Runs `run` with a fresh SQLite file.
 *
 * @param run The body.
 */
export async function withSqlite(
  run: (context: EngineContext) => Promise<void>,
): Promise<void> {
  const { openSqliteStorage } = await import(
    "../../src/server/sqlite_storage.ts"
  );
  const dir = await Deno.makeTempDir({ prefix: "nbr-engine-" });
  const path = `${dir}/errors.db`;
  const opened: Storage[] = [];
  try {
    await run({
      engine: "sqlite",
      location: path,
      open: async (options = {}) => {
        const storage = await openSqliteStorage(path, {
          synchronous: "normal",
          notices: options.notices,
        });
        opened.push(storage);
        return storage;
      },
    });
  } finally {
    for (const storage of opened) await storage.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Runs `run` with a fresh PostgreSQL schema, dropped afterwards.
 *
 * @param url The database URL.
 * @param run The body.
 */
export async function withPostgres(
  url: string,
  run: (context: EngineContext) => Promise<void>,
): Promise<void> {
  const { openPostgresStorage, dropPostgresSchema } = await import(
    "../../src/server/postgres_storage.ts"
  );
  const schema = `nbr_test_${crypto.randomUUID().replaceAll("-", "")}`;
  const opened: Storage[] = [];
  try {
    await run({
      engine: "postgres",
      location: `${url}${url.includes("?") ? "&" : "?"}search_path=${schema}`,
      open: async (options = {}) => {
        const storage = await openPostgresStorage(url, {
          schema,
          notices: options.notices,
          maxConnections: 4,
        });
        opened.push(storage);
        return storage;
      },
    });
  } finally {
    for (const storage of opened) await storage.close().catch(() => {});
    await dropPostgresSchema(url, schema);
  }
}
