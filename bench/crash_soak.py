#!/usr/bin/env python3
"""SIGKILL of the daemon at random moments of each operation (issue 16).

For each operation (a respawn wave, a level switch, a reread, create/delete,
start-up restore) and each repetition: start a daemon on a fresh temp dir
with N respawn entries, start the operation, SIGKILL the daemon after a
random delay, start it again on the same state, let it settle, and count

  duplicates  processes beyond the first of one tag (a tag running twice),
  orphans     processes of the group that the new daemon does not track,
  leftovers   processes of the group still alive after its clean shutdown.

All three must be 0; it also reports the time from the new daemon's start
until the group's processes are exactly the ones it supervises (`clinit
wait` done, no duplicate, no orphan). Processes are found by the CLINIT_GROUP in their
environment; each run has a group name of its own.

    python3 bench/crash_soak.py CLINIT_BIN [REPS] [N]
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
N = int(sys.argv[3]) if len(sys.argv) > 3 else 100
SETTLE = 30.0


def procs_of(group):
    """{pid: tag} of live, non-zombie processes of `group`."""
    out = {}
    want = f"CLINIT_GROUP={group}".encode()
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
            if want not in env:
                continue
            stat = open(f"/proc/{p}/stat").read()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        tag = next((v[11:].decode() for v in env if v.startswith(b"CLINIT_TAG=")), "?")
        out[int(p)] = tag
    return out


class Run:
    def __init__(self, op, rep):
        self.dir = tempfile.mkdtemp(prefix="clinit-soak-")
        self.group = f"soak{os.getpid()}{op}{rep}"
        self.cltab = os.path.join(self.dir, "cltab")
        self.daemon = None

    def write_cltab(self, entries):
        d = self.dir
        head = (
            f":::socket:{d}/s\n:::clstat:{d}/clstat\n:::log:{d}/log\n:::state:{d}/state\n"
            ":::stop_term_after:1\n:::stop_kill_after:1\n"
        )
        with open(self.cltab + ".new", "w") as f:
            f.write(head + "".join(entries))
        os.rename(self.cltab + ".new", self.cltab)

    def cli(self, *args, timeout=60):
        return subprocess.run(
            [BIN, "-c", self.cltab, *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def start(self):
        err = open(os.path.join(self.dir, "daemon.stderr"), "a")
        self.daemon = subprocess.Popen(
            [BIN, "-c", self.cltab, "-d"], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )

    def wait_answers(self):
        end = time.time() + SETTLE
        while time.time() < end:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {self.daemon.returncode}")
            if self.cli("status").returncode == 0:
                return
            time.sleep(0.01)
        raise RuntimeError("daemon did not answer")

    def kill9(self):
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait()

    def running(self):
        r = self.cli("status", "--json")
        if r.returncode != 0:
            return {}
        return {
            e["pid"]: e["tag"]
            for g in json.loads(r.stdout)
            for e in g["entries"]
            if e["state"] == "running" and g["group"] == self.group
        }

    def count(self):
        procs = procs_of(self.group)
        seen = {}
        for tag in procs.values():
            seen[tag] = seen.get(tag, 0) + 1
        dup = sum(c - 1 for c in seen.values())
        tracked = self.running()
        orphans = sum(1 for p in procs if p not in tracked)
        return dup, orphans

    def settle(self):
        """Wait until the group's processes are exactly what the daemon
        tracks (or the time is up); return (duplicates, orphans)."""
        r = self.cli("wait", self.group, "--timeout", str(int(SETTLE)))
        end = time.time() + SETTLE
        while True:
            dup, orphans = self.count()
            if (dup == 0 and orphans == 0) or time.time() > end:
                return dup, orphans
            time.sleep(0.05)

    def shutdown(self):
        self.cli("shutdown")
        try:
            self.daemon.wait(timeout=SETTLE)
        except subprocess.TimeoutExpired:
            self.kill9()
        return len(procs_of(self.group))

    def cleanup(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.kill9()
        for p in procs_of(self.group):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["rm", "-rf", self.dir])


def entries(group, n, levels="1", cmd="sleep 1000", prefix="e"):
    return [f"{group}:{prefix}{i}:{levels}:respawn:{cmd}\n" for i in range(n)]


def op_respawn(r):
    # Kill every child: the daemon respawns them all in a wave.
    for p in procs_of(r.group):
        os.kill(p, signal.SIGKILL)
    time.sleep(random.uniform(0, 0.03))


def op_level(r):
    subprocess.Popen([BIN, "-c", r.cltab, "tell", r.group, "2"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The level-1 entries stop first (SIGINT), then the level-2 ones start.
    time.sleep(random.uniform(0, 0.3))


def op_reread(r):
    g = r.group
    new = (entries(g, N // 2, cmd="sleep 1001")          # changed commands
           + entries(g, N // 2, prefix="n")               # new tags
           + entries(g, N // 2, levels="2", prefix="f"))  # unchanged
    r.write_cltab(new)
    subprocess.Popen([BIN, "-c", r.cltab, "reread"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(0, 0.05))


def op_create(r):
    g = r.group

    def edits():
        for i in range(10):
            r.cli("create", g, f"c{i}", "1", "respawn", "--", "sleep", "1000", timeout=10)
            r.cli("delete", f"e{i}", timeout=10)

    threading.Thread(target=edits, daemon=True).start()
    time.sleep(random.uniform(0, 0.2))


def op_restore(r):
    # Killed once at rest, then again during the start-up restore.
    r.kill9()
    r.start()
    time.sleep(random.uniform(0, 0.1))


OPS = {
    "respawn wave": op_respawn,
    "level switch": op_level,
    "reread": op_reread,
    "create/delete": op_create,
    "start-up restore": op_restore,
}


def main():
    print(f"clinit {BIN}; {REPS} repetitions of each operation, {N} entries")
    total_bad = 0
    t_all = time.time()
    for name, op in OPS.items():
        dups = orphans = left = 0
        back = []
        t0 = time.time()
        for rep in range(REPS):
            r = Run(name.split()[0].replace("/", ""), rep)
            try:
                g = r.group
                r.write_cltab(entries(g, N) + entries(g, N // 2, levels="2", prefix="f"))
                r.start()
                r.wait_answers()
                r.cli("tell", g, "1")
                r.cli("wait", g, "1", "--timeout", "30")
                op(r)
                r.kill9()
                t_restart = time.time()
                r.start()
                r.wait_answers()
                d, o = r.settle()
                back.append(time.time() - t_restart)
                l = r.shutdown()
                dups, orphans, left = dups + d, orphans + o, left + l
                if d or o or l:
                    print(f"  {name} #{rep}: duplicates {d}, orphans {o}, leftovers {l} ({r.dir})")
            finally:
                r.cleanup()
        total_bad += dups + orphans + left
        back.sort()
        print(f"{name:17} {REPS} runs: duplicates {dups}, orphans {orphans}, "
              f"leftovers after shutdown {left}; restart -> all supervised p50 "
              f"{back[len(back) // 2]:.2f} s, max {back[-1]:.2f} s  ({time.time() - t0:.1f} s)")
    print(f"total {time.time() - t_all:.0f} s; {'all 0' if total_bad == 0 else 'FAILED'}")
    sys.exit(1 if total_bad else 0)


main()
