#!/usr/bin/env bash
# Rereads of mutated cltabs under a 2 GB address-space limit, one reread of
# a 6 MB cltab timed against pings, and a 17 MiB cltab refused (issue 15).
#   bash bench/reread_soak.sh [REREADS]     (default 20000)
# CLINIT_BIN=path runs another build of the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
exec python3 bench/reread_soak.py "${CLINIT_BIN:-$PWD/target/release/clinit}" "${1:-20000}"
