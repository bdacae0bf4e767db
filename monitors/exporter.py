"""The target's RSS from Prometheus text anywhere: ``--metrics-url``.

For a target whose process this machine cannot see (another host, a
container): its own ``/metrics`` on another port, a node exporter, or a
cAdvisor container metric. Which metric is its RSS is ``--metrics-metric``
(default ``process_resident_memory_bytes``); ``--metrics-labels`` picks one
series out of many, e.g. ``container=api,namespace=staging`` for cAdvisor's
``container_memory_rss``. The page is parsed by prometheus_client's text
parser; exactly one series must match.

The source fills ``metrics_rss_bytes``, which the sampler makes the row's
``rss_bytes`` (``rss_source`` ``metrics_url``) unless a PID was given. An
exporter that does not answer is not a lost target: its failures do not count
toward ``target_lost`` (the target's own ``/metrics`` and ``/memory/stats``
say whether it is there).
"""

from __future__ import annotations

from typing import NoReturn

import requests
from prometheus_client.parser import text_string_to_metric_families

from common.target import MetricsUrl
from monitors.sources import Reading, SourceFailed, SourceMissing


def selector_text(metric: str, labels: tuple[tuple[str, str], ...]) -> str:
    """``metric{a="b"}`` as Prometheus writes a series."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{metric}{{{inner}}}" if labels else metric


def matching_values(
    text: str, metric: str, labels: tuple[tuple[str, str], ...] = ()
) -> tuple[list[float], int]:
    """Values of the series of ``metric`` whose labels include ``labels``, and how many
    series of ``metric`` the page has in all.

    Only the lines that mention the metric are parsed (with its HELP and TYPE),
    so a large exporter page costs a substring scan. Raises ValueError on text
    that is not Prometheus' format.
    """
    lines = [ln for ln in text.splitlines() if metric in ln]
    if not lines:
        return [], 0
    want = dict(labels)
    found: list[float] = []
    total = 0
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name != metric:
                continue
            total += 1
            if all(sample.labels.get(k) == v for k, v in want.items()):
                found.append(float(sample.value))
    return found, total


class MetricsUrlSource:
    """Reads the target's RSS from ``--metrics-url``; see the module doc."""

    name = "metrics_url"

    def __init__(self, spec: MetricsUrl | None, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        self.session = requests.Session()
        self._seen = False  # once it has answered, a miss is a failure, not a missing source

    def read(self) -> Reading:
        spec = self.spec
        if spec is None:
            raise SourceMissing("no --metrics-url given")
        try:
            r = self.session.get(spec.url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SourceFailed(f"GET {spec.url}: {type(exc).__name__}") from None
        if r.status_code == 404:
            self._miss(f"GET {spec.url}: HTTP 404 (is the path right? e.g. /metrics)")
        if r.status_code != 200:
            raise SourceFailed(f"GET {spec.url}: HTTP {r.status_code}")
        try:
            values, total = matching_values(r.text, spec.metric, spec.labels)
        except ValueError:
            self._miss(f"{spec.url} is not Prometheus text")
        series = selector_text(spec.metric, spec.labels)
        if len(values) == 1:
            self._seen = True
            return {"metrics_rss_bytes": values[0]}
        if values:
            self._miss(
                f"{spec.url}: {len(values)} series match {series} "
                "(valid: exactly one; narrow it with --metrics-labels)"
            )
        self._miss(f"{spec.url} has no {series} ({total} series of {spec.metric})")

    def _miss(self, reason: str) -> NoReturn:
        """Missing at the first reading (a wrong URL or name), else failed this time."""
        if self._seen:
            raise SourceFailed(reason)
        raise SourceMissing(reason)
