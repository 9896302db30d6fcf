"""What the soak scripts share: the wire framing, a kept-open client, and
the daemon's fd count and RSS from /proc."""

import json
import os
import socket
import struct


def frame(obj):
    """One frame: a JSON object (or bytes already encoded) behind its length."""
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


class Client:
    """One kept-open connection with its hello done; replies are read
    through a buffer (one recv per reply, mostly), so that the clients,
    not the daemon, are not what limits a rate."""

    def __init__(self, path, agent="soak", timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.s.sendall(frame({"version": 1, "agent": agent}))
        self.read()
        self.id = 0

    def read(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack_from(">I", self.buf)[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return json.loads(body)
            b = self.s.recv(16384)
            if not b:
                raise ConnectionError("daemon closed the connection")
            self.buf += b

    def call(self, req):
        """Send `req` with the next id; its reply (others skipped)."""
        self.id += 1
        req["id"] = self.id
        self.s.sendall(frame(req))
        while True:
            r = self.read()
            if r.get("id") == self.id:
                return r

    def close(self):
        self.s.close()


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    """A TCP port on loopback that was free a moment ago (for a server
    started next: a peer, a proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
