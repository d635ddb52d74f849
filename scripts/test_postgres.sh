#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the tests (Debian's postgresql package) and print the
# URL to export as HEMATOVISION_TEST_POSTGRES_URL. Used by .ci/run; developers run it the same way:
#   export HEMATOVISION_TEST_POSTGRES_URL=$(scripts/test_postgres.sh)
set -euo pipefail
PORT=${PGPORT_TEST:-54329}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$BIN" ]; then
  echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
DATA=${PGDATA_TEST:-/tmp/hematovision-test-postgres}
RUN_AS=()
[ "$(id -u)" = 0 ] && RUN_AS=(runuser -u postgres --)  # initdb refuses to run as root
if ! "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
