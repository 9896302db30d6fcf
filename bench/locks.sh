#!/usr/bin/env bash
# Lock service benchmark: clinit (bench/locks.rs) side by side with flock
# and a local single-node etcd (bench/lock_peers.py), in one run.
#   bash bench/locks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench --quiet --bench locks -- --json > "$out/clinit.json"
python3 bench/lock_peers.py > "$out/peers.json"
python3 - "$out/clinit.json" "$out/peers.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))
f, e = p.get("flock") or {}, p.get("etcd") or {}
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
print(f"{'measure':34} {'clinit':>14} {'etcd':>14} {'flock':>14}  clinit/etcd   target")
for key, what, target in [
    ("one", "1 client, lock+unlock/s", ">= 30,000"),
    ("eight_one_name", "8 clients, one name, /s", ">= 10,000"),
    ("eight_names", "8 clients, 8 names, /s", ">= 50,000"),
]:
    cv, ev, fv = g(c, key, "ops_s"), g(e, key, "ops_s"), g(f, key, "ops_s")
    print(f"{what:34} {fmt(cv):>14} {fmt(ev):>14} {fmt(fv):>14}  {ratio(cv, ev):>11}   {target}")
    cp, ep, fp = g(c, key, "p50_ms"), g(e, key, "p50_ms"), g(f, key, "p50_ms")
    c9, e9 = g(c, key, "p99_ms"), g(e, key, "p99_ms")
    print(f"{'  p50 / p99 ms':34} {fmt(cp,'',3)+' / '+fmt(c9,'',3):>14} {fmt(ep,'',2)+' / '+fmt(e9,'',2):>14} {fmt(fp,'',4):>14}")
    if key == "one":
        nv, npc = g(c, "one_nospin", "ops_s"), g(c, "one_nospin", "p50_ms")
        print(f"{'1 client, never spins (p50 ms)':34} {fmt(nv)+' ('+fmt(npc,'',3)+')':>14} {'':>14} {'':>14}  {ratio(nv, ev):>11}")
cv = g(c, "one_pipelined", "ops_s")
print(f"{'1 client, release+acquire pipelined':34} {fmt(cv):>14} {'':>14} {'':>14}  {ratio(cv, g(e, 'one', 'ops_s')):>11}")
rr, one = g(c, "raw_rtt_us"), g(c, "one", "ops_s")
per = None if not one else 1e6 / (2 * one)
print(f"{'raw UNIX-socket round trip, us':34} {fmt(rr,'',1):>14} {'':>14} {'':>14}  {'':>11}   (the floor; moves with the machine)")
print(f"{'  1 client: us per request':34} {fmt(per,'',1):>14} {'':>14} {'':>14}  {ratio(per, rr):>11} raw")
cd, ed = g(c, "death_to_grant_ms"), g(e, "death_to_grant_s")
print(f"{'holder death -> next grant':34} {fmt(cd,' ms',3):>14} {fmt(ed,' s',2):>14} {'':>14}  {'':>11}   < 10 ms (etcd: 5 s lease)")
cc, fc, ec = g(c, "cli_ms"), g(c, "flock_cli_ms"), g(e, "cli_ms")
print(f"{'lock NAME -- true (CLI), ms':34} {fmt(cc,'',2):>14} {fmt(ec,'',2):>14} {fmt(fc,'',2):>14}  clinit/flock {ratio(cc, fc)}   <= 2x flock")
if p.get("errors"):
    print("peer errors:", *p["errors"], sep="\n  ")
PY
