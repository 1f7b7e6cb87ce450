#!/usr/bin/env bash
# Makes sure the services and tools the tests use are there:
#
# - PostgreSQL: TEST_DATABASE_URL, else DATABASE_URL, else the local
#   postgres://postgres@127.0.0.1:5432/postgres. When that local server is not running, it is
#   started if installed, or installed from Debian's packages (as root) and started on
#   127.0.0.1 only, with trust authentication for local TCP connections (a test machine's
#   setting, never a production one). Also makes sure psql is there (the README smoke test
#   uses it).
# - Redis: TEST_REDIS_URL, else REDIS_URL, else the local redis://127.0.0.1:6379. When that
#   local server does not answer PING, it is started (without persistence), installed from
#   Debian's packages first (as root) when missing. The redis-server binary is needed in any
#   case: the tests start private Redis servers on random ports (to pause them with SIGSTOP).
# - The Python packages of tests/python/consume_events.py, the independent Kafka consumer of
#   the end-to-end tests (tests/python/requirements.txt), and of the Python client example
#   (examples/python/requirements.txt).
#
# Whatever cannot be provided fails with one message saying how to provide it. The Kafka
# broker is scripts/kafka-broker.sh's business.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "test-services: $*"; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# waits up to 30 s for the command "$@" to succeed
wait_for() {
  for _ in $(seq 1 60); do "$@" && return 0; sleep 0.5; done
  return 1
}

# The tests create and drop thousands of schemas. With autovacuum off (as on these machines)
# the catalog keeps every dead row, and listing a schema's tables (which scans pg_class)
# gets slower run after run, until a loaded run's catalog query hits its statement timeout.
# Compacting the churned catalog tables first takes a moment and keeps them small.
compact_catalog() {
  local url=$1
  [ "$(psql "$url" -Atc 'SHOW autovacuum' 2>/dev/null)" = "off" ] || return 0
  # A session holding the catalog (another run's test) makes it give up after 10 s, not wait.
  if psql "$url" -q -c "SET lock_timeout = '10s'" -c "VACUUM (FULL, ANALYZE) pg_catalog.pg_class, pg_catalog.pg_attribute,
      pg_catalog.pg_type, pg_catalog.pg_depend, pg_catalog.pg_shdepend, pg_catalog.pg_namespace,
      pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_attrdef,
      pg_catalog.pg_statistic, pg_catalog.pg_sequence, pg_catalog.pg_trigger,
      pg_catalog.pg_inherits, pg_catalog.pg_partitioned_table" 2>/dev/null; then
    say "autovacuum is off: compacted the system catalog tables the tests churn"
  else
    say "autovacuum is off and the catalog could not be compacted (busy, or not a superuser); catalog queries may be slow"
  fi
}

