#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# rusqlite's `bundled` feature compiles SQLite from C: it needs a C compiler.
if ! command -v cc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update && apt-get install -y gcc libc6-dev
    else
        echo "scripts/test.sh: a C compiler (cc) is needed to build the bundled SQLite" >&2
        exit 1
    fi
fi
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test
