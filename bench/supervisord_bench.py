"""supervisord 4.2 as the peer of bench/core.rs (issue 2).

Run by bench/run.sh with the python of a venv that has `supervisor==4.2.*`:
    python bench/supervisord_bench.py --n 1000 --json

It writes a supervisord.conf into a fresh temp dir (UNIX socket, log and pid
file all inside it, never a TCP port) with N programs `sleep 100000`
(autostart, autorestart, startsecs=0 so RUNNING is reached at once, output
discarded), starts `supervisord -n` in a session of its own, and measures:

  start_to_all_running_s  launch of supervisord -> XML-RPC getAllProcessInfo()
                          shows all N programs RUNNING (polled every 50 ms)
  cli_status_s            wall time of one `supervisorctl status` subprocess
                          (median of 3; its exit code is ignored)
  rpc_request_ms          mean latency of supervisor.getState() over 200 calls
                          on one ServerProxy (client-side Python included)
  rss_mb                  supervisord's VmRSS with the N children running
  respawn_ms              SIGKILL of program s0 -> getProcessInfo('s0') shows
                          RUNNING with a new pid (median of 3 kills)

Every wait has a deadline (120 s for all-running, 10 s per respawn, 120 s
per CLI call); a figure that timed out or failed is reported as null and a
note goes to stderr. At the end supervisord gets SIGTERM (60 s grace, then
SIGKILL), and every process left in its session is SIGKILLed: supervisord
puts each child in a process group of its own (setpgrp), so killing
supervisord's process group alone would not reach the `sleep`s, but they all
stay in the session that start_new_session gave it.

Output: with --json one JSON object
  {"n", "start_to_all_running_s", "cli_status_s", "rpc_request_ms",
   "rss_mb", "respawn_ms"}
on stdout; otherwise one readable line per figure.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

ALL_RUNNING_TIMEOUT_S = 120
RESPAWN_TIMEOUT_S = 10
CLI_TIMEOUT_S = 120
STOP_GRACE_S = 60
POLL_S = 0.05
RPC_CALLS = 200
REPEATS = 3


def note(msg):
    """Progress and warnings go to stderr, so stdout stays one JSON object."""
    print(f"supervisord_bench: {msg}", file=sys.stderr, flush=True)


def write_conf(d, n):
    """Write supervisord.conf with N `sleep` programs; return (conf, socket)."""
    sock = os.path.join(d, "supervisor.sock")
    lines = [
        "[unix_http_server]",
        f"file={sock}",
        "",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={os.path.join(d, 'supervisord.log')}",
        f"pidfile={os.path.join(d, 'supervisord.pid')}",
        f"childlogdir={d}",
        "loglevel=warn",
        # supervisord keeps 3 pipe ends per child; make sure it may open them.
        f"minfds={max(1024, 4 * n + 256)}",
        f"minprocs={max(200, n + 100)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
        "",
    ]
    for i in range(n):
        lines += [
            f"[program:s{i}]",
            "command=sleep 100000",
            "autostart=true",
            "autorestart=true",
            "startsecs=0",
            # NONE: no per-program log file (2N files otherwise).
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
            "",
        ]
    conf = os.path.join(d, "supervisord.conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines))
    return conf, sock


def make_proxy(sock):
    """An XML-RPC ServerProxy speaking HTTP over supervisord's UNIX socket.

    The URL host is ignored by SupervisorTransport; the serverurl decides."""
    transport = SupervisorTransport(None, None, f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def vm_rss_mb(pid):
    """VmRSS of pid in MiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def session_pids(sid):
    """Pids of all live processes whose session id is sid (from /proc/*/stat)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name "(...)": state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def wait_all_running(sock, n, t0):
    """Seconds from t0 until all N programs are RUNNING, or None on timeout."""
    deadline = t0 + ALL_RUNNING_TIMEOUT_S
    proxy = make_proxy(sock)
    while time.monotonic() < deadline:
        try:
            infos = proxy.supervisor.getAllProcessInfo()
            if len(infos) == n and all(i["statename"] == "RUNNING" for i in infos):
                return time.monotonic() - t0
        except (OSError, xmlrpc.client.Error):
            # Socket not there yet, or supervisord still starting
            # (SHUTDOWN_STATE fault): a failed call may leave the transport
            # half-open, so start over with a fresh proxy.
            proxy = make_proxy(sock)
        time.sleep(POLL_S)
    note(f"not all {n} programs RUNNING after {ALL_RUNNING_TIMEOUT_S} s")
    return None


def cli_status(conf):
    """Median wall time (s) of `supervisorctl status`, or None if one timed out."""
    samples = []
    for _ in range(REPEATS):
        t = time.monotonic()
        try:
            # Exit code ignored: it is 3 when some program is not RUNNING.
            subprocess.run(
                [sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "status"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            note(f"supervisorctl status took over {CLI_TIMEOUT_S} s")
            return None
        samples.append(time.monotonic() - t)
    return statistics.median(samples)


def rpc_latency_ms(sock):
    """Mean ms of one supervisor.getState() over RPC_CALLS calls on one proxy."""
    proxy = make_proxy(sock)
    proxy.supervisor.getState()  # connect once outside the timed loop
    t = time.monotonic()
    for _ in range(RPC_CALLS):
        proxy.supervisor.getState()
    return (time.monotonic() - t) * 1000 / RPC_CALLS


def wait_running(proxy, name, not_pid, deadline):
    """Poll getProcessInfo(name) as fast as possible until it is RUNNING with
    a pid other than not_pid; return that pid, or None at the deadline."""
    while time.monotonic() < deadline:
        info = proxy.supervisor.getProcessInfo(name)
        if info["statename"] == "RUNNING" and info["pid"] not in (0, not_pid):
            return info["pid"]
    return None


def respawn_ms(sock, name="s0"):
    """Median ms from SIGKILL of `name` until it is RUNNING again with a new
    pid, over REPEATS kills; None if any respawn missed its deadline."""
    proxy = make_proxy(sock)
    pid = wait_running(proxy, name, 0, time.monotonic() + RESPAWN_TIMEOUT_S)
    if pid is None:
        note(f"{name} not RUNNING before the first kill")
        return None
    samples = []
    for _ in range(REPEATS):
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # pid > 0 here, never a group
        new = wait_running(proxy, name, pid, t + RESPAWN_TIMEOUT_S)
        if new is None:
            note(f"{name} not respawned within {RESPAWN_TIMEOUT_S} s")
            return None
        samples.append((time.monotonic() - t) * 1000)
        pid = new  # the next kill hits the fresh, running child
    return statistics.median(samples)


def measure(name, fn, *args):
    """Run one measurement; a failure becomes None plus a note, not a crash."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any failure is reported as null
        note(f"{name} failed: {e!r}")
        return None


