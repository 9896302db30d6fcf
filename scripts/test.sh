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
# What the build needs (a C compiler for the bundled SQLite, protoc for the
# etcd client's gRPC code) and what the cluster tests run (etcd).
source scripts/deps.sh
need_build_tools
need_packages etcd etcd-server etcdctl etcd-client
# The status page is tested in a real headless browser (tests/http.rs).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    need_packages _ chromium
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
# A short fuzz smoke run of every target (20 s each, from the seed corpus;
# bench/fuzz.sh installs cargo-fuzz when missing and fails on a crash).
bash bench/fuzz.sh 20
