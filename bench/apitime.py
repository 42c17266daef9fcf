#!/usr/bin/env python3
"""bench/apitime.py SOCKET N REQUEST...: send the REQUESTs (each "METHOD PATH" or "METHOD PATH
BODY", BODY being JSON) in order, N times over, over one keep-alive HTTP/1.1 connection to the
unix socket SOCKET, reading every answer in full, and print the mean time of one pass (all the
REQUESTs once) in milliseconds (3 decimals).

This is the server's own time for the requests (plus a few tens of microseconds of Python): no
process start, no connection set-up, no client-side work. A failed request (status >= 400) is an
error (exit 1), so a server that answers quickly with an error is not counted as fast. A pass
that creates and removes something (POST /volumes/create, then DELETE /volumes/NAME) leaves
the server as it found it.
"""
import http.client
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the Docker Engine API's transport)."""

    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


def parse(request):
    parts = request.split(" ", 2)
    if len(parts) < 2:
        sys.exit(f"bad request {request!r}: want METHOD PATH [BODY]")
    body = parts[2].encode() if len(parts) == 3 else None
    return parts[0], parts[1], body


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: apitime.py SOCKET N REQUEST...")
    sock, n = sys.argv[1], int(sys.argv[2])
    requests = [parse(r) for r in sys.argv[3:]]
    conn = UnixConnection(sock)

    def one_pass():
        for method, path, body in requests:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status >= 400:
                sys.exit(f"{method} {path}: HTTP {r.status}")

    one_pass()  # the connection is set up outside the timing
    t0 = time.perf_counter()
    for _ in range(n):
        one_pass()
    t1 = time.perf_counter()
    conn.close()
    print(f"{(t1 - t0) * 1000 / n:.3f}")


if __name__ == "__main__":
    main()
