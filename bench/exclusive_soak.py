"""Fault soak of exclusive groups, and of etcd's own `etcdctl lock` as a peer:
how fast the work moves when its owner fails, and whether two ever run it.

    python3 bench/exclusive_soak.py [ROUNDS] [--ttl SECS] [--kinds K,K,...]
        [--peer-rounds N] [--max-seconds S] [--keep]   (bench/exclusive_soak.sh)

Starts a 3-member etcd (`etcd` on PATH) on free loopback ports, one TCP
proxy of this script's per node (node n1 -> proxy -> member m0, n2 -> proxy
-> member m1; a blackholed proxy forwards nothing until healed, it never
drops bytes), and two clinit daemons in cluster mode with `lease_ttl` TTL
(default 3 s), run from a copy of target/release/clinit (or $CLINIT_BIN)
in this run's temp dir, so that a build in the checkout during the run
does not change the binary measured (an early run found that a daemon
whose binary was replaced could not start its fencing watchdog; it now
starts it from /proc/self/exe). The shared cltab makes `web` an exclusive
group on n1,n2
whose one process appends "NODE TOKEN NS" ($CLINIT_NODE,
$CLINIT_FENCE_TOKEN, wall-clock ns) to a shared file every 0.05 s.

ROUNDS rounds (default 60), the fault kinds taken in turn (--kinds, default
kill,freeze,blackhole; `leader` adds: SIGKILL the etcd leader member,
started again when the round heals). Each round:

  1. wait for a current owner (the file's last line newer than 0.5 s) and
     for both nodes to be candidates;
  2. fault on the owner's node: kill = SIGKILL its daemon, freeze = SIGSTOP
     it, blackhole = its proxy stops forwarding (leader: the etcd leader,
     whichever node that cuts off, if any);
  3. T0 = the fault's time; wait (30 s) for a line of the other node with a
     higher token: failover = that line's time - T0 (leader: a round with
     no new owner after 2 TTL + 3 s, its owner still appending, is "kept";
     a line of the owner with a higher token, "retaken": its etcd member
     stalled through the election, it let the group go and took it again);
  4. heal (SIGCONT, proxy healed, the daemon or member started again) and
     wait until the healed node's `status web` names the new owner; 1 s
     more of appends.

Overlaps (must be 0), counted once per round: the checker over the file's
new lines (in file order tokens never go down, one token belongs to one
node), or a line of the old owner after the new owner's first line (its
old writer still running, or started again once healed). Also counted:
old_alive (a writer process of the old owner still alive when the new
owner's first line was seen, with the old token), hangs (a deadline hit),
max_gap_s (per round, the longest time with no append).

Then the peer, --peer-rounds rounds (default ROUNDS) with the same kinds and
TTL: two holders p1, p2, each `etcdctl lock --ttl TTL soakpeer sh
peer_writer.sh` through its own proxy (to m0 and m1), the command
appending "NAME $ETCD_LOCK_REV NS". Faults hit the holder's etcdctl
(SIGKILL: its command lives on; SIGSTOP; its proxy; or the etcd leader).
Failover = the other's first line - T0; overlap = a line of the old holder
after that, watched for 2 s; then the old holder's process group is killed
and its `etcdctl lock` started again as the next round's waiter.

Prints a summary per kind and one JSON line last. Bounded: every wait has a
deadline; after --max-seconds (default 1500) no round starts (the clinit
rounds get their share of it, ROUNDS / (ROUNDS + peer rounds)). At the end
every process this script started is stopped: holders by process group,
daemons with SIGTERM then SIGKILL, etcd members, and whatever is left whose
working directory or command line is in this run's temp dir (writers,
`clinit watchdog`s). Exit status 1 if clinit overlapped or hung.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# The same loopback ports and fault proxy as the cluster-lock soak (this
# script's directory is on sys.path when it runs).
from cluster_lock_soak import Proxy, free_port, wait_for  # noqa: E402

DEADLINE_S = 30
FRESH_NS = 500_000_000
KINDS = ("kill", "freeze", "blackhole", "leader")
GROUP = "web"
PEER_LOCK = "soakpeer"


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def poll_until(cond, limit=DEADLINE_S, step=0.01):
    """cond()'s first true value within limit seconds, else None."""
    end = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            return None
        time.sleep(step)


