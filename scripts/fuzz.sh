#!/usr/bin/env bash
# Fuzzes every parser of user input for a bounded time: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET…]
#
# With the nightly toolchain and cargo-fuzz (cargo install --locked cargo-fuzz), each target in
# fuzz/fuzz_targets runs for SECONDS_PER_TARGET (default 25) seconds, one after another, on one
# core (libFuzzer in-process: one job); seeds come from fuzz/seeds/<target> plus the example spec and labels, and the corpus grows in
# fuzz/corpus/<target>. A crash or a broken property stops the script with the reproducer's path.
# Without nightly or cargo-fuzz it says so loudly and runs the proptest campaign instead (the
# property tests of core and worker with PROPTEST_CASES raised), so nothing is silently skipped.
#
# Environment: PROPTEST_CASES (the fallback's cases per property, default 4096), FUZZ_LOG_DIR (keep
# each target's libFuzzer log there), FUZZ_TARGET_DIR (where the fuzz build lives).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-25}
shift || true
say() { printf 'fuzz: %s\n' "$*" >&2; }

case "$SECONDS_PER_TARGET" in '' | *[!0-9]*) say "seconds per target must be a whole number, not '$SECONDS_PER_TARGET'"; exit 2 ;; esac

proptest_campaign() {
  local cases=${PROPTEST_CASES:-4096}
  say "running the proptest campaign instead: PROPTEST_CASES=$cases over core's and worker's property tests"
  PROPTEST_CASES=$cases cargo test --locked -q -p acufarm-core --test props --test props_spec --test props_evaluate
  PROPTEST_CASES=$cases cargo test --locked -q -p acufarm-worker --test props
}

missing=""
if ! cargo +nightly --version >/dev/null 2>&1; then
  missing="the nightly toolchain (rustup toolchain install nightly)"
elif ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  missing="cargo-fuzz (cargo install --locked cargo-fuzz)"
fi
if [ -n "$missing" ]; then
  say "################################################################################"
  say "CANNOT FUZZ: $missing is missing, so the fuzz targets in fuzz/ do NOT run."
  say "################################################################################"
  proptest_campaign
  exit 0
fi

mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^acufarm-fuzz$')
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# The parsers are safe Rust: no sanitizer, so builds and runs are several times faster; overflow
# and debug assertions stay on (cargo fuzz's default).
# FUZZ_TARGET_DIR keeps the instrumented build between runs (the test command points it at
# $ACUFARM_HOME/fuzz-target, outside the clone); default fuzz/target.
fuzz() { CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-fuzz/target} cargo +nightly fuzz "$1" --sanitizer none "${@:2}"; }
say "building ${#targets[@]} targets"
fuzz build

seed_extra() {
  # Seeds that live elsewhere in the repository, so they never go stale.
  case "$1" in
    run_spec) echo examples/acusim.toml ;;
    label) find examples/acusim-mini -path '*/label/*.json' | head -n 20 ;;
  esac
}

failed=0
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  while read -r extra; do [ -n "$extra" ] && cp "$extra" "$corpus/"; done < <(seed_extra "$target")
  log=$(mktemp)
  # -timeout: one input taking over 10 s is a hang (e.g. a filter that materialises frames).
  if fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    say "$target: ok in ${SECONDS_PER_TARGET}s, ${runs:-?} runs; last: ${stats:-no stats}"
  else
    failed=1
    say "$target: FAILED; last lines of its log:"
    tail -n 40 "$log" >&2
    grep -Eo 'fuzz/artifacts/[^ ]+' "$log" | sort -u | sed 's/^/fuzz: reproducer: /' >&2 || true
  fi
  [ -n "${FUZZ_LOG_DIR:-}" ] && mkdir -p "$FUZZ_LOG_DIR" && cp "$log" "$FUZZ_LOG_DIR/$target.log"
  rm -f "$log"
done
exit $failed
