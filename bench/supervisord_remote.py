"""supervisord 4.2's remote XML-RPC as the peer of bench/remote.rs (issue 13).

Run by bench/remote.sh with the python of a venv that has `supervisor==4.2.*`:
    python bench/supervisord_remote.py --n 1000

supervisord with N `sleep` programs (bench/supervisord_bench.py's config)
and an [inet_http_server] on a free loopback port (plain HTTP, a user and a
password: what supervisord offers for remote use). Measures:

  cli_status_ms        `supervisorctl -s http://127.0.0.1:PORT -u .. -p ..
                       status`, wall time (median of 3)
  getprocessinfo_us    one supervisor.getProcessInfo('s0') on a kept-open
                       HTTP/1.1 connection: p50 and p99 of 1,000
  status_rpc_ms        getAllProcessInfo() on that connection (median of 5)

Output: one JSON object on stdout.
"""

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import supervisord_bench as sb  # noqa: E402
from soaklib import free_port  # noqa: E402

USER, PASSWORD = "bench", "secret"


class KeptOpen:
    """XML-RPC calls over one kept-open HTTP/1.1 connection."""

    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.headers = {"Content-Type": "text/xml", "Authorization": f"Basic {auth}"}

    def call(self, method, *params):
        body = xmlrpc.client.dumps(params, method)
        self.c.request("POST", "/RPC2", body, self.headers)
        r = self.c.getresponse()
        data = r.read()
        return xmlrpc.client.loads(data)[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = {"n": a.n}
    with tempfile.TemporaryDirectory(prefix="supervisord-remote-") as d:
        conf, sock = sb.write_conf(d, a.n)
        port = free_port()
        with open(conf, "a") as f:
            f.write(f"\n[inet_http_server]\nport=127.0.0.1:{port}\n"
                    f"username={USER}\npassword={PASSWORD}\n")
        t0 = time.monotonic()
        sv = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if sb.wait_all_running(sock, a.n, t0) is None:
                sys.exit("supervisord_remote: not all programs running")
            samples = []
            for _ in range(3):
                t = time.monotonic()
                subprocess.run(
                    [sys.executable, "-m", "supervisor.supervisorctl",
                     "-s", f"http://127.0.0.1:{port}", "-u", USER, "-p", PASSWORD,
                     "status"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=sb.CLI_TIMEOUT_S)
                samples.append((time.monotonic() - t) * 1e3)
            res["cli_status_ms"] = statistics.median(samples)
            k = KeptOpen(port)
            for _ in range(100):
                k.call("supervisor.getProcessInfo", "s0")
            each = []
            for _ in range(1000):
                t = time.monotonic()
                k.call("supervisor.getProcessInfo", "s0")
                each.append((time.monotonic() - t) * 1e6)
            each.sort()
            res["getprocessinfo_us_p50"] = each[len(each) // 2]
            res["getprocessinfo_us_p99"] = each[int(len(each) * 0.99)]
            st = []
            for _ in range(5):
                t = time.monotonic()
                infos = k.call("supervisor.getAllProcessInfo")
                assert len(infos) == a.n
                st.append((time.monotonic() - t) * 1e3)
            res["status_rpc_ms"] = statistics.median(st)
        finally:
            sb.stop(sv)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
