"""supervisord 4.2 as the peer of bench/core.rs (issue 2).

Run by bench/run.sh with a venv that has supervisor installed:
    python bench/supervisord_bench.py --n 1000 --json

Measures, with N programs `sleep 100000` (autostart, autorestart,
startsecs=0, output discarded), all over a UNIX socket in a temp dir:
  start_to_all_running_s  supervisord launch -> getAllProcessInfo all RUNNING
  cli_status_s            one `supervisorctl status` call (median of 3)
  rpc_request_ms          mean of 200 supervisor.getState() XML-RPC calls
  rss_mb                  supervisord VmRSS with N children
  respawn_ms              SIGKILL of a child -> RUNNING with a new pid (median of 3)
Every wait has a deadline; a figure that timed out is reported as null.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport


def write_conf(d, n):
    sock = os.path.join(d, "s.sock")
    lines = [
        "[unix_http_server]", f"file={sock}", "",
        "[supervisord]", "nodaemon=true", f"logfile={d}/supervisord.log",
        f"pidfile={d}/supervisord.pid", "minfds=4096", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{sock}", "",
    ]
    for i in range(n):
        lines += [f"[program:s{i}]", "command=sleep 100000", "autostart=true",
                  "autorestart=true", "startsecs=0", "stdout_logfile=NONE",
                  "stderr_logfile=NONE", ""]
    conf = os.path.join(d, "supervisord.conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines))
    return conf, sock


def proxy(sock):
    return xmlrpc.client.ServerProxy(
        "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = {"n": a.n, "start_to_all_running_s": None, "cli_status_s": None,
           "rpc_request_ms": None, "rss_mb": None, "respawn_ms": None}
    with tempfile.TemporaryDirectory() as d:
        conf, sock = write_conf(d, a.n)
        t0 = time.monotonic()
        sv = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        try:
            deadline = t0 + 120
            p = proxy(sock)
            while time.monotonic() < deadline:
                try:
                    infos = p.supervisor.getAllProcessInfo()
                    if len(infos) == a.n and all(i["statename"] == "RUNNING" for i in infos):
                        res["start_to_all_running_s"] = time.monotonic() - t0
                        break
                except Exception:
                    p = proxy(sock)  # a failed call leaves the transport unusable
                time.sleep(0.05)
            p = proxy(sock)

            samples = []
            for _ in range(3):
                t = time.monotonic()
                subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "status"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                samples.append(time.monotonic() - t)
            res["cli_status_s"] = statistics.median(samples)

            t = time.monotonic()
            for _ in range(200):
                p.supervisor.getState()
            res["rpc_request_ms"] = (time.monotonic() - t) * 1000 / 200

            res["rss_mb"] = rss_mb(sv.pid)

            samples = []
            for _ in range(3):
                old = p.supervisor.getProcessInfo("s0")["pid"]
                t = time.monotonic()
                os.kill(old, signal.SIGKILL)
                end = t + 10
                while time.monotonic() < end:
                    info = p.supervisor.getProcessInfo("s0")
                    if info["statename"] == "RUNNING" and info["pid"] not in (0, old):
                        samples.append((time.monotonic() - t) * 1000)
                        break
            if len(samples) == 3:
                res["respawn_ms"] = statistics.median(samples)
        finally:
            sv.terminate()
            try:
                sv.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(sv.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
