/**
 * The scale-out storage engine: PostgreSQL through `npm:postgres`, the same
 * {@linkcode Storage} interface as the SQLite engine, for several collector
 * instances behind a load balancer sharing one database.
 *
 * Reports are stored with group commit, as on SQLite: an instance queues
 * them and sends up to 32 at a time in one call of the `nbr_add_reports`
 * function (one transaction, one round trip), up to 4 batches at once.
 *
 * Consistency across instances comes from the database, never from memory:
 * - a batch first takes one advisory lock per notebook in a fixed order
 *   (reports of one notebook share hot rows: its counts, groups and
 *   sessions), so concurrent batches queue instead of deadlocking;
 * - each report locks its session's row
 *   (`FOR UPDATE`: the per-session cap and the duplicate check hold); each
 *   group of the batch is locked once, by its first report (`FOR UPDATE`; a
 *   new group is created with `INSERT … ON CONFLICT DO NOTHING` on the unique
 *   `(notebook, fingerprint)`, so concurrent first reports make one group and
 *   one "new group" notice);
 * - the batch's increments are summed in the function and written once per
 *   group, group and session pair, day and hour at the end of the
 *   transaction (atomic `count = count + n` updates and upserts, in key
 *   order);
 * - the outbox is claimed under a transaction-level advisory lock, so the
 *   hourly Slack budget and the digest are decided by one instance at a time;
 * - migrations run under an advisory lock, so instances starting together
 *   migrate once.
 *
 * Timestamps are `BIGINT` milliseconds from the injected clock; JSON values
 * are stored as text, as on SQLite.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.5";
import type { TracebackFrame } from "../types.ts";
import { errorFingerprint } from "./fingerprint.ts";
import {
  digestItem,
  GROUP_HOURS_KEPT,
  NOTEBOOK_HOURS_KEPT,
  SPIKE_LOOKBACK_HOURS,
} from "./sqlite_grouping.ts";
import type { Migration } from "./sqlite_storage.ts";
import {
  type AddReportInput,
  type AddReportResult,
  type ClaimNoticesOptions,
  type DailyCount,
  type DailyCountQuery,
  type DigestItem,
  GROUP_LIMITS,
  type GroupDay,
  type GroupDetail,
  type GroupOutcome,
  type GroupQuery,
  type GroupState,
  type GroupSummary,
  type NotebookSummary,
  type NotebookWindowStats,
  type NoticeData,
  type NoticeKind,
  type NoticeOutcome,
  type NoticePolicy,
  type NoticeRecord,
  type OutboxNotice,
  type PageQuery,
  payloadHash,
  type PruneOptions,
  type PruneResult,
  type ReportQuery,
  type Storage,
  type StoredReport,
  type StoredUsage,
  utcDay,
  utcHour,
} from "./storage.ts";

/**
 * The PostgreSQL schema's migrations, oldest first; the versions match the
 * SQLite engine's.
 *
 * @example Usage
 * ```ts
 * import { POSTGRES_MIGRATIONS } from "./postgres_storage.ts";
 *
 * console.log(POSTGRES_MIGRATIONS.map((m) => m.version)); // [1, 2, 3, 4, 5, 6, 7, 8, 9]
 * ```
 */
