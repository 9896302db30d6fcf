#!/usr/bin/env bash
# Event subscribers against the daemon's speed (issue 10): the 1,000-entry
# start (tell -> all running) and one client's lock+unlock rate, without and
# with K event subscribers following (`clinit events --follow --json` each,
# to /dev/null), alternating, PAIRS pairs; prints every run, the medians and
# the ratio.
#   bash bench/events.sh [K] [PAIRS]      (default K = 10, PAIRS = 3)
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-10}
PAIRS=${2:-3}
cargo build --quiet --release --benches
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq "$PAIRS"); do
  for subs in 0 "$K"; do
    cargo bench --quiet --bench core -- 1000 --start-only --subscribers "$subs" --json >> "$out/start.$subs"
    cargo bench --quiet --bench locks -- --one 3 --subscribers "$subs" --json >> "$out/locks.$subs"
  done
done
python3 - "$out" "$K" <<'PY'
import json, sys, statistics
out, k = sys.argv[1], sys.argv[2]
def runs(name):
    return [json.loads(l) for l in open(f"{out}/{name}") if l.strip()]
s0, sk = runs("start.0"), runs(f"start.{k}")
l0, lk = runs("locks.0"), runs(f"locks.{k}")
def show(label, a, b, key, unit, fmt):
    va, vb = [r[key] for r in a], [r[key] for r in b]
    ma, mb = statistics.median(va), statistics.median(vb)
    print(f"{label}")
    print(f"  without subscribers: {', '.join(fmt(v) for v in va)}  (median {fmt(ma)} {unit})")
    print(f"  with {k} subscribers: {', '.join(fmt(v) for v in vb)}  (median {fmt(mb)} {unit})")
    follow = [f"{r['following']}/{r['subscribers']}" for r in b]
    print(f"  subscribers still following at the end: {', '.join(follow)}")
    return ma, mb
ma, mb = show("tell -> 1,000 entries running", s0, sk, "tell_to_all_running_s", "s", lambda v: f"{v:.3f}")
print(f"  with/without: {mb / ma:.2f}x (target: within 10%, <= 1.10x)")
ma, mb = show("1 client lock+unlock/s", l0, lk, "one_ops_s", "/s", lambda v: f"{v:,.0f}")
print(f"  with/without: {mb / ma:.2f}x (target: within 10%, >= 0.90x)")
PY
