#!/usr/bin/env bash
# `deno task bench`: starts a private PostgreSQL for the PostgreSQL figures when no
# TEST_DATABASE_URL / BENCH_DATABASE_URL is set, PostgreSQL is installed and the `postgres`
# benchmark is selected (all are, when none is named), then
# runs tests/bench/main.ts with the given benchmark names.
set -euo pipefail
cd "$(dirname "$0")/../.."
wants_postgres=1
if [ "$#" -gt 0 ]; then
  wants_postgres=0
  for name in "$@"; do [ "$name" = postgres ] && wants_postgres=1; done
fi
if [ "$wants_postgres" = 1 ] && [ -z "${TEST_DATABASE_URL:-}${BENCH_DATABASE_URL:-}" ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  PG_PORT="${PG_PORT:-55433}"
  source .ci/postgres.sh
  start_test_postgres
  trap stop_test_postgres EXIT
fi
deno run --allow-all tests/bench/main.ts "$@"