export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sessions, reports and per-day counts",
    sql: `
      CREATE TABLE usages (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        notebook TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        report_count INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX usages_created_at ON usages (created_at);
      CREATE TABLE reports (
        id BIGSERIAL PRIMARY KEY,
        usage_id BIGINT NOT NULL REFERENCES usages (id) ON DELETE CASCADE,
        notebook TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        occurrences INTEGER NOT NULL DEFAULT 1,
        payload_hash TEXT NOT NULL,
        error_name TEXT NOT NULL,
        error_message TEXT NOT NULL,
        traceback TEXT NOT NULL,
        first_line TEXT NOT NULL,
        execution_count BIGINT
      );
      CREATE INDEX reports_usage_hash ON reports (usage_id, payload_hash, created_at);
      CREATE INDEX reports_notebook_id ON reports (notebook, id);
      CREATE INDEX reports_created_at ON reports (created_at);
      CREATE TABLE daily_counts (
        notebook TEXT NOT NULL,
        day TEXT NOT NULL,
        reports BIGINT NOT NULL DEFAULT 0,
        sessions BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (notebook, day)
      );
      CREATE INDEX daily_counts_day ON daily_counts (day);
    `,
  },
  {
    version: 2,
    name: "error groups, hourly counts and the Slack outbox",
    sql: `
      CREATE TABLE groups (
        id BIGSERIAL PRIMARY KEY,
        notebook TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        error_name TEXT NOT NULL,
        error_message TEXT NOT NULL,
        latest TEXT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0,
        sessions BIGINT NOT NULL DEFAULT 0,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'open',
        state_changed_at BIGINT,
        first_lines TEXT NOT NULL DEFAULT '[]',
        cell_numbers TEXT NOT NULL DEFAULT '[]',
        last_notice_at BIGINT,
        last_spike_hour BIGINT,
        UNIQUE (notebook, fingerprint)
      );
      CREATE INDEX groups_notebook_last_seen ON groups (notebook, last_seen DESC, id DESC);
      CREATE INDEX groups_notebook_count ON groups (notebook, count DESC, id DESC);
      CREATE INDEX groups_notebook_state_last_seen ON groups (notebook, state, last_seen DESC, id DESC);
      CREATE TABLE group_sessions (
        group_id BIGINT NOT NULL,
        usage_id BIGINT NOT NULL,
        PRIMARY KEY (group_id, usage_id)
      );
      CREATE TABLE group_days (
        group_id BIGINT NOT NULL,
        day TEXT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, day)
      );
      CREATE TABLE group_hours (
        group_id BIGINT NOT NULL,
        hour BIGINT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, hour)
      );
      CREATE INDEX group_hours_hour ON group_hours (hour);
      CREATE TABLE notebook_hours (
        notebook TEXT NOT NULL,
        hour BIGINT NOT NULL,
        reports BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (notebook, hour)
      );
      ALTER TABLE usages ADD COLUMN last_report_at BIGINT;
      CREATE INDEX usages_notebook_last_report ON usages (notebook, last_report_at);
      ALTER TABLE reports ADD COLUMN group_id BIGINT;
      CREATE INDEX reports_group ON reports (group_id);
      CREATE TABLE notices (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        group_id BIGINT,
        created_at BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        hour BIGINT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_until BIGINT,
        claimed_hour BIGINT,
        sent_at BIGINT,
        last_error TEXT,
        data TEXT NOT NULL
      );
      CREATE INDEX notices_status_due ON notices (status, next_attempt_at);
      CREATE INDEX notices_claimed_hour ON notices (claimed_hour);
      CREATE UNIQUE INDEX notices_digest_hour ON notices (hour) WHERE kind = 'digest';
      CREATE TABLE slack_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        paused_until BIGINT NOT NULL DEFAULT 0
      );
      INSERT INTO slack_state (id, paused_until) VALUES (1, 0);
      -- Adds the values of p_add (a JSON array) that p_list (a JSON array
      -- as text) lacks, in order, while it holds fewer than p_max.
      CREATE FUNCTION nbr_merge_distinct(p_list TEXT, p_add JSONB, p_max INTEGER)
      RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS $fn$
      DECLARE
        v JSONB := p_list::jsonb;
        e JSONB;
      BEGIN
        IF p_add IS NULL THEN
          RETURN p_list;
        END IF;
        FOR e IN SELECT value FROM jsonb_array_elements(p_add) LOOP
          EXIT WHEN jsonb_array_length(v) >= p_max;
          IF NOT v @> jsonb_build_array(e) THEN
            v := v || jsonb_build_array(e);
          END IF;
        END LOOP;
        RETURN v::text;
      END
      $fn$;
      -- One report of a batch: the session (cap, count), the report row
      -- (or the duplicate counted), its group found or created and locked,
      -- a reopened group's state, the group's sessions, and the decision to
      -- notify. The group's counts and the per-day and per-hour counts are
      -- added by nbr_add_reports once per batch.
      CREATE FUNCTION nbr_add_report(
        p_uuid TEXT, p_hash TEXT, p_dedupe_since BIGINT, p_now BIGINT,
        p_max_reports DOUBLE PRECISION, p_error_name TEXT, p_error_message TEXT,
        p_traceback TEXT, p_first_line TEXT, p_execution_count BIGINT,
        p_fingerprint TEXT, p_latest TEXT, p_hour BIGINT, p_notify BOOLEAN,
        p_min_interval BIGINT, p_spike_factor DOUBLE PRECISION,
        p_spike_minimum BIGINT, p_lookback BIGINT, p_group BOOLEAN,
        p_pending BIGINT
      ) RETURNS TABLE (
        status TEXT, report_id BIGINT, group_id BIGINT, created BOOLEAN,
        reopened BOOLEAN, notice TEXT, new_session INTEGER, hour_count BIGINT,
        hourly_average DOUBLE PRECISION
      ) LANGUAGE plpgsql AS $fn$
      #variable_conflict use_column
      DECLARE
        u RECORD;
        g RECORD;
        v_dup BIGINT;
        v_report BIGINT;
        v_created BOOLEAN := false;
        v_reopened BOOLEAN := false;
        v_group BIGINT;
        v_state TEXT;
        v_new_session INTEGER := 0;
        v_hour_count BIGINT;
        v_kind TEXT;
        v_from BIGINT;
        v_past BIGINT;
        v_avg DOUBLE PRECISION;
      BEGIN
        -- The session: its row lock makes the cap and the duplicate check exact.
        SELECT id, notebook, report_count INTO u FROM usages
          WHERE uuid = p_uuid FOR UPDATE;
        IF NOT FOUND THEN
          RETURN QUERY SELECT 'unknown-session'::TEXT, NULL::BIGINT, NULL::BIGINT,
            false, false, NULL::TEXT, 0, NULL::BIGINT, NULL::DOUBLE PRECISION;
          RETURN;
        END IF;
        IF u.report_count >= p_max_reports THEN
          RETURN QUERY SELECT 'session-limit'::TEXT, NULL::BIGINT, NULL::BIGINT,
            false, false, NULL::TEXT, 0, NULL::BIGINT, NULL::DOUBLE PRECISION;
          RETURN;
        END IF;
        UPDATE usages SET report_count = report_count + 1, last_report_at = p_now
          WHERE id = u.id;
        -- The group: created once (unique key), then locked by every report.
        IF p_group THEN
          SELECT id, state, first_seen, last_notice_at, last_spike_hour INTO g
            FROM groups WHERE notebook = u.notebook AND fingerprint = p_fingerprint
            FOR UPDATE;
          IF NOT FOUND THEN
            INSERT INTO groups (notebook, fingerprint, error_name, error_message,
                latest, first_seen, last_seen)
              VALUES (u.notebook, p_fingerprint, p_error_name, p_error_message,
                p_latest, p_now, p_now)
              ON CONFLICT (notebook, fingerprint) DO NOTHING
              RETURNING id, state, first_seen, last_notice_at, last_spike_hour INTO g;
            IF FOUND THEN
              v_created := true;
            ELSE
              SELECT id, state, first_seen, last_notice_at, last_spike_hour INTO g
                FROM groups WHERE notebook = u.notebook AND fingerprint = p_fingerprint
                FOR UPDATE;
            END IF;
          END IF;
          v_group := g.id;
          v_reopened := g.state = 'resolved';
          v_state := CASE WHEN v_reopened THEN 'open' ELSE g.state END;
          IF v_reopened THEN
            UPDATE groups SET state = 'open', state_changed_at = p_now
              WHERE id = g.id;
          END IF;
        END IF;
        -- The report: a duplicate of the session within the window is counted.
        SELECT id INTO v_dup FROM reports
          WHERE usage_id = u.id AND payload_hash = p_hash AND created_at > p_dedupe_since
          ORDER BY created_at DESC LIMIT 1;
        IF v_dup IS NOT NULL THEN
          UPDATE reports SET occurrences = occurrences + 1, last_seen_at = p_now
            WHERE id = v_dup;
          v_report := v_dup;
        ELSE
          INSERT INTO reports (usage_id, notebook, created_at, last_seen_at,
              payload_hash, error_name, error_message, traceback, first_line,
              execution_count, group_id)
            VALUES (u.id, u.notebook, p_now, p_now, p_hash, p_error_name,
              p_error_message, p_traceback, p_first_line, p_execution_count, v_group)
            RETURNING id INTO v_report;
        END IF;
        IF NOT p_group THEN
          RETURN QUERY SELECT CASE WHEN v_dup IS NULL THEN 'stored' ELSE 'duplicate' END,
            v_report, NULL::BIGINT, false, false, NULL::TEXT, 0, NULL::BIGINT,
            NULL::DOUBLE PRECISION;
          RETURN;
        END IF;
        -- A lookup first: cheaper than a conflicting insert, and the
        -- session's lock keeps another report of it from racing this one.
        IF NOT EXISTS (SELECT 1 FROM group_sessions
            WHERE group_id = g.id AND usage_id = u.id) THEN
          INSERT INTO group_sessions (group_id, usage_id) VALUES (g.id, u.id)
            ON CONFLICT DO NOTHING;
          GET DIAGNOSTICS v_new_session = ROW_COUNT;
        END IF;
        -- The notice, under the group's lock: at most one per interval.
        IF p_notify AND v_state <> 'ignored' THEN
          IF NOT v_created AND NOT v_reopened THEN
            -- This hour's reports: stored ones, earlier ones of this batch, this one.
            SELECT coalesce(max(count), 0) + p_pending + 1 INTO v_hour_count
              FROM group_hours WHERE group_id = g.id AND hour = p_hour;
          END IF;
          IF v_created THEN
            v_kind := 'new';
          ELSIF v_reopened THEN
            v_kind := 'regression';
          ELSIF v_hour_count >= p_spike_minimum
              AND g.last_spike_hour IS DISTINCT FROM p_hour THEN
            v_from := greatest(p_hour - p_lookback, floor(g.first_seen / 3600000.0)::BIGINT);
            IF p_hour - v_from > 0 THEN
              SELECT coalesce(sum(count), 0) INTO v_past FROM group_hours
                WHERE group_id = g.id AND hour >= v_from AND hour < p_hour;
              v_avg := v_past::DOUBLE PRECISION / (p_hour - v_from);
              IF v_hour_count > p_spike_factor * v_avg THEN
                v_kind := 'spike';
              END IF;
            END IF;
          END IF;
          IF v_kind IS NOT NULL AND g.last_notice_at IS NOT NULL
              AND p_now - g.last_notice_at < p_min_interval THEN
            v_kind := NULL;
          END IF;
          IF v_kind IS NOT NULL THEN
            -- Queued by nbr_add_reports once the batch's counts are in.
            UPDATE groups SET last_notice_at = p_now,
              last_spike_hour = CASE WHEN v_kind = 'spike' THEN p_hour
                ELSE last_spike_hour END
              WHERE id = g.id;
          END IF;
        END IF;
        RETURN QUERY SELECT CASE WHEN v_dup IS NULL THEN 'stored' ELSE 'duplicate' END,
          v_report, g.id, v_created, v_reopened, v_kind, v_new_session,
          v_hour_count, v_avg;
      END
      $fn$;
      -- Group commit: a batch of reports in one transaction. Reports of one
      -- notebook share hot rows (its per-day and per-hour counts, its
      -- groups, its sessions), so a batch first takes one advisory lock per
      -- notebook, in a fixed order: concurrent batches of one notebook queue
      -- instead of deadlocking, batches of other notebooks run in parallel.
      -- The hot rows are then written once per batch, in key order.
      CREATE FUNCTION nbr_add_reports(
        p_batch JSONB, p_max_first_lines INTEGER, p_max_cells INTEGER,
        p_notify BOOLEAN, p_min_interval BIGINT, p_spike_factor DOUBLE PRECISION,
        p_spike_minimum BIGINT, p_lookback BIGINT, p_group BOOLEAN
      ) RETURNS TABLE (
        idx INTEGER, status TEXT, report_id BIGINT, group_id BIGINT,
        created BOOLEAN, reopened BOOLEAN, notice TEXT
      ) LANGUAGE plpgsql AS $fn$
      #variable_conflict use_column
      DECLARE
        k INTEGER;
        r RECORD;
        a RECORD;
        v_i INTEGER[] := '{}';
        v_g BIGINT[] := '{}';
        v_s INTEGER[] := '{}';
        n_i INTEGER[] := '{}';
        n_kind TEXT[] := '{}';
        n_g BIGINT[] := '{}';
        n_count BIGINT[] := '{}';
        n_avg DOUBLE PRECISION[] := '{}';
      BEGIN
        FOR k IN SELECT DISTINCT hashtext(e->>'notebook')
            FROM jsonb_array_elements(p_batch) e ORDER BY 1 LOOP
          PERFORM pg_advisory_xact_lock(74211003, k);
        END LOOP;
        FOR r IN SELECT * FROM jsonb_to_recordset(p_batch) AS x(
            i INTEGER, uuid TEXT, hash TEXT, dedupe_since BIGINT, now BIGINT,
            max_reports DOUBLE PRECISION, error_name TEXT, error_message TEXT,
            traceback TEXT, first_line TEXT, execution_count BIGINT,
            fingerprint TEXT, latest TEXT, hour BIGINT, pending BIGINT)
            ORDER BY x.i LOOP
          SELECT * INTO a FROM nbr_add_report(r.uuid, r.hash, r.dedupe_since, r.now,
              coalesce(r.max_reports, 'Infinity'::DOUBLE PRECISION), r.error_name,
              r.error_message, r.traceback, r.first_line, r.execution_count,
              r.fingerprint, r.latest, r.hour, p_notify, p_min_interval,
              p_spike_factor, p_spike_minimum, p_lookback, p_group, r.pending);
          idx := r.i;
          status := a.status;
          report_id := a.report_id;
          group_id := a.group_id;
          created := a.created;
          reopened := a.reopened;
          notice := a.notice;
          RETURN NEXT;
          IF a.status IN ('stored', 'duplicate') THEN
            v_i := v_i || r.i;
            v_g := v_g || a.group_id;
            v_s := v_s || a.new_session;
          END IF;
          IF a.notice IS NOT NULL THEN
            n_i := n_i || r.i;
            n_kind := n_kind || a.notice;
            n_g := n_g || a.group_id;
            n_count := n_count || a.hour_count;
            n_avg := n_avg || a.hourly_average;
          END IF;
        END LOOP;
        INSERT INTO daily_counts (notebook, day, reports)
          SELECT x.notebook, x.day, count(*)
          FROM jsonb_to_recordset(p_batch) AS x(i INTEGER, notebook TEXT, day TEXT)
          JOIN unnest(v_i) AS d(i) ON d.i = x.i
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (notebook, day)
          DO UPDATE SET reports = daily_counts.reports + excluded.reports;
        IF NOT p_group THEN
          RETURN;
        END IF;
        -- Each group once: counts, latest report, first lines, cell numbers.
        UPDATE groups g SET count = g.count + b.n, sessions = g.sessions + b.s,
            last_seen = greatest(g.last_seen, b.last_seen),
            error_name = b.error_name, error_message = b.error_message,
            latest = b.latest,
            first_lines = nbr_merge_distinct(g.first_lines, b.lines, p_max_first_lines),
            cell_numbers = nbr_merge_distinct(g.cell_numbers, b.cells, p_max_cells)
          FROM (
            SELECT d.g, count(*) AS n, sum(d.s) AS s, max(x.now) AS last_seen,
              (array_agg(x.error_name ORDER BY x.i DESC))[1] AS error_name,
              (array_agg(x.error_message ORDER BY x.i DESC))[1] AS error_message,
              (array_agg(x.latest ORDER BY x.i DESC))[1] AS latest,
              jsonb_agg(to_jsonb(x.first_line) ORDER BY x.i) AS lines,
              jsonb_agg(to_jsonb(x.execution_count) ORDER BY x.i)
                FILTER (WHERE x.execution_count IS NOT NULL) AS cells
            FROM jsonb_to_recordset(p_batch) AS x(i INTEGER, now BIGINT,
              error_name TEXT, error_message TEXT, latest TEXT, first_line TEXT,
              execution_count BIGINT)
            JOIN unnest(v_i, v_g, v_s) AS d(i, g, s) ON d.i = x.i
            GROUP BY d.g
          ) b
          WHERE g.id = b.g;
        INSERT INTO group_days (group_id, day, count)
          SELECT d.g, x.day, count(*)
          FROM jsonb_to_recordset(p_batch) AS x(i INTEGER, day TEXT)
          JOIN unnest(v_i, v_g) AS d(i, g) ON d.i = x.i
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (group_id, day)
          DO UPDATE SET count = group_days.count + excluded.count;
        INSERT INTO group_hours (group_id, hour, count)
          SELECT d.g, x.hour, count(*)
          FROM jsonb_to_recordset(p_batch) AS x(i INTEGER, hour BIGINT)
          JOIN unnest(v_i, v_g) AS d(i, g) ON d.i = x.i
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (group_id, hour)
          DO UPDATE SET count = group_hours.count + excluded.count;
        INSERT INTO notebook_hours (notebook, hour, reports)
          SELECT x.notebook, x.hour, count(*)
          FROM jsonb_to_recordset(p_batch) AS x(i INTEGER, notebook TEXT, hour BIGINT)
          JOIN unnest(v_i) AS d(i) ON d.i = x.i
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (notebook, hour)
          DO UPDATE SET reports = notebook_hours.reports + excluded.reports;
        -- The notices, with the group as it stands after this batch.
        INSERT INTO notices (kind, group_id, created_at, next_attempt_at, data)
          SELECT n.kind, n.g, x.now, x.now, (
              jsonb_build_object('kind', n.kind,
                'group', jsonb_build_object('id', gr.id, 'notebook', gr.notebook,
                  'fingerprint', gr.fingerprint, 'errorName', gr.error_name,
                  'errorMessage', gr.error_message, 'count', gr.count,
                  'sessions', gr.sessions, 'firstSeen', gr.first_seen,
                  'lastSeen', gr.last_seen, 'state', gr.state),
                'latest', x.latest::jsonb)
              || CASE WHEN n.kind = 'spike'
                THEN jsonb_build_object('hourCount', n.hc, 'hourlyAverage', n.avg)
                ELSE '{}'::jsonb END)::text
          FROM unnest(n_i, n_kind, n_g, n_count, n_avg) AS n(i, kind, g, hc, avg)
          JOIN jsonb_to_recordset(p_batch) AS x(i INTEGER, now BIGINT, latest TEXT)
            ON x.i = n.i
          JOIN groups gr ON gr.id = n.g
          ORDER BY n.i;
      END
      $fn$;
    `,
  },
  {
    version: 3,
    name: "no per-report index updates on groups and sessions",
    sql: `
      DROP INDEX groups_notebook_last_seen;
      DROP INDEX groups_notebook_count;
      DROP INDEX groups_notebook_state_last_seen;
      DROP INDEX usages_notebook_last_report;
      CREATE INDEX usages_notebook ON usages (notebook);
      -- Room on each page for the next versions of a row: updates stay HOT.
      ALTER TABLE groups SET (fillfactor = 50);
      ALTER TABLE usages SET (fillfactor = 70);
      ALTER TABLE group_hours SET (fillfactor = 70);
      ALTER TABLE daily_counts SET (fillfactor = 70);
      ALTER TABLE notebook_hours SET (fillfactor = 70);
    `,
  },
  {
    version: 4,
    name: "each group locked and written once per batch",
    // This version's batch function was replaced by version 5's in the same
    // release, and all pending migrations run in one transaction, so no
    // database ever runs it: it now only drops version 2's functions.
    sql: `
      DROP FUNCTION nbr_add_reports(JSONB, INTEGER, INTEGER, BOOLEAN, BIGINT,
        DOUBLE PRECISION, BIGINT, BIGINT, BOOLEAN);
      DROP FUNCTION nbr_add_report(TEXT, TEXT, BIGINT, BIGINT, DOUBLE PRECISION,
        TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, BIGINT, BOOLEAN, BIGINT,
        DOUBLE PRECISION, BIGINT, BIGINT, BOOLEAN, BIGINT);
    `,
  },
  {
    version: 5,
    name:
      "batch groups numbered by the client, latest payload built once per group",
    sql: `
      -- Present only in databases that ran version 4 before it was reduced
      -- to dropping version 2's functions.
      DROP FUNCTION IF EXISTS nbr_add_reports(JSONB, INTEGER, INTEGER, BOOLEAN,
        BIGINT, DOUBLE PRECISION, BIGINT, BIGINT, BOOLEAN);
      -- A group's latest payload, from a report's fields as the batch has them.
      CREATE FUNCTION nbr_latest(p_report JSONB, p_notebook TEXT)
      RETURNS TEXT LANGUAGE sql STABLE AS $fn$
        SELECT jsonb_build_object('error_name', p_report->'error_name',
          'error_message', p_report->'error_message',
          'traceback', (p_report->>'traceback')::jsonb,
          'first_line', p_report->'first_line',
          'execution_count', p_report->'execution_count',
          'notebook', p_notebook)::text
      $fn$;
      -- Group commit: a batch of reports in one transaction. Reports of one
      -- notebook share hot rows (its per-day and per-hour counts, its
      -- groups, its sessions), so a batch first takes one advisory lock per
      -- notebook, in a fixed order: concurrent batches of one notebook queue
      -- instead of deadlocking, batches of other notebooks run in parallel.
      -- Each report then has its session locked (the per-session cap and the
      -- duplicate check are exact) and its row stored (or its duplicate
      -- counted). Each of the batch's groups is found or created (unique
      -- key, so concurrent first reports make one group) and locked once,
      -- by its first report; the batch's increments are kept in arrays and
      -- written once per group, session pair, day and hour, in key order.
      -- The client numbers the batch's distinct (notebook, fingerprint)
      -- pairs: report field f (from 0) indexes p_fingerprints (from 1).
      -- A group's latest payload and error are built once per batch, from
      -- its last report.
      CREATE FUNCTION nbr_add_reports(
        p_batch JSONB, p_fingerprints TEXT[], p_max_first_lines INTEGER,
        p_max_cells INTEGER, p_notify BOOLEAN, p_min_interval BIGINT,
        p_spike_factor DOUBLE PRECISION, p_spike_minimum BIGINT,
        p_lookback BIGINT, p_group BOOLEAN
      ) RETURNS TABLE (
        idx INTEGER, status TEXT, report_id BIGINT, group_id BIGINT,
        created BOOLEAN, reopened BOOLEAN, notice TEXT
      ) LANGUAGE plpgsql AS $fn$
      #variable_conflict use_column
      DECLARE
        k INTEGER;
        r RECORD;
        u RECORD;
        g RECORD;
        c INTEGER;
        v_dup BIGINT;
        v_group BIGINT;
        v_kind TEXT;
        v_hour_count BIGINT;
        v_from BIGINT;
        v_past BIGINT;
        v_avg DOUBLE PRECISION;
        -- The accepted reports: notebook, day, hour, group, session.
        a_nb TEXT[] := '{}';
        a_day TEXT[] := '{}';
        a_hour BIGINT[] := '{}';
        a_g BIGINT[] := '{}';
        a_u BIGINT[] := '{}';
        -- The batch's groups (position c = f + 1): as locked, then this
        -- batch's increments, last report, new first lines and cell
        -- numbers, and the stored count of the hour last looked at.
        c_id BIGINT[] := '{}';
        c_state TEXT[] := '{}';
        c_first_seen BIGINT[] := '{}';
        c_notice_at BIGINT[] := '{}';
        c_spike_hour BIGINT[] := '{}';
        c_n BIGINT[] := '{}';
        c_last_seen BIGINT[] := '{}';
        c_last INTEGER[] := '{}';
        c_lines JSONB[] := '{}';
        c_cells JSONB[] := '{}';
        c_hour BIGINT[] := '{}';
        c_hour_count BIGINT[] := '{}';
        -- The notices to queue.
        n_i INTEGER[] := '{}';
        n_kind TEXT[] := '{}';
        n_g BIGINT[] := '{}';
        n_count BIGINT[] := '{}';
        n_avg DOUBLE PRECISION[] := '{}';
        n_now BIGINT[] := '{}';
      BEGIN
        FOR k IN SELECT DISTINCT hashtext(e->>'notebook')
            FROM jsonb_array_elements(p_batch) e ORDER BY 1 LOOP
          PERFORM pg_advisory_xact_lock(74211003, k);
        END LOOP;
        FOR r IN SELECT * FROM jsonb_to_recordset(p_batch) AS x(
            i INTEGER, uuid TEXT, hash TEXT, dedupe_since BIGINT, now BIGINT,
            max_reports DOUBLE PRECISION, error_name TEXT, error_message TEXT,
            traceback TEXT, first_line TEXT, execution_count BIGINT,
            f INTEGER, day TEXT, hour BIGINT, pending BIGINT)
            ORDER BY x.i LOOP
          idx := r.i;
          report_id := NULL;
          group_id := NULL;
          created := false;
          reopened := false;
          notice := NULL;
          v_group := NULL;
          -- The session: its row lock makes the cap and the duplicate check exact.
          SELECT id, notebook, report_count INTO u FROM usages
            WHERE uuid = r.uuid FOR UPDATE;
          IF NOT FOUND THEN
            status := 'unknown-session';
            RETURN NEXT;
            CONTINUE;
          END IF;
          IF u.report_count >= coalesce(r.max_reports, 'Infinity'::DOUBLE PRECISION) THEN
            status := 'session-limit';
            RETURN NEXT;
            CONTINUE;
          END IF;
          UPDATE usages SET report_count = report_count + 1, last_report_at = r.now
            WHERE id = u.id;
          a_nb := a_nb || u.notebook;
          a_day := a_day || r.day;
          a_hour := a_hour || r.hour;
          IF p_group THEN
            -- The group: found or created, and locked, by its first report
            -- in the batch.
            c := r.f + 1;
            IF c_id[c] IS NULL THEN
              SELECT id, state, first_seen, last_notice_at, last_spike_hour INTO g
                FROM groups WHERE notebook = u.notebook AND fingerprint = p_fingerprints[c]
                FOR UPDATE;
              IF NOT FOUND THEN
                INSERT INTO groups (notebook, fingerprint, error_name, error_message,
                    latest, first_seen, last_seen)
                  VALUES (u.notebook, p_fingerprints[c], r.error_name, r.error_message,
                    nbr_latest(p_batch->r.i, u.notebook), r.now, r.now)
                  ON CONFLICT (notebook, fingerprint) DO NOTHING
                  RETURNING id, state, first_seen, last_notice_at, last_spike_hour INTO g;
                IF FOUND THEN
                  created := true;
                ELSE
                  SELECT id, state, first_seen, last_notice_at, last_spike_hour INTO g
                    FROM groups WHERE notebook = u.notebook AND fingerprint = p_fingerprints[c]
                    FOR UPDATE;
                END IF;
              END IF;
              IF g.state = 'resolved' THEN
                reopened := true;
                UPDATE groups SET state = 'open', state_changed_at = r.now
                  WHERE id = g.id;
              END IF;
              c_id[c] := g.id;
              c_state[c] := CASE WHEN reopened THEN 'open' ELSE g.state END;
              c_first_seen[c] := g.first_seen;
              c_notice_at[c] := g.last_notice_at;
              c_spike_hour[c] := g.last_spike_hour;
              c_n[c] := 0;
              c_last_seen[c] := r.now;
              c_lines[c] := '[]'::jsonb;
              c_cells[c] := '[]'::jsonb;
            END IF;
            v_group := c_id[c];
            group_id := v_group;
            c_n[c] := c_n[c] + 1;
            c_last_seen[c] := greatest(c_last_seen[c], r.now);
            c_last[c] := r.i;
            IF NOT c_lines[c] @> jsonb_build_array(r.first_line) THEN
              c_lines[c] := c_lines[c] || jsonb_build_array(r.first_line);
            END IF;
            IF r.execution_count IS NOT NULL
                AND NOT c_cells[c] @> jsonb_build_array(r.execution_count) THEN
              c_cells[c] := c_cells[c] || jsonb_build_array(r.execution_count);
            END IF;
            a_g := a_g || c_id[c];
            a_u := a_u || u.id;
          END IF;
          -- The report: a duplicate of the session within the window is counted.
          SELECT id INTO v_dup FROM reports
            WHERE usage_id = u.id AND payload_hash = r.hash AND created_at > r.dedupe_since
            ORDER BY created_at DESC LIMIT 1;
          IF v_dup IS NOT NULL THEN
            UPDATE reports SET occurrences = occurrences + 1, last_seen_at = r.now
              WHERE id = v_dup;
            report_id := v_dup;
            status := 'duplicate';
          ELSE
            INSERT INTO reports (usage_id, notebook, created_at, last_seen_at,
                payload_hash, error_name, error_message, traceback, first_line,
                execution_count, group_id)
              VALUES (u.id, u.notebook, r.now, r.now, r.hash, r.error_name,
                r.error_message, r.traceback, r.first_line, r.execution_count,
                v_group)
              RETURNING id INTO report_id;
            status := 'stored';
          END IF;
          -- The notice, under the group's lock: at most one per interval.
          IF p_group AND p_notify AND c_state[c] <> 'ignored'
              AND (c_notice_at[c] IS NULL OR r.now - c_notice_at[c] >= p_min_interval) THEN
            v_kind := NULL;
            v_hour_count := NULL;
            v_avg := NULL;
            IF created THEN
              v_kind := 'new';
            ELSIF reopened THEN
              v_kind := 'regression';
            ELSIF c_spike_hour[c] IS DISTINCT FROM r.hour THEN
              -- This hour's reports: stored ones, earlier ones of this batch, this one.
              IF c_hour[c] IS DISTINCT FROM r.hour THEN
                SELECT coalesce(max(count), 0) INTO v_past FROM group_hours h
                  WHERE h.group_id = c_id[c] AND h.hour = r.hour;
                c_hour[c] := r.hour;
                c_hour_count[c] := v_past;
              END IF;
              v_hour_count := c_hour_count[c] + r.pending + 1;
              IF v_hour_count >= p_spike_minimum THEN
                v_from := greatest(r.hour - p_lookback,
                  floor(c_first_seen[c] / 3600000.0)::BIGINT);
                IF r.hour - v_from > 0 THEN
                  SELECT coalesce(sum(count), 0) INTO v_past FROM group_hours h
                    WHERE h.group_id = c_id[c] AND h.hour >= v_from AND h.hour < r.hour;
                  v_avg := v_past::DOUBLE PRECISION / (r.hour - v_from);
                  IF v_hour_count > p_spike_factor * v_avg THEN
                    v_kind := 'spike';
                  END IF;
                END IF;
              END IF;
            END IF;
            IF v_kind IS NOT NULL THEN
              notice := v_kind;
              c_notice_at[c] := r.now;
              IF v_kind = 'spike' THEN
                c_spike_hour[c] := r.hour;
              END IF;
              UPDATE groups SET last_notice_at = r.now,
                last_spike_hour = CASE WHEN v_kind = 'spike' THEN r.hour
                  ELSE last_spike_hour END
                WHERE id = c_id[c];
              n_i := n_i || r.i;
              n_kind := n_kind || v_kind;
              n_g := n_g || c_id[c];
              n_count := n_count || v_hour_count;
              n_avg := n_avg || v_avg;
              n_now := n_now || r.now;
            END IF;
          END IF;
          RETURN NEXT;
        END LOOP;
        INSERT INTO daily_counts (notebook, day, reports)
          SELECT d.nb, d.day, count(*) FROM unnest(a_nb, a_day) AS d(nb, day)
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (notebook, day)
          DO UPDATE SET reports = daily_counts.reports + excluded.reports;
        IF NOT p_group OR coalesce(array_length(a_g, 1), 0) = 0 THEN
          RETURN;
        END IF;
        -- Each group once: counts, new sessions (each pair inserted once,
        -- looked up first: cheaper than a conflicting insert), latest
        -- report, first lines, cell numbers.
        WITH s AS (
          INSERT INTO group_sessions (group_id, usage_id)
            SELECT DISTINCT p.g, p.u FROM unnest(a_g, a_u) AS p(g, u)
            WHERE NOT EXISTS (SELECT 1 FROM group_sessions x
              WHERE x.group_id = p.g AND x.usage_id = p.u)
            ORDER BY 1, 2
            ON CONFLICT DO NOTHING
            RETURNING group_id AS g
        ), ns AS (
          SELECT s.g, count(*) AS n FROM s GROUP BY s.g
        )
        UPDATE groups gr SET count = gr.count + b.n,
            sessions = gr.sessions + coalesce(ns.n, 0),
            last_seen = greatest(gr.last_seen, b.last_seen),
            error_name = b.e->>'error_name', error_message = b.e->>'error_message',
            latest = nbr_latest(b.e, gr.notebook),
            -- Merged only when something may be added (a full list, or
            -- values all seen, stays as it is).
            first_lines = CASE WHEN gr.first_lines::jsonb @> b.lines
                OR jsonb_array_length(gr.first_lines::jsonb) >= p_max_first_lines
              THEN gr.first_lines
              ELSE nbr_merge_distinct(gr.first_lines, b.lines, p_max_first_lines) END,
            cell_numbers = CASE WHEN gr.cell_numbers::jsonb @> b.cells
                OR jsonb_array_length(gr.cell_numbers::jsonb) >= p_max_cells
              THEN gr.cell_numbers
              ELSE nbr_merge_distinct(gr.cell_numbers, b.cells, p_max_cells) END
          FROM (SELECT x.g, x.n, x.last_seen, p_batch->x.last AS e, x.lines, x.cells
              FROM unnest(c_id, c_n, c_last_seen, c_last, c_lines, c_cells)
                AS x(g, n, last_seen, last, lines, cells)
              WHERE x.g IS NOT NULL) AS b
            LEFT JOIN ns ON ns.g = b.g
          WHERE gr.id = b.g;
        INSERT INTO group_days (group_id, day, count)
          SELECT d.g, d.day, count(*) FROM unnest(a_g, a_day) AS d(g, day)
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (group_id, day)
          DO UPDATE SET count = group_days.count + excluded.count;
        INSERT INTO group_hours (group_id, hour, count)
          SELECT d.g, d.hour, count(*) FROM unnest(a_g, a_hour) AS d(g, hour)
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (group_id, hour)
          DO UPDATE SET count = group_hours.count + excluded.count;
        INSERT INTO notebook_hours (notebook, hour, reports)
          SELECT d.nb, d.hour, count(*) FROM unnest(a_nb, a_hour) AS d(nb, hour)
          GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (notebook, hour)
          DO UPDATE SET reports = notebook_hours.reports + excluded.reports;
        IF coalesce(array_length(n_kind, 1), 0) = 0 THEN
          RETURN;
        END IF;
        -- The notices, with the group as it stands after this batch.
        INSERT INTO notices (kind, group_id, created_at, next_attempt_at, data)
          SELECT n.kind, n.g, n.now, n.now, (
              jsonb_build_object('kind', n.kind,
                'group', jsonb_build_object('id', gr.id, 'notebook', gr.notebook,
                  'fingerprint', gr.fingerprint, 'errorName', gr.error_name,
                  'errorMessage', gr.error_message, 'count', gr.count,
                  'sessions', gr.sessions, 'firstSeen', gr.first_seen,
                  'lastSeen', gr.last_seen, 'state', gr.state),
                'latest', nbr_latest(p_batch->n.i, gr.notebook)::jsonb)
              || CASE WHEN n.kind = 'spike'
                THEN jsonb_build_object('hourCount', n.hc, 'hourlyAverage', n.avg)
                ELSE '{}'::jsonb END)::text
          FROM unnest(n_i, n_kind, n_g, n_count, n_avg, n_now)
              WITH ORDINALITY AS n(i, kind, g, hc, avg, now, o)
            JOIN groups gr ON gr.id = n.g
          ORDER BY n.o;
      END
      $fn$;
    `,
  },
  {
    // SQLite dropped its (usage_id, payload_hash, created_at) index and finds
    // duplicates in memory; PostgreSQL's batch function still looks them up
    // through that index (each instance sees the others' reports), so it
    // stays, and this version only keeps both engines' versions aligned.
    version: 6,
    name: "duplicates found without the (session, payload hash) index",
    sql: "",
  },
  {
    // SQLite's version 6 dropped its only index leading with usage_id;
    // PostgreSQL kept reports_usage_hash (usage_id, …), which serves.
    version: 7,
    name: "a session's reports found through an index on the session",
    sql: "",
  },
  {
    // SQLite writes counts behind the reports; PostgreSQL's batch function
    // writes them with each batch.
    version: 8,
    name: "counts written behind the reports, up to a recorded report",
    sql: "",
  },
  {
    // SQLite dropped its index on created_at; PostgreSQL keeps its own.
    version: 9,
    name: "reports pruned in arrival order, without the index on created_at",
    sql: "",
  },
];

