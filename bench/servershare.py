#!/usr/bin/env python3
"""bench/servershare.py SOCKET CMD...: run CMD (a docker CLI command) with DOCKER_HOST pointing at
a relay in front of the Engine API server listening on the unix socket SOCKET, and print how long
the command waited on the server, in milliseconds (3 decimals).

The relay forwards every connection the command opens to SOCKET unchanged and notes when each
chunk passes. On one connection an exchange runs from the first chunk the client sends to the last
chunk the server sends before the client speaks again (or the connection ends); the time printed
is the length of the union of all exchanges on all connections, i.e. the part of the command's
wall time during which it had a request out and its answer not yet in full. The client's own
start-up and work (the ~40 ms of a docker CLI command) are left out, which is what the docker
CLI's wall time cannot show when two servers differ by a fraction of a millisecond. The relay adds
the same few tens of microseconds per chunk for any server.

For commands that finish their requests before they exit (not `run`/`attach`, whose streams stay
open while the container runs). CMD failing is an error (exit 1, its stderr shown).
SERVERSHARE_VERBOSE=1 also lists each exchange on stderr (start, end, length in ms, request line).
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

CHUNK = 1 << 16


class Relay:
    """Accepts connections on a private unix socket and relays each to the server's socket."""

    def __init__(self, target):
        self.target = target
        self.dir = tempfile.mkdtemp(prefix="servershare.")
        self.path = os.path.join(self.dir, "relay.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.lock = threading.Lock()
        self.connections = []  # per connection: list of (time, "c" or "s") chunk events
        self.pumps = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # listener closed
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.target)
            events = []
            with self.lock:
                self.connections.append(events)
                for src, dst, side in ((client, server, "c"), (server, client, "s")):
                    t = threading.Thread(target=self.pump, args=(src, dst, side, events), daemon=True)
                    self.pumps.append(t)
                    t.start()

    def pump(self, src, dst, side, events):
        try:
            while True:
                data = src.recv(CHUNK)
                now = time.perf_counter()
                if not data:
                    break
                with self.lock:
                    events.append((now, side, data[:80] if side == "c" else b""))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def finish(self, timeout):
        """Wait for every relayed connection to end (the command has exited), then stop."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                pumps = list(self.pumps)
            for t in pumps:
                t.join(max(0.0, deadline - time.monotonic()))
            with self.lock:
                if len(self.pumps) == len(pumps):
                    break
        self.listener.close()
        os.unlink(self.path)
        os.rmdir(self.dir)
        if any(t.is_alive() for t in pumps):
            sys.exit(f"a connection to {self.target} was still open {timeout} s after the command ended")


def exchanges(events):
    """The (start, end) of each request/answer exchange on one connection."""
    out = []
    start = last_server = None
    for t, side, head in sorted(events):
        if side == "c":
            if last_server is not None:  # the client speaks again: the previous exchange ended
                out.append((start, last_server, request))
                start = last_server = None
            if start is None:
                start, request = t, head.split(b"\r\n", 1)[0].decode(errors="replace")
        elif start is not None:
            last_server = t
    if start is not None and last_server is not None:
        out.append((start, last_server, request))
    return out


def union_length(intervals):
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: servershare.py SOCKET CMD...")
    relay = Relay(sys.argv[1])
    env = dict(os.environ, DOCKER_HOST=f"unix://{relay.path}")
    done = subprocess.run(sys.argv[2:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    relay.finish(timeout=10)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        sys.exit(f"{' '.join(sys.argv[2:])}: exit {done.returncode}")
    found = sorted(x for events in relay.connections for x in exchanges(events))
    if os.environ.get("SERVERSHARE_VERBOSE"):
        t0 = found[0][0] if found else 0
        for start, end, request in found:
            ms = lambda t: (t - t0) * 1000
            sys.stderr.write(f"{ms(start):8.3f} {ms(end):8.3f} {(end - start) * 1000:7.3f}  {request}\n")
    print(f"{union_length([(s, e) for s, e, _ in found]) * 1000:.3f}")


if __name__ == "__main__":
    main()
