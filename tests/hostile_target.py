"""A hostile target for the monitor's tests: the real reference service behind a proxy
that answers the monitor's own endpoints badly.

    python -m tests.hostile_target --upstream http://127.0.0.1:8000 --port 8001 --mode reset

Every request is forwarded to the upstream reference service, so the load of a
scenario runs as usual, except ``GET /metrics``, ``GET /memory/stats`` and
``GET /health``, which the mode may answer itself (see :data:`MODES`). The
proxy is a process of its own: its PID is what the monitor reads with psutil
(``--target-pid``), and killing it is losing the target.

``PUT /_hostile/mode`` with a mode name as the body switches modes while it
runs (``good`` forwards everything), so a test can let a source recover.

Standard library only (threads, ``http.server``, ``http.client``); it never
imports Locust or gevent.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)
SLOW_S = 8.0
HUGE_BYTES = 50 * 1024 * 1024
PROM_RSS = re.compile(rb"^process_resident_memory_bytes .*$", re.MULTILINE)


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: HostileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request line per request is noise in the test's logs

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/_hostile/mode" and self.command == "PUT":
                mode = self._body().decode().strip()
                if mode not in MODES:
                    self._send(400, b"unknown mode\n", "text/plain")
                    return
                self.server.mode = mode
                self._send(200, mode.encode() + b"\n", "text/plain")
                return
            act = MODES[self.server.mode].get(path) if self.command == "GET" else None
            if act is None:
                self._forward()
            else:
                act(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client gave up (as it should on a slow answer)

    # --- plain proxying -------------------------------------------------------------

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def upstream(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """The upstream's answer to this request: status, headers, body."""
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            conn = self.server.connection()
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                r = conn.getresponse()
                return r.status, r.getheaders(), r.read()
            except (OSError, http.client.HTTPException):
                self.server.drop_connection()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forward(self) -> None:
        try:
            status, headers, data = self.upstream()
        except (OSError, http.client.HTTPException) as exc:
            self._send(502, f"upstream: {exc}\n".encode(), "text/plain")
            return
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_HEADERS:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _upstream_body(self) -> bytes:
        return self.upstream()[2]

    # --- bad answers ------------------------------------------------------------------

    def junk_prometheus(self) -> None:
        page = (
            b"# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            b"# TYPE process_resident_memory_bytes gauge\n"
            b"process_resident_memory_bytes NaN-ish {\n"
        )
        self._send(200, page, "text/plain; version=0.0.4; charset=utf-8")

    def garbled_stats(self) -> None:
        if next(self.server.turn) % 2:
            page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>nginx</body></html>\n"
            self._send(200, page, "text/html")
        else:
            whole = self._upstream_body()
            self._send(200, whole[: len(whole) // 2], "application/json")

    def wrong_type_stats(self) -> None:
        data = json.loads(self._upstream_body())
        data.update(
            rss_bytes="512 MB", budget_bytes=None, pressure=float("nan"), optimizations_total=-3
        )
        data["tiers"]["vectors"]["bytes"] = -4096
        self._send(200, json.dumps(data).encode(), "application/json")  # NaN, as Python writes it

    def wrong_value_prometheus(self) -> None:
        value = (b"NaN", b"-52428800.0", b"1e+15")[next(self.server.turn) % 3]
        page = PROM_RSS.sub(b"process_resident_memory_bytes " + value, self._upstream_body())
        self._send(200, page, "text/plain; version=0.0.4; charset=utf-8")

    def slow(self) -> None:
        time.sleep(SLOW_S)
        self._forward()

    def reset(self) -> None:
        """Close the connection with a TCP RST, the request unanswered."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def error_500(self) -> None:
        body = b"Internal Server Error\n\nMemoryError: cannot allocate 4096 bytes\n"
        self._send(500, body, "text/plain")

    def huge_stats(self) -> None:
        """A 50 MB JSON body, its length declared."""
        head = b'{"rss_bytes": 1048576, "padding": "'
        pad = HUGE_BYTES - len(head) - 2
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()
        self.wfile.write(head)
        for _ in range(pad // len(self.server.block)):
            self.wfile.write(self.server.block)
        self.wfile.write(b"x" * (pad % len(self.server.block)) + b'"}')

    def huge_prometheus(self) -> None:
        """50 MB of comment lines before the real page, no length declared (ends at close)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        line = b"# padding " + b"x" * 53 + b"\n"
        block = line * (len(self.server.block) // len(line))
        for _ in range(HUGE_BYTES // len(block)):
            self.wfile.write(block)
        self.wfile.write(self._upstream_body())


Act = Callable[[Proxy], None]

MODES: dict[str, dict[str, Act]] = {
    "good": {},
    "junk_prometheus": {"/metrics": Proxy.junk_prometheus},
    "garbled_stats": {"/memory/stats": Proxy.garbled_stats},
    "wrong_types": {
        "/memory/stats": Proxy.wrong_type_stats,
        "/metrics": Proxy.wrong_value_prometheus,
    },
    "slow": {"/metrics": Proxy.slow, "/memory/stats": Proxy.slow, "/health": Proxy.slow},
    "reset": {"/metrics": Proxy.reset, "/memory/stats": Proxy.reset, "/health": Proxy.reset},
    "error_500": {
        "/metrics": Proxy.error_500,
        "/memory/stats": Proxy.error_500,
        "/health": Proxy.error_500,
    },
    "huge": {"/metrics": Proxy.huge_prometheus, "/memory/stats": Proxy.huge_stats},
}
"""Per mode, the endpoints it answers itself; everything else goes upstream."""

SOURCE_OF = {"/metrics": "prometheus", "/memory/stats": "stats"}
"""The monitor source that reads each endpoint (``/health`` is not a source)."""


def spoiled_sources(mode: str) -> set[str]:
    """The monitor sources a mode answers badly."""
    return {SOURCE_OF[path] for path in MODES[mode] if path in SOURCE_OF}


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: str, mode: str) -> None:
        super().__init__(("127.0.0.1", port), Proxy)
        parts = urlsplit(upstream)
        self.upstream_addr = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.mode = mode
        self.turn = itertools.count()
        self.block = b"x" * (1 << 20)
        self._local = threading.local()

    def connection(self) -> http.client.HTTPConnection:
        """This thread's kept-alive connection to the upstream."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream_addr, timeout=30)
            self._local.conn = conn
        return conn

    def drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile_target")
    parser.add_argument("--upstream", required=True, help="the reference service's URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="good")
    args = parser.parse_args()
    server = HostileServer(args.port, args.upstream, args.mode)
    print(f"hostile target on 127.0.0.1:{args.port} mode={args.mode}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