def etcdctl(endpoints, *args, timeout=10):
    try:
        return subprocess.run(["etcdctl", "--endpoints", endpoints, *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "ETCDCTL_API": "3"})
    except subprocess.TimeoutExpired:
        return None


class Etcd:
    """Members m0..m{n-1} on loopback, each one a process this script can
    kill and start again (same ports, same data)."""

    def __init__(self, d, n=3):
        self.d = d
        self.members = [{"name": f"m{i}", "client": free_port(), "peer": free_port(), "proc": None}
                        for i in range(n)]

    def url(self, i):
        return f"http://127.0.0.1:{self.members[i]['client']}"

    def running(self):
        return [i for i, m in enumerate(self.members) if m["proc"] is not None]

    def start(self, i):
        m = self.members[i]
        initial = ",".join(f"{x['name']}=http://127.0.0.1:{x['peer']}" for x in self.members)
        client, peer = self.url(i), f"http://127.0.0.1:{m['peer']}"
        with open(os.path.join(self.d, f"{m['name']}.log"), "a") as log:
            m["proc"] = subprocess.Popen(
                ["etcd", "--name", m["name"], "--data-dir", os.path.join(self.d, f"data-{m['name']}"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "clinit-exclusive-soak"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.d,
                start_new_session=True)

    def healthy(self, i):
        r = etcdctl(self.url(i), "endpoint", "health", timeout=5)
        return r is not None and r.returncode == 0

    def writable(self):
        """A write through every running member goes through."""
        for i in self.running():
            r = etcdctl(self.url(i), "put", "/clinit-soak/probe", "x", timeout=5)
            if r is None or r.returncode != 0:
                return False
        return True

    def wait_ready(self):
        for i in self.running():
            wait_for(f"etcd member m{i} healthy", lambda: self.healthy(i))
        wait_for("etcd commits writes", self.writable)

    def leader(self):
        """Index of the leader member, or None."""
        urls = [self.url(i) for i in self.running()]
        r = etcdctl(",".join(urls), "endpoint", "status", "-w", "json")
        if r is None or r.returncode != 0:
            return None
        try:
            for e in json.loads(r.stdout):
                st = e["Status"]
                if st["header"]["member_id"] == st["leader"]:
                    return next(i for i in self.running() if self.url(i) == e["Endpoint"])
        except (ValueError, KeyError, TypeError, StopIteration):
            pass
        return None

    def kill(self, i):
        p = self.members[i]["proc"]
        self.members[i]["proc"] = None
        if p is not None:
            p.kill()
            p.wait()

    def stop_all(self):
        for m in self.members:
            p, m["proc"] = m["proc"], None
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Node:
    def __init__(self, clinit, d, name, etcd_url, ttl):
        self.clinit, self.d, self.name = clinit, os.path.join(d, name), name
        os.makedirs(self.d)
        self.cltab = os.path.join(self.d, "cltab")
        with open(self.cltab, "w") as f:
            f.write(f":::socket:{self.d}/clinit.s\n:::clstat:{self.d}/clstat\n:::log:{self.d}/log\n"
                    f":::state:{self.d}/state\n:::etcd:{etcd_url}\n:::node:{name}\n"
                    f":::lease_ttl:{ttl}\n")
        self.proc = None

    def start(self):
        with open(os.path.join(self.d, "daemon.stderr"), "a") as err:
            self.proc = subprocess.Popen([self.clinit, "-c", self.cltab, "-d"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, cwd=self.d)
        wait_for(f"{self.name} answers", lambda: self.ok("status"))

    def run(self, *args, timeout=10):
        try:
            return subprocess.run([self.clinit, "-c", self.cltab, *args], capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None

    def ok(self, *args):
        r = self.run(*args)
        return r is not None and r.returncode == 0

    def status_owner(self):
        """The owner `status web` names, or None."""
        r = self.run("status", GROUP, timeout=5)
        m = re.search(r"\bowner (\S+) token (\d+)", r.stdout if r else "")
        return m.group(1) if m else None

    def group_view(self):
        r = self.run("cluster", "status", "--json", timeout=5)
        try:
            return next(g for g in json.loads(r.stdout)["groups"] if g["group"] == GROUP)
        except (AttributeError, ValueError, KeyError, TypeError, StopIteration):
            return {}

    def tail(self, name, n):
        try:
            with open(os.path.join(self.d, name), errors="replace") as f:
                return f.read().splitlines()[-n:]
        except OSError:
            return []

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Appends:
    """The shared appends file, read as it grows: lines (node, token, ns),
    and a checker over them in file order."""

    def __init__(self, path):
        self.path = path
        self.off = 0
        self.buf = b""
        self.lines = []
        self.checked = 0
        self.prev_token = None
        self.owner_of = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return
        self.off += len(data)
        *full, self.buf = (self.buf + data).split(b"\n")
        for raw in full:
            w = raw.decode(errors="replace").split()
            try:
                self.lines.append((w[0], int(w[1]), int(w[2])))
            except (IndexError, ValueError):
                # A line without a token: counted by check() as a violation.
                self.lines.append((w[0] if w else "?", None, int(time.time_ns())))

    def current(self):
        """(node, token) of the last line if it is newer than 0.5 s."""
        self.poll()
        if not self.lines:
            return None
        node, token, ns = self.lines[-1]
        return (node, token) if token is not None and time.time_ns() - ns < FRESH_NS else None

    def check(self):
        """Violations among the lines not checked yet: a token going down
        from the line before, or a token appended by two nodes."""
        bad = []
        for i in range(self.checked, len(self.lines)):
            node, token, _ = self.lines[i]
            if token is None:
                bad.append(f"line {i + 1}: no token ({node})")
                continue
            first = self.owner_of.setdefault(token, node)
            if first != node:
                bad.append(f"line {i + 1}: token {token} of {first} appended by {node}")
            if self.prev_token is not None and token < self.prev_token:
                bad.append(f"line {i + 1}: token down from {self.prev_token} to {token} ({node})")
            self.prev_token = token
        self.checked = len(self.lines)
        return bad

    def show(self, start, n=12):
        lines = self.lines[max(start, len(self.lines) - n):]
        return [f"{a} {b} {c}" for a, b, c in lines]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().rsplit(")", 1)[1].strip().startswith("Z")
    except (OSError, IndexError):
        return False


def writers_of(script, node, token):
    """Live processes running `script` with CLINIT_NODE=node and
    CLINIT_FENCE_TOKEN=token."""
    out = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        try:
            with open(f"/proc/{ent}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if script.encode() not in cmd:
                continue
            with open(f"/proc/{ent}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"CLINIT_NODE={node}".encode() in env and \
                f"CLINIT_FENCE_TOKEN={token}".encode() in env and alive(int(ent)):
            out.append(int(ent))
    return out


def sweep(d):
    """SIGKILL every live process whose working directory or command line
    is in d (this run's temp dir): what this script's processes left."""
    me = os.getpid()
    killed = 0
    for _ in range(50):
        found = []
        for ent in os.listdir("/proc"):
            if not ent.isdigit() or int(ent) == me:
                continue
            try:
                cwd = os.readlink(f"/proc/{ent}/cwd")
            except OSError:
                cwd = ""
            try:
                with open(f"/proc/{ent}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if (cwd == d or cwd.startswith(d + "/") or d in cmd) and alive(int(ent)):
                found.append(int(ent))
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


def new_stats():
    return {"rounds": 0, "overlaps": 0, "violations": 0, "old_after_new": 0, "old_alive": 0,
            "hangs": 0, "kept": 0, "retaken": 0, "skipped": 0, "failovers": [], "gaps": []}


def spread(xs):
    if not xs:
        return None
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3),
            "max": round(max(xs), 3)}


def summarize(st, ttl):
    st["failover_s"] = spread(st.pop("failovers"))
    st["failover_x_ttl"] = st["failover_s"] and {k: round(v / ttl, 2)
                                                 for k, v in st["failover_s"].items()}
    # Per round, the longest time between two appends (none appending).
    st["max_gap_s"] = spread(st.pop("gaps"))
    return st


def max_gap(lines, start):
    """The longest time between two successive lines from start - 1 on (s)."""
    ns = [x[2] for x in lines[max(start - 1, 0):] if x[1] is not None]
    return max((b - a for a, b in zip(ns, ns[1:])), default=0) / 1e9


class Soak:
    def __init__(self, opts):
        self.o = opts
        self.ttl = opts.ttl
        built = os.environ.get("CLINIT_BIN") or os.path.abspath(os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "clinit"))
        self.d = tempfile.mkdtemp(prefix="clinit-excl-soak-")
        # A copy: a build in the checkout during the run replaces
        # target/release/clinit, and a daemon whose executable is gone
        # cannot start its fencing watchdog (std::env::current_exe).
        self.clinit = os.path.join(self.d, "clinit")
        shutil.copy2(built, self.clinit)
        self.shared = os.path.join(self.d, "shared")
        os.makedirs(self.shared)
        self.etcd = Etcd(self.d)
        self.nodes = {}
        self.proxies = {}
        self.peers = {}
        self.peer_proxies = {}
        self.stats = {k: new_stats() for k in opts.kinds}
        self.peer_stats = {k: new_stats() for k in opts.kinds}
        self.t0 = time.monotonic()
        self.kept_dirs = []

    # --- shared helpers ---------------------------------------------------

    def keep(self, tag):
        """Copy this run's logs (not etcd's data, not sockets) for a look later."""
        dst = os.path.join(tempfile.gettempdir(), f"{os.path.basename(self.d)}-{tag}")
        try:
            shutil.copytree(self.d, dst, ignore=shutil.ignore_patterns("data-*", "*.s", "state"),
                            dirs_exist_ok=True)
        except (shutil.Error, OSError):
            pass
        self.kept_dirs.append(dst)
        note(f"  logs kept in {dst}")

    def diagnose(self, what, appends, start):
        note(f"  {what}; last appends:")
        for line in appends.show(start):
            note(f"    {line}")
        for n in self.nodes.values():
            frozen = n.proc is not None and n.proc.poll() is None and self._stopped(n.proc.pid)
            if n.proc is not None and n.proc.poll() is None and not frozen:
                r = n.run("cluster", "status", timeout=5)
                note(f"  {n.name} cluster status: {(r.stdout.strip() if r else 'no answer')!r}")
            note(f"  {n.name} log (last 25 lines):")
            for line in n.tail("log", 25):
                note(f"    {line}")

    @staticmethod
    def _stopped(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].strip().startswith("T")
        except (OSError, IndexError):
            return False

    def heal_etcd(self, li):
        self.etcd.start(li)
        self.etcd.wait_ready()

    # --- clinit -----------------------------------------------------------

    def setup_clinit(self):
        for i, name in enumerate(("n1", "n2")):
            self.proxies[name] = Proxy(self.etcd.members[i]["client"])
            self.nodes[name] = Node(self.clinit, self.d, name,
                                    f"http://127.0.0.1:{self.proxies[name].port}", self.ttl)
            self.nodes[name].start()
        self.writer = os.path.join(self.shared, "writer.sh")
        with open(self.writer, "w") as f:
            f.write(f'while :; do echo "$CLINIT_NODE $CLINIT_FENCE_TOKEN $(date +%s%N)" '
                    f'>> {self.shared}/appends; sleep 0.05; done\n')
        tab = os.path.join(self.shared, "shared.cltab")
        with open(tab, "w") as f:
            f.write(f"{GROUP}:::placement:exclusive\n{GROUP}:::nodes:n1,n2\n"
                    f"{GROUP}:w:3:respawn:sh {self.writer}\n")
        n1 = self.nodes["n1"]
        for args in (("cluster", "push", tab), (GROUP, "3")):
            # Retried: a daemon just started answers before it has etcd's
            # shared cltab ("no such group" until then).
            last = []

            def done():
                r = n1.run(*args)
                last[:] = [r.stderr.strip() if r else "timed out"]
                if r is None or r.returncode != 0:
                    time.sleep(0.2)
                    return False
                return True
            if not poll_until(done):
                raise RuntimeError(f"clinit {' '.join(args)}: {last[0]}")
        self.appends = Appends(os.path.join(self.shared, "appends"))

    def clinit_round(self, r, kind):
        A, ttl = self.appends, self.ttl
        st = self.stats[kind]
        cur = poll_until(A.current)
        view = cur and poll_until(lambda: set(self.nodes) <= set(
            self.nodes[cur[0]].group_view().get("candidates") or []), step=0.2)
        cur = view and poll_until(A.current)
        if not cur:
            st["skipped"] += 1
            note(f"clinit round {r} {kind}: SKIPPED: no current owner appending with both nodes "
                 f"candidates within {DEADLINE_S} s")
            self.diagnose("no owner", A, 0)
            return False
        owner, token = cur
        other = next(n for n in self.nodes if n != owner)
        on = self.nodes[owner]
        start = len(A.lines)
        li = None
        if kind == "kill":
            on.proc.kill()
            on.proc.wait()
        elif kind == "freeze":
            os.kill(on.proc.pid, signal.SIGSTOP)
        elif kind == "blackhole":
            self.proxies[owner].blackholed = True
        elif kind == "leader":
            li = self.etcd.leader()
            if li is None:
                st["skipped"] += 1
                note(f"clinit round {r} leader: SKIPPED: no leader found")
                return True
            self.etcd.kill(li)
        t0 = time.time_ns()
        scan = [start]

        def moved():
            A.poll()
            for i in range(scan[0], len(A.lines)):
                node, tok, _ = A.lines[i]
                if tok is not None and tok > token:
                    if node != owner:
                        return ("moved", i)
                    if kind == "leader":
                        # The owner lost the group (its etcd stalled) and
                        # took it again.
                        return ("retaken", i)
            scan[0] = len(A.lines)
            if kind == "leader" and time.time_ns() - t0 > (2 * ttl + 3) * 1e9 \
                    and A.current() == (owner, token):
                return ("kept", None)
            return None

        res = poll_until(moved)
        new_i, old_alive, hang, new_owner = None, [], None, None
        if res is None:
            hang = f"no line of {other} with a token above {token} within {DEADLINE_S} s"
        elif res[0] in ("moved", "retaken"):
            new_i = res[1]
            new_owner = A.lines[new_i][0]
            old_alive = writers_of(self.writer, owner, token)
        # Heal.
        healed = [owner] if kind != "leader" else list(self.nodes)
        try:
            if kind == "kill":
                on.start()
            elif kind == "freeze":
                os.kill(on.proc.pid, signal.SIGCONT)
            elif kind == "blackhole":
                self.proxies[owner].blackholed = False
            elif kind == "leader":
                self.heal_etcd(li)
        except RuntimeError as e:
            hang = hang or f"heal: {e}"
        if hang is None:
            expect = new_owner or owner
            if not poll_until(lambda: all(self.nodes[n].status_owner() == expect for n in healed),
                              step=0.1):
                hang = (f"{'/'.join(healed)} did not show owner {expect} within {DEADLINE_S} s "
                        f"of the heal")
        if hang is None:
            time.sleep(1.0)
        else:
            # Let it settle before the next round: someone appending again.
            poll_until(A.current)
        A.poll()
        st["rounds"] += 1
        viol = A.check()
        old_after = []
        if new_i is not None:
            # Lines of the old ownership after the new one's first: of the
            # old node (moved), or with the old token (retaken).
            old_after = [i for i in range(new_i + 1, len(A.lines))
                         if A.lines[i][0] == owner
                         and (new_owner != owner or A.lines[i][1] == token)]
        overlap = bool(viol or old_after)
        st["gaps"].append(max_gap(A.lines, start))
        st["violations"] += len(viol)
        st["old_after_new"] += bool(old_after)
        st["old_alive"] += bool(old_alive)
        st["overlaps"] += overlap
        if hang:
            st["hangs"] += 1
        killed = f" (etcd leader m{li} killed)" if li is not None else ""
        if res and res[0] == "kept":
            st["kept"] += 1
            what = f"{owner} kept token {token}, longest gap {st['gaps'][-1]:.2f} s{killed}"
        elif new_i is not None:
            st["retaken"] += new_owner == owner
            f = (A.lines[new_i][2] - t0) / 1e9
            st["failovers"].append(f)
            what = (f"{owner} token {token} -> {new_owner} token {A.lines[new_i][1]} in {f:.2f} s"
                    f"{killed}")
        else:
            what = f"{owner} token {token}: no failover{killed}"
        note(f"clinit round {r} {kind}: {what}"
             + (f"; OVERLAP: {viol[:3]} {len(old_after)} lines of the old ownership after "
                f"the new one's first" if overlap else "")
             + (f"; old writer pids {old_alive} alive at failover" if old_alive else "")
             + (f"; HANG: {hang}" if hang else ""))
        if overlap or hang or old_alive:
            self.diagnose(f"round {r} {kind}", A, start)
            self.keep(f"clinit-r{r}-{kind}")
        return True

    def stop_clinit(self, last_kind):
        A = self.appends
        A.poll()
        viol = A.check()
        if viol:
            st = self.stats[last_kind]
            st["violations"] += len(viol)
            st["overlaps"] += 1
            note(f"clinit after the last round: OVERLAP: {viol[:3]}")
        up = [n for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        if up:
            up[0].run(GROUP, "")
            # Until nothing appends any more (bounded).
            poll_until(lambda: A.current() is None, limit=10)
        for n in self.nodes.values():
            n.stop()
        for p in self.proxies.values():
            p.blackholed = False

    # --- the peer: etcdctl lock -------------------------------------------

    def setup_peers(self):
        self.peer_writer = os.path.join(self.shared, "peer_writer.sh")
        with open(self.peer_writer, "w") as f:
            f.write(f'while :; do echo "$NODE_NAME ${{ETCD_LOCK_REV:-0}} $(date +%s%N)" '
                    f'>> {self.shared}/peer_appends; sleep 0.05; done\n')
        self.peer_appends = Appends(os.path.join(self.shared, "peer_appends"))
        for i, name in enumerate(("p1", "p2")):
            self.peer_proxies[name] = Proxy(self.etcd.members[i]["client"])
            os.makedirs(os.path.join(self.d, name))
            self.peers[name] = None
        for name in self.peers:
            self.peer_start(name)

    def peer_start(self, name):
        d = os.path.join(self.d, name)
        with open(os.path.join(d, "etcdctl.out"), "a") as out:
            self.peers[name] = subprocess.Popen(
                ["etcdctl", f"--endpoints=http://127.0.0.1:{self.peer_proxies[name].port}", "lock",
                 f"--ttl={self.ttl}", PEER_LOCK, "sh", self.peer_writer],
                env={**os.environ, "ETCDCTL_API": "3", "NODE_NAME": name}, cwd=d,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def peer_kill(self, name):
        """SIGKILL the holder's process group: etcdctl and its command."""
        p = self.peers.get(name)
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # Its command outlives a killed etcdctl: wait until the group is gone.
        poll_until(lambda: not self._group_alive(p.pid), limit=10)

    @staticmethod
    def _group_alive(pgid):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        # Members may be zombies of an init that does not reap; ask /proc.
        for ent in os.listdir("/proc"):
            if ent.isdigit():
                try:
                    with open(f"/proc/{ent}/stat") as f:
                        rest = f.read().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != "Z":
                    return True
        return False

    def peer_keys(self):
        urls = ",".join(self.etcd.url(i) for i in self.etcd.running())
        r = etcdctl(urls, "get", PEER_LOCK + "/", "--prefix", "--keys-only", "-w", "json",
                    timeout=5)
        try:
            return json.loads(r.stdout).get("count", 0)
        except (AttributeError, ValueError):
            return 0

    def peer_round(self, r, kind):
        A, ttl = self.peer_appends, self.ttl
        st = self.peer_stats[kind]
        for name, p in self.peers.items():
            if p is None or p.poll() is not None:
                self.peer_kill(name)
                self.peer_start(name)
        cur = poll_until(A.current)
        keys = cur and poll_until(lambda: self.peer_keys() == 2, limit=2 * ttl + 2, step=0.2)
        if cur and not keys:
            # The waiter lost its session (its member was down a while):
            # queue it again.
            waiter = next(n for n in self.peers if n != cur[0])
            note(f"etcdctl lock round {r}: {waiter} not queued: started again")
            self.peer_kill(waiter)
            self.peer_start(waiter)
            keys = poll_until(lambda: self.peer_keys() == 2, step=0.2)
        cur = keys and poll_until(A.current)
        if not cur:
            st["skipped"] += 1
            note(f"etcdctl lock round {r} {kind}: SKIPPED: no holder appending with a waiter "
                 f"queued within {DEADLINE_S} s")
            for name in self.peers:
                self.peer_kill(name)
                self.peer_start(name)
            return False
        holder, token = cur
        other = next(n for n in self.peers if n != holder)
        hp = self.peers[holder]
        start = len(A.lines)
        li = None
        if kind == "kill":
            hp.kill()
            hp.wait()
        elif kind == "freeze":
            os.kill(hp.pid, signal.SIGSTOP)
        elif kind == "blackhole":
            self.peer_proxies[holder].blackholed = True
        elif kind == "leader":
            li = self.etcd.leader()
            if li is None:
                st["skipped"] += 1
                note(f"etcdctl lock round {r} leader: SKIPPED: no leader found")
                return True
            self.etcd.kill(li)
        t0 = time.time_ns()
        scan = [start]

        def moved():
            A.poll()
            for i in range(scan[0], len(A.lines)):
                node, tok, _ = A.lines[i]
                if node != holder and tok is not None and tok > token:
                    return ("moved", i)
            scan[0] = len(A.lines)
            if kind == "leader" and time.time_ns() - t0 > (2 * ttl + 3) * 1e9 \
                    and A.current() == (holder, token):
                return ("kept", None)
            return None

        res = poll_until(moved)
        new_i = None
        if res and res[0] == "moved":
            new_i = res[1]
            time.sleep(2.0)   # the window in which the old holder may still append
        A.poll()
        old_after = []
        if new_i is not None:
            old_after = [i for i in range(new_i + 1, len(A.lines)) if A.lines[i][0] == holder]
        st["rounds"] += 1
        st["gaps"].append(max_gap(A.lines, start))
        st["overlaps"] += bool(old_after)
        st["old_after_new"] += bool(old_after)
        hang = None
        if res is None:
            st["hangs"] += 1
            hang = f"no line of {other} within {DEADLINE_S} s"
        # Reset: the old holder's group killed (a waiter at etcd or not),
        # the fault healed, the old holder queued again.
        if new_i is not None or res is None:
            self.peer_kill(holder)
        if res is None:
            self.peer_kill(other)
        try:
            if kind == "blackhole":
                self.peer_proxies[holder].blackholed = False
            elif kind == "leader":
                self.heal_etcd(li)
        except RuntimeError as e:
            st["hangs"] += hang is None
            hang = hang or f"heal: {e}"
        if new_i is not None or res is None:
            self.peer_start(holder)
        if res is None:
            self.peer_start(other)
        if res and res[0] == "kept":
            st["kept"] += 1
            what = (f"{holder} kept rev {token}, longest gap {st['gaps'][-1]:.2f} s "
                    f"(etcd leader m{li} killed)")
        elif new_i is not None:
            f = (A.lines[new_i][2] - t0) / 1e9
            st["failovers"].append(f)
            what = (f"{holder} rev {token} -> {other} rev {A.lines[new_i][1]} in {f:.2f} s"
                    + (f" (etcd leader m{li} killed)" if li is not None else ""))
        else:
            what = f"{holder} rev {token}: no failover" + (
                f" (etcd leader m{li} killed)" if li is not None else "")
        note(f"etcdctl lock round {r} {kind}: {what}"
             + (f"; overlap: {len(old_after)} lines of {holder} after {other}'s first"
                if old_after else "")
             + (f"; HANG: {hang}" if hang else ""))
        return True

    def stop_peers(self):
        for name in list(self.peers):
            self.peer_kill(name)
        for p in self.peer_proxies.values():
            p.blackholed = False

    # --- the run ------------------------------------------------------------

    def run(self):
        o = self.o
        total = o.rounds + o.peer_rounds
        clinit_budget = o.max_seconds * o.rounds / total if total else 0
        error = None
        done = {"clinit": 0, "peer": 0}
        try:
            for i in range(len(self.etcd.members)):
                self.etcd.start(i)
            self.etcd.wait_ready()
            if o.rounds:
                self.setup_clinit()
                skips = 0
                for r in range(o.rounds):
                    if time.monotonic() - self.t0 > clinit_budget:
                        note(f"clinit: time's up after {r} rounds")
                        break
                    ok = self.clinit_round(r, o.kinds[r % len(o.kinds)])
                    done["clinit"] += 1
                    skips = 0 if ok else skips + 1
                    if skips >= 3:
                        note("clinit: 3 rounds in a row without an owner: giving up its rounds")
                        break
                self.stop_clinit(o.kinds[max(done["clinit"] - 1, 0) % len(o.kinds)])
            if o.peer_rounds:
                self.setup_peers()
                skips = 0
                for r in range(o.peer_rounds):
                    if time.monotonic() - self.t0 > o.max_seconds:
                        note(f"etcdctl lock: time's up after {r} rounds")
                        break
                    ok = self.peer_round(r, o.kinds[r % len(o.kinds)])
                    done["peer"] += 1
                    skips = 0 if ok else skips + 1
                    if skips >= 3:
                        note("etcdctl lock: 3 rounds in a row without a holder: giving up")
                        break
        except Exception as e:  # noqa: BLE001 - report what there is, then clean up
            error = f"{type(e).__name__}: {e}"
            note(f"ERROR: {error}")
            if not isinstance(e, (RuntimeError, OSError)):
                traceback.print_exc()
            if self.nodes:
                self.keep("error")
        except KeyboardInterrupt:
            error = "interrupted"
        finally:
            self.cleanup()
        return self.report(error)

    def cleanup(self):
        # Bounded as it is: not cut short by a second ^C or SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self.stop_peers()
        except Exception as e:  # cleanup goes on
            note(f"cleanup: peers: {e}")
        for n in self.nodes.values():
            try:
                n.stop()
            except Exception as e:
                note(f"cleanup: {n.name}: {e}")
        self.etcd.stop_all()
        left = sweep(self.d)
        if left:
            note(f"cleanup: killed {left} leftover processes (writers, watchdogs)")
        if self.o.keep:
            note(f"run directory kept: {self.d}")
        else:
            shutil.rmtree(self.d, ignore_errors=True)

    def report(self, error):
        ttl = self.ttl
        out = {"clinit": {k: summarize(v, ttl) for k, v in self.stats.items()},
               "etcdctl_lock": {k: summarize(v, ttl) for k, v in self.peer_stats.items()},
               "ttl": ttl, "rounds": self.o.rounds, "peer_rounds": self.o.peer_rounds,
               "seconds": round(time.monotonic() - self.t0, 1)}
        if error:
            out["error"] = error

        def fmt(title, stats):
            print(title)
            for k, s in stats.items():
                f, x = s["failover_s"], s["failover_x_ttl"]
                fo = (f"failover s min {f['min']:.2f} median {f['median']:.2f} max {f['max']:.2f} "
                      f"(x ttl {x['min']:.2f} / {x['median']:.2f} / {x['max']:.2f})"
                      if f else "failover -")
                g = s["max_gap_s"]
                extra = (f" kept {s['kept']} retaken {s['retaken']} longest gap s median "
                         f"{g['median']:.2f} max {g['max']:.2f}" if k == "leader" and g else "")
                extra += f" skipped {s['skipped']}" if s["skipped"] else ""
                print(f"  {k:9} rounds {s['rounds']:3}  overlaps {s['overlaps']:3}  "
                      f"hangs {s['hangs']:2}  {fo}{extra}")

        fmt(f"clinit exclusive group, lease_ttl {ttl} s, 3-member etcd "
            f"(overlaps and hangs must be 0):", out["clinit"])
        for k, s in out["clinit"].items():
            if s["violations"] or s["old_alive"]:
                print(f"    {k}: {s['violations']} checker violations, old owner after new in "
                      f"{s['old_after_new']} rounds, old writer alive at failover in "
                      f"{s['old_alive']} rounds")
        if self.o.peer_rounds:
            fmt(f"etcdctl lock --ttl {ttl} (etcd's own lock; its command outlives the lock):",
                out["etcdctl_lock"])
        for k in self.kept_dirs:
            print(f"logs of a round that went wrong: {k}")
        if error:
            print(f"stopped early: {error}")
        print(json.dumps(out), flush=True)
        bad = any(s["overlaps"] or s["hangs"] for s in out["clinit"].values())
        return 1 if bad or error else 0


def main():
    ap = argparse.ArgumentParser(
        description="Fault soak of exclusive groups, with etcdctl lock as the peer.")
    ap.add_argument("rounds", nargs="?", type=int, default=60,
                    help="clinit rounds (default 60), the kinds in turn")
    ap.add_argument("--ttl", type=int, default=3, help="lease_ttl / etcdctl lock --ttl (s)")
    ap.add_argument("--kinds", default="kill,freeze,blackhole",
                    help=f"fault kinds, comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--peer-rounds", type=int, default=None,
                    help="etcdctl lock rounds (default: ROUNDS; 0: none)")
    ap.add_argument("--max-seconds", type=float, default=1500,
                    help="no round starts after this (default 1500)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    o = ap.parse_args()
    o.kinds = [k for k in o.kinds.split(",") if k]
    if not o.kinds or any(k not in KINDS for k in o.kinds):
        ap.error(f"--kinds: of {','.join(KINDS)}")
    if o.peer_rounds is None:
        o.peer_rounds = o.rounds
    if o.ttl < 1:
        ap.error("--ttl: at least 1")
    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    sys.exit(Soak(o).run())


if __name__ == "__main__":
    main()
