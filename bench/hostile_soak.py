#!/usr/bin/env python3
"""Hostile clients against one daemon, bounded in time (issue 16).

Worker processes running as `nobody` (uid 65534) hammer the daemon's
socket for SECS seconds with what a hostile or broken client sends:
random bytes, oversized length prefixes, frames that stop half way,
connections that never say hello, requests before the hello, valid JSON
of the wrong shape (and nested 100,000 deep), 1-byte writes with pauses,
clients that send 2,000 requests and never read a reply, tells and lock
names of 100 KB and with newlines, lock holders of 1 MB, lease TTLs of
10^15 ms, records of 1 MiB. Then root opens 500 connections that each
send half a frame and stay, and times `status` probes with them open
(each must answer within 100 ms).
Meanwhile root probes the daemon with `status` requests and records their
latency. At the end it prints what was sent, the daemon's RSS and log
size, the slowest probe, and whether the daemon is still alive and
answering, and its fd count and RSS before and after. The daemon must
survive, stay small, keep its log short, answer root throughout and come
back to its fd count.

    python3 bench/hostile_soak.py CLINIT_BIN [SECS] [WORKERS]
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from soaklib import fds, rss_kb

BIN = sys.argv[1]
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 30
WORKERS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
NOBODY = 65534


def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def read_frame(s):
    hdr = b""
    while len(hdr) < 4:
        b = s.recv(4 - len(hdr))
        if not b:
            return None
        hdr += b
    n = struct.unpack(">I", hdr)[0]
    body = b""
    while len(body) < n:
        b = s.recv(min(65536, n - len(body)))
        if not b:
            return None
        body += b
    return json.loads(body)


HELLO = frame({"version": 1, "agent": "hostile"})


def attack(sock_path, counts):
    kind = random.choice(
        ["garbage", "huge_len", "half_frame", "no_hello", "big_tell", "newline_tell",
         "big_lock_name", "big_holder", "huge_ttl", "big_record", "many_leases",
         "before_hello", "wrong_shape", "deep_json", "slow_bytes", "never_reads"])
    counts[kind] = counts.get(kind, 0) + 1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    try:
        s.connect(sock_path)
        if kind == "garbage":
            s.sendall(os.urandom(random.randint(1, 4096)))
        elif kind == "huge_len":
            s.sendall(HELLO + struct.pack(">I", 0xFFFFFFF0) + b"{")
        elif kind == "half_frame":
            s.sendall(HELLO + struct.pack(">I", (4 << 20) - 1) + b"x" * 65536)
            return s  # left open, half sent
        elif kind == "no_hello":
            return s  # left open, silent
        elif kind == "before_hello":
            s.sendall(frame({"id": 1, "op": "status", "group": None, "brief": True}))
            read_frame(s)  # BAD_REQUEST "expected a hello frame", then closed
        elif kind == "wrong_shape":
            s.sendall(HELLO)
            read_frame(s)
            for body in ([1, 2, 3], {"id": "x", "op": 5}, {"id": 1, "op": "tell", "group": 1, "level": []},
                         {"id": 1, "op": "record", "record": "add"}, {"id": -1, "op": "ping"},
                         {"id": 1, "op": "lock_acquire", "name": "n", "mode": "both"}, "text", None):
                s.sendall(frame(json.dumps(body).encode()))
                if read_frame(s) is None:
                    break
        elif kind == "deep_json":
            s.sendall(HELLO)
            read_frame(s)
            s.sendall(frame(b"[" * 100_000 + b"]" * 100_000))
            read_frame(s)
        elif kind == "slow_bytes":
            data = HELLO + frame({"id": 1, "op": "status", "group": None, "brief": True})
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                time.sleep(0.002)
            read_frame(s)
            read_frame(s)
        elif kind == "never_reads":
            s.setblocking(False)
            req = frame({"id": 1, "op": "status", "group": None, "brief": False})
            try:
                s.sendall(HELLO)
                for _ in range(2000):
                    s.send(req)
            except OSError:
                pass  # the daemon stopped reading: its replies are not read
            return s  # left open, never reading
        else:
            s.sendall(HELLO)
            read_frame(s)
            big = "x" * 100_000
            reqs = {
                "big_tell": [{"id": 1, "op": "tell", "group": big, "level": "1"}],
                "newline_tell": [{"id": 1, "op": "tell", "group": "web\n2026 INFO shutdown", "level": "1"}],
                "big_lock_name": [{"id": 1, "op": "lock_acquire", "name": big, "mode": "exclusive"}],
                "big_holder": [{"id": 1, "op": "lock_acquire", "name": "h%d" % random.randint(0, 5000),
                                "mode": "shared", "what": "y" * (1 << 20)}],
                "huge_ttl": [{"id": 1, "op": "lease_grant", "ttl_ms": 10 ** 15}],
                "big_record": [{"id": 1, "op": "record", "record": "add", "container": "c%d" % random.randint(0, 50),
                                "key": "k%d" % random.randint(0, 10 ** 6), "value_b64": "A" * ((1 << 20) * 4 // 3)}],
                "many_leases": [{"id": i, "op": "lease_grant", "ttl_ms": 60_000} for i in range(1, 80)],
            }[kind]
            for r in reqs:
                s.sendall(frame(r))
            for _ in reqs:
                if read_frame(s) is None:
                    break
            if kind in ("big_holder",):
                return s  # keep the lock
    except OSError:
        pass
    s.close()
    return None


def worker(sock_path, secs, out_path):
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    random.seed(os.getpid())
    counts = {}
    held = []
    end = time.time() + secs
    while time.time() < end:
        s = attack(sock_path, counts)
        if s is not None:
            held.append(s)
        if len(held) > 300:
            for h in held[:100]:
                h.close()
            held = held[100:]
    for h in held:
        h.close()
    with open(out_path, "w") as f:
        json.dump(counts, f)


def probe(sock_path):
    t = time.time()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(HELLO + frame({"id": 1, "op": "status", "group": None, "brief": True}))
    read_frame(s)
    r = read_frame(s)
    s.close()
    assert r is not None and r.get("kind") == "status", r
    return time.time() - t


def half_frames(sock_path, n):
    """n connections (as root: not under the per-uid limit) that send their
    hello and half a frame, and stay; the slowest of 20 status probes."""
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        s.sendall(HELLO + struct.pack(">I", 1000) + b'{"id":1,"op":"st')
        held.append(s)
    worst = max(probe(sock_path) for _ in range(20))
    for s in held:
        s.close()
    return worst


def main():
    d = tempfile.mkdtemp(prefix="clinit-hostile-")
    os.chmod(d, 0o755)
    out = os.path.join(d, "counts")
    os.mkdir(out)
    os.chmod(out, 0o777)
    sock = os.path.join(d, "s")
    cltab = os.path.join(d, "cltab")
    # A build older than the client_timeout setting would refuse it.
    timeout = "" if os.environ.get("HOSTILE_OLD") else ":::client_timeout:2\n"
    with open(cltab, "w") as f:
        f.write(f":::socket:{sock}\n:::socket_mode:0666\n:::log:{d}/log\n:::clstat:{d}/clstat\n"
                f":::state:{d}/state\n{timeout}web:w:1:respawn:sleep 1000\n")
    os.chmod(cltab, 0o644)
    daemon = subprocess.Popen([BIN, "-c", cltab, "-d"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 20
    while time.time() < end and not os.path.exists(sock):
        time.sleep(0.01)
    probe(sock)
    log0 = os.path.getsize(os.path.join(d, "log"))
    fd0, rss0 = fds(daemon.pid), rss_kb(daemon.pid)
    kids = []
    for i in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            try:
                worker(sock, SECS, os.path.join(out, f"w{i}.json"))
            finally:
                os._exit(0)
        kids.append(pid)
    worst = 0.0
    probes = 0
    peak_rss = 0
    t_end = time.time() + SECS
    while time.time() < t_end:
        worst = max(worst, probe(sock))
        probes += 1
        with open(f"/proc/{daemon.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    peak_rss = max(peak_rss, int(line.split()[1]))
        time.sleep(0.05)
    for pid in kids:
        os.waitpid(pid, 0)
    counts = {}
    for i in range(WORKERS):
        try:
            for k, v in json.load(open(os.path.join(out, f"w{i}.json"))).items():
                counts[k] = counts.get(k, 0) + v
        except OSError:
            pass
    alive = daemon.poll() is None
    worst = max(worst, probe(sock)) if alive else worst
    half_worst = half_frames(sock, 500) if alive else float("inf")
    alive = daemon.poll() is None
    end = time.time() + 15  # the daemon sees closed connections go asynchronously
    while alive and time.time() < end and fds(daemon.pid) > fd0:
        time.sleep(0.05)
    fd1, rss1 = (fds(daemon.pid), rss_kb(daemon.pid)) if alive else (-1, -1)
    log_grew = os.path.getsize(os.path.join(d, "log")) - log0
    print(f"{WORKERS} hostile workers (uid {NOBODY}) for {SECS:.0f} s: {sum(counts.values())} attacks")
    for k in sorted(counts):
        print(f"  {k:15} {counts[k]}")
    print(f"daemon alive and answering: {alive}; root status probes: {probes}, slowest {worst * 1000:.1f} ms")
    print(f"daemon peak RSS {peak_rss / 1024:.1f} MB; log grew by {log_grew / 1024:.1f} KB")
    print(f"500 half-frame connections held by root: slowest of 20 status probes {half_worst * 1000:.1f} ms"
          " (must be <= 100 ms)")
    print(f"daemon fds {fd0} -> {fd1}; RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB")
    if alive:
        subprocess.run([BIN, "-c", cltab, "shutdown"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGKILL)
    subprocess.run(["rm", "-rf", d])
    ok = alive and half_worst <= 0.1 and fd1 <= fd0
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


main()