def stop(sv):
    """SIGTERM supervisord, wait up to STOP_GRACE_S, then SIGKILL whatever is
    left of its process group and of its session (the children)."""
    if sv.poll() is None:
        sv.terminate()
        try:
            sv.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            note(f"supervisord still up {STOP_GRACE_S} s after SIGTERM; SIGKILL")
    try:
        os.killpg(sv.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    sv.wait()
    # supervisord setpgrp()s every child, so sweep its session as well. The
    # kernel does not reuse a pid while it is still some session's id, so
    # this cannot hit an unrelated process.
    for _ in range(50):
        left = session_pids(sv.pid)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    note(f"processes still left in supervisord's session: {session_pids(sv.pid)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000, help="number of programs (default 1000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if a.n < 1:
        ap.error("--n must be at least 1")

    # A SIGTERM to this script should still run the cleanup in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    res = {"n": a.n, "start_to_all_running_s": None, "cli_status_s": None,
           "rpc_request_ms": None, "rss_mb": None, "respawn_ms": None}
    with tempfile.TemporaryDirectory(prefix="supervisord-bench-") as d:
        conf, sock = write_conf(d, a.n)
        t0 = time.monotonic()
        sv = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True)  # own session and process group
        try:
            res["start_to_all_running_s"] = measure(
                "start_to_all_running", wait_all_running, sock, a.n, t0)
            if sv.poll() is not None:
                note(f"supervisord exited early with status {sv.returncode}")
            else:
                res["cli_status_s"] = measure("cli_status", cli_status, conf)
                res["rpc_request_ms"] = measure("rpc_request", rpc_latency_ms, sock)
                res["rss_mb"] = measure("rss", vm_rss_mb, sv.pid)
                res["respawn_ms"] = measure("respawn", respawn_ms, sock)
        finally:
            stop(sv)

    if a.json:
        print(json.dumps(res))
    else:
        units = {"start_to_all_running_s": "s", "cli_status_s": "s",
                 "rpc_request_ms": "ms", "rss_mb": "MB", "respawn_ms": "ms"}
        print(f"supervisord {a.n} programs")
        for k, unit in units.items():
            v = res[k]
            print(f"  {k:24} {'null' if v is None else f'{v:.3f} {unit}'}")


if __name__ == "__main__":
    main()
