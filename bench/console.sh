#!/usr/bin/env bash
# Issue 14 figures, one run, side by side with supervisord 4.2 (a venv):
#   bash bench/console.sh [N] [REPS]     (default N = 1000, REPS = 3)
# 1. /metrics scrape time and `clinit survey` as a whole CLI call at N
#    running entries, beside supervisord's getAllProcessInfo and
#    `supervisorctl status` at N programs (bench/console.py).
# 2. The N-entry start and the one-client lock rate of bench/ with metrics
#    off and on (http_listen set; for locks also a scrape every second),
#    alternated REPS times so that drift hits both alike; and the N-entry
#    tell with children's output relayed (log_prefix, the default) and
#    written straight to the log file (log_prefix:off).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
REPS=${2:-3}
source bench/supervisord_venv.sh
cargo build --release --quiet
"$VENV/bin/python" bench/console.py --n "$N" --bin target/release/clinit
echo
echo "metrics off vs on, $REPS alternations"
ON="--setting http_listen:127.0.0.1:0"
starts_off=(); starts_on=(); locks_off=(); locks_on=(); starts_direct=()
for _ in $(seq "$REPS"); do
  starts_off+=("$(cargo bench --quiet --bench core -- "$N" --start-only --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tell_to_all_running_s"])')")
  starts_on+=("$(cargo bench --quiet --bench core -- "$N" --start-only --json $ON | python3 -c 'import json,sys; print(json.load(sys.stdin)["tell_to_all_running_s"])')")
  starts_direct+=("$(cargo bench --quiet --bench core -- "$N" --start-only --json --setting log_prefix:off | python3 -c 'import json,sys; print(json.load(sys.stdin)["tell_to_all_running_s"])')")
  locks_off+=("$(cargo bench --quiet --bench locks -- --one 3 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["one_ops_s"])')")
  locks_on+=("$(cargo bench --quiet --bench locks -- --one 3 --json $ON --scrape | python3 -c 'import json,sys; print(json.load(sys.stdin)["one_ops_s"])')")
done
python3 - "${starts_off[*]}" "${starts_on[*]}" "${locks_off[*]}" "${locks_on[*]}" "${starts_direct[*]}" "$N" <<'PY'
import statistics, sys
so, sn, lo, ln, sd = ([float(x) for x in a.split()] for a in sys.argv[1:6])
n = sys.argv[6]
def row(name, off, on, unit, fmt):
    mo, mn = statistics.median(off), statistics.median(on)
    print(f"{name:34} off {fmt(mo)} {unit} ({fmt(min(off))} to {fmt(max(off))})   on {fmt(mn)} {unit} ({fmt(min(on))} to {fmt(max(on))})   on/off {mn / mo:.2f}x")
row(f"{n}-entry tell -> all running", so, sn, "s", lambda v: f"{v:.3f}")
row("1 client lock+unlock/s", lo, ln, "/s", lambda v: f"{v:,.0f}")
md, mo = statistics.median(sd), statistics.median(so)
print(f"{n}-entry tell, log_prefix:off       {md:.3f} s ({min(sd):.3f} to {max(sd):.3f}) against {mo:.3f} s relayed (metrics off): relayed/direct {mo / md:.2f}x")
PY
