#!/usr/bin/env bash
# Runs the Python client example (examples/python/tenants.py, stubs generated from proto/)
# against a real tenantd: the embedded store, in a scratch directory (its development
# certificates made there), on free loopback ports, started from a cleared environment.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/debug/tenantd

[ -x "$bin" ] || { echo "python-example: the tenantd binary is missing ($bin): cargo build --bin tenantd" >&2; exit 1; }
imports='import grpc, grpc_tools, grpc_status, grpc_health.v1, google.rpc.error_details_pb2'
python3 -c "$imports" 2>/dev/null || {
  echo "python-example: its Python packages are missing: pip install -r examples/python/requirements.txt (scripts/test-services.sh does)" >&2
  exit 1
}

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
grpc_port=$(free_port)
metrics_port=$(free_port)
(cd "$work" && exec env -i PATH="$PATH" HOME="$work" "$bin" --listen "127.0.0.1:$grpc_port" \
  --metrics-listen "127.0.0.1:$metrics_port") >"$work/tenantd.log" 2>&1 &
pid=$!
listening=
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null && { listening=1; break; }
  kill -0 "$pid" 2>/dev/null || { echo "python-example: tenantd exited:" >&2; cat "$work/tenantd.log" >&2; exit 1; }
  sleep 0.1
done
if [ -z "$listening" ]; then
  echo "python-example: tenantd did not listen on 127.0.0.1:$grpc_port within 10 s:" >&2
  tail -20 "$work/tenantd.log" >&2
  exit 1
fi

# A cleared environment: only what finds the interpreter and its packages.
if ! env -i PATH="$PATH" HOME="$HOME" ${PYENV_ROOT:+PYENV_ROOT="$PYENV_ROOT"} python3 "$root/examples/python/tenants.py" --endpoint "127.0.0.1:$grpc_port" \
  --certs "$work/.tenantd/dev-certs" --slug python-example; then
  echo "--- tenantd log" >&2
  tail -30 "$work/tenantd.log" >&2
  exit 1
fi
