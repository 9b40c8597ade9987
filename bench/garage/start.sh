#!/usr/bin/env bash
# Starts a one-node Garage (https://garagehq.deuxfleurs.fr, a production S3 server written in
# Rust) on 127.0.0.1:3900 for `bench archive`, with an empty bucket and a key, and prints the
# bench's S3 flags. Needs `cargo install garage --version 2.5.0 --locked`.
#
# Garage 2.5.0 leaves Nagle's algorithm on for its S3 connections, so on a kept-alive
# connection every small response waits for the client's delayed ACK: 40 ms per ranged GET
# under 64 KiB (measured with boto3: min 42.8 ms for 100 bytes, 3.6 ms with the shim). The
# shim built here sets TCP_NODELAY on its accepted sockets, as Go servers (MinIO) and AWS do.
set -euo pipefail
root="${GARAGE_ROOT:-/tmp/sluice-garage}"
here="$(cd "$(dirname "$0")" && pwd)"
if (exec 3<>/dev/tcp/127.0.0.1/3900) 2>/dev/null; then
  echo "port 3900 is taken (a Garage from an earlier run?); stop it first" >&2
  exit 1
fi
rm -rf "$root"
mkdir -p "$root"
gcc -O2 -shared -fPIC -o "$root/libnodelay.so" "$here/nodelay.c" -ldl
cat >"$root/garage.toml" <<TOML
metadata_dir = "$root/meta"
data_dir = "$root/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"
TOML
g() { garage -c "$root/garage.toml" "$@"; }
LD_PRELOAD="$root/libnodelay.so" nohup garage -c "$root/garage.toml" server >"$root/server.log" 2>&1 &
for _ in $(seq 30); do g status >/dev/null 2>&1 && break; sleep 1; done
g status >/dev/null || { tail "$root/server.log" >&2; exit 1; }
node="$(g node id -q | cut -d@ -f1)"
g layout assign -z dc1 -c 100G "$node" >/dev/null
g layout apply --version 1 >/dev/null
g bucket create sluice-bench >/dev/null
g key create bench-key >/dev/null
g bucket allow --read --write --owner sluice-bench --key bench-key >/dev/null
info="$(g key info bench-key --show-secret)"
key="$(awk '/Key ID:/ {print $3}' <<<"$info")"
secret="$(awk '/Secret key:/ {print $3}' <<<"$info")"
[ -n "$key" ] && [ -n "$secret" ] || { echo "cannot read the key from: $info" >&2; exit 1; }
echo "--s3-url http://127.0.0.1:3900 --s3-bucket sluice-bench --s3-access-key $key --s3-secret-key $secret"
