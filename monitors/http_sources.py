"""Memory sources the target answers over HTTP: its Prometheus ``/metrics`` and its
own ``/memory/stats``.

Each GET goes through :func:`fetch_text`, which streams the body and refuses one past
:data:`MAX_BODY_BYTES`, and turns every way of not answering into
:class:`~monitors.readings.SourceFailed` (or :class:`~monitors.readings.SourceMissing`
for a 404) with an example of what came back. ``--metrics-url``'s source
(:mod:`monitors.exporter`) uses it too.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from memstress.common.target import TargetClient
from memstress.common.units import MB
from memstress.monitors.readings import (
    EXAMPLE_CHARS,
    Reading,
    SourceFailed,
    SourceMissing,
    example_of,
)

PROM_RSS = "process_resident_memory_bytes"

TIERS = ("conversations", "vectors", "embedding_cache", "ballast")
"""The memory tiers ``/memory/stats`` reports (``<tier>_bytes`` and ``<tier>_limit_bytes``)."""

MAX_BODY_BYTES = 4 * MB
"""A /metrics or /memory/stats body larger than this is refused unread (the
reference service's are a few kB; a Prometheus page of a big process, some 100 kB)."""


class Get:
    """``GET path`` on the target, again every sample: its body as text, else
    SourceMissing (404) or SourceFailed (see :func:`fetch_text`).

    The request is prepared once (URL, the session's headers and auth) and sent
    straight to the session's transport adapter: ``Session.get`` would merge and
    prepare it again each time, a quarter of a sample's GET in CPU (1.36 -> 1.03
    ms against the reference service). The adapter maps transport errors to
    requests' exceptions as ``Session.get`` does; a redirect is followed by
    ``Session.get`` itself.
    """

    def __init__(self, client: TargetClient, path: str) -> None:
        self.client = client
        self.path = path
        self.prepared = client.session.prepare_request(
            requests.Request("GET", f"{client.base_url}{path}")
        )

    def __call__(self) -> str:
        return fetch_text(
            self.client.session,
            f"{self.client.base_url}{self.path}",
            self.client.timeout,
            f"GET {self.path}",
            missing=f"the target has no {self.path} (HTTP 404)",
            prepared=self.prepared,
        )


def _send(
    session: requests.Session,
    url: str,
    timeout: float,
    prepared: requests.PreparedRequest | None,
) -> requests.Response:
    """The streamed answer to ``GET url``; with ``prepared``, sent on the session's adapter."""
    if prepared is not None:
        r = session.get_adapter(url).send(
            prepared,
            stream=True,
            timeout=timeout,
            verify=True if session.verify is None else session.verify,
            cert=session.cert,
            proxies=session.proxies,
        )
        if not r.is_redirect:
            return r
        r.close()
    return session.get(url, timeout=timeout, stream=True)


def fetch_text(
    session: requests.Session,
    url: str,
    timeout: float,
    what: str,
    *,
    missing: str,
    prepared: requests.PreparedRequest | None = None,
) -> str:
    """``GET url``: its body as text, else SourceMissing(``missing``) on a 404, or SourceFailed.

    The body is streamed and refused past :data:`MAX_BODY_BYTES`, so a huge
    answer costs at most that much memory and reading time. ``prepared``: the
    same GET prepared once on ``session`` (:class:`Get`).
    """
    try:
        with _send(session, url, timeout, prepared) as r:
            if r.status_code == 404:
                raise SourceMissing(missing)
            declared = r.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise SourceFailed(
                    f"{what}: body of {int(declared) / MB:.1f} MB "
                    f"(valid: up to {MAX_BODY_BYTES // MB} MB)",
                    example_of(next(r.iter_content(EXAMPLE_CHARS + 1), b"")),
                )
            body = bytearray()
            for chunk in r.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise SourceFailed(
                        f"{what}: body over {MAX_BODY_BYTES // MB} MB", example_of(bytes(body))
                    )
            text = bytes(body).decode(r.encoding or "utf-8", errors="replace")
            if r.status_code != 200:
                raise SourceFailed(f"{what}: HTTP {r.status_code}", example_of(text))
            return text
    except requests.Timeout:
        raise SourceFailed(f"{what}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise SourceFailed(f"{what}: {type(exc).__name__}", _cause(exc)) from None


def _cause(exc: BaseException) -> str:
    """The innermost error text of a requests failure (e.g. 'Connection reset by peer')."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    for arg in exc.args:
        if isinstance(arg, BaseException):
            exc = arg
    return example_of(str(exc))


class PrometheusSource:
    """``process_resident_memory_bytes`` from the target's ``GET /metrics``."""

    name = "prometheus"

    def __init__(self, client: TargetClient) -> None:
        self.client = client
        self._get = Get(client, "/metrics")

    def read(self) -> Reading:
        value = parse_prometheus_rss(self._get())
        if value is None:
            raise SourceMissing(f"/metrics has no {PROM_RSS}")
        return {"prom_rss_bytes": value}


def parse_prometheus_rss(text: str) -> float | None:
    """The ``process_resident_memory_bytes`` value in a Prometheus text page, if any.

    Only the metric's own lines (with its HELP and TYPE) are parsed, so a large
    page of other metrics costs a substring scan, not a full parse. Lines that
    do not parse raise :class:`SourceFailed`, quoting the first of them.
    """
    lines = [ln for ln in text.splitlines() if PROM_RSS in ln]
    if not lines:
        return None
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            if family.name == PROM_RSS:
                for sample in family.samples:
                    if sample.name == PROM_RSS:
                        return float(sample.value)
    except Exception as exc:  # the parser's own errors on text it cannot read, whatever type
        bad = next((ln for ln in lines if not _parses(ln)), lines[0])
        raise SourceFailed(
            f"GET /metrics: not Prometheus text ({type(exc).__name__})", example_of(bad)
        ) from None
    return None


def _parses(line: str) -> bool:
    try:
        list(text_string_to_metric_families(line + "\n"))
    except Exception:  # as above: whatever the parser raises on this line
        return False
    return True


class StatsSource:
    """The target's own view from ``GET /memory/stats``."""

    name = "stats"

    def __init__(self, client: TargetClient) -> None:
        self.client = client
        self._get = Get(client, "/memory/stats")

    def read(self) -> Reading:
        text = self._get()
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SourceFailed(
                f"GET /memory/stats: not JSON ({type(exc).__name__})", example_of(text)
            ) from None
        return stats_row(data)


STATS_NUMBERS = (
    "budget_bytes",
    "pressure",
    "optimizations_total",
    "optimizations_failed",
    "bytes_freed_total",
    "unaccounted_bytes",
)


def stats_row(data: Any) -> Reading:
    """Map a ``/memory/stats`` body to sample columns.

    A field that is absent or null stays empty (another platform may not know
    it); a field of the wrong type (a string where the contract has a number)
    makes the whole answer junk: :class:`SourceFailed` naming the fields.
    """
    if not isinstance(data, dict):
        raise SourceFailed(
            "GET /memory/stats: not a JSON object", example_of(json.dumps(data)[:EXAMPLE_CHARS])
        )
    wrong: list[str] = []

    def number(where: dict[str, Any], key: str, label: str) -> float | int | None:
        value = where.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            wrong.append(f"{label}={value!r}"[:60])
            return None
        return value

    row: Reading = {"stats_rss_bytes": number(data, "rss_bytes", "rss_bytes")}
    for key in STATS_NUMBERS:
        row[key] = number(data, key, key)
    strategy = data.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        wrong.append(f"strategy={strategy!r}"[:60])
    row["strategy"] = strategy if isinstance(strategy, str) else None
    suspected = data.get("leak_suspected")
    if suspected is not None and not isinstance(suspected, bool | int):
        wrong.append(f"leak_suspected={suspected!r}"[:60])
    row["leak_suspected"] = int(suspected) if isinstance(suspected, bool | int) else None
    tiers = data.get("tiers") if isinstance(data.get("tiers"), dict) else data
    for tier in TIERS:
        info = tiers.get(tier) if isinstance(tiers, dict) else None
        info = info if isinstance(info, dict) else {}
        row[f"{tier}_bytes"] = number(info, "bytes", f"tiers.{tier}.bytes")
        row[f"{tier}_limit_bytes"] = number(info, "limit_bytes", f"tiers.{tier}.limit_bytes")
    if wrong:
        raise SourceFailed(
            f"GET /memory/stats: wrong types ({', '.join(wrong[:4])}; valid: numbers)",
            example_of(json.dumps(data, default=str)),
        )
    return row
