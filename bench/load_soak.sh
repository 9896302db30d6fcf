#!/usr/bin/env bash
# Load with churn: CLIENTS clients x REQS requests (status, tell, stop/start,
# lock/unlock, record add/get/modify) against a daemon with 50 respawn
# entries switching levels; prints requests/s, p50/p99 per kind, errors,
# timeouts, daemon CPU, fds and RSS before/after, zombies (issue 15).
#   bash bench/load_soak.sh [CLIENTS] [REQS]     (default 50, 1000)
# CLINIT_BIN=path runs another build of the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
exec python3 bench/load_soak.py "${CLINIT_BIN:-$PWD/target/release/clinit}" "${1:-50}" "${2:-1000}"
