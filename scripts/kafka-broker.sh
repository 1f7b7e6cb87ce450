#!/usr/bin/env bash
# A Kafka-protocol broker for the tests: tansu 0.6.0 with in-memory storage.
#
#   scripts/kafka-broker.sh install          finds tansu 0.6.0 ($TANSU_BIN, else `tansu` on
#                                            PATH, else ${CARGO_HOME:-~/.cargo}/bin/tansu), or
#                                            installs it with cargo (15-25 minutes, once)
#   scripts/kafka-broker.sh run -- CMD ARGS  runs CMD with KAFKA_BROKERS set to a broker
#
# `run`: when KAFKA_BROKERS is already set, it checks that its first broker answers and runs
# CMD against it. Otherwise it starts tansu on 127.0.0.1:${TEST_KAFKA_PORT:-19092},
# in a scratch directory (tansu reads a .env file from its working directory) and logging to
# ${CARGO_TARGET_DIR:-target}/kafka-broker.log, runs CMD with KAFKA_BROKERS=127.0.0.1:PORT,
# stops the broker however CMD ends and exits with CMD's status. Either way it exports
# TEST_TANSU_BIN, the absolute path of a tansu 0.6.0 binary when there is one, for the
# tests that start private brokers. tansu creates no topic by itself: clients create theirs.
set -euo pipefail

version=0.6.0
root=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "kafka-broker: $*" >&2; }
usage() {
  say "usage: $0 install | run -- CMD [ARGS...]"
  exit 2
}

# whether something accepts TCP connections at host $1, port $2 (within 2 s)
# shellcheck disable=SC2016 # the inner bash expands $1 and $2
answers() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

is_wanted_version() {
  [ -x "$1" ] || return 1
  local out
  out=$("$1" --version 2>&1) || return 1
  [[ $out == *"$version"* ]]
}

absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# prints the absolute path of a tansu $version binary; fails when there is none
tansu_bin() {
  local candidate
  if [ -n "${TANSU_BIN:-}" ]; then
    is_wanted_version "$TANSU_BIN" || return 1
    absolute "$TANSU_BIN"
    return 0
  fi
  for candidate in "$(command -v tansu || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
    if [ -n "$candidate" ] && is_wanted_version "$candidate"; then
      absolute "$candidate"
      return 0
    fi
  done
  return 1
}

install() {
  local bin
  if bin=$(tansu_bin); then
    say "using tansu $version at $bin"
    return 0
  fi
  if [ -n "${TANSU_BIN:-}" ]; then
    say "TANSU_BIN=$TANSU_BIN is not an executable tansu $version; unset it to have tansu $version installed with cargo" >&2
    exit 1
  fi
  if ! command -v cargo >/dev/null; then
    say "tansu $version is missing and cargo is not there to install it; install it with: cargo install tansu --locked --version $version --features dynostore" >&2
    exit 1
  fi
  say "installing tansu $version with cargo install (takes 15-25 minutes once on 2 cores)"
  cargo install tansu --locked --version "$version" --features dynostore
  if ! bin=$(tansu_bin); then
    say "cargo installed tansu, but no tansu $version is found at ${CARGO_HOME:-$HOME/.cargo}/bin/tansu" >&2
    exit 1
  fi
  say "installed tansu $version at $bin"
}

broker_pid=
workdir=
stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    say "stopping the broker (pid $broker_pid)"
    kill "$broker_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  broker_pid=
  if [ -n "$workdir" ]; then rm -rf "$workdir"; fi
  workdir=
}

run() {
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || usage

  local bin
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    local first host port
    first=${KAFKA_BROKERS%%,*}
    first=${first#*://}
    host=${first%:*}
    port=${first##*:}
    host=${host#[}
    host=${host%]}
    if [ "$host" = "$first" ] || [ -z "$host" ] || ! [[ $port =~ ^[0-9]+$ ]]; then
      say "KAFKA_BROKERS=$KAFKA_BROKERS: expected host:port[,host:port...]" >&2
      exit 1
    fi
    if ! answers "$host" "$port"; then
      say "KAFKA_BROKERS=$KAFKA_BROKERS, but nothing answers at $host:$port: start that broker, or unset KAFKA_BROKERS to have this script start tansu" >&2
      exit 1
    fi
    if bin=$(tansu_bin); then export TEST_TANSU_BIN=$bin; fi
    say "using the Kafka broker at $KAFKA_BROKERS"
    exec "$@"
  fi

  install
  bin=$(tansu_bin)
  local port=${TEST_KAFKA_PORT:-19092}
  if answers 127.0.0.1 "$port"; then
    say "port $port on 127.0.0.1 is taken: stop whatever listens there, set TEST_KAFKA_PORT to a free port, or point KAFKA_BROKERS at a running broker" >&2
    exit 1
  fi

  local log_dir log
  log_dir=${CARGO_TARGET_DIR:-$root/target}
  mkdir -p "$log_dir"
  log_dir=$(cd "$log_dir" && pwd)
  log=$log_dir/kafka-broker.log

  trap stop_broker EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  workdir=$(mktemp -d -t tenantd-tansu.XXXXXX)
  say "starting tansu on 127.0.0.1:$port (log: $log)"
  (cd "$workdir" && exec "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/) >"$log" 2>&1 &
  broker_pid=$!

  local up=
  for _ in $(seq 1 30); do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      say "tansu exited before answering on 127.0.0.1:$port; the end of $log:" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    if answers 127.0.0.1 "$port"; then up=1; break; fi
    sleep 0.5
  done
  if [ -z "$up" ]; then
    say "tansu did not answer on 127.0.0.1:$port within 15 s; the end of $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi

  export KAFKA_BROKERS=127.0.0.1:$port
  export TEST_TANSU_BIN=$bin
  say "tansu answers at $KAFKA_BROKERS"
  local status=0
  "$@" || status=$?
  exit "$status"
}

case ${1:-} in
  install) install ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
