#!/usr/bin/env bash
# Feeds the control plane's OpenAPI document to schemathesis, signed in as an owner with a
# tenant, and fails if any request gets a 5xx. Not part of CI (it takes minutes); run it after
# changing the API:   bash tests/fuzz/openapi-fuzz.sh [max examples per operation, default 100]
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-100}"
venv="${SLUICE_FUZZ_VENV:-$HOME/.cache/sluice-fuzz-venv}"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
cargo build --release -p sluice
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
SLUICE_ADMIN_EMAIL=fuzz@example.com SLUICE_ADMIN_PASSWORD='fuzzing password' \
  "${CARGO_TARGET_DIR:-target}/release/sluice" control-plane --http-addr "127.0.0.1:$port" \
  --data-dir "$work" --allow-signup >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "$base/health/live" >/dev/null && break; sleep 0.2; done
token=$(curl -sf -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"fuzz@example.com","password":"fuzzing password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sf -X POST "$base/api/v1/tenants" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"fuzzed"}' >/dev/null
set +e
"$venv/bin/schemathesis" run "$base/api/v1/openapi.json" -H "Authorization: Bearer $token" \
  --checks all --max-examples "$examples" --workers 2 | tee "$work/report.txt"
set -e
if grep -q "ST101 Server error" "$work/report.txt" || grep -q " 500 " "$work/server.log"; then
  echo "FAIL: the server answered 5xx; see the report above" >&2
  grep -i error "$work/server.log" | head -20 >&2
  exit 1
fi
echo "no server errors"
