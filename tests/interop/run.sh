#!/usr/bin/env bash
# Generates a Python client from the .proto files with grpcio-tools and runs it against a real
# control plane: the protocol must be speakable by another language's toolchain.
#   bash tests/interop/run.sh [path to the sluice binary]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/sluice}"
[ -x "$bin" ] || { echo "build the sluice binary first (cargo build)" >&2; exit 1; }
venv="${SLUICE_INTEROP_VENV:-$HOME/.cache/sluice-interop-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc, grpc_tools, segment.analytics, cryptography' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q grpcio grpcio-tools segment-analytics-python cryptography
fi
work=$(mktemp -d)
node=""
trap 'kill $server $node 2>/dev/null || true; rm -rf "$work"' EXIT
"$venv/bin/python" -m grpc_tools.protoc -I proto/proto --python_out="$work" --grpc_python_out="$work" \
  sluice/config/v1/config_sync.proto
touch "$work/sluice/__init__.py" "$work/sluice/config/__init__.py" "$work/sluice/config/v1/__init__.py"

http=$((20000 + RANDOM % 10000)); grpc=$((http + 1))
SLUICE_ADMIN_EMAIL=interop@example.com SLUICE_ADMIN_PASSWORD='interop password' \
  "$bin" control-plane --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" --data-dir "$work/cp" \
  >"$work/cp.log" 2>&1 &
server=$!
base="http://127.0.0.1:$http"
for _ in $(seq 100); do curl -sf "$base/health/ready" >/dev/null && break; sleep 0.1; done
json() { "$venv/bin/python" -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -sf -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"interop@example.com","password":"interop password"}' | json '["access_token"]')
tenant=$(curl -sf -X POST "$base/api/v1/tenants" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"name":"interop"}' | json '["id"]')
curl -sf -X POST "$base/api/v1/tenants/$tenant/pipelines" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"main","spec":{"sources":[{"name":"web"}]}}' >/dev/null
key=$(curl -sf -X POST "$base/api/v1/tenants/$tenant/keys" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"python","type":"service"}' | json '["key"]')
"$venv/bin/python" tests/interop/python_client.py "$work" "127.0.0.1:$grpc" "$key" "$tenant"
# The control plane recorded the Python node's ACK and status.
nodes=$(curl -sf "$base/api/v1/tenants/$tenant/data-planes" -H "authorization: Bearer $token")
echo "$nodes" | "$venv/bin/python" -c '
import json, sys
nodes = {n["id"]: n for n in json.load(sys.stdin)["data"]}
node = nodes["python-node"]
assert node["applied_version"] == node["config_version"], node
assert node["counters"]["received"] == 7, node
print("fleet shows the python node at version", node["applied_version"])'

# Segment's own Python library, pointed at a Sluice receiver.
pipeline=$(curl -sf -X POST "$base/api/v1/tenants/$tenant/pipelines" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"sdk","spec":{"sources":[{"name":"backend"}]}}' | json '["id"]')
write_key=$(curl -sf -X POST "$base/api/v1/tenants/$tenant/keys" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' \
  -d "{\"name\":\"sdk\",\"type\":\"ingest\",\"pipeline_id\":\"$pipeline\",\"source\":\"backend\"}" | json '["key"]')
node_port=$((grpc + 1))
SLUICE_CONTROL_URL="http://127.0.0.1:$grpc" SLUICE_SERVICE_KEY="$key" \
  "$bin" data-plane --roles receiver --http-addr "127.0.0.1:$node_port" --state-dir "$work/node" >"$work/node.log" 2>&1 &
node=$!
receiver="http://127.0.0.1:$node_port"
for _ in $(seq 100); do
  curl -sf "$receiver/health/ready" | grep -q '"config_version":[1-9]' && \
    curl -sf "$base/api/v1/tenants/$tenant" -H "authorization: Bearer $token" >/dev/null && break
  sleep 0.1
done
# Wait until the node holds the version that carries the new ingest key.
want=$(curl -sf "$base/api/v1/tenants/$tenant" -H "authorization: Bearer $token" | json '["config_version"]')
for _ in $(seq 100); do
  curl -sf "$receiver/health/ready" | grep -q "\"config_version\":$want" && break
  sleep 0.1
done
"$venv/bin/python" tests/interop/segment_sdk.py "$receiver" "$write_key" 60
received=$(curl -sf "$receiver/metrics" | awk '/sluice_events_total\{stage="received"\}/ {print $2}')
[ "$received" = "60" ] || { echo "the receiver counted $received events, expected 60" >&2; cat "$work/node.log" >&2; exit 1; }
echo "the receiver took all 60 events from segment-analytics-python"

# Segment's own Node library, from npm, unchanged.
npm_dir="${SLUICE_INTEROP_NPM:-$HOME/.cache/sluice-interop-node}"
if [ ! -d "$npm_dir/node_modules/@segment/analytics-node" ]; then
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --silent --no-audit --no-fund @segment/analytics-node >/dev/null
fi
NODE_PATH="$npm_dir/node_modules" node tests/interop/segment_node.js "$receiver" "$write_key" 60
received=$(curl -sf "$receiver/metrics" | awk '/sluice_events_total\{stage="received"\}/ {print $2}')
[ "$received" = "120" ] || { echo "the receiver counted $received events, expected 120" >&2; cat "$work/node.log" >&2; exit 1; }
echo "the receiver took all 60 events from @segment/analytics-node"
