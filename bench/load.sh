#!/usr/bin/env bash
# Load with churn from a Rust generator (bench/load.rs): CLIENTS threads x
# REQS requests of the load_soak mix against one daemon; the figures of
# issue 15's load target (requests/s, p99, daemon CPU), without a Python
# generator's CPU on the same 2 cores.
#   bash bench/load.sh [CLIENTS] [REQS]      (default 50 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench load -- "${1:-50}" "${2:-1000}"