postgres() {
  local default_url=postgres://postgres@127.0.0.1:5432/postgres
  local url=${TEST_DATABASE_URL:-${DATABASE_URL:-$default_url}}

  # host and port of a postgres:// URL (no userinfo, no path)
  local authority host port
  authority=${url#*://}
  authority=${authority%%[/?]*}
  authority=${authority##*@}
  host=${authority%:*}
  port=5432
  [[ $authority == *:* ]] && port=${authority##*:}
  [ -n "$host" ] || host=127.0.0.1

  if ! command -v psql >/dev/null; then
    if can_install; then
      say "installing the PostgreSQL client (psql)"
      apt_install postgresql-client
    else
      say "psql is missing: install Debian's postgresql-client" >&2
      exit 1
    fi
  fi

  if reachable "$host" "$port"; then
    say "PostgreSQL answers at $host:$port"
    compact_catalog "$url"
    return 0
  fi

  if [ "$url" != "$default_url" ] || ! can_install; then
    say "PostgreSQL is not reachable at $host:$port. Start it (Debian: pg_ctlcluster --skip-systemctl-redirect <version> main start) or point TEST_DATABASE_URL at a PostgreSQL 14+ server" >&2
    exit 1
  fi

  local version conf
  if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
    say "installing Debian's PostgreSQL"
    apt_install postgresql
    # shellcheck disable=SC2012 # version-named directories
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    conf=/etc/postgresql/$version/main
    echo "listen_addresses = '127.0.0.1'" >"$conf/conf.d/tenantd-tests.conf"
    { echo "host all postgres 127.0.0.1/32 trust"; cat "$conf/pg_hba.conf"; } >"$conf/pg_hba.conf.new"
    mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
    chown postgres:postgres "$conf/pg_hba.conf"
  fi

  # shellcheck disable=SC2012 # version-named directories
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  if wait_for reachable "$host" "$port"; then
    say "PostgreSQL answers at $host:$port"
    compact_catalog "$url"
  else
    say "PostgreSQL $version did not come up on $host:$port; see /var/log/postgresql/" >&2
    exit 1
  fi
}

# whether the Redis server at host $1, port $2 answers PING with PONG (within 3 s)
redis_pong() {
  if command -v redis-cli >/dev/null; then
    [ "$(timeout 3 redis-cli -h "$1" -p "$2" ping 2>/dev/null)" = PONG ]
  else
    # shellcheck disable=SC2016 # the inner bash expands $1 and $2
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r line <&3 && [[ $line == +PONG* ]]' _ "$1" "$2" 2>/dev/null
  fi
}

start_redis() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

redis() {
  local default_url=redis://127.0.0.1:6379
  local url=${TEST_REDIS_URL:-${REDIS_URL:-$default_url}}

  # host and port of a redis:// URL (no userinfo, no database path); a password in the URL
  # goes to redis-cli through REDISCLI_AUTH
  local authority userinfo host port
  authority=${url#*://}
  authority=${authority%%[/?]*}
  userinfo=
  [[ $authority == *@* ]] && userinfo=${authority%@*}
  authority=${authority##*@}
  host=${authority%:*}
  port=6379
  if [[ $authority == \[*\] ]]; then
    host=$authority
  elif [[ $authority == *:* ]]; then
    port=${authority##*:}
  else
    host=$authority
  fi
  host=${host#[}
  host=${host%]}
  [ -n "$host" ] || host=127.0.0.1
  if [[ $userinfo == *:* ]]; then export REDISCLI_AUTH=${userinfo#*:}; fi

  if redis_pong "$host" "$port"; then
    say "Redis answers at $host:$port"
    return 0
  fi

  if [ "$url" = "$default_url" ]; then
    if ! command -v redis-server >/dev/null && can_install; then
      say "installing Debian's Redis"
      apt_install redis-server
    fi
    if command -v redis-server >/dev/null; then
      say "starting Redis on $host:$port"
      start_redis || true
      if wait_for redis_pong "$host" "$port"; then
        say "Redis answers at $host:$port"
        return 0
      fi
      say "Redis did not come up on $host:$port; see /var/log/redis/ci.log" >&2
      exit 1
    fi
  fi
  say "Redis does not answer at $host:$port. Start it (Debian: apt-get install redis-server; redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\") or point TEST_REDIS_URL at a Redis 6+ server" >&2
  exit 1
}

# the tests start private Redis servers of their own
redis_server_binary() {
  command -v redis-server >/dev/null && return 0
  if can_install; then
    say "installing Debian's redis-server (the tests start private Redis servers)"
    apt_install redis-server
  else
    say "redis-server is missing (the tests start private Redis servers): install Debian's redis-server" >&2
    exit 1
  fi
}

python_packages() {
  if ! command -v python3 >/dev/null; then
    say "python3 is missing (the Kafka tests run tests/python/consume_events.py): install Python 3.9+" >&2
    exit 1
  fi
  local imports='import confluent_kafka, grpc_tools, grpc_status, grpc_health.v1, google.rpc.error_details_pb2'
  if python3 -c "$imports" 2>/dev/null; then
    say "the Python packages of tests/python and examples/python are there"
    return 0
  fi
  say "installing the Python packages of tests/python/requirements.txt and examples/python/requirements.txt"
  python3 -m pip install --quiet --root-user-action=ignore -r "$root/tests/python/requirements.txt" \
    -r "$root/examples/python/requirements.txt"
  if command -v pyenv >/dev/null; then pyenv rehash || true; fi
  if ! python3 -c "$imports"; then
    say "the Python packages of tests/python and examples/python do not import after installing them" >&2
    exit 1
  fi
}

postgres
redis
redis_server_binary
python_packages
