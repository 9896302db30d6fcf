#!/usr/bin/env bash
# The main job: the daemon in the foreground on the example cltab, with
# the embedded defaults for everything the cltab does not set.
#   bash scripts/run.sh [more clinit arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_build_tools
exec cargo run --release -- -c examples/cltab -d "$@"
