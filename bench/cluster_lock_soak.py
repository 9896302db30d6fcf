"""Fault soak of cluster locks: never two holders, whatever happens to a node.

    python3 bench/cluster_lock_soak.py [ROUNDS] [--ttl SECS]   (bench/cluster_lock_soak.sh)

Starts a one-member etcd (`etcd` on PATH) on free loopback ports, a TCP
proxy between node n1 and etcd (this script's; it can drop every byte), and
two clinit daemons in cluster mode (n1 through the proxy, n2 directly),
`lease_ttl` TTL (default 2 s). Each round:

  1. on n1, `clinit lock vol` runs a command deaf to SIGTERM that would
     end by itself after 3 TTL;
  2. on n2, `clinit lock vol` waits; its command records whether n1's
     command still runs when n2 is granted the lock, and its token;
  3. one fault, of a random kind and length: n1 cut off from etcd (the
     proxy drops everything) for 0.1 to 2 TTL; n1's daemon frozen
     (SIGSTOP) for 0.1 to 2 TTL; n1's daemon killed (SIGKILL) and started
     again; or none;
  4. healed; both lock commands must end within 30 s.

Counted: rounds, overlaps (n2 granted while n1's command ran: must be 0),
tokens not rising (n2's token not above n1's, or below the last round's:
must be 0), rounds where n1's command was stopped (exit 76) and where it
ran to its end, hangs. Bounded: every wait has a deadline; processes this
script started are stopped by pid at the end.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from soaklib import free_port

DEADLINE_S = 30


class Proxy:
    """Forwards 127.0.0.1:port to upstream; blackholed, it forwards nothing
    (and reads nothing: bytes wait in the sockets' buffers, as TCP keeps
    retransmitting through a partition) until healed. Dropping bytes
    instead would cut holes into live TCP streams, which no network does:
    an HTTP/2 frame lost whole (a watch event) goes unnoticed."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.blackholed = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def pipe(self, a, b):
        try:
            while True:
                while self.blackholed:
                    time.sleep(0.005)
                data = a.recv(65536)
                if not data:
                    break
                while self.blackholed:
                    time.sleep(0.005)
                b.sendall(data)
        except OSError:
            pass
        finally:
            if b is not None:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            try:
                u = socket.create_connection(("127.0.0.1", self.up))
            except OSError:
                c.close()
                continue
            threading.Thread(target=self.pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c), daemon=True).start()


