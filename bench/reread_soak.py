#!/usr/bin/env python3
"""Rereads under an address-space limit, and one of a 5 MB cltab (issue 15).

1. Starts the daemon under `prlimit --as=2000000000` (2 GB of address
   space) and rereads REREADS mutated cltabs (entries added, removed and
   changed at random, one in ten invalid): the daemon must stay alive, and
   its address space (VmSize) and RSS must not grow without bound.
2. Writes a cltab of about 5 MB (140,000 entries of mode `off`), rereads
   it while another connection pings the daemon every millisecond, and
   reports the reread's time and the slowest ping meanwhile.
3. A cltab over the 16 MiB bound is refused (CLTAB_TOO_LARGE) and the
   running one kept.

    python3 bench/reread_soak.py CLINIT_BIN [REREADS]
"""

import atexit
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

from soaklib import Client

BIN = sys.argv[1]
REREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 20000


def vm(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmSize:", "VmRSS:")):
                k, v = line.split()[:2]
                out[k[:-1]] = int(v) // 1024
    return out


def main():
    d = tempfile.mkdtemp(prefix="clinit-reread-")
    sock = os.path.join(d, "s")
    cltab = os.path.join(d, "cltab")
    head = f":::socket:{sock}\n:::log:{d}/log\n:::clstat:{d}/clstat\n:::state:{d}/state\n"

    def write(entries, bad=False):
        with open(cltab + ".new", "w") as f:
            f.write(head + "".join(entries) + ("broken line\n" if bad else ""))
        os.rename(cltab + ".new", cltab)

    base = [f"g{i % 20}:t{i}:1:off:sleep {i}\n" for i in range(2000)]
    write(base)
    daemon = subprocess.Popen(["prlimit", "--as=2000000000", BIN, "-c", cltab, "-d"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(d, "stderr"), "w"))
    end = time.time() + 20
    while True:
        try:
            c = Client(sock, "reread_soak", 120)
            break
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.01)
    atexit.register(lambda: daemon.poll() is None and daemon.kill())
    v0 = vm(daemon.pid)
    peak = dict(v0)
    refused = 0
    t0 = time.time()
    entries = list(base)
    for i in range(REREADS):
        for _ in range(random.randint(1, 20)):
            k = random.randrange(len(entries))
            r = random.random()
            if r < 0.3:
                entries[k] = f"g{random.randrange(20)}:t{k}:1:off:sleep {random.randrange(10**6)}\n"
            elif r < 0.6 and len(entries) > 100:
                entries.pop()
            else:
                n = len(entries)
                entries.append(f"g{random.randrange(30)}:t{n}:12:off:echo {'x' * random.randrange(200)}\n")
        bad = random.random() < 0.1
        write(entries, bad)
        r = c.call({"op": "reread"})
        if r.get("kind") == "error":
            refused += 1
            if not bad:
                print(f"unexpected refusal: {r}")
        if i % 500 == 0:
            for k, v in vm(daemon.pid).items():
                peak[k] = max(peak[k], v)
        if daemon.poll() is not None:
            break
    took = time.time() - t0
    alive = daemon.poll() is None
    v1 = vm(daemon.pid) if alive else {}
    print(f"{i + 1} rereads under a 2 GB address-space limit in {took:.0f} s "
          f"({refused} invalid cltabs refused): daemon alive {alive}")
    print(f"  VmSize {v0['VmSize']} -> {v1.get('VmSize')} MB (peak {peak['VmSize']}), "
          f"RSS {v0['VmRSS']} -> {v1.get('VmRSS')} MB (peak {peak['VmRSS']})")
    ok = alive

    # A 5 MB cltab: the reread's time and the slowest ping meanwhile.
    big = [f"b{i % 100}:big{i}:1:off:/usr/bin/true --an-argument-of-some-length {i}\n"
           for i in range(90000)]
    write(big)
    size = os.path.getsize(cltab)
    stop = threading.Event()
    worst = [0.0]

    def pinger():
        p = Client(sock, "reread_soak", 120)
        while not stop.is_set():
            t = time.perf_counter()
            p.call({"op": "ping"})
            worst[0] = max(worst[0], time.perf_counter() - t)
            time.sleep(0.001)

    th = threading.Thread(target=pinger)
    th.start()
    time.sleep(0.05)
    t = time.perf_counter()
    r = c.call({"op": "reread"})
    took = time.perf_counter() - t
    time.sleep(0.05)
    stop.set()
    th.join()
    print(f"reread of a {size / 1e6:.1f} MB cltab ({len(big)} entries): {took * 1000:.0f} ms, "
          f"slowest ping meanwhile {worst[0] * 1000:.1f} ms ({r.get('kind')})")

    # Over the bound: refused before it is read, the running cltab kept.
    with open(cltab, "ab") as f:
        f.truncate(17 << 20)
    r = c.call({"op": "reread"})
    print(f"reread of a 17 MiB cltab: {r.get('code')}: {r.get('message', '')[:100]}")
    ok = ok and r.get("code") == "CLTAB_INVALID" and "CLTAB_TOO_LARGE" in r.get("message", "")
    c.call({"op": "shutdown"})
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
    subprocess.run(["rm", "-rf", d])
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
