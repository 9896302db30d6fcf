#!/usr/bin/env bash
# Durability: writers add and modify records, the daemon is SIGKILLed at a
# random moment, REPS times on one state dir; prints acknowledged writes
# lost (must be 0) and unacknowledged writes that appeared (issue 15).
#   bash bench/durability_soak.sh [REPS] [WRITERS]     (default 50, 4)
# CLINIT_BIN=path runs another build of the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
exec python3 bench/durability_soak.py "${CLINIT_BIN:-$PWD/target/release/clinit}" "${1:-50}" "${2:-4}"
