#!/usr/bin/env python3
"""Load with churn against one daemon, bounded in count (issue 15).

CLIENTS client processes each send REQS requests on one kept-open
connection to a daemon supervising 5 groups of 10 respawn entries, while
the same clients switch those groups between levels 1-3 (half of each
group's entries run at levels 1-2, the other half at 2-3, so every switch
stops and starts entries). The mix, per request:

  status   25 %  full status of one group
  tell     12 %  one of the 5 groups to level 1, 2 or 3
  control   3 %  stop or start one entry (temporary)
  lock     25 %  lock_acquire of one of 20 names (exclusive, waiting at
                 most 50 ms), then lock_release when granted (2 requests)
  record   35 %  record add / get / modify in one of 5 containers (each
                 client its own keys, modify with the signature it holds)

Prints: requests/s in all, p50/p99 latency per kind, replies that should
not happen (errors other than a lock wait's TIMEOUT), client timeouts (no
reply within 10 s), the daemon's CPU time (user/system) during the run,
its fd count and RSS before and after (after a settle of the groups),
and zombies among its children after. Exit status 1 when errors,
timeouts or zombies are not 0, or fds did not come back to baseline.

    python3 bench/load_soak.py CLINIT_BIN [CLIENTS] [REQS]

LOAD_ONLY=status|tell|control|lock|record sends only that kind (to find
which one limits the mix).
"""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

from soaklib import Client, fds, rss_kb

BIN = sys.argv[1]
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 50
REQS = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
GROUPS = [f"g{i}" for i in range(5)]
TICK = os.sysconf("SC_CLK_TCK")


