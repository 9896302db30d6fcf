#!/usr/bin/env python3
"""Durability of records across SIGKILL of the daemon (issue 15).

REPS times: start the daemon on one state dir (the same for every
repetition), let WRITERS client threads add and modify records in a loop
(each thread its own keys), SIGKILL the daemon after a random 50-500 ms,
start it again on the same state and read every container back. A write
counts as acknowledged when its `signature` reply arrived before the kill.
Per key the soak remembers the last acknowledged value and the one write
that may have been in flight:

  lost        the key is missing, or holds neither the acknowledged value
              nor the in-flight one (must be 0)
  appeared    the key holds the in-flight value whose reply never came
              (allowed: the daemon committed it and died before replying)

    python3 bench/durability_soak.py CLINIT_BIN [REPS] [WRITERS]
"""

import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from soaklib import Client

BIN = sys.argv[1]
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 50
WRITERS = int(sys.argv[3]) if len(sys.argv) > 3 else 4


def b64(v):
    return base64.b64encode(v.encode()).decode()


class Writer:
    """One client thread's keys: key -> [acknowledged value, sig, in-flight value]."""

    def __init__(self, n):
        self.n = n
        self.keys = {}
        self.writes = 0

    def run(self, path, rep):
        try:
            c = Client(path, "durability_soak")
        except OSError:
            return
        rid = 0
        try:
            while True:
                rid += 1
                if not self.keys or random.random() < 0.3:
                    k = f"w{self.n}-{len(self.keys)}"
                    v = f"{k}@{rep}.{rid}"
                    self.keys[k] = [None, None, v]
                    req = {"id": rid, "op": "record", "record": "add", "container": f"c{self.n}",
                           "key": k, "value_b64": b64(v)}
                else:
                    k = random.choice(list(self.keys))
                    ent = self.keys[k]
                    if ent[1] is None:
                        continue  # its add was never acknowledged: left alone
                    v = f"{k}@{rep}.{rid}"
                    ent[2] = v
                    req = {"id": rid, "op": "record", "record": "modify", "container": f"c{self.n}",
                           "key": k, "value_b64": b64(v), "sig": ent[1]}
                r = c.call(req)
                if r.get("kind") != "signature":
                    raise RuntimeError(f"unexpected reply {r}")
                ent = self.keys[k]
                ent[0], ent[1], ent[2] = v, r["sig"], None
                self.writes += 1
        except (OSError, ConnectionError):
            return


def read_back(path, n):
    c = Client(path, "durability_soak")
    r = c.call({"op": "record", "record": "list", "container": f"c{n}"})
    c.close()
    if r.get("kind") != "records":
        raise RuntimeError(f"list c{n}: {r}")
    return {rec["key"]: (base64.b64decode(rec["value_b64"]).decode(), rec["sig"]) for rec in r["records"]}


def main():
    d = tempfile.mkdtemp(prefix="clinit-durable-")
    sock = os.path.join(d, "s")
    cltab = os.path.join(d, "cltab")
    with open(cltab, "w") as f:
        f.write(f":::socket:{sock}\n:::log:{d}/log\n:::clstat:{d}/clstat\n:::state:{d}/state\n"
                "idle:i:1:wait:true\n")
    writers = [Writer(n) for n in range(WRITERS)]
    lost = appeared = acked = 0
    t_all = time.time()

    def start():
        p = subprocess.Popen([BIN, "-c", cltab, "-d"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "a"))
        end = time.time() + 30
        while time.time() < end:
            try:
                Client(sock, "durability_soak").close()
                return p
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("daemon did not answer")

    for rep in range(REPS):
        daemon = start()
        threads = [threading.Thread(target=w.run, args=(sock, rep)) for w in writers]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.05, 0.5))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        for t in threads:
            t.join()
        daemon = start()
        for w in writers:
            have = read_back(sock, w.n)
            for k, ent in list(w.keys.items()):
                ack, sig, pending = ent
                got = have.get(k)
                if got is not None and pending is not None and got[0] == pending:
                    appeared += 1
                    ent[0], ent[1], ent[2] = pending, got[1], None
                elif ack is None:
                    if got is None:
                        del w.keys[k]  # an add that never happened: allowed
                    else:
                        lost += 1
                        print(f"  rep {rep}: {k} holds {got[0]!r}, never written")
                        del w.keys[k]
                elif got is None or got[0] != ack:
                    lost += 1
                    print(f"  rep {rep}: {k} should hold {ack!r}, holds {got and got[0]!r}")
                    ent[0], ent[2] = (got[0], None) if got else (None, None)
                    ent[1] = got[1] if got else None
                else:
                    ent[2] = None
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    acked = sum(w.writes for w in writers)
    print(f"{REPS} SIGKILLs, {WRITERS} writers: {acked} acknowledged writes, "
          f"{sum(len(w.keys) for w in writers)} records checked after each kill")
    print(f"acknowledged writes lost: {lost}; unacknowledged writes that appeared: {appeared} "
          f"({time.time() - t_all:.0f} s)")
    subprocess.run(["rm", "-rf", d])
    sys.exit(1 if lost else 0)


main()
