#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The integration tests run the client as other users (nobody) to test the
# access rules, and give sockets to other groups: they need root.
if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run the test suite as root (the access tests switch to the user nobody)" >&2
    exit 1
fi
# rusqlite's `bundled` feature compiles SQLite from C: it needs a C compiler.
if ! command -v cc >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update </dev/null && apt-get install -y -q gcc libc6-dev </dev/null
    else
        echo "scripts/test.sh: a C compiler (cc) is needed to build the bundled SQLite" >&2
        exit 1
    fi
fi
# A minimal rustup profile lacks rustfmt and clippy.
for tool in rustfmt clippy; do
    if ! cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$tool"
        else
            echo "scripts/test.sh: cargo ${tool/rustfmt/fmt} is missing and there is no rustup to add it" >&2
            exit 1
        fi
    fi
done
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test
