#!/usr/bin/env python3
"""Clients that request a file and never read the answer (a paused player).

Opens COUNT connections to 127.0.0.1:PORT, each with a small receive buffer
(set before connect, so the advertised window stays small), sends one
`GET PATH`, prints `ready N` once every request is sent, then holds the
connections without reading until SECONDS pass, stdin closes, or SIGTERM.
Used by benches/http/run's slow-client check.
"""

import argparse
import signal
import socket
import sys
import threading


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF bytes")
    ap.add_argument("--seconds", type=float, default=60, help="upper bound on the hold")
    a = ap.parse_args()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    # stdin closing (the parent gone) ends the hold too.
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()

    request = f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(a.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
            s.settimeout(10)
            s.connect(("127.0.0.1", a.port))
            s.sendall(request)
            socks.append(s)
        print(f"ready {len(socks)}", flush=True)
        done.wait(a.seconds)
    finally:
        for s in socks:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
