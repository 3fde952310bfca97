#!/usr/bin/env bash
# Everything the tests need on this machine, then a throwaway PostgreSQL cluster:
#
#   eval "$(tests/prepare.sh)" && cargo test
#   tests/postgres/cluster.sh stop          # when you are done: stops the cluster, deletes it
#
# The tests use real parts: PostgreSQL (store, fleet, warehouse), Prometheus's promtool (the
# /metrics exposition is checked with it), and curl, openssl and jq (tests/readme.rs runs the
# README's examples, which use them). As root with apt, whatever is missing is installed from
# the distribution's packages; otherwise this says what to install and stops.
# Status goes to stderr; stdout is only the `export` line for eval.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v promtool >/dev/null || missing+=(prometheus)
command -v jq >/dev/null || missing+=(jq)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/prepare.sh: installing ${missing[*]} (apt)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2
  else
    echo "tests/prepare.sh: the tests need ${missing[*]}: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "tests/prepare.sh: starting a throwaway PostgreSQL (stop it with tests/postgres/cluster.sh stop)" >&2
exec tests/postgres/cluster.sh start
