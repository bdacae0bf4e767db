"""A small blocking client for the target API (docs/design.md, The target).

Used outside the users' own HTTP clients: the monitor's sampler, the safety
guard, cleanup and the CLI's health wait. It uses ``requests`` (shipped with
Locust), which gevent makes cooperative inside a Locust process.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from memstress.common.config import ConfigError

REMOTE_FLAG = "--allow-remote-target"
"""The opt-in that lets ``--host`` name another machine."""

REMOTE_OPT_INS = (
    f"{REMOTE_FLAG}, MEMSTRESS_ALLOW_REMOTE_TARGET=true or safety.allow_remote_targets: true"
)
"""Every way to give that opt-in, as the refusal names them."""


class TargetError(RuntimeError):
    """The target did not answer as the contract says."""


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine: 127.0.0.0/8, ::1 or ``localhost``.

    A name is loopback only when it is ``localhost``; ``127.example.com`` is
    another machine, however it starts.
    """
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(
    url: str, *, allow_remote: bool = False, schemes: tuple[str, ...] = ("http", "https")
) -> str:
    """The target URL without a trailing /, or ValueError in one line.

    ``schemes``: those the run's adapter speaks (``redis`` for the Redis adapter).

    Pure: no request is sent. Without ``allow_remote`` only loopback targets
    pass; sending load to another machine by mistake (production, say) is what
    the opt-in guards against.
    """
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        parts.port  # noqa: B018 - a bad port raises ValueError here
    except ValueError:
        scheme, host = "", ""
    if scheme not in schemes or not host:
        valid = " or ".join(f"{s}://HOST:PORT" for s in schemes)
        raise ValueError(f"--host: {url!r} is not a URL (valid: {valid})")
    check_remote_allowed(url, allow_remote=allow_remote)
    return url.rstrip("/")


def check_remote_allowed(url: str, *, allow_remote: bool) -> None:
    """ValueError in one line naming the host and the opt-in, for another machine without it.

    Any scheme (``redis://`` too): only where the URL points is judged. Pure, no request.
    """
    host = urlsplit(url).hostname
    if not host:  # unix:///path/to.sock: a socket on this machine
        return
    if not allow_remote and not is_loopback(url):
        raise ValueError(
            f"--host: {host} is not on this machine; refused without {REMOTE_OPT_INS} "
            "(valid without: 127.0.0.0/8, localhost or [::1])"
        )


def check_target_pid(url: str, pid: int | None) -> None:
    """A PID names a process on this machine: refuse it with a target on another."""
    if pid is not None and not is_loopback(url):
        raise ValueError(
            f"--target-pid: {pid} is a process on this machine, but the target {url} is on "
            "another (valid there: --metrics-url URL of its Prometheus metrics, or no --target-pid)"
        )


DEFAULT_METRIC = "process_resident_memory_bytes"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@dataclass(frozen=True)
class MetricsUrl:
    """Where the target's RSS is exposed as Prometheus text, when not by PID
    (read by :class:`monitors.exporter.MetricsUrlSource`)."""

    url: str
    metric: str = DEFAULT_METRIC
    labels: tuple[tuple[str, str], ...] = ()  # every one must match the series


def metrics_url(url: Any, metric: Any = None, labels: Any = None) -> MetricsUrl | None:
    """``--metrics-url`` with its metric name and label selector, checked (None: not given).

    Any host is fine without the opt-in: reading an exporter is a scrape, not load.
    """
    text = str(url).strip() if url is not None else ""
    if not text:
        return None
    try:
        check_host(text, allow_remote=True)
    except ValueError:
        raise ConfigError(
            f"--metrics-url: {text!r} is not a URL (valid: http(s)://HOST:PORT/PATH, "
            "e.g. http://127.0.0.1:9100/metrics)"
        ) from None
    try:
        name = parse_metric_name(str(metric or "").strip() or DEFAULT_METRIC)
        selector = parse_labels(str(labels) if labels is not None else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return MetricsUrl(text, name, selector)


def parse_metric_name(text: str) -> str:
    """A Prometheus metric name, or ValueError naming the valid form."""
    name = text.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"--metrics-metric: {text!r} is not a metric name "
            "(valid: letters, digits, _ and :, e.g. container_memory_rss)"
        )
    return name


def parse_labels(text: str | None) -> tuple[tuple[str, str], ...]:
    """``name=value,name="value"`` -> sorted pairs; empty or None -> no selector."""
    if not text or not text.strip():
        return ()
    pairs: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if not sep or not _LABEL.match(name) or name in pairs:
            raise ValueError(
                f"--metrics-labels: {part.strip()!r} is not a label match "
                '(valid: comma-separated name=value, e.g. container=api,namespace="staging")'
            )
        pairs[name] = value
    return tuple(sorted(pairs.items()))


class TargetClient:
    def __init__(self, base_url: str, timeout: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # The environment's proxy, CA bundle and .netrc for this one base URL, read once:
        # requests would read them again on every request (all of os.environ, ~/.netrc),
        # the larger part of a monitor sample's HTTP cost.
        env = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self.session.proxies.update(env["proxies"] or {})
        self.session.verify = env["verify"]
        self.session.auth = requests.utils.get_netrc_auth(self.base_url)
        self.session.trust_env = False

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
