#!/usr/bin/env bash
# The real Segment SDKs against a real `tracklayer serve`: analytics-python (with gzip=True) and
# analytics-node post identify + track calls to /v1; every message must be stored, the tracks
# mapped, and no stored body may keep the write key. `.ci/run` installs the SDKs from PyPI and
# npm and runs this; it fails loudly when they are missing.
#
#   tests/sdk/run.sh [path/to/tracklayer]     (default: target/debug/tracklayer)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/tracklayer}"
[ -x "$bin" ] || { echo "sdk: no tracklayer binary at $bin (cargo build first)" >&2; exit 1; }
python3 -c 'import segment.analytics' 2>/dev/null \
  || { echo "sdk: analytics-python missing: pip install segment-analytics-python" >&2; exit 1; }
node_modules="${SDK_NODE_MODULES:-$here/node_modules}"
[ -d "$node_modules/@segment/analytics-node" ] \
  || { echo "sdk: analytics-node missing: npm install --prefix $here @segment/analytics-node" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
write_key="wk_sdk_test_0123456789"
cat >"$work/tracklayer.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[storage]
path = "$work/tracklayer.db"

[workspace]
account = "acct_sdk"
default_country = "NL"

[[environments]]
name = "production"
secret = "sdk-test-secret-0123456789abcdef"
write_key = "$write_key"
TOML

"$bin" serve --config "$work/tracklayer.toml" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done

run="sdk$(date +%s)"
TRACKLAYER_HOST="http://127.0.0.1:$port" WRITE_KEY="$write_key" RUN="$run" \
  python3 "$here/python_client.py"
TRACKLAYER_HOST="http://127.0.0.1:$port" WRITE_KEY="$write_key" RUN="$run" \
  NODE_PATH="$node_modules" node "$here/node_client.js"
TRACKLAYER_HOST="http://127.0.0.1:$port" WRITE_KEY="$write_key" \
  NODE_PATH="$node_modules" node "$here/node_oversized.js"

failed=0
check() {
  local id="$1" want="$2" out status
  out="$("$bin" inspect "$id" --json --config "$work/tracklayer.toml" || true)"
  status="$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",""))' 2>/dev/null || true)"
  if [ "$status" != "$want" ]; then
    echo "sdk: $id is '${status:-not stored}', expected $want" >&2
    failed=1
  elif printf '%s' "$out" | grep -q "$write_key"; then
    echo "sdk: $id keeps the write key in what is stored" >&2
    failed=1
  else
    echo "sdk: $id $status"
  fi
}
for client in python node; do
  check "$run-$client-identify" identify
  check "$run-$client-purchase" mapped
  check "$run-$client-signup" mapped
done
if [ "$failed" -ne 0 ]; then
  echo "--- serve log ---" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
echo "sdk: analytics-python (gzip) and analytics-node: every message stored and mapped"
