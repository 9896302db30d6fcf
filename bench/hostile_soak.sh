#!/usr/bin/env bash
# Hostile clients (as uid 65534) against one daemon for SECS seconds while
# root probes it; prints what was sent, the slowest root probe, peak RSS
# and log growth (issue 16). Needs root (to run the workers as nobody).
#   bash bench/hostile_soak.sh [SECS] [WORKERS]     (default 30, 4)
# CLINIT_BIN=path runs another build of the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
exec python3 bench/hostile_soak.py "${CLINIT_BIN:-$PWD/target/release/clinit}" "${1:-30}" "${2:-4}"
