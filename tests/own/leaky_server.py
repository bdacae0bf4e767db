"""A small HTTP server of the tests' own, not speaking the memstress API.

    python tests/own/leaky_server.py --port P [--leak-mb-per-min R] [--die-after S]

``GET /`` answers a small page, ``GET /healthz`` answers 200. With
``--leak-mb-per-min`` it keeps a little of every second's allocations forever, in
its own code (a list that only grows), at that rate. ``--die-after S`` exits
with code 1 after S seconds (a target that crashes mid-run). Stdlib only.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEPT: list[bytes] = []  # the leak: grows, never shrinks


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        pages = {"/": b"<html><body>hello</body></html>\n", "/healthz": b"ok\n"}
        body = pages.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def leak(mb_per_min: float) -> None:
    step = 0.25
    chunk = int(mb_per_min * (1 << 20) / 60 * step)
    while True:
        KEPT.append(os.urandom(chunk))  # random bytes: resident, not shared zero pages
        time.sleep(step)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--leak-mb-per-min", type=float, default=0.0)
    p.add_argument("--die-after", type=float, default=0.0)
    a = p.parse_args()
    if a.leak_mb_per_min > 0:
        threading.Thread(target=leak, args=(a.leak_mb_per_min,), daemon=True).start()
    if a.die_after > 0:
        threading.Timer(a.die_after, lambda: os._exit(1)).start()
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
