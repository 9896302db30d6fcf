#!/usr/bin/env bash
# Fault soak of exclusive groups (bench/exclusive_soak.py): a 3-member etcd,
# two clinit nodes sharing group `web`; ROUNDS rounds (default 60) in which
# the owner's daemon is killed, frozen or cut off from etcd (or, with
# --kinds ...,leader, the etcd leader is killed); measures the failover
# against lease_ttl and counts overlaps (must be 0) and hangs. Then the same
# faults on etcd's own `etcdctl lock` holders as the peer.
#   bash bench/exclusive_soak.sh [ROUNDS] [--ttl SECS] [--kinds kill,freeze,blackhole[,leader]]
#                                [--peer-rounds N] [--max-seconds S] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_build_tools
need_packages etcd etcd-server etcdctl etcd-client
cargo build --release --quiet
exec python3 bench/exclusive_soak.py "$@"