/**
 * Options of {@linkcode openPostgresStorage}.
 *
 * @example Usage
 * ```ts
 * import type { PostgresStorageOptions } from "./postgres_storage.ts";
 *
 * const options: PostgresStorageOptions = { schema: "nbr", maxConnections: 20 };
 * ```
 */
export interface PostgresStorageOptions {
  /**
   * The schema holding the tables, created if missing. The URL's
   * `search_path` parameter works too.
   * @default {undefined} (the server's default search path, usually `public`)
   */
  schema?: string;
  /** Connections in the pool. @default {10} */
  maxConnections?: number;
  /**
   * When set, reports queue Slack notices in the outbox (new groups,
   * regressions, spikes) in the same transaction. @default {undefined}
   */
  notices?: NoticePolicy;
  /**
   * Group reports (fingerprint, group counts, notices). `false` stores bare
   * reports only: for measuring what grouping costs. @default {true}
   */
  grouping?: boolean;
}

const SCHEMA_NAME_REGEXP = /^[a-z_][a-z0-9_]{0,62}$/;
/** Advisory lock keys (arbitrary constants, namespaced by schema where it matters). */
const MIGRATION_LOCK = 74_211_001;
const OUTBOX_LOCK = 74_211_002;
/** Session uuids whose notebook is remembered. */
const NOTEBOOK_CACHE_SIZE = 10_000;
/** Reports stored in one transaction at most (group commit). */
const MAX_BATCH = 32;
/** Batches sent at once. */
const MAX_BATCHES_IN_FLIGHT = 4;
/**
 * Batches holding one notebook's reports sent at once: they queue for the
 * notebook's lock in the database anyway, so one running and one waiting
 * (its round trip hidden) is enough; the notebook's other reports wait here
 * and make the next batch larger, which spreads its fixed costs (the
 * notebook's and its groups' hot rows, written once per batch) thinner.
 */
