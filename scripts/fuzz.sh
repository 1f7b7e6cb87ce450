#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each, from its committed
# seeds (fuzz/seeds/<target>) and its working corpus (fuzz/corpus/<target>, not
# committed). A crash, a panic or a hang fails the run; libFuzzer keeps the input under
# fuzz/artifacts/<target>/, and `cargo +nightly fuzz run <target> <that file>` replays it.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (make fuzz: 300 s each; make fuzz-smoke: 5 s)
#
# FUZZ_BUILD=dev builds the targets without optimizations: about half the build time of a
# fresh machine (make fuzz-smoke, where the build costs more than the seconds of fuzzing),
# many times fewer runs a second; the default, release, is for fuzzing in earnest.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
fail() { echo "fuzz: $*" >&2; exit 1; }

cargo +nightly --version >/dev/null 2>&1 \
  || fail "the nightly toolchain is missing (libFuzzer's instrumentation needs it): rustup toolchain install nightly"
cargo fuzz --version >/dev/null 2>&1 || fail "cargo-fuzz is missing: cargo install cargo-fuzz --locked"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

profile=()
case "${FUZZ_BUILD:-release}" in
  release) ;;
  dev) profile=(--dev) ;;
  *) fail "FUZZ_BUILD=$FUZZ_BUILD: expected release or dev" ;;
esac

cargo +nightly fuzz build "${profile[@]}"
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  echo "fuzz: $target for ${seconds}s"
  # -timeout: an input running 10 s is a hang; -rss_limit_mb: growth past 2 GiB a leak.
  cargo +nightly fuzz run "${profile[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2> "fuzz/corpus/$target.log" \
    || { tail -n 60 "fuzz/corpus/$target.log" >&2; fail "$target failed; the input is under fuzz/artifacts/$target/"; }
  grep -E '^Done' "fuzz/corpus/$target.log" | sed "s/^/fuzz: $target: /"
done
echo "fuzz: ${#targets[@]} targets, no crash in ${seconds}s each"
