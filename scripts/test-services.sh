#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use is reachable: TEST_DATABASE_URL, else DATABASE_URL,
# else the local postgres://postgres@127.0.0.1:5432/postgres. When that local server is not
# running, it is started if installed, or installed from Debian's packages (as root) and
# started on 127.0.0.1 only, with trust authentication for local TCP connections (a test
# machine's setting, never a production one). Otherwise it fails with one message saying how
# to provide one. Also makes sure psql is there (the README smoke test uses it).
set -euo pipefail

default_url=postgres://postgres@127.0.0.1:5432/postgres
url=${TEST_DATABASE_URL:-${DATABASE_URL:-$default_url}}

# host and port of a postgres:// URL (no userinfo, no path)
authority=${url#*://}
authority=${authority%%[/?]*}
authority=${authority##*@}
host=${authority%:*}
port=5432
[[ $authority == *:* ]] && port=${authority##*:}
[ -n "$host" ] || host=127.0.0.1

say() { echo "test-services: $*"; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
reachable() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

wait_reachable() {
  for _ in $(seq 1 60); do reachable && return 0; sleep 0.5; done
  return 1
}

if ! command -v psql >/dev/null; then
  if can_install; then
    say "installing the PostgreSQL client (psql)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null
  else
    say "psql is missing: install Debian's postgresql-client" >&2
    exit 1
  fi
fi

if reachable; then
  say "PostgreSQL answers at $host:$port"
  exit 0
fi

if [ "$url" != "$default_url" ] || ! can_install; then
  say "PostgreSQL is not reachable at $host:$port. Start it (Debian: pg_ctlcluster --skip-systemctl-redirect <version> main start) or point TEST_DATABASE_URL at a PostgreSQL 14+ server" >&2
  exit 1
fi

if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
  say "installing Debian's PostgreSQL"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  echo "listen_addresses = '127.0.0.1'" >"$conf/conf.d/tenantd-tests.conf"
  { echo "host all postgres 127.0.0.1/32 trust"; cat "$conf/pg_hba.conf"; } >"$conf/pg_hba.conf.new"
  mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
  chown postgres:postgres "$conf/pg_hba.conf"
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
say "starting PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
if wait_reachable; then
  say "PostgreSQL answers at $host:$port"
else
  say "PostgreSQL $version did not come up on $host:$port; see /var/log/postgresql/" >&2
  exit 1
fi