def client(path, n, out_path):
    random.seed(os.getpid())
    me = os.getpid()
    keys = {}  # key -> sig
    lat = {}
    errors = []
    timeouts = 0
    lock_waits = 0
    done = 0
    c = Client(path, "load_soak")

    def timed(kind, req):
        t = time.perf_counter()
        r = c.call(req)
        lat.setdefault(kind, []).append(time.perf_counter() - t)
        return r

    def bad(kind, r):
        errors.append(f"{kind}: {r.get('code')} {r.get('message')}")

    only = os.environ.get("LOAD_ONLY")  # diagnosis: one kind of request only
    at = {"status": 0, "tell": 25, "control": 37, "lock": 40, "record": 65}
    while done < n:
        x = at[only] if only else random.random() * 100
        try:
            if x < 25:
                r = timed("status", {"op": "status", "group": random.choice(GROUPS), "brief": False})
                if r["kind"] != "status":
                    bad("status", r)
                done += 1
            elif x < 37:
                r = timed("tell", {"op": "tell", "group": random.choice(GROUPS),
                                   "level": str(random.randint(1, 3))})
                if r["kind"] != "message":
                    bad("tell", r)
                done += 1
            elif x < 40:
                g = random.choice(GROUPS)
                r = timed("control", {"op": "control", "tag": f"{g}e{random.randint(0, 9)}",
                                      "action": random.choice(["stop", "start"]), "temporary": True})
                if r["kind"] != "message":
                    bad("control", r)
                done += 1
            elif x < 65:
                name = f"l{random.randint(0, 19)}"
                r = timed("lock_acquire", {"op": "lock_acquire", "name": name, "mode": "exclusive",
                                           "wait": True, "timeout_ms": 50, "lease": None,
                                           "what": "load_soak"})
                done += 1
                if r["kind"] == "granted":
                    r = timed("lock_release", {"op": "lock_release", "name": name, "lease": None})
                    if r["kind"] != "ok":
                        bad("lock_release", r)
                    done += 1
                elif r.get("code") == "TIMEOUT":
                    lock_waits += 1
                else:
                    bad("lock_acquire", r)
            else:
                cont = f"c{me % 5}"
                y = random.random()
                if not keys or y < 0.25:
                    k = f"k{me}-{len(keys)}"
                    r = timed("record_add", {"op": "record", "record": "add", "container": cont,
                                             "key": k, "value_b64": "dmFsdWU="})
                    if r["kind"] == "signature":
                        keys[k] = r["sig"]
                    else:
                        bad("record_add", r)
                elif y < 0.6:
                    k = random.choice(list(keys))
                    r = timed("record_get", {"op": "record", "record": "get", "container": cont, "key": k})
                    if r["kind"] != "record":
                        bad("record_get", r)
                else:
                    k = random.choice(list(keys))
                    r = timed("record_modify", {"op": "record", "record": "modify", "container": cont,
                                                "key": k, "value_b64": "dmFsdWUy", "sig": keys[k]})
                    if r["kind"] == "signature":
                        keys[k] = r["sig"]
                    else:
                        bad("record_modify", r)
                done += 1
        except (socket.timeout, TimeoutError):
            timeouts += 1
            done += 1
            c.s.close()
            c = Client(path, "load_soak")
    c.s.close()
    with open(out_path, "w") as f:
        json.dump({"lat": lat, "errors": errors, "timeouts": timeouts, "lock_waits": lock_waits}, f)


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def zombies(ppid):
    n = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if f[0] == "Z" and int(f[1]) == ppid:
            n += 1
    return n


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    d = tempfile.mkdtemp(prefix="clinit-load-")
    sock = os.path.join(d, "s")
    cltab = os.path.join(d, "cltab")
    with open(cltab, "w") as f:
        f.write(f":::socket:{sock}\n:::log:{d}/log\n:::clstat:{d}/clstat\n:::state:{d}/state\n")
        for g in GROUPS:
            for i in range(10):
                levels = "12" if i < 5 else "23"
                f.write(f"{g}:{g}e{i}:{levels}:respawn:sleep 1000\n")
    daemon = subprocess.Popen([BIN, "-c", cltab, "-d"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "w"))

    def cli(*args):
        return subprocess.run([BIN, "-c", cltab, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=60).returncode

    def settle():
        for g in GROUPS:
            cli("tell", g, "2")
        for g in GROUPS:
            cli("wait", g, "2", "--timeout", "30")

    end = time.time() + 20
    while time.time() < end and cli("status") != 0:
        time.sleep(0.01)
    settle()
    fd0, rss0 = fds(daemon.pid), rss_kb(daemon.pid)
    u0, s0 = cpu(daemon.pid)
    t0 = time.time()
    kids = []
    for i in range(CLIENTS):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                client(sock, REQS, os.path.join(d, f"c{i}.json"))
            except Exception as e:  # noqa: BLE001 - reported by the parent
                with open(os.path.join(d, f"c{i}.json"), "w") as f:
                    json.dump({"lat": {}, "errors": [f"client died: {e!r}"], "timeouts": 0,
                               "lock_waits": 0}, f)
                code = 1
            os._exit(code)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    took = time.time() - t0
    u1, s1 = cpu(daemon.pid)
    lat, errors, timeouts, lock_waits = {}, [], 0, 0
    for i in range(CLIENTS):
        r = json.load(open(os.path.join(d, f"c{i}.json")))
        for k, v in r["lat"].items():
            lat.setdefault(k, []).extend(v)
        errors += r["errors"]
        timeouts += r["timeouts"]
        lock_waits += r["lock_waits"]
    settle()
    # Connections close asynchronously; give the daemon a moment to see them go.
    end = time.time() + 10
    while time.time() < end and fds(daemon.pid) > fd0:
        time.sleep(0.05)
    fd1, rss1 = fds(daemon.pid), rss_kb(daemon.pid)
    z = zombies(daemon.pid)
    total = sum(len(v) for v in lat.values())
    print(f"{CLIENTS} clients x {REQS} requests, 5 groups x 10 respawn entries switching levels")
    print(f"{total} requests in {took:.2f} s: {total / took:.0f} requests/s in all")
    print(f"{'kind':14} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for k in sorted(lat):
        v = lat[k]
        print(f"{k:14} {len(v):7} {pct(v, .5) * 1e3:8.2f} {pct(v, .99) * 1e3:8.2f} {max(v) * 1e3:8.2f}")
    allv = [x for v in lat.values() for x in v]
    print(f"{'all':14} {len(allv):7} {pct(allv, .5) * 1e3:8.2f} {pct(allv, .99) * 1e3:8.2f} {max(allv) * 1e3:8.2f}")
    print(f"lock waits that timed out at 50 ms (expected under contention): {lock_waits}")
    print(f"error replies that should not happen: {len(errors)}; client timeouts (10 s): {timeouts}")
    for e in errors[:10]:
        print(f"  {e}")
    print(f"daemon CPU during the run: user {u1 - u0:.2f} s, system {s1 - s0:.2f} s "
          f"({(u1 - u0 + s1 - s0) / took * 100:.0f} % of one core)")
    print(f"daemon fds {fd0} -> {fd1}; RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB; zombies after: {z}")
    cli("shutdown")
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
    subprocess.run(["rm", "-rf", d])
    ok = not errors and timeouts == 0 and z == 0 and fd1 <= fd0
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


main()
