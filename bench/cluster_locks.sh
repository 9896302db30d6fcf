#!/usr/bin/env bash
# Cluster lock benchmark: clinit in cluster mode (bench/cluster_locks.rs:
# two nodes on one etcd) side by side with etcd's own lock API
# (bench/lock_peers.py: the v3 Lock RPC through etcd's gateway, and
# `etcdctl lock`), in one run.
#   bash bench/cluster_locks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_build_tools
need_packages etcd etcd-server etcdctl etcd-client
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench --quiet --bench cluster_locks -- --json > "$out/clinit.json"
python3 bench/lock_peers.py --skip-flock > "$out/peers.json"
python3 - "$out/clinit.json" "$out/peers.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
e = json.load(open(sys.argv[2])).get("etcd") or {}
def g(d, *ks):
    for k in ks:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d
def fmt(v, unit="", nd=0):
    return "-" if v is None else f"{v:,.{nd}f}{unit}"
def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.1f}x"
print(f"{'measure':40} {'clinit':>14} {'etcd':>14}  clinit/etcd   target")
for ck, ek, what, target in [
    ("one", "one", "1 client, uncontended, lock+unlock/s", ">= 20x etcd"),
    ("eight_one_name", "eight_one_name", "8 clients on one node, one name, /s", ""),
    ("two_nodes", "two_one_name", "2 nodes (etcd: 2 clients), one name, /s", ">= 1x etcd"),
]:
    cv, ev = g(c, ck, "ops_s"), g(e, ek, "ops_s")
    print(f"{what:40} {fmt(cv):>14} {fmt(ev):>14}  {ratio(cv, ev):>11}   {target}")
    cp, ep = g(c, ck, "p50_ms"), g(e, ek, "p50_ms")
    c9, e9 = g(c, ck, "p99_ms"), g(e, ek, "p99_ms")
    print(f"{'  p50 / p99 ms':40} {fmt(cp,'',3)+' / '+fmt(c9,'',3):>14} {fmt(ep,'',2)+' / '+fmt(e9,'',2):>14}")
print(f"{'  2 nodes: claims (hand-overs) /s':40} {fmt(g(c, 'two_nodes', 'claims_s')):>14}")
cd, ed = g(c, "death_to_grant_s"), g(e, "death_to_grant_s")
print(f"{'holder node death -> next grant':40} {fmt(cd,' s',2):>14} {fmt(ed,' s',2):>14}  {'':>11}   <= lease_ttl + 1 s ({c.get('lease_ttl_s')} + 1; etcd: {e.get('lease_ttl_s')} s lease)")
print(f"{'  samples':40} {str(g(c, 'death_to_grant_samples_s')):>14} {str(g(e, 'death_to_grant_samples_s')):>14}")
cc, ec = g(c, "cli_ms"), g(e, "cli_ms")
print(f"{'lock NAME -- true (CLI), ms':40} {fmt(cc,'',2):>14} {fmt(ec,'',2):>14}  {ratio(ec, cc):>11} faster")
PY
