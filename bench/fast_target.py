"""A target that answers in microseconds, so the load generator, not the target, sets the rate.

    python -m bench.fast_target     # prints its port on the first line, serves until killed

One asyncio protocol on 127.0.0.1 (uvloop when it is installed), HTTP/1.1 with
keep-alive and nothing else: every request is answered at once with a small
JSON body, whatever its path, so both sides of the load benchmark (the
scenario's ``VectorClient`` upserting and searching, a plain FastHttpUser)
get a 2xx answer they accept. Three paths answer what the memory monitor reads,
so a run with every source on has every source to read:

- ``GET /metrics``: ``process_resident_memory_bytes``, this process's RSS;
- ``GET /memory/stats``: the target API's shape, one tier holding 0 bytes;
- ``GET /health``: ``{"status": "ok"}``.

wrk against it says how many requests/s it serves; the benchmark needs that
to be several times what one generator core sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import psutil

BODY = b'{"ok":true,"results":[]}'
HEALTH = b'{"status":"ok"}'
_PROC = psutil.Process()


def _reply(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + b"Content-Type: " + ctype + b"\r\n\r\n" + body


OK = _reply("200 OK", BODY)


def _dynamic(path: bytes) -> bytes | None:
    if path == b"/health":
        return _reply("200 OK", HEALTH)
    if path == b"/metrics":
        rss = _PROC.memory_info().rss
        text = (
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            f"process_resident_memory_bytes {rss}\n"
        )
        return _reply("200 OK", text.encode(), b"text/plain; version=0.0.4")
    if path == b"/memory/stats":
        stats = {
            "budget_bytes": 512 * 2**20,
            "pressure": 0.0,
            "strategy": "none",
            "tiers": {"conversations": {"bytes": 0, "items": 0, "limit_bytes": 2**26}},
            "optimizations_total": 0,
            "optimizations_failed": 0,
            "bytes_freed_total": 0,
        }
        return _reply("200 OK", json.dumps(stats).encode())
    return None


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end]
            length = 0
            low = head.lower()
            at = low.find(b"content-length:")
            if at >= 0:
                line_end = low.find(b"\r\n", at)
                length = int(low[at + 15 : line_end if line_end >= 0 else None].strip() or 0)
            if len(self.buf) < end + 4 + length:
                break
            self.buf = self.buf[end + 4 + length :]
            first = head.split(b"\r\n", 1)[0].split(b" ")
            path = first[1].split(b"?", 1)[0] if len(first) > 1 else b"/"
            out.append((_dynamic(path) if path[:2] in (b"/h", b"/m") else None) or OK)
        if out:
            self.transport.write(b"".join(out))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    os._exit(0)


if __name__ == "__main__":
    main()
