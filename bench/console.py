"""The operator's console at N entries (issue 14), beside supervisord.

Run by bench/console.sh with the venv's python (supervisor 4.2 importable):
    python bench/console.py --n 1000 --bin target/release/clinit [--json]

clinit: a daemon in a temp dir with N respawn entries `sleep 100000` and
`http_listen` on 127.0.0.1 (port 0, read from its log), all running. Then:

  metrics_scrape_ms   GET /metrics on one kept-alive connection, SCRAPES
                      times: median, p90, min, max; the page's bytes and
                      series
  survey_cli_ms       `clinit survey entries` as a whole CLI call (fork,
                      exec, connect, request, print N rows), CLI_RUNS
                      times: median, min, max
  survey_usage_cli_ms the same with the cpu and rss columns (each entry's
                      process tree read from /proc)
  status_cli_ms       `clinit status` the same way, for scale
  true_cli_ms         /bin/true by the same subprocess call: the floor of
                      any CLI call measured this way

supervisord, N programs, in the same run (the peer):

  getallprocessinfo_ms  XML-RPC getAllProcessInfo() on one proxy: what a
                        supervisord Prometheus exporter calls per scrape
  supervisorctl_status_ms  `supervisorctl status` as a whole CLI call

Every wait has a deadline; everything started is stopped at the end.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import supervisord_bench as sb  # noqa: E402

SCRAPES = 200
CLI_RUNS = 30
DEADLINE_S = 120


def spread(samples):
    s = sorted(samples)
    return {
        "median": statistics.median(s),
        "p90": s[min(len(s) - 1, int(len(s) * 0.9))],
        "min": s[0],
        "max": s[-1],
        "runs": len(s),
    }


def timed_ms(argv, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=DEADLINE_S)
        out.append((time.perf_counter() - t) * 1e3)
        if r.returncode not in (0, 3):
            raise RuntimeError(f"{argv} exited {r.returncode}")
    return spread(out)


def wait_for(what, pred):
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise RuntimeError(f"no {what} within {DEADLINE_S} s")


def clinit_side(binary, n):
    res = {}
    with tempfile.TemporaryDirectory(prefix="clinit-console-") as d:
        cltab = os.path.join(d, "cltab")
        lines = [f":::socket:{d}/s", f":::log:{d}/log", f":::state:{d}/state",
                 f":::clstat:{d}/clstat", ":::http_listen:127.0.0.1:0",
                 ":::stop_term_after:1", ":::stop_kill_after:1"]
        lines += [f"b:s{i}:1:respawn:sleep 100000" for i in range(n)]
        with open(cltab, "w") as f:
            f.write("\n".join(lines) + "\n")
        cli = [binary, "-c", cltab]
        daemon = subprocess.Popen(cli + ["-d"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_for("daemon", lambda: subprocess.run(
                cli + ["null"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0)
            subprocess.run(cli + ["tell", "b", "1"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(cli + ["wait", "b", "1", "--timeout", str(DEADLINE_S)],
                           check=True, stdout=subprocess.DEVNULL)

            def port():
                with open(os.path.join(d, "log")) as f:
                    for line in f:
                        if "HTTP listener on http://" in line:
                            return int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
                return None
            p = wait_for("HTTP port in the log", port)
            conn = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
            samples = []
            body = b""
            for _ in range(SCRAPES):
                t = time.perf_counter()
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                samples.append((time.perf_counter() - t) * 1e3)
                if r.status != 200:
                    raise RuntimeError(f"/metrics: {r.status}")
            conn.close()
            res["metrics_scrape_ms"] = spread(samples)
            res["metrics_bytes"] = len(body)
            res["metrics_series"] = sum(1 for l in body.splitlines()
                                        if l and not l.startswith(b"#"))
            res["survey_cli_ms"] = timed_ms(cli + ["survey", "entries"], CLI_RUNS)
            res["survey_usage_cli_ms"] = timed_ms(
                cli + ["survey", "entries", "--columns", "group,tag,state,pid,cpu,rss"],
                CLI_RUNS)
            res["status_cli_ms"] = timed_ms(cli + ["status"], CLI_RUNS)
            res["true_cli_ms"] = timed_ms(["/bin/true"], CLI_RUNS)
            rows = subprocess.run(cli + ["survey", "entries", "--no-header"],
                                  capture_output=True, check=True).stdout.count(b"\n")
            res["survey_rows"] = rows
            subprocess.run(cli + ["shutdown"], stdout=subprocess.DEVNULL, timeout=DEADLINE_S)
            daemon.wait(timeout=DEADLINE_S)
        finally:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    return res


def supervisord_side(n):
    res = {}
    with tempfile.TemporaryDirectory(prefix="supervisord-console-") as d:
        conf, sock = sb.write_conf(d, n)
        t0 = time.monotonic()
        sv = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", conf],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if sb.wait_all_running(sock, n, t0) is None:
                raise RuntimeError("supervisord: not all running")
            proxy = sb.make_proxy(sock)
            proxy.supervisor.getState()
            samples = []
            for _ in range(20):
                t = time.perf_counter()
                infos = proxy.supervisor.getAllProcessInfo()
                samples.append((time.perf_counter() - t) * 1e3)
                assert len(infos) == n
            res["getallprocessinfo_ms"] = spread(samples)
            res["supervisorctl_status_ms"] = timed_ms(
                [sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "status"], 5)
        finally:
            sb.stop(sv)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = {"n": a.n, "clinit": clinit_side(a.bin, a.n), "supervisord": supervisord_side(a.n)}
    if a.json:
        print(json.dumps(res))
        return
    c, s = res["clinit"], res["supervisord"]

    def f(x):
        return f"{x['median']:.2f} ms (p90 {x['p90']:.2f}, {x['min']:.2f} to {x['max']:.2f}, {x['runs']} runs)"
    print(f"N = {a.n} running entries / programs")
    print(f"clinit GET /metrics            {f(c['metrics_scrape_ms'])}; {c['metrics_bytes']} bytes, {c['metrics_series']} series")
    print(f"supervisord getAllProcessInfo  {f(s['getallprocessinfo_ms'])}   ratio {s['getallprocessinfo_ms']['median'] / c['metrics_scrape_ms']['median']:.1f}x")
    print(f"clinit survey entries (CLI)    {f(c['survey_cli_ms'])}; {c['survey_rows']} rows; target <= 10 ms")
    print(f"clinit survey with cpu,rss     {f(c['survey_usage_cli_ms'])}")
    print(f"clinit status (CLI)            {f(c['status_cli_ms'])}")
    print(f"/bin/true (the same call)      {f(c['true_cli_ms'])}")
    print(f"supervisorctl status (CLI)     {f(s['supervisorctl_status_ms'])}   ratio {s['supervisorctl_status_ms']['median'] / c['survey_cli_ms']['median']:.1f}x")


if __name__ == "__main__":
    main()
