#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test
