# Starts and stops a throwaway PostgreSQL server for the test suite.
# Sourced by .ci/run; usable by hand: `source .ci/postgres.sh && start_test_postgres`.
# Exports TEST_DATABASE_URL.

PG_PORT="${PG_PORT:-55432}"
PG_DIR="${PG_DIR:-$(mktemp -d /tmp/nbr-pg.XXXXXX)}"

start_test_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  # Another server (a developer's own) may hold the port: take the next free one.
  while (echo >"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; do PG_PORT=$((PG_PORT + 1)); done
  chown postgres "$PG_DIR"
  su postgres -c "$bin/initdb -D '$PG_DIR/data' -A trust -U postgres" >/dev/null
  su postgres -c "$bin/pg_ctl -D '$PG_DIR/data' -l '$PG_DIR/log' -w \
    -o \"-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off\" start" >/dev/null
  su postgres -c "$bin/createdb -h 127.0.0.1 -p $PG_PORT nbr_test"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT}/nbr_test"
  echo "PostgreSQL on port $PG_PORT ($PG_DIR)"
}

stop_test_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  su postgres -c "$bin/pg_ctl -D '$PG_DIR/data' -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
