"""Peers of the clinit lock service: flock(1)/flock(2) and etcd's lock API.

    python3 bench/lock_peers.py            (one JSON object on stdout)

Needs only the Python standard library. If `etcd` and `etcdctl` are not on
PATH, Debian's etcd-server and etcd-client packages are fetched with
`apt-get download` (after `apt-get update` if the first try fails) and
unpacked with `dpkg-deb -x` into $TMPDIR/clinit-bench-etcd, reused by later
runs (with --no-cache into this run's temp dir instead, removed at the end).
Nothing is installed system-wide, so no etcd service is started on the
package's fixed port 2379.

etcd runs as one member on 127.0.0.1 with client and peer ports the OS hands
out (bind to port 0), its data dir in this run's temp dir; it is stopped by
its pid (SIGTERM, then SIGKILL after 10 s) and the temp dir removed.

Measures (see bench/README-locks.md for what each number means):
  flock.cli_ms              median wall time of `flock FILE true`, 200 calls
  flock.one                 1 process: fcntl.flock(fd, LOCK_EX); LOCK_UN loop
  flock.eight_one_name      8 processes, each its own open() of one file
  flock.eight_names         8 processes, 8 files
  etcd.one / eight_one_name / eight_names / two_one_name (2 clients, one name)
                            v3 Lock + Unlock RPCs through etcd's gRPC JSON
                            gateway (POST /v3/lock/lock, /v3/lock/unlock) on
                            a keep-alive HTTP/1.1 connection per client, each
                            client with its own lease (TTL 60 s, longer than
                            a run, so no keep-alive is needed while it runs)
  etcd.cli_ms               median wall time of `etcdctl lock NAME -- true`,
                            20 calls
  etcd.death_to_grant_s     `etcdctl lock --ttl 5 NAME` holds the lock, a
                            waiter blocks on /v3/lock/lock for NAME, the
                            holder gets SIGKILL: kill -> waiter granted,
                            median of 3

A throughput entry is {"ops_s", "p50_ms", "p99_ms", "ops", "seconds",
"clients"}: ops are completed acquire+release round trips of all clients
together over the run's wall window, the percentiles are over the latency of
each single round trip. Every wait has a deadline; a measure that failed or
timed out is null and a line in "errors", never a made-up number.
"""

import argparse
import array
import base64
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
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

FLOCK_CLI_CALLS = 200
ETCDCTL_CLI_CALLS = 20
DEATH_REPEATS = 3
HOLDER_TTL_S = 5
KEEPALIVE_PERIOD_S = HOLDER_TTL_S / 3   # etcdctl's keep-alive period for that TTL
SESSION_TTL_S = 60
CLIENTS = 8
MAX_SAMPLES = 3_000_000      # latency samples kept per worker (count goes on)
CALL_TIMEOUT_S = 30          # one subprocess call or HTTP request
START_TIMEOUT_S = 30         # etcd up and healthy
STOP_GRACE_S = 10
INSTALL_TIMEOUT_S = 600
WORKER_SLACK_S = 60          # a worker's deadline past its run length

ERRORS = []


def note(msg):
    """Progress and warnings go to stderr, so stdout stays one JSON object."""
    print(f"lock_peers: {msg}", file=sys.stderr, flush=True)


def fail(what, msg):
    ERRORS.append(f"{what}: {msg}")
    note(f"{what} failed: {msg}")


