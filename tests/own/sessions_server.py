"""A conversation-memory HTTP API of the tests' own, shaped unlike the memstress API.

    python tests/own/sessions_server.py --port P [--budget-mb 256]

``tests/own/sessions_map.yml`` maps the suite's operations onto it (the README's
http-map example). Sessions hold turns (``speaker``, ``text``), newest last:

- ``GET /healthz``: ``{"up": true}``
- ``POST /v1/sessions/{sid}/turns`` ``{"speaker", "text"}``: 201 ``{"stored": n}``
- ``GET /v1/sessions/{sid}/recall?q=&n=``: ``{"recall": {"items": [...]}}`` (last n)
- ``GET /v1/sessions/{sid}/turns?skip=&take=``: ``{"turns": [...]}``
- ``DELETE /v1/sessions/{sid}``: 204, or 404 when there is no such session
- ``GET /v1/usage``: ``{"memory": {"percent_used", "limit_bytes", "sessions"}}``

Answers 400 to a body without its fields. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SESSIONS: dict[str, list[dict[str, str]]] = {}
LOCK = threading.Lock()
BUDGET = 256 * 2**20
KEEP = 500  # turns per session

_SESSION = re.compile(r"^/v1/sessions/([^/]+)(/turns|/recall)?$")


def held_bytes() -> int:
    return sum(len(t["text"]) + 64 for turns in SESSIONS.values() for t in turns)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self) -> tuple[str | None, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        m = _SESSION.match(parts.path)
        if m is None:
            return None, parts.path, parse_qs(parts.query)
        return unquote(m.group(1)), m.group(2) or "", parse_qs(parts.query)

    def do_GET(self) -> None:
        sid, rest, q = self.route()
        if sid is None:
            if rest == "/healthz":
                self.answer(200, {"up": True})
            elif rest == "/v1/usage":
                with LOCK:
                    held, n = held_bytes(), len(SESSIONS)
                usage = {"percent_used": 100.0 * held / BUDGET, "limit_bytes": BUDGET}
                self.answer(200, {"memory": {**usage, "sessions": n}})
            else:
                self.answer(404, {"error": "no such path"})
            return
        with LOCK:
            turns = list(SESSIONS.get(sid, []))
        if rest == "/recall":
            n = int(q.get("n", ["5"])[0])
            self.answer(200, {"recall": {"items": turns[-n:]}})
        elif rest == "/turns":
            skip, take = int(q.get("skip", ["0"])[0]), int(q.get("take", ["20"])[0])
            self.answer(200, {"turns": turns[skip : skip + take]})
        else:
            self.answer(404, {"error": "no such path"})

    def do_POST(self) -> None:
        sid, rest, _ = self.route()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if sid is None or rest != "/turns":
            self.answer(404, {"error": "no such path"})
            return
        if not (isinstance(body, dict) and {"speaker", "text"} <= set(body)):
            self.answer(400, {"error": "a turn has speaker and text"})
            return
        with LOCK:
            turns = SESSIONS.setdefault(sid, [])
            turns.append({"speaker": str(body["speaker"]), "text": str(body["text"])})
            del turns[:-KEEP]
            n = len(turns)
        self.answer(201, {"stored": n})

    def do_DELETE(self) -> None:
        sid, rest, _ = self.route()
        with LOCK:
            gone = sid is not None and not rest and SESSIONS.pop(sid, None) is not None
        self.answer(204) if gone else self.answer(404, {"error": "no such session"})

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    global BUDGET
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--budget-mb", type=float, default=256)
    args = p.parse_args()
    BUDGET = int(args.budget_mb * 2**20)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
