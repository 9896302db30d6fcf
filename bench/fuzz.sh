#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer, on the stable toolchain
# with --sanitizer none) of every parser of untrusted or operator-written
# input: the cltab parser, the cltab editor (create/delete), the protocol's
# frame decoders (fast paths against the reference), the schedule parser and
# the UserList reader. Each target runs SECONDS (default 60) from the seed
# corpus in fuzz/seeds/TARGET (the working corpus is a temp dir: the repo does
# not grow); prints executions and crashes per target. A crash leaves its
# input in fuzz/artifacts/TARGET/ (replay: cargo fuzz run --sanitizer none -O
# TARGET FILE).
#   bash bench/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N stops each target after N executions (SECONDS still bounds it):
#   FUZZ_RUNS=10000000 bash bench/fuzz.sh 7200 frame edit
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_build_tools
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(cltab edit frame schedule userlist names)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo fuzz build --sanitizer none -O >/dev/null
printf '%-10s %14s %8s %10s %s\n' target executions seconds exec/s crashes
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if cargo fuzz run --sanitizer none -O "$t" "$work/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -print_final_stats=1 >"$work/$t.log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    runs=$({ grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" || true; } | { grep -o '[0-9]*$' || true; } | tail -1)
    took=$({ grep -o 'Done [0-9]* runs in [0-9]* second' "$work/$t.log" || true; } | { grep -o 'in [0-9]*' || true; } | { grep -o '[0-9]*' || true; } | tail -1)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then
        crashes="? (exit $rc)"
        tail -20 "$work/$t.log" >&2
    fi
    printf '%-10s %14s %8s %10s %s\n' "$t" "${runs:-?}" "${took:-$secs}" \
        "$(( ${runs:-0} / ( ${took:-$secs} > 0 ? ${took:-$secs} : 1 ) ))" "$crashes"
    if [ "$crashes" != 0 ]; then
        status=1
        grep -m 3 -A3 'panicked\|ERROR' "$work/$t.log" >&2 || true
    fi
done
exit $status