def measure(what, fn, *args):
    """Run one measure; a failure becomes None plus an entry in ERRORS."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - every failure is reported as null
        fail(what, f"{e!r}")
        if os.environ.get("LOCK_PEERS_DEBUG"):
            traceback.print_exc()
        return None


# ---------------------------------------------------------------- statistics

def pct(sorted_ns, p):
    """Nearest-rank percentile of sorted nanosecond samples, in ms."""
    if not sorted_ns:
        return None
    k = max(0, min(len(sorted_ns) - 1, int(round(p / 100 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[k] / 1e6


def summarize(results, clients):
    """Merge worker results {"ops", "t0", "t1", "lat": array} into one entry."""
    ops = sum(r["ops"] for r in results)
    window = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    lat = sorted(x for r in results for x in r["lat"])
    return {"ops_s": round(ops / window, 1) if window > 0 else None,
            "p50_ms": round(pct(lat, 50), 6) if lat else None,
            "p99_ms": round(pct(lat, 99), 6) if lat else None,
            "max_ms": round(lat[-1] / 1e6, 6) if lat else None,
            "ops": ops, "seconds": round(window, 3), "clients": clients}


def median_cli_ms(cmd, n, env=None):
    """Median wall time, in ms (to 3 decimals), of `n` runs of `cmd`, each
    within CALL_TIMEOUT_S and with stdout to /dev/null; a run that exits
    non-zero raises with the tail of its stderr."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=CALL_TIMEOUT_S, env=env)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"{os.path.basename(cmd[0])} {' '.join(cmd[1:])} exited "
                               f"{r.returncode}: {r.stderr[-300:]!r}")
        samples.append(dt * 1e3)
    return round(statistics.median(samples), 3)


