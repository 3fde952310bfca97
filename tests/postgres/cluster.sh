#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from the distribution's packages.
#
#   eval "$(tests/postgres/cluster.sh start)"   # starts one, prints: export TRACKLAYER_TEST_POSTGRES_URL=…
#   tests/postgres/cluster.sh stop
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
# The cluster lives in $TRACKLAYER_PG_DIR (default /tmp/tracklayer-pg) on a free port.
set -euo pipefail
dir="${TRACKLAYER_PG_DIR:-/tmp/tracklayer-pg}"
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin="$(find_bin)"
if [ -z "$bin" ] && [ "${1:-start}" = start ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # A fresh machine: the distribution's server package (quietly; errors still show).
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } >&2
  bin="$(find_bin)"
fi
[ -n "$bin" ] && [ -x "$bin/initdb" ] || {
  echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2
  exit 1
}
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-start}" in
  start)
    if [ -f "$dir/port" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      port="$(cat "$dir/port")"
    else
      rm -rf "$dir"
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres "$dir"
      port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      echo "$port" >"$dir/port"
      # Tests create a database each; fsync off is fine for a throwaway cluster.
      as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_preload_libraries=pg_stat_statements" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    fi
    echo "export TRACKLAYER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