const MAX_BATCHES_PER_NOTEBOOK = 2;

interface QueuedReport {
  input: AddReportInput;
  notebook: string;
  resolve: (row: Row) => void;
  reject: (error: unknown) => void;
}

type Sql = postgres.Sql<Record<string, never>>;
// deno-lint-ignore no-explicit-any
type Tx = postgres.TransactionSql<any>;
type Row = Record<string, unknown>;

/**
 * Opens a PostgreSQL store and brings its schema up to date.
 *
 * @param url A `postgres://` or `postgresql://` URL.
 * @param options The schema, the pool size and the notice policy.
 * @returns The store.
 * @throws {TypeError} When the URL or the schema name is invalid.
 * @throws {Error} When the server cannot be reached or its schema is newer than this code.
 *
 * @example Usage
 * ```ts ignore
 * import { openPostgresStorage } from "./postgres_storage.ts";
 *
 * const storage = await openPostgresStorage("postgres://nbr@127.0.0.1:5432/nbr");
 * await storage.close();
 * ```
 */
export async function openPostgresStorage(
  url: string,
  options: PostgresStorageOptions = {},
): Promise<PostgresStorage> {
  const storage = new PostgresStorage(url, options);
  try {
    await storage.migrate();
  } catch (error) {
    await storage.close();
    throw error;
  }
  return storage;
}

