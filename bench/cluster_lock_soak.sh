#!/usr/bin/env bash
# Fault soak of cluster locks (bench/cluster_lock_soak.py): ROUNDS rounds
# (default 20) of a node cut off from etcd, frozen or killed while it holds
# a lock another node waits for; prints the counts (overlaps must be 0).
#   bash bench/cluster_lock_soak.sh [ROUNDS] [--ttl SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_build_tools
need_packages etcd etcd-server etcdctl etcd-client
cargo build --release --quiet
exec python3 bench/cluster_lock_soak.py "$@"
