"""The leak benchmark's own target: speaks the target API and leaks (or not) in its own code.

    python -m bench.leak_target --mode steady --rate 1 --start-s 60 --seed 3

It prints its port on the first line, then serves on 127.0.0.1 until killed.
Every request to the target API gets a small JSON answer (as
``tests/fixtures/target_api.py``); what differs is its memory:

Every time below counts from the first API request (the load's start).

- always a **sawtooth**: ``--saw-mb`` MB taken in anonymous mmap blocks over
  ``--saw-period-s`` seconds, then given back at once, its phase set by the
  seed, so repeats of a case differ;
- always a **cache tier** of ``--tier-mb`` MB, reported in ``/memory/stats`` as
  ``conversations`` with ``limit_bytes`` ``--tier-limit-mb``;

and one ``--mode``:

- ``free``: nothing else;
- ``steady``: from ``--start-s`` on, a thread keeps ``--rate`` MB/min in a list
  it never frees, memory the target does not account for;
- ``tier``: the same, but the bytes are counted in the cache tier, which grows
  past its ``limit_bytes`` and never shrinks;
- ``per-request``: from ``--start-s`` on, every API request keeps
  ``--bytes-per-request`` bytes (grows with load, not time);
- ``plateau``: a cache filling to ``--mb`` MB on a saturating curve (time
  constant ``--tau-s``), then flat;
- ``step``: one allocation of ``--mb`` MB at ``--start-s``, kept.

``GET /leak/state`` says what the leak holds (bytes, start time), so the
benchmark measures the true rate rather than trusting the setting.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memstress.common.units import MB

CHUNK = 64 * 1024
MODES = ("free", "steady", "tier", "per-request", "plateau", "step")


class Memory:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.kept: list[bytes] = []  # the leak, the plateau, the step: never freed
        self.leaked = 0
        self.leak_started: float | None = None
        self.tier: list[bytes] = [_block(CHUNK) for _ in range(round(args.tier_mb * MB / CHUNK))]
        self.tier_bytes = len(self.tier) * CHUNK
        self.loaded = threading.Event()  # the first API request came: the run's clock starts
        self.t0 = time.time()

    def keep(self, n: int, *, leak: bool = True, tier: bool = False) -> None:
        blocks = [_block(CHUNK) for _ in range(n // CHUNK)]
        if n % CHUNK:
            blocks.append(_block(n % CHUNK))
        with self.lock:
            self.kept.extend(blocks)
            if leak:
                if self.leak_started is None:
                    self.leak_started = time.time()
                self.leaked += n
            if tier:
                self.tier_bytes += n

    def per_request(self) -> None:
        if not self.loaded.is_set():
            self.t0 = time.time()
            self.loaded.set()
        a = self.args
        if a.mode == "per-request" and time.time() - self.t0 >= a.start_s:
            self.keep(a.bytes_per_request)


def _block(n: int) -> bytes:
    return bytes([0x5A]) * n  # written, so the pages are resident


def _after_load(mem: Memory, stop: threading.Event, delay: float) -> bool:
    """Wait for the first API request, then ``delay`` s; False when stopped meanwhile."""
    while not mem.loaded.wait(0.5):
        if stop.is_set():
            return False
    return not stop.wait(max(0.0, delay - (time.time() - mem.t0)))


def _timed_leak(mem: Memory, stop: threading.Event) -> None:
    a = mem.args
    if not _after_load(mem, stop, a.start_s):
        return
    t0, held = time.monotonic(), 0
    while not stop.wait(0.5):
        due = int(a.rate * MB * (time.monotonic() - t0) / 60.0)
        if due - held >= 4096:
            mem.keep(due - held, tier=a.mode == "tier")
            held = due


def _plateau(mem: Memory, stop: threading.Event) -> None:
    if not _after_load(mem, stop, 0.0):
        return
    a, t0, held = mem.args, time.monotonic(), 0
    while not stop.wait(0.5) and held < a.mb * MB - CHUNK:
        due = int(a.mb * MB * (1.0 - math.exp(-(time.monotonic() - t0) / a.tau_s)))
        if due > held:
            mem.keep(due - held, leak=False)
            held = due


def _step(mem: Memory, stop: threading.Event) -> None:
    if _after_load(mem, stop, mem.args.start_s):
        mem.keep(int(mem.args.mb * MB), leak=False)


def _sawtooth(mem: Memory, stop: threading.Event, rng: random.Random) -> None:
    """Take ``saw_mb`` over a period in mmap blocks, then give it all back; phase by seed."""
    a = mem.args
    if a.saw_mb <= 0:
        return
    period, total = a.saw_period_s, int(a.saw_mb * MB)
    phase = rng.random() * period
    blocks: list[mmap.mmap] = []
    start = time.monotonic() - phase
    while not stop.wait(0.25):
        into = (time.monotonic() - start) % period
        due = int(total * into / period) // CHUNK
        if due < len(blocks):  # a new period: give everything back
            for b in blocks:
                b.close()
            blocks = []
        while len(blocks) < due:
            m = mmap.mmap(-1, CHUNK)
            m.write(b"\x5a" * CHUNK)
            blocks.append(m)


ROUTES = (
    ("GET", r"/health", 200),
    ("POST", r"/agents/[^/]+/messages", 201),
    ("GET", r"/agents/[^/]+/messages", 200),
    ("GET", r"/agents/[^/]+/context", 200),
    ("DELETE", r"/agents/[^/]+", 200),
    ("POST", r"/vectors/documents", 201),
    ("POST", r"/vectors/search", 200),
    ("DELETE", r"/vectors/namespaces/[^/]+", 200),
    ("POST", r"/memory/cycle", 200),
    ("POST", r"/memory/optimize", 202),
)


def make_handler(mem: Memory) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if method == "GET" and path == "/memory/stats":
                return self._send(200, self._stats())
            if method == "GET" and path == "/leak/state":
                with mem.lock:
                    state = {"leaked_bytes": mem.leaked, "started_at": mem.leak_started}
                return self._send(200, {"mode": mem.args.mode, **state})
            for m, pattern, status in ROUTES:
                if m == method and re.fullmatch(pattern, path):
                    if path != "/health":
                        mem.per_request()
                    body: dict[str, Any] = {"status": "ok"} if path == "/health" else {"ok": True}
                    return self._send(status, body)
            self._send(404, {"detail": "not found"})

        def _stats(self) -> dict[str, Any]:
            a = mem.args
            return {
                "budget_bytes": 1024 * MB,
                "pressure": 0.0,
                "strategy": "none",
                "tiers": {
                    "conversations": {
                        "bytes": mem.tier_bytes,
                        "items": 1,
                        "limit_bytes": int(a.tier_limit_mb * MB),
                    }
                },
                "optimizations_total": 0,
                "optimizations_failed": 0,
                "bytes_freed_total": 0,
            }

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

    return Handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.leak_target")
    p.add_argument("--mode", choices=MODES, default="free")
    p.add_argument("--rate", type=float, default=1.0, help="MB/min (steady, tier)")
    p.add_argument("--start-s", type=float, default=60.0, help="when the leak (or step) starts")
    p.add_argument("--bytes-per-request", type=int, default=1024)
    p.add_argument("--mb", type=float, default=20.0, help="plateau / step size")
    p.add_argument("--tau-s", type=float, default=60.0)
    p.add_argument("--saw-mb", type=float, default=4.0)
    p.add_argument("--saw-period-s", type=float, default=30.0)
    p.add_argument("--tier-mb", type=float, default=4.0)
    p.add_argument("--tier-limit-mb", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    mem = Memory(args)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(mem))
    server.daemon_threads = True
    stop = threading.Event()
    rng = random.Random(args.seed)
    jobs: list[tuple[Any, tuple[Any, ...]]] = [(_sawtooth, (mem, stop, rng))]
    if args.mode in ("steady", "tier"):
        jobs.append((_timed_leak, (mem, stop)))
    elif args.mode == "plateau":
        jobs.append((_plateau, (mem, stop)))
    elif args.mode == "step":
        jobs.append((_step, (mem, stop)))
    for fn, fargs in jobs:
        threading.Thread(target=fn, args=fargs, daemon=True).start()
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        sys.stdout.close()


if __name__ == "__main__":
    main()