def wait_for(what, cond, limit=DEADLINE_S):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Node:
    def __init__(self, clinit, d, name, etcd, ttl):
        self.clinit, self.d, self.name = clinit, os.path.join(d, name), name
        os.makedirs(self.d)
        self.cltab = os.path.join(self.d, "cltab")
        with open(self.cltab, "w") as f:
            f.write(f":::socket:{self.d}/s\n:::log:{self.d}/log\n:::clstat:{self.d}/clstat\n"
                    f":::state:{self.d}/state\n:::etcd:{etcd}\n:::node:{name}\n"
                    f":::lease_ttl:{ttl}\n:::cgroup:off\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([self.clinit, "-c", self.cltab, "-d"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.d)
        wait_for(f"{self.name} answers", lambda: self.run("status").returncode == 0)

    def run(self, *args):
        return subprocess.run([self.clinit, "-c", self.cltab, *args], capture_output=True,
                              text=True, timeout=DEADLINE_S, stdin=subprocess.DEVNULL)

    def lock_bg(self, tag, script):
        out = open(os.path.join(self.d, f"{tag}.err"), "w")
        return subprocess.Popen([self.clinit, "-c", self.cltab, "lock", "vol", "--", "sh", "-c",
                                 script], cwd=self.d, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=out)

    def read(self, name):
        try:
            with open(os.path.join(self.d, name)) as f:
                return f.read().strip()
        except OSError:
            return ""

    def remove(self, *names):
        for n in names:
            try:
                os.unlink(os.path.join(self.d, n))
            except OSError:
                pass

    def waiters(self):
        r = self.run("locks", "vol", "--json")
        try:
            return sum(len(c["waiters"]) for c in json.loads(r.stdout))
        except (ValueError, KeyError):
            return 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = int(args[0]) if args else 20
    ttl = 2.0
    if "--ttl" in sys.argv:
        ttl = float(sys.argv[sys.argv.index("--ttl") + 1])
    clinit = os.environ.get("CLINIT_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "clinit")
    d = tempfile.mkdtemp(prefix="clinit-lock-soak-")
    cport, pport = free_port(), free_port()
    etcd = subprocess.Popen(
        ["etcd", "--name", "s0", "--data-dir", os.path.join(d, "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{cport}",
         "--advertise-client-urls", f"http://127.0.0.1:{cport}",
         "--listen-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"s0=http://127.0.0.1:{pport}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(d, "etcd.log"), "w"))
    nodes = []
    counts = {"rounds": 0, "overlaps": 0, "tokens_not_rising": 0, "n1_stopped": 0,
              "n1_ran_to_end": 0, "hangs": 0, "faults": {}}
    try:
        wait_for("etcd", lambda: subprocess.run(
            ["etcdctl", "--endpoints", f"http://127.0.0.1:{cport}", "put", "/x", "y"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True).returncode == 0)
        proxy = Proxy(cport)
        n1 = Node(clinit, d, "n1", f"http://127.0.0.1:{proxy.port}", ttl)
        n2 = Node(clinit, d, "n2", f"http://127.0.0.1:{cport}", ttl)
        nodes = [n1, n2]
        rng = random.Random(int(os.environ.get("SOAK_SEED", "0")) or None)
        last = 0
        t0 = time.monotonic()
        for r in range(rounds):
            n1.remove("a.pid", "a.token")
            n2.remove("b.seen", "b.token")
            a = n1.lock_bg("a", f"trap '' TERM; echo $$ > a.pid; echo $CLINIT_LOCK_TOKEN > a.token; "
                                f"exec sleep {3 * ttl}")
            try:
                wait_for("n1 holds vol", lambda: n1.read("a.token") != "")
            except RuntimeError:
                # n1 is still catching up with etcd after the last fault.
                a.wait(timeout=DEADLINE_S)
                continue
            pid = n1.read("a.pid")
            b = n2.lock_bg("b", f"if kill -0 {pid} 2>/dev/null; then echo alive; else echo stopped; "
                                f"fi > b.seen; echo $CLINIT_LOCK_TOKEN > b.token")
            wait_for("n2 waits", lambda: n2.waiters() == 1)
            kind = rng.choice(["cut", "freeze", "kill", "none"])
            length = rng.uniform(0.1, 2.0) * ttl
            counts["faults"][kind] = counts["faults"].get(kind, 0) + 1
            if kind == "cut":
                proxy.blackholed = True
                time.sleep(length)
                proxy.blackholed = False
            elif kind == "freeze":
                os.kill(n1.proc.pid, signal.SIGSTOP)
                time.sleep(length)
                os.kill(n1.proc.pid, signal.SIGCONT)
            elif kind == "kill":
                n1.proc.kill()
                n1.proc.wait()
            try:
                ca = a.wait(timeout=DEADLINE_S)
                b.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                counts["hangs"] += 1
                print(f"round {r}: HANG after {kind} {length:.2f} s: n1's lock {a.poll()}, "
                      f"n2's lock {b.poll()}; n1: {n1.read('a.err')!r}; n2: {n2.read('b.err')!r}; "
                      f"n2 locks: {n2.run('locks', 'vol').stdout!r}; n1 locks: "
                      f"{n1.run('locks', 'vol').stdout!r}", file=sys.stderr)
                keep = os.path.join(tempfile.gettempdir(), f"clinit-soak-hang-{r}")
                shutil.copytree(d, keep, ignore=shutil.ignore_patterns("etcd", "s"),
                                dirs_exist_ok=True)
                print(f"  logs kept in {keep}", file=sys.stderr)
                a.kill()
                b.kill()
                a.wait()
                b.wait()
                if kind == "kill":
                    n1.start()
                continue
            if kind == "kill":
                n1.start()
            counts["rounds"] += 1
            if n2.read("b.seen") != "stopped":
                counts["overlaps"] += 1
                print(f"round {r}: OVERLAP after {kind} {length:.2f} s", file=sys.stderr)
            ta, tb = int(n1.read("a.token") or 0), int(n2.read("b.token") or 0)
            if not (tb > ta > last):
                counts["tokens_not_rising"] += 1
                print(f"round {r}: tokens {last} {ta} {tb}", file=sys.stderr)
            last = tb
            if ca == 76:
                counts["n1_stopped"] += 1
            elif ca == 0:
                counts["n1_ran_to_end"] += 1
        counts["seconds"] = round(time.monotonic() - t0, 1)
        counts["lease_ttl_s"] = ttl
        print(json.dumps(counts))
    finally:
        for n in nodes:
            n.stop()
        etcd.terminate()
        try:
            etcd.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            etcd.kill()
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if counts["overlaps"] or counts["tokens_not_rising"] or counts["hangs"] else 0)


if __name__ == "__main__":
    main()
