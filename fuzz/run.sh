#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 300), seeded from the
# bad-input corpus (tests/corpus), and prints one row per target.
#   fuzz/run.sh [SECONDS] [TARGET...]
# Bounds: a single allocation over 128 MB, an RSS over 1 GB, or one input
# taking over 10 s is a failure; inputs up to 64 KiB (a settlement record is
# 200 bytes, an import line at most 4,096). A crashing input is kept under
# fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(settlement internal accounts)

cargo_fuzz="${CARGO_FUZZ:-cargo-fuzz}"
work="${TALLY_FUZZ_WORK:-$HOME/.cache/tally/fuzz}"
export CARGO_TARGET_DIR="${TALLY_FUZZ_TARGET:-$HOME/.cache/tally/fuzz-target}"
# cargo-fuzz builds with sanitizer flags that need a nightly compiler; the
# stable toolchain a fresh machine has accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

seeds() { # target → the corpus files that are its kind of input
  case "$1" in
    settlement) ls tests/corpus/base-settlement.dat tests/corpus/cases/s-* ;;
    internal) ls tests/corpus/base-internal.csv tests/corpus/cases/i-* ;;
    accounts) ls tests/corpus/base-accounts.jsonl tests/corpus/cases/a-* ;;
    *) echo "unknown fuzz target: $1" >&2; exit 2 ;;
  esac
}

"$cargo_fuzz" build --fuzz-dir fuzz
rows=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/seeds/$t" "$work/corpus/$t"
  rm -f "$work/seeds/$t"/*
  cp $(seeds "$t") "$work/seeds/$t/"
  log="$work/$t.log"
  if "$cargo_fuzz" run --fuzz-dir fuzz "$t" "$work/corpus/$t" "$work/seeds/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -malloc_limit_mb=128 -rss_limit_mb=1024 \
      -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    outcome="no failure"
  else
    outcome="FAILED (see $log and fuzz/artifacts/$t/)"
    status=1
    tail -40 "$log" >&2
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  kept=$(find "$work/corpus/$t" -type f | wc -l)
  rows+=("$(printf '%-11s %8ss %12s %9s %9s  %s' "$t" "$seconds" "$runs" "$cov" "$kept" "$outcome")")
done
printf '%-11s %9s %12s %9s %9s  %s\n' target time inputs coverage corpus outcome
printf '%s\n' "${rows[@]}"
exit $status
