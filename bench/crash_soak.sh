#!/usr/bin/env bash
# SIGKILL of the daemon at random moments of a respawn wave, a level switch,
# a reread, create/delete and the start-up restore (issue 16); prints
# duplicates, orphans and leftovers after shutdown for each (all must be 0).
#   bash bench/crash_soak.sh [REPS] [ENTRIES]     (default 20, 100)
# CLINIT_BIN=path runs another build of the daemon (e.g. an older commit).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
exec python3 bench/crash_soak.py "${CLINIT_BIN:-$PWD/target/release/clinit}" "${1:-20}" "${2:-100}"
