#!/usr/bin/env bash
# Issue 2 benchmark, one run, side by side: clinit, supervisord 4.2 (from PyPI
# into a venv) and a bare std::process::Command spawn loop.
#   bash bench/run.sh [N]        (default N = 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
source bench/supervisord_venv.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench --quiet --bench core -- "$N" --json > "$out/clinit.json"
"$VENV/bin/python" bench/supervisord_bench.py --n "$N" --json > "$out/supervisord.json"
python3 - "$out/clinit.json" "$out/supervisord.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
def f(v, unit, d=2):
    return "n/a" if v is None else f"{v:.{d}f} {unit}"
def r(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.1f}x"
n = c["n"]
print(f"N = {n} respawn entries of sleep")
print(f"{'measure':38} {'clinit':>12} {'supervisord':>12} {'bare loop':>10}  ratio")
print(f"{'start -> all running':38} {f(c['start_to_all_running_s'],'s'):>12} {f(s['start_to_all_running_s'],'s'):>12} {f(c['bare_spawn_s'],'s'):>10}"
      f"  clinit/bare {c['start_to_all_running_s']/c['bare_spawn_s']:.2f}x, supervisord/clinit {r(s['start_to_all_running_s'], c['start_to_all_running_s'])}")
print(f"{'CLI status (N entries)':38} {f(c['cli_status_ms'],'ms'):>12} {f(None if s['cli_status_s'] is None else s['cli_status_s']*1e3,'ms'):>12} {'':>10}"
      f"  supervisord/clinit {r(None if s['cli_status_s'] is None else s['cli_status_s']*1e3, c['cli_status_ms'])}; clinit at 10 entries {c['cli_status_ms_n10']:.2f} ms")
print(f"{'one in-process request':38} {f(c['request_us'],'us',1):>12} {f(None if s['rpc_request_ms'] is None else s['rpc_request_ms']*1e3,'us',0):>12} {'':>10}"
      f"  clinit/raw socket ({c['raw_socket_rtt_us']:.1f} us) {c['request_us']/c['raw_socket_rtt_us']:.2f}x")
print(f"{'daemon RSS with N children':38} {f(c['rss_mb'],'MB',1):>12} {f(s['rss_mb'],'MB',1):>12} {'':>10}  supervisord/clinit {r(s['rss_mb'], c['rss_mb'])}")
print(f"{'SIGKILL -> respawned':38} {f(c['respawn_ms'],'ms'):>12} {f(s['respawn_ms'],'ms'):>12} {'':>10}  supervisord/clinit {r(s['respawn_ms'], c['respawn_ms'])}")
print(f"{'start -> goals restored (N running)':38} {f(c['restore_s'],'s'):>12} {'':>12} {'':>10}  after SIGKILL of the daemon: {f(c['crash_restore_s'],'s')}")
PY