def run_workers(target, args_list, seconds):
    """Fork one process per args tuple, start them together at a barrier, and
    collect their results. Each worker runs target(*args, barrier, seconds,
    queue) and puts ("ok", result) or ("err", text) on its own queue."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(args_list))
    procs = []
    try:
        for args in args_list:
            q = ctx.Queue()
            p = ctx.Process(target=_worker_main, args=(target, args, barrier, seconds, q),
                            daemon=True)
            p.start()
            procs.append((p, q))
        deadline = time.monotonic() + seconds + WORKER_SLACK_S
        results = []
        for p, q in procs:
            try:
                kind, val = q.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # queue.Empty
                raise RuntimeError("a worker did not report before its deadline")
            if kind != "ok":
                raise RuntimeError(f"worker failed: {val}")
            results.append(val)
        return results
    finally:
        for p, _ in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()  # by its pid
                p.join(timeout=5)


def _worker_main(target, args, barrier, seconds, q):
    try:
        q.put(("ok", target(*args, barrier, seconds)))
    except Exception as e:  # noqa: BLE001
        try:
            barrier.abort()  # do not leave the others waiting
        except Exception:  # noqa: BLE001
            pass
        q.put(("err", repr(e)))


def timed_loop(one_op, barrier, seconds):
    """Wait at the barrier, then call one_op() until `seconds` have passed;
    return ops count, window and per-op latencies (ns)."""
    lat = array.array("q")
    barrier.wait(timeout=START_TIMEOUT_S)
    t0 = time.monotonic()
    end = t0 + seconds
    ops = 0
    clock = time.perf_counter_ns
    while True:
        a = clock()
        one_op()
        b = clock()
        ops += 1
        if ops <= MAX_SAMPLES:
            lat.append(b - a)
        if ops & 15 == 0 or b - a > 100_000:
            if time.monotonic() >= end:
                break
    return {"ops": ops, "t0": t0, "t1": time.monotonic(), "lat": lat}


# --------------------------------------------------------------------- flock

def flock_worker(path, barrier, seconds):
    import fcntl
    # open() here, in the worker: an inherited fd would share one open file
    # description with the other workers, and flock(2) would not contend.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock, ex, un = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN

        def op():
            lock(fd, ex)
            lock(fd, un)
        return timed_loop(op, barrier, seconds)
    finally:
        os.close(fd)


def flock_cli_ms(d):
    path = os.path.join(d, "cli.lock")
    exe = shutil.which("flock")
    if exe is None:
        raise RuntimeError("flock(1) not found (util-linux)")
    return median_cli_ms([exe, path, "true"], FLOCK_CLI_CALLS)


def flock_run(d, paths, seconds):
    return summarize(run_workers(flock_worker, [(p,) for p in paths], seconds), len(paths))


def bench_flock(d, seconds):
    out = {}
    out["cli_ms"] = measure("flock.cli_ms", flock_cli_ms, d)
    one = os.path.join(d, "one.lock")
    out["one"] = measure("flock.one", flock_run, d, [one], seconds)
    out["eight_one_name"] = measure("flock.eight_one_name", flock_run, d,
                                    [one] * CLIENTS, seconds)
    out["eight_names"] = measure("flock.eight_names", flock_run, d,
                                 [os.path.join(d, f"n{i}.lock") for i in range(CLIENTS)],
                                 seconds)
    return out


# -------------------------------------------------------------- etcd install

def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def find_etcd(run_dir, use_cache):
    """(etcd, etcdctl, how): from PATH, else unpacked from Debian's packages."""
    e, c = shutil.which("etcd"), shutil.which("etcdctl")
    if e and c:
        return e, c, "PATH"
    root = (os.path.join(tempfile.gettempdir(), "clinit-bench-etcd") if use_cache
            else os.path.join(run_dir, "etcd-pkg"))
    e, c = os.path.join(root, "usr/bin/etcd"), os.path.join(root, "usr/bin/etcdctl")
    if os.access(e, os.X_OK) and os.access(c, os.X_OK):
        return e, c, f"cached Debian packages in {root}"
    dl = tempfile.mkdtemp(prefix="etcd-deb-", dir=run_dir)
    os.chmod(dl, 0o755)  # apt's _apt user may then write its partial files
    pkgs = ["etcd-server", "etcd-client"]

    def download():
        return subprocess.run(["apt-get", "download", "-q"] + pkgs, cwd=dl,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("etcd/etcdctl not on PATH and no apt-get/dpkg-deb to fetch "
                           "Debian's etcd-server and etcd-client")
    note("etcd not on PATH: apt-get download etcd-server etcd-client")
    r = download()
    if r.returncode != 0:
        note("apt-get download failed; apt-get update and once more")
        u = subprocess.run(["apt-get", "update", "-q"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if u.returncode != 0:
            raise RuntimeError(f"apt-get update failed: {u.stderr.strip()[-500:]}")
        r = download()
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download failed: {r.stderr.strip()[-500:]}")
    staging = tempfile.mkdtemp(prefix=".etcd-unpack-", dir=os.path.dirname(root))
    try:
        for deb in sorted(os.listdir(dl)):
            if deb.endswith(".deb"):
                subprocess.run(["dpkg-deb", "-x", os.path.join(dl, deb), staging],
                               check=True, timeout=INSTALL_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
        os.rename(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(dl, ignore_errors=True)
    if not (os.access(e, os.X_OK) and os.access(c, os.X_OK)):
        raise RuntimeError(f"no usr/bin/etcd and etcdctl in the unpacked packages at {root}")
    return e, c, f"Debian packages unpacked into {root}"


# ------------------------------------------------------------------ etcd run

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """etcd's gRPC JSON gateway over one keep-alive HTTP/1.1 connection."""

    def __init__(self, port, timeout=CALL_TIMEOUT_S):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path, body):
        self.conn.request("POST", path, json.dumps(body),
                          {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {r.status} {data[:300]!r}")
        return json.loads(data)

    def grant(self, ttl):
        return self.post("/v3/lease/grant", {"TTL": ttl})["ID"]

    def revoke(self, lease):
        self.post("/v3/lease/revoke", {"ID": lease})

    def lock(self, name, lease):
        return self.post("/v3/lock/lock", {"name": b64(name), "lease": lease})["key"]

    def unlock(self, key):
        self.post("/v3/lock/unlock", {"key": key})

    def count(self, prefix):
        end = bytearray(prefix.encode())
        end[-1] += 1
        r = self.post("/v3/kv/range", {"key": b64(prefix), "range_end": b64(bytes(end)),
                                       "count_only": True})
        return int(r.get("count", 0))

    def close(self):
        self.conn.close()


class Etcd:
    def __init__(self, exe, d):
        self.exe, self.d, self.proc = exe, d, None

    def start(self):
        """Start etcd on two OS-chosen loopback ports; retry if a port was taken."""
        for attempt in range(3):
            self.port, peer = free_port(), free_port()
            data = os.path.join(self.d, f"data{attempt}")
            self.log = os.path.join(self.d, f"etcd{attempt}.log")
            c, p = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer}"
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "--name", "bench", "--data-dir", data,
                     "--listen-client-urls", c, "--advertise-client-urls", c,
                     "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                     "--initial-cluster", f"bench={p}", "--initial-cluster-state", "new",
                     "--logger", "zap", "--log-level", "warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    conn.request("GET", "/health")
                    ok = json.loads(conn.getresponse().read()).get("health") == "true"
                    conn.close()
                    if ok:
                        return True
                except (OSError, ValueError, http.client.HTTPException):
                    pass
                time.sleep(0.05)
            tail = self.log_tail()
            self.stop()
            note(f"etcd start attempt {attempt + 1} failed: {tail}")
        raise RuntimeError(f"etcd did not become healthy: {tail}")

    def log_tail(self):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-800:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM by pid, SIGKILL after STOP_GRACE_S."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                note("etcd still up after SIGTERM; SIGKILL")
                p.kill()
        p.wait()


def etcd_worker(port, name, barrier, seconds):
    gw = Gateway(port)
    lease = gw.grant(SESSION_TTL_S)
    try:
        def op():
            gw.unlock(gw.lock(name, lease))
        return timed_loop(op, barrier, seconds)
    finally:
        try:
            gw.revoke(lease)
        finally:
            gw.close()


def etcd_run(port, names, seconds):
    return summarize(run_workers(etcd_worker, [(port, n) for n in names], seconds),
                     len(names))


def etcdctl_env():
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl_cli_ms(ctl, port):
    cmd = [ctl, f"--endpoints=127.0.0.1:{port}", "lock", "cli-lock", "--", "true"]
    return median_cli_ms(cmd, ETCDCTL_CLI_CALLS, env=etcdctl_env())


def read_line(stream, timeout):
    """First line of a pipe within timeout, else None."""
    box = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


def death_once(ctl, port, i):
    """SIGKILL an `etcdctl lock --ttl 5` holder while a waiter blocks on the
    same name; seconds from the kill to the waiter's grant."""
    name = f"death-{i}"
    holder = subprocess.Popen(
        [ctl, f"--endpoints=127.0.0.1:{port}", "lock", f"--ttl={HOLDER_TTL_S}", name],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=etcdctl_env(), start_new_session=True)
    waiter_gw, lease, key = Gateway(port, timeout=HOLDER_TTL_S + CALL_TIMEOUT_S), None, None
    try:
        line = read_line(holder.stdout, CALL_TIMEOUT_S)
        if not line or not line.startswith(name.encode() + b"/"):
            raise RuntimeError(f"holder did not report the lock: {line!r}")
        t_held = time.monotonic()
        lease = waiter_gw.grant(SESSION_TTL_S)
        got = {}

        def wait():
            try:
                got["key"] = waiter_gw.lock(name, lease)
                got["t"] = time.monotonic()
            except Exception as e:  # noqa: BLE001
                got["err"] = repr(e)
        w = threading.Thread(target=wait, daemon=True)
        w.start()
        # The waiter is queued once its own key is there next to the holder's.
        probe = Gateway(port)
        try:
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while probe.count(name + "/") < 2:
                if time.monotonic() > deadline or not w.is_alive():
                    raise RuntimeError(f"waiter not queued: {got}")
                time.sleep(0.01)
        finally:
            probe.close()
        # etcdctl's session (clientv3) sends a keep-alive about every TTL/3 s
        # and the lease then runs TTL s from the last one. Killing right after the grant would always hit just
        # after a keep-alive; a random hold of up to one keep-alive period
        # kills at a random point of the cycle instead.
        time.sleep(random.uniform(0, KEEPALIVE_PERIOD_S))
        if not w.is_alive() or holder.poll() is not None:
            raise RuntimeError(f"waiter returned or holder exited before the kill: {got}")
        t_kill = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)  # by pid, never a group
        w.join(HOLDER_TTL_S + CALL_TIMEOUT_S)
        if w.is_alive() or "t" not in got:
            raise RuntimeError(f"waiter not granted after the holder's death: {got}")
        key = got["key"]
        return got["t"] - t_kill, t_kill - t_held
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=STOP_GRACE_S)
        try:
            if key:
                waiter_gw.unlock(key)
            if lease:
                waiter_gw.revoke(lease)
        except Exception:  # noqa: BLE001 - etcd goes away with the temp dir anyway
            pass
        waiter_gw.close()


def death_to_grant(ctl, port):
    runs = [death_once(ctl, port, i) for i in range(DEATH_REPEATS)]
    return (round(statistics.median(r[0] for r in runs), 3),
            [round(r[0], 3) for r in runs], [round(r[1], 3) for r in runs])


def bench_etcd(d, seconds, use_cache):
    out = {"one": None, "eight_one_name": None, "eight_names": None, "two_one_name": None,
           "cli_ms": None,
           "death_to_grant_s": None, "death_to_grant_samples_s": None,
           "holder_held_s": None,
           "lease_ttl_s": HOLDER_TTL_S, "session_lease_ttl_s": SESSION_TTL_S,
           "client": "grpc-gateway http",
           "client_detail": "Python http.client, one keep-alive HTTP/1.1 connection and "
                            "one lease per client; POST /v3/lock/lock then /v3/lock/unlock "
                            "(v3 Lock/Unlock RPCs through etcd's JSON gateway)",
           "version": None, "installed_from": None}
    found = measure("etcd.install", find_etcd, d, use_cache)
    if found is None:
        return out
    exe, ctl, how = found
    out["installed_from"] = how
    v = subprocess.run([exe, "--version"], capture_output=True, text=True,
                       timeout=CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    out["version"] = (v.stdout.split("\n")[0].split(":")[-1].strip() or None)
    etcd = Etcd(exe, d)
    if not measure("etcd.start", etcd.start):
        return out
    try:
        p = etcd.port
        out["one"] = measure("etcd.one", etcd_run, p, ["one"], seconds)
        out["eight_one_name"] = measure("etcd.eight_one_name", etcd_run, p,
                                        ["shared"] * CLIENTS, seconds)
        out["eight_names"] = measure("etcd.eight_names", etcd_run, p,
                                     [f"name{i}" for i in range(CLIENTS)], seconds)
        out["two_one_name"] = measure("etcd.two_one_name", etcd_run, p,
                                      ["pair"] * 2, seconds)
        out["cli_ms"] = measure("etcd.cli_ms", etcdctl_cli_ms, ctl, p)
        r = measure("etcd.death_to_grant_s", death_to_grant, ctl, p)
        if r is not None:
            (out["death_to_grant_s"], out["death_to_grant_samples_s"],
             out["holder_held_s"]) = r
        if etcd.proc.poll() is not None:
            fail("etcd", f"etcd exited during the run: {etcd.log_tail()}")
    finally:
        etcd.stop()
    return out


# ------------------------------------------------------------------- machine

def machine(d):
    m = {"nproc": os.cpu_count(), "kernel": platform.release(),
         "python": platform.python_version(), "cpu": None, "mem_gib": None,
         "loadavg_start": os.getloadavg()[0], "tmp_fs": None, "flock_version": None}

    def cpu():
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()

    def mem():
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 2**20, 1)

    def out(*cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
        return r.stdout.strip() or None

    for key, fn in (("cpu", cpu), ("mem_gib", mem),
                    ("tmp_fs", lambda: out("stat", "-f", "-c", "%T", d)),
                    ("flock_version", lambda: out("flock", "--version"))):
        try:
            m[key] = fn()
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            note(f"machine info {key} missing: {e!r}")
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--flock-seconds", type=float, default=2.5,
                    help="length of each flock throughput run (default 2.5)")
    ap.add_argument("--etcd-seconds", type=float, default=4.0,
                    help="length of each etcd throughput run (default 4)")
    ap.add_argument("--no-cache", action="store_true",
                    help="unpack etcd into this run's temp dir and remove it at the end")
    ap.add_argument("--skip-flock", action="store_true")
    ap.add_argument("--skip-etcd", action="store_true")
    a = ap.parse_args()
    if not (0 < a.flock_seconds <= 60 and 0 < a.etcd_seconds <= 60):
        ap.error("run lengths must be in (0, 60] s")

    # A SIGTERM to this script still runs the cleanups in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    res = {}
    with tempfile.TemporaryDirectory(prefix="lock-peers-") as d:
        res["machine"] = machine(d)
        if not a.skip_flock:
            note("flock ...")
            res["flock"] = bench_flock(d, a.flock_seconds)
        if not a.skip_etcd:
            note("etcd ...")
            res["etcd"] = bench_etcd(d, a.etcd_seconds, not a.no_cache)
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    res["errors"] = ERRORS
    print(json.dumps(res))


if __name__ == "__main__":
    main()
