#!/usr/bin/env bash
# Issue 13 benchmark, one run, side by side: clinit's remote administration
# over loopback TLS (bench/remote.rs), a raw TLS echo (the floor, in the
# same harness) and supervisord 4.2's remote XML-RPC over HTTP
# (bench/supervisord_remote.py; from PyPI into a venv).
#   bash bench/remote.sh [N]        (default N = 1000 entries / programs)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
source bench/supervisord_venv.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
N=$N cargo bench --quiet --bench remote > "$out/clinit.json"
"$VENV/bin/python" bench/supervisord_remote.py --n "$N" > "$out/supervisord.json"
python3 - "$out/clinit.json" "$out/supervisord.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
n = c["n"]
print(f"remote administration over loopback, {n} entries / programs")
print(f"{'measure':44} {'clinit (TLS)':>14} {'supervisord (HTTP)':>19}  ratio")
print(f"{'raw TLS 1.3 echo round trip p50 / p99':44} {c['tls_echo_us_p50']:7.1f}/{c['tls_echo_us_p99']:.1f} µs")
print(f"{'one request, kept open: p50 / p99':44} {c['ping_us_p50']:7.1f}/{c['ping_us_p99']:.1f} µs"
      f" {s['getprocessinfo_us_p50']:9.0f}/{s['getprocessinfo_us_p99']:.0f} µs"
      f"  clinit/raw TLS {c['ping_us_p50']/c['tls_echo_us_p50']:.2f}x (p50), supervisord/clinit {s['getprocessinfo_us_p50']/c['ping_us_p50']:.0f}x")
print(f"{'whole status, kept open':44} {c['status_rpc_ms']:11.2f} ms {s['status_rpc_ms']:16.2f} ms  supervisord/clinit {s['status_rpc_ms']/c['status_rpc_ms']:.1f}x")
print(f"{'status as a whole CLI call':44} {c['cli_status_ms']:11.2f} ms {s['cli_status_ms']:16.2f} ms  supervisord/clinit {s['cli_status_ms']/c['cli_status_ms']:.1f}x")
print(f"{'lock + unlock, one remote client':44} {c['lock_unlock_per_s']:9.0f} /s")
PY