/**
 * Drops a schema and everything in it (tests use one schema each).
 *
 * @param url A `postgres://` URL.
 * @param schema The schema's name.
 * @returns Resolves once dropped.
 * @throws {TypeError} When the schema name is invalid.
 *
 * @example Usage
 * ```ts ignore
 * import { dropPostgresSchema } from "./postgres_storage.ts";
 *
 * await dropPostgresSchema("postgres://postgres@127.0.0.1:55432/nbr_test", "nbr_test_1");
 * ```
 */
export async function dropPostgresSchema(
  url: string,
  schema: string,
): Promise<void> {
  checkSchema(schema);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function checkSchema(schema: string): string {
  if (!SCHEMA_NAME_REGEXP.test(schema)) {
    throw new TypeError(
      `Invalid PostgreSQL schema name: expected lowercase letters, digits and _, got ${
        JSON.stringify(schema)
      }`,
    );
  }
  return schema;
}

/**
 * The PostgreSQL implementation of {@linkcode Storage}. Use
 * {@linkcode openPostgresStorage} to create one.
 *
 * @example Usage
 * ```ts ignore
 * import { openPostgresStorage } from "./postgres_storage.ts";
 *
 * const storage = await openPostgresStorage("postgres://nbr@127.0.0.1/nbr", { schema: "nbr" });
 * const usage = await storage.createUsage("demo", Date.now());
 * await storage.close();
 * ```
 */
export class PostgresStorage implements Storage {
  /** The engine's name. */
  readonly engine = "postgres";
  #sql: Sql;
  #schema: string | undefined;
  #policy: NoticePolicy | undefined;
  #grouping: boolean;
  #closed = false;
  #notebooks = new Map<string, string>();
  #queue: QueuedReport[] = [];
  #inFlight = 0;
  /** Batches in flight per notebook they hold reports of. */
  #notebookBatches = new Map<string, number>();

  /**
   * Creates the connection pool (connections open lazily); call
   * {@linkcode migrate} before use, or use {@linkcode openPostgresStorage}.
   *
   * @param url A `postgres://` or `postgresql://` URL.
   * @param options The schema, the pool size and the notice policy.
   * @throws {TypeError} When the URL or the schema name is invalid.
   */
  constructor(url: string, options: PostgresStorageOptions = {}) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError("Invalid PostgreSQL URL: it does not parse");
    }
    if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
      throw new TypeError(
        `Invalid PostgreSQL URL: expected postgres:// or postgresql://, got ${parsed.protocol}//`,
      );
    }
    const fromUrl = parsed.searchParams.get("search_path") ?? undefined;
    const schema = options.schema ?? fromUrl;
    this.#schema = schema === undefined ? undefined : checkSchema(schema);
    this.#policy = options.notices;
    this.#grouping = options.grouping ?? true;
    this.#sql = postgres(url, {
      max: options.maxConnections ?? 10,
      onnotice: () => {},
      idle_timeout: 60,
      connection: this.#schema ? { search_path: this.#schema } : {},
      types: {
        bigint: {
          to: 20,
          from: [20],
          serialize: (value: number) => String(value),
          parse: (value: string) => Number(value),
        },
      },
    }) as unknown as Sql;
  }

  #q(
    text: string,
    params: unknown[] = [],
    tx?: Tx,
    internal = false,
  ): Promise<Row[]> {
    if (this.#closed && !tx && !internal) {
      return Promise.reject(new Error("Cannot query: the storage is closed"));
    }
    // deno-lint-ignore no-explicit-any
    const runner: any = tx ?? this.#sql;
    return runner.unsafe(text, params, { prepare: true }) as Promise<Row[]>;
  }

  #tx<T>(run: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new Error("Cannot write: the storage is closed"));
    }
    // deno-lint-ignore no-explicit-any
    return this.#sql.begin(run as any) as Promise<T>;
  }

  /**
   * Creates the schema if needed and applies the missing migrations, under
   * an advisory lock so that instances starting together migrate once.
   *
   * @returns The schema version after migrating.
   * @throws {Error} When the database's schema is newer than this code.
   */
  async migrate(): Promise<number> {
    if (this.#schema) {
      await this.#q(`CREATE SCHEMA IF NOT EXISTS "${this.#schema}"`).catch(
        async (error) => {
          // Two instances creating it together: one wins, the other sees it.
          const rows = await this.#q(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            [this.#schema],
          );
          if (rows.length === 0) throw error;
        },
      );
    }
    return await this.#tx(async (tx) => {
      await this.#q(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        [MIGRATION_LOCK],
        tx,
      );
      await this.#q(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
          version INTEGER PRIMARY KEY,
          name TEXT NOT NULL,
          applied_at BIGINT NOT NULL
        )`,
        [],
        tx,
      );
      const [row] = await this.#q(
        "SELECT coalesce(max(version), 0) AS v FROM schema_migrations",
        [],
        tx,
      );
      const current = Number(row!.v);
      const known = POSTGRES_MIGRATIONS[POSTGRES_MIGRATIONS.length - 1]!
        .version;
      if (current > known) {
        throw new Error(
          `Cannot open database: its schema version is ${current}, newer than this server's ${known}`,
        );
      }
      for (const migration of POSTGRES_MIGRATIONS) {
        if (migration.version <= current) continue;
        await tx.unsafe(migration.sql);
        await this.#q(
          "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
          [migration.version, migration.name, Date.now()],
          tx,
        );
      }
      return known;
    });
  }

  /** The schema version the database is at. */
  async schemaVersion(): Promise<number> {
    const [row] = await this.#q(
      "SELECT coalesce(max(version), 0) AS v FROM schema_migrations",
    );
    return Number(row!.v);
  }

  /** Creates a session for a notebook and counts it for the day. */
  async createUsage(notebook: string, now: number): Promise<StoredUsage> {
    const uuid = crypto.randomUUID().replaceAll("-", "");
    const [row] = await this.#q(
      `WITH u AS (
         INSERT INTO usages (uuid, notebook, created_at) VALUES ($1, $2, $3) RETURNING id
       ), c AS (
         INSERT INTO daily_counts (notebook, day, sessions) VALUES ($2, $4, 1)
         ON CONFLICT (notebook, day) DO UPDATE SET sessions = daily_counts.sessions + 1
       )
       SELECT id FROM u`,
      [uuid, notebook, now, utcDay(now)],
    );
    return {
      id: Number(row!.id),
      uuid,
      notebook,
      createdAt: now,
      reportCount: 0,
    };
  }

  /** The session with this uuid, or `undefined`. */
  async getUsage(uuid: string): Promise<StoredUsage | undefined> {
    const [row] = await this.#q(
      "SELECT id, uuid, notebook, created_at, report_count FROM usages WHERE uuid = $1",
      [uuid],
    );
    return row ? usageFromRow(row) : undefined;
  }

  /** A page of sessions, oldest first. */
  async listUsages(query: PageQuery): Promise<StoredUsage[]> {
    const rows = await this.#q(
      `SELECT id, uuid, notebook, created_at, report_count FROM usages
       ORDER BY id LIMIT $1 OFFSET $2`,
      [Math.max(0, query.limit), Math.max(0, query.skip)],
    );
    return rows.map(usageFromRow);
  }

  /**
   * Stores a report (or counts a duplicate), groups it and queues its notice
   * in the same transaction (group commit: one `nbr_add_reports` call for
   * the reports queued together, so row locks are held for microseconds, not
   * for round trips). Resolves after the COMMIT.
   */
  async addReport(input: AddReportInput): Promise<AddReportResult> {
    const notebook = await this.#notebookOf(input.usageUuid);
    if (notebook === undefined) return { status: "unknown-session" };
    if (this.#closed) throw new Error("Cannot write: the storage is closed");
    const row = await new Promise<Row>((resolve, reject) => {
      this.#queue.push({ input, notebook, resolve, reject });
      this.#drain();
    });
    return await this.#result(input, notebook, row);
  }

  /**
   * Sends queued reports in batches, a few batches in flight at a time and
   * at most {@linkcode MAX_BATCHES_PER_NOTEBOOK} per notebook; each
   * notebook's reports keep their order.
   */
  #drain(): void {
    while (this.#queue.length > 0 && this.#inFlight < MAX_BATCHES_IN_FLIGHT) {
      const batch: QueuedReport[] = [];
      const waiting: QueuedReport[] = [];
      for (const item of this.#queue) {
        if (
          batch.length < MAX_BATCH &&
          (this.#notebookBatches.get(item.notebook) ?? 0) <
            MAX_BATCHES_PER_NOTEBOOK
        ) {
          batch.push(item);
        } else {
          waiting.push(item);
        }
      }
      if (batch.length === 0) return;
      this.#queue = waiting;
      const notebooks = new Set(batch.map((item) => item.notebook));
      for (const notebook of notebooks) {
        this.#notebookBatches.set(
          notebook,
          (this.#notebookBatches.get(notebook) ?? 0) + 1,
        );
      }
      this.#inFlight++;
      this.#sendBatch(batch).finally(() => {
        this.#inFlight--;
        for (const notebook of notebooks) {
          const n = this.#notebookBatches.get(notebook)! - 1;
          if (n === 0) this.#notebookBatches.delete(notebook);
          else this.#notebookBatches.set(notebook, n);
        }
        this.#drain();
      });
    }
  }

  async #sendBatch(batch: QueuedReport[]): Promise<void> {
    try {
      const rows = await this.#callBatch(batch);
      for (const [i, item] of batch.entries()) {
        const row = rows.find((r) => Number(r.idx) === i);
        if (row) item.resolve(row);
        else item.reject(new Error(`No result for report ${i} of a batch`));
      }
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      // One bad report (or a deadlock) must not fail the others: one by one.
      await Promise.all(batch.map((item) => this.#sendBatch([item])));
    }
  }

  #callBatch(batch: QueuedReport[]): Promise<Row[]> {
    const policy = this.#policy;
    const seen = new Map<string, number>();
    // The batch's distinct (notebook, fingerprint) pairs, numbered from 0.
    const groups = new Map<string, number>();
    const fingerprints: string[] = [];
    const elements = batch.map(({ input, notebook }, i) => {
      const p = input.payload;
      const now = input.now;
      let f = 0;
      let pending = 0;
      if (this.#grouping) {
        const fingerprint = errorFingerprint({ ...p, notebook });
        const group = `${notebook}\u0000${fingerprint}`;
        f = groups.get(group) ?? -1;
        if (f < 0) {
          f = fingerprints.push(fingerprint) - 1;
          groups.set(group, f);
        }
        // Earlier reports of this batch in the same group and hour, for spikes.
        const key = `${f}\u0000${utcHour(now)}`;
        pending = seen.get(key) ?? 0;
        seen.set(key, pending + 1);
      }
      return {
        pending,
        i,
        f,
        notebook,
        uuid: input.usageUuid,
        hash: payloadHash(p),
        dedupe_since: now - input.dedupeWindowMs,
        now,
        max_reports: Number.isFinite(input.maxReportsPerSession)
          ? input.maxReportsPerSession
          : null,
        error_name: p.error_name,
        error_message: p.error_message,
        traceback: JSON.stringify(p.traceback),
        first_line: p.first_line,
        execution_count: p.execution_count,
        day: utcDay(now),
        hour: utcHour(now),
      };
    });
    return this.#q(
      `SELECT * FROM nbr_add_reports(($1::text)::jsonb, $2::text[], $3, $4, $5, $6, $7, $8, $9, $10)`,
      [
        JSON.stringify(elements),
        fingerprints,
        GROUP_LIMITS.firstLines,
        GROUP_LIMITS.cellNumbers,
        policy !== undefined,
        policy?.minGroupIntervalMs ?? 0,
        policy?.spikeFactor ?? 0,
        policy?.spikeMinimum ?? 0,
        SPIKE_LOOKBACK_HOURS,
        this.#grouping,
      ],
      undefined,
      true,
    );
  }

  async #result(
    input: AddReportInput,
    notebook: string,
    row: Row,
  ): Promise<AddReportResult> {
    const p = input.payload;
    const now = input.now;
    const status = String(row.status);
    if (status === "unknown-session") return { status };
    if (status === "session-limit") {
      return { status, limit: input.maxReportsPerSession };
    }
    const group: GroupOutcome | undefined = row.group_id === null
      ? undefined
      : {
        id: Number(row.group_id),
        created: Boolean(row.created),
        reopened: Boolean(row.reopened),
      };
    if (group && row.notice !== null) {
      group.notice = String(row.notice) as NoticeKind;
    }
    const reportId = Number(row.report_id);
    if (status === "duplicate") {
      const [stored] = await this.#q(
        `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id
         WHERE r.id = $1`,
        [reportId],
        undefined,
        true,
      );
      return { status: "duplicate", report: reportFromRow(stored!), group };
    }
    return {
      status: "stored",
      group,
      report: {
        id: reportId,
        usageUuid: input.usageUuid,
        createdAt: now,
        lastSeenAt: now,
        occurrences: 1,
        error_name: p.error_name,
        error_message: p.error_message,
        traceback: p.traceback,
        first_line: p.first_line,
        execution_count: p.execution_count,
        notebook,
      },
    };
  }

  /** A session's notebook (sessions never change notebook, so it is cached). */
  async #notebookOf(uuid: string): Promise<string | undefined> {
    const cached = this.#notebooks.get(uuid);
    if (cached !== undefined) return cached;
    const [row] = await this.#q(
      "SELECT notebook FROM usages WHERE uuid = $1",
      [uuid],
    );
    if (!row) return undefined;
    const notebook = String(row.notebook);
    if (this.#notebooks.size >= NOTEBOOK_CACHE_SIZE) {
      this.#notebooks.delete(this.#notebooks.keys().next().value!);
    }
    this.#notebooks.set(uuid, notebook);
    return notebook;
  }

  /** The reports of the sessions with these uuids, oldest first. */
  async listUsageReports(uuids: string[]): Promise<StoredReport[]> {
    if (uuids.length === 0) return [];
    const rows = await this.#q(
      `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id
       WHERE u.uuid = ANY($1::text[]) ORDER BY r.id`,
      [uuids],
    );
    return rows.map(reportFromRow);
  }

  /** A page of reports. */
  async listReports(query: ReportQuery): Promise<StoredReport[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.notebook !== undefined) {
      params.push(query.notebook);
      where.push(`r.notebook = $${params.length}`);
    }
    if (query.since !== undefined) {
      params.push(query.since);
      where.push(`r.created_at >= $${params.length}`);
    }
    if (query.until !== undefined) {
      params.push(query.until);
      where.push(`r.created_at < $${params.length}`);
    }
    const order = query.order === "desc" ? "DESC" : "ASC";
    params.push(Math.max(0, query.limit), Math.max(0, query.skip));
    const rows = await this.#q(
      `SELECT ${REPORT_COLUMNS} FROM reports r JOIN usages u ON u.id = r.usage_id
       ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY r.id ${order} LIMIT $${
        params.length - 1
      } OFFSET $${params.length}`,
      params,
    );
    return rows.map(reportFromRow);
  }

  /** Per-day counts, ordered by day then notebook. */
  async dailyCounts(query: DailyCountQuery): Promise<DailyCount[]> {
    const params: unknown[] = [query.fromDay, query.toDay];
    let filter = "";
    if (query.notebook !== undefined) {
      params.push(query.notebook);
      filter = "AND notebook = $3";
    }
    const rows = await this.#q(
      `SELECT day, notebook, reports, sessions FROM daily_counts
       WHERE day >= $1 AND day <= $2 ${filter} ORDER BY day, notebook`,
      params,
    );
    return rows.map((r) => ({
      day: String(r.day),
      notebook: String(r.notebook),
      reports: Number(r.reports),
      sessions: Number(r.sessions),
    }));
  }

  /** Every notebook with its totals, by name. */
  async notebooks(): Promise<NotebookSummary[]> {
    const rows = await this.#q(
      `SELECT c.notebook AS notebook, sum(c.reports)::bigint AS reports,
         sum(c.sessions)::bigint AS sessions,
         (SELECT r.created_at FROM reports r WHERE r.notebook = c.notebook
           ORDER BY r.id DESC LIMIT 1) AS last
       FROM daily_counts c GROUP BY c.notebook ORDER BY c.notebook`,
    );
    return rows.map((r) => ({
      notebook: String(r.notebook),
      reports: Number(r.reports),
      sessions: Number(r.sessions),
      lastReportAt: r.last === null ? null : Number(r.last),
    }));
  }

  /** The bytes of this schema's tables and indexes. */
  async dataBytes(): Promise<number> {
    const [row] = await this.#q(
      `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = current_schema() AND c.relkind = 'r'`,
    );
    return Number(row!.bytes);
  }

  /**
   * Deletes old raw reports and enforces the size cap; per-day counts stay.
   * PostgreSQL reuses deleted rows' space after (auto)vacuum rather than
   * shrinking files, so past the cap it deletes the oldest share of reports
   * in proportion to the excess, once per call.
   */
  async prune(options: PruneOptions): Promise<PruneResult> {
    const cutoff = options.now - options.maxAgeMs;
    const hour = utcHour(options.now);
    let expiredReports = 0;
    for (;;) {
      const rows = await this.#q(
        `DELETE FROM reports WHERE id IN
         (SELECT id FROM reports WHERE created_at < $1 ORDER BY created_at LIMIT 5000)
         RETURNING 1`,
        [cutoff],
      );
      expiredReports += rows.length;
      if (rows.length < 5000) break;
    }
    const usages = await this.#q(
      `DELETE FROM usages WHERE created_at < $1
       AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.usage_id = usages.id) RETURNING 1`,
      [cutoff],
    );
    await this.#q("DELETE FROM group_hours WHERE hour < $1", [
      hour - GROUP_HOURS_KEPT,
    ]);
    await this.#q("DELETE FROM notebook_hours WHERE hour < $1", [
      hour - NOTEBOOK_HOURS_KEPT,
    ]);
    await this.#q(
      `DELETE FROM notices WHERE status IN ('sent', 'digested', 'failed')
       AND created_at < $1`,
      [options.now - 30 * 86_400_000],
    );
    let evictedReports = 0;
    const bytes = await this.dataBytes();
    if (bytes > options.maxBytes) {
      const [count] = await this.#q("SELECT count(*) AS n FROM reports");
      const total = Number(count!.n);
      const n = Math.min(
        total,
        Math.max(100, Math.ceil(total * (bytes - options.maxBytes) / bytes)),
      );
      if (n > 0) {
        const rows = await this.#q(
          `DELETE FROM reports WHERE id IN
           (SELECT id FROM reports ORDER BY created_at, id LIMIT $1) RETURNING 1`,
          [n],
        );
        evictedReports = rows.length;
      }
    }
    return {
      expiredReports,
      expiredUsages: usages.length,
      evictedReports,
      bytes: await this.dataBytes(),
    };
  }

  /** A page of a notebook's groups, with the total that match. */
  async listGroups(
    query: GroupQuery,
  ): Promise<{ total: number; groups: GroupSummary[] }> {
    const params: unknown[] = [query.notebook];
    const where = ["notebook = $1"];
    if (query.state !== undefined) {
      params.push(query.state);
      where.push(`state = $${params.length}`);
    }
    const text = query.text?.trim();
    if (text) {
      params.push(text.toLowerCase());
      where.push(
        `(strpos(lower(error_name), $${params.length}) > 0 OR strpos(lower(error_message), $${params.length}) > 0)`,
      );
    }
    const filter = where.join(" AND ");
    const order = query.sort === "count"
      ? "count DESC, id DESC"
      : "last_seen DESC, id DESC";
    const [total] = await this.#q(
      `SELECT count(*) AS n FROM groups WHERE ${filter}`,
      params,
    );
    const rows = await this.#q(
      `SELECT ${GROUP_COLUMNS} FROM groups WHERE ${filter}
       ORDER BY ${order} LIMIT $${params.length + 1} OFFSET $${
        params.length + 2
      }`,
      [...params, Math.max(0, query.limit), Math.max(0, query.skip)],
    );
    return { total: Number(total!.n), groups: rows.map(groupFromRow) };
  }

  /** One group with its details, or `undefined`. */
  async getGroup(id: number): Promise<GroupDetail | undefined> {
    if (!Number.isSafeInteger(id)) return undefined;
    const [row] = await this.#q(
      `SELECT ${GROUP_COLUMNS}, latest, first_lines, cell_numbers FROM groups WHERE id = $1`,
      [id],
    );
    if (!row) return undefined;
    return {
      ...groupFromRow(row),
      latest: JSON.parse(String(row.latest)),
      firstLines: JSON.parse(String(row.first_lines)),
      cellNumbers: JSON.parse(String(row.cell_numbers)),
    };
  }

  /** Per-day counts of these groups, by group then day. */
  async groupDailyCounts(
    groupIds: number[],
    fromDay: string,
    toDay: string,
  ): Promise<GroupDay[]> {
    const ids = [...new Set(groupIds)].filter(Number.isSafeInteger);
    if (ids.length === 0) return [];
    const rows = await this.#q(
      `SELECT group_id, day, count FROM group_days
       WHERE group_id = ANY($1::bigint[]) AND day >= $2 AND day <= $3
       ORDER BY group_id, day`,
      [ids, fromDay, toDay],
    );
    return rows.map((r) => ({
      groupId: Number(r.group_id),
      day: String(r.day),
      count: Number(r.count),
    }));
  }

  /** Every notebook's window statistics, by name. */
  async notebookWindowStats(now: number): Promise<NotebookWindowStats[]> {
    const hour = utcHour(now);
    const rows = await this.#q(
      // One pass over each table for every notebook (the windows nest):
      // a count per notebook and window read each notebook's sessions three
      // times, about 0.7 s for 20,000 sessions.
      `WITH names AS (
         SELECT notebook FROM daily_counts UNION SELECT notebook FROM groups
       ),
       g AS (SELECT notebook, count(*) AS groups FROM groups GROUP BY notebook),
       h AS (
         SELECT notebook,
           sum(reports) FILTER (WHERE hour > $1) AS r24,
           sum(reports) FILTER (WHERE hour > $2) AS r7,
           sum(reports) AS r30
         FROM notebook_hours WHERE hour > $3 GROUP BY notebook
       ),
       s AS (
         SELECT notebook,
           count(*) FILTER (WHERE last_report_at > $4) AS s24,
           count(*) FILTER (WHERE last_report_at > $5) AS s7,
           count(*) AS s30
         FROM usages WHERE last_report_at > $6 GROUP BY notebook
       )
       SELECT n.notebook AS notebook, coalesce(g.groups, 0) AS groups,
         coalesce(h.r24, 0)::bigint AS r24, coalesce(h.r7, 0)::bigint AS r7,
         coalesce(h.r30, 0)::bigint AS r30, coalesce(s.s24, 0) AS s24,
         coalesce(s.s7, 0) AS s7, coalesce(s.s30, 0) AS s30
       FROM names n
       LEFT JOIN g ON g.notebook = n.notebook
       LEFT JOIN h ON h.notebook = n.notebook
       LEFT JOIN s ON s.notebook = n.notebook
       ORDER BY n.notebook COLLATE "C"`,
      [
        hour - 24,
        hour - 7 * 24,
        hour - 30 * 24,
        now - 86_400_000,
        now - 7 * 86_400_000,
        now - 30 * 86_400_000,
      ],
    );
    return rows.map((r) => ({
      notebook: String(r.notebook),
      groups: Number(r.groups),
      reports24h: Number(r.r24),
      reports7d: Number(r.r7),
      reports30d: Number(r.r30),
      sessions24h: Number(r.s24),
      sessions7d: Number(r.s7),
      sessions30d: Number(r.s30),
    }));
  }

  /** Sets a group's state; `false` when there is no such group. */
  async setGroupState(
    id: number,
    state: GroupState,
    now: number,
  ): Promise<boolean> {
    if (!Number.isSafeInteger(id)) return false;
    const rows = await this.#q(
      "UPDATE groups SET state = $1, state_changed_at = $2 WHERE id = $3 RETURNING 1",
      [state, now, id],
    );
    return rows.length > 0;
  }

  /** Deletes a group and its raw reports; `false` when there is no such group. */
  deleteGroup(id: number): Promise<boolean> {
    if (!Number.isSafeInteger(id)) return Promise.resolve(false);
    return this.#tx(async (tx) => {
      const rows = await this.#q(
        "DELETE FROM groups WHERE id = $1 RETURNING 1",
        [id],
        tx,
      );
      if (rows.length === 0) return false;
      await this.#q(
        `WITH a AS (DELETE FROM group_days WHERE group_id = $1),
           b AS (DELETE FROM group_hours WHERE group_id = $1),
           c AS (DELETE FROM group_sessions WHERE group_id = $1)
         DELETE FROM reports WHERE group_id = $1`,
        [id],
        tx,
      );
      return true;
    });
  }

  /** Claims due Slack notices under the hourly budget, one instance at a time. */
  claimNotices(options: ClaimNoticesOptions): Promise<OutboxNotice[]> {
    const { now } = options;
    const hour = utcHour(now);
    return this.#tx(async (tx) => {
      await this.#q(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        [OUTBOX_LOCK],
        tx,
      );
      const held = await this.#q(
        `SELECT id, hour, data FROM notices WHERE status = 'held' AND hour < $1
         ORDER BY hour, id`,
        [hour],
        tx,
      );
      const byHour = new Map<number, DigestItem[]>();
      for (const row of held) {
        const h = Number(row.hour);
        const items = byHour.get(h) ?? [];
        items.push(digestItem(JSON.parse(String(row.data)) as NoticeData));
        byHour.set(h, items);
      }
      for (const [heldHour, items] of byHour) {
        const data: NoticeData = { kind: "digest", hour: heldHour, items };
        await this.#q(
          `INSERT INTO notices (kind, group_id, created_at, next_attempt_at, hour, data)
           VALUES ('digest', NULL, $1, $1, $2, $3) ON CONFLICT DO NOTHING`,
          [now, heldHour, JSON.stringify(data)],
          tx,
        );
        await this.#q(
          "UPDATE notices SET status = 'digested' WHERE status = 'held' AND hour = $1",
          [heldHour],
          tx,
        );
      }
      await this.#q(
        `UPDATE notices SET status = 'pending', claimed_hour = NULL, lease_until = NULL
         WHERE status = 'sending' AND lease_until <= $1`,
        [now],
        tx,
      );
      const [state] = await this.#q(
        "SELECT paused_until FROM slack_state WHERE id = 1",
        [],
        tx,
      );
      if (state && Number(state.paused_until) > now) return [];
      const [usedRow] = await this.#q(
        `SELECT count(*) AS n FROM notices WHERE claimed_hour = $1
         AND status IN ('sent', 'sending')`,
        [hour],
        tx,
      );
      let used = Number(usedRow!.n);
      const due = await this.#q(
        `SELECT ${NOTICE_COLUMNS} FROM notices
         WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY (kind = 'digest') DESC, id LIMIT $2`,
        [now, Math.max(1, options.limit)],
        tx,
      );
      const claimed: OutboxNotice[] = [];
      const claim: number[] = [];
      const hold: number[] = [];
      for (const row of due) {
        if (used < options.hourlyCap) {
          used++;
          claim.push(Number(row.id));
          claimed.push(
            noticeFromRow({ ...row, attempts: Number(row.attempts) + 1 }),
          );
        } else if (row.kind !== "digest") {
          hold.push(Number(row.id));
        }
      }
      if (claim.length > 0) {
        await this.#q(
          `UPDATE notices SET status = 'sending', attempts = attempts + 1,
           lease_until = $1, claimed_hour = $2 WHERE id = ANY($3::bigint[])`,
          [now + options.leaseMs, hour, claim],
          tx,
        );
      }
      if (hold.length > 0) {
        await this.#q(
          "UPDATE notices SET status = 'held', hour = $1 WHERE id = ANY($2::bigint[])",
          [hour, hold],
          tx,
        );
      }
      return claimed;
    });
  }

  /** Records the outcome of sending a notice. */
  async settleNotice(
    id: number,
    outcome: NoticeOutcome,
    now: number,
  ): Promise<void> {
    if (outcome.status === "sent") {
      await this.#q(
        `UPDATE notices SET status = 'sent', sent_at = $1, lease_until = NULL,
         last_error = NULL WHERE id = $2`,
        [now, id],
      );
      return;
    }
    if (outcome.status === "failed") {
      await this.#q(
        `UPDATE notices SET status = 'failed', lease_until = NULL, claimed_hour = NULL,
         last_error = $1 WHERE id = $2`,
        [outcome.error.slice(0, 500), id],
      );
      return;
    }
    await this.#q(
      `WITH n AS (
         UPDATE notices SET status = 'pending', lease_until = NULL, claimed_hour = NULL,
         next_attempt_at = $1, last_error = $2 WHERE id = $3
       )
       UPDATE slack_state SET paused_until = greatest(paused_until, $4) WHERE id = 1`,
      [outcome.at, outcome.error.slice(0, 500), id, outcome.pauseUntil ?? 0],
    );
  }

  /** Every notice in the outbox, oldest first. */
  async listNotices(): Promise<NoticeRecord[]> {
    const rows = await this.#q(
      `SELECT ${NOTICE_COLUMNS} FROM notices ORDER BY id`,
    );
    return rows.map((row) => ({
      ...noticeFromRow(row),
      status: row.status as NoticeRecord["status"],
      nextAttemptAt: Number(row.next_attempt_at),
      sentAt: row.sent_at === null ? null : Number(row.sent_at),
      lastError: row.last_error === null ? null : String(row.last_error),
    }));
  }

  /** Resolves when the database answers a trivial query. */
  async ping(): Promise<void> {
    await this.#q("SELECT 1");
  }

  /** Stores the reports already queued, waits for the queries in flight and closes the pool. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#queue.length > 0 || this.#inFlight > 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await this.#sql.end({ timeout: 5 });
  }
}

const REPORT_COLUMNS = `r.id, u.uuid AS usage_uuid, r.notebook, r.created_at,
  r.last_seen_at, r.occurrences, r.error_name, r.error_message, r.traceback,
  r.first_line, r.execution_count`;

const GROUP_COLUMNS = `id, notebook, fingerprint, error_name, error_message,
  count, sessions, first_seen, last_seen, state`;

const NOTICE_COLUMNS = `id, kind, group_id, created_at, status, attempts,
  next_attempt_at, sent_at, last_error, data, hour`;

function usageFromRow(row: Row): StoredUsage {
  return {
    id: Number(row.id),
    uuid: String(row.uuid),
    notebook: String(row.notebook),
    createdAt: Number(row.created_at),
    reportCount: Number(row.report_count),
  };
}

function reportFromRow(row: Row): StoredReport {
  return {
    id: Number(row.id),
    usageUuid: String(row.usage_uuid),
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
    occurrences: Number(row.occurrences),
    error_name: String(row.error_name),
    error_message: String(row.error_message),
    traceback: JSON.parse(String(row.traceback)) as TracebackFrame[],
    first_line: String(row.first_line),
    execution_count: row.execution_count === null
      ? null
      : Number(row.execution_count),
    notebook: String(row.notebook),
  };
}

function groupFromRow(row: Row): GroupSummary {
  return {
    id: Number(row.id),
    notebook: String(row.notebook),
    fingerprint: String(row.fingerprint),
    errorName: String(row.error_name),
    errorMessage: String(row.error_message),
    count: Number(row.count),
    sessions: Number(row.sessions),
    firstSeen: Number(row.first_seen),
    lastSeen: Number(row.last_seen),
    state: String(row.state) as GroupState,
  };
}

function noticeFromRow(row: Row): OutboxNotice {
  return {
    id: Number(row.id),
    kind: String(row.kind) as NoticeKind,
    groupId: row.group_id === null ? null : Number(row.group_id),
    createdAt: Number(row.created_at),
    attempts: Number(row.attempts),
    data: JSON.parse(String(row.data)) as NoticeData,
  };
}
