/**
 * Test support: makes SQLite itself refuse some reports, a real failure
 * inside the storage's write transaction.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** The first line of a report that {@linkcode refuseReports} makes SQLite refuse. */
export const REFUSED_FIRST_LINE = "refuse me";

/** The error message of a refused report. */
export const REFUSED_MESSAGE = "refused by the test trigger";

/**
 * Installs, through another connection to the file at `path`, a trigger that
 * aborts the INSERT of every report whose first line is
 * {@linkcode REFUSED_FIRST_LINE}.
 */
export function refuseReports(path: string): void {
  const other = new DatabaseSync(path);
  try {
    other.exec(`CREATE TRIGGER refuse BEFORE INSERT ON reports
      WHEN NEW.first_line = '${REFUSED_FIRST_LINE}'
      BEGIN SELECT RAISE(ABORT, '${REFUSED_MESSAGE}'); END`);
  } finally {
    other.close();
  }
}
