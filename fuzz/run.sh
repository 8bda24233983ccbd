#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets (cargo-fuzz, libFuzzer, nightly) and runs each for
# FUZZ_SECONDS (default 600), two at a time on this 2-core machine, growing fuzz/corpus/TARGET
# from fuzz/seeds/TARGET. Prints one table row per target (executions, coverage, corpus,
# crashes) and writes them to fuzz/results.md. A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the run: turn it into a regression test (see the README).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-600}"
targets=(${FUZZ_TARGETS:-spec webhook jwks export_zip plan_file})
jobs="${FUZZ_PARALLEL:-2}"
# Its own target directory: instrumented builds of everything, kept apart from the tests' builds.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${HOME}/.cache/fargate-reconciler/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$PWD/target"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
# No sanitizer: the code under test is safe Rust; coverage guidance is what finds inputs, and
# without AddressSanitizer each execution is several times cheaper.
cargo +nightly fuzz build -s none >&2
logs="$(mktemp -d)"
run() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    >"$logs/$t.log" 2>&1 || true
}
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
# The corpora are kept in the repo: minimised to the inputs that add coverage.
for t in "${targets[@]}"; do
  cargo +nightly fuzz cmin -s none "$t" "corpus/$t" >"$logs/$t.cmin.log" 2>&1 || true
done
failed=0
{
  echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus | crashes |"
  echo "|---|---|---|---|---|---|---|---|"
  for t in "${targets[@]}"; do
    log="$logs/$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
    cov=$(grep -o ' cov: [0-9]*' "$log" | awk '{print $2}' | tail -1)
    ft=$(grep -o ' ft: [0-9]*' "$log" | awk '{print $2}' | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    [ "$crashes" -eq 0 ] && ! grep -q 'panicked\|ERROR: libFuzzer' "$log" || { failed=1; grep -m1 -A5 'panicked\|ERROR: libFuzzer' "$log" >&2 || true; }
    echo "| $t | $seconds | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $corpus | $crashes |"
  done
} | tee results.md
exit "$failed"
