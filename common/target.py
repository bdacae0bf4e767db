"""A small blocking client for the target API (docs/design.md, The target).

Used outside the users' own HTTP clients: the monitor's sampler, the safety
guard, cleanup and the CLI's health wait. It uses ``requests`` (shipped with
Locust), which gevent makes cooperative inside a Locust process.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class TargetError(RuntimeError):
    """The target did not answer as the contract says."""


def check_loopback(url: str) -> str:
    """Refuse any target that is not on this machine; returns the URL without a trailing /."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"--host: {url!r} is not a URL (valid: http://127.0.0.1:PORT)")
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise ValueError(
            f"--host: {host} is not on this machine (valid: 127.0.0.0/8, localhost or [::1])"
        )
    return url.rstrip("/")


class TargetClient:
    def __init__(self, base_url: str, timeout: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def get_json(self, path: str, **params: Any) -> Any:
        r = self.session.get(self._url(path), params=params or None, timeout=self.timeout)
        if r.status_code >= 400 and path != "/health":
            raise TargetError(f"GET {path}: HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def post_json(self, path: str, body: Any = None) -> requests.Response:
        return self.session.post(self._url(path), json=body, timeout=self.timeout)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self._url(path), timeout=self.timeout)

    def health(self) -> dict[str, Any]:
        r = self.session.get(self._url("/health"), timeout=self.timeout)
        body = r.json()
        data: dict[str, Any] = dict(body) if isinstance(body, dict) else {"status": None}
        data["http_status"] = r.status_code
        return data

    def memory_stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/memory/stats")
        return data

    def cycle(self) -> dict[str, Any]:
        r = self.post_json("/memory/cycle")
        if r.status_code != 200:
            raise TargetError(f"POST /memory/cycle: HTTP {r.status_code}: {r.text[:200]}")
        data: dict[str, Any] = r.json()
        return data

    def reset_faults(self) -> bool:
        """Drop leak and ballast memory; False when the target has no fault endpoints."""
        r = self.post_json("/faults/reset", {})
        return r.status_code < 400

    def wait_healthy(self, deadline_s: float) -> dict[str, Any]:
        """Poll /health until it answers ok or degraded, or raise TargetError at the deadline."""
        end = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < end:
            try:
                h = self.health()
                if h.get("status") in ("ok", "degraded"):
                    return h
                last = f"status {h.get('status')!r}"
            except (requests.RequestException, ValueError) as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise TargetError(f"{self.base_url} did not become healthy in {deadline_s:g} s ({last})")

    def close(self) -> None:
        self.session.close()
