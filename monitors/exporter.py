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
say whether it is there). Its body is read as the target's are: streamed, and
refused past 4 MB.
"""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from memstress.common.target import MetricsUrl
from memstress.monitors.http_sources import fetch_text
from memstress.monitors.readings import Reading, SourceFailed, SourceMissing, example_of


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
    so a large exporter page costs a substring scan. Raises what the parser
    raises on text that is not Prometheus' format.
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
    """Reads the target's RSS from ``--metrics-url``; see the module doc.

    A wrong URL (404), a page without the series, or a selector that matches
    several series is :class:`SourceMissing`: at the first reading the sampler
    drops the source and says why once; after good answers it counts as a
    failure (the series may come back, a container restarting, say).
    """

    name = "metrics_url"

    def __init__(self, spec: MetricsUrl | None, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        self.session = requests.Session()

    def read(self) -> Reading:
        spec = self.spec
        if spec is None:
            raise SourceMissing("no --metrics-url given")
        text = fetch_text(
            self.session,
            spec.url,
            self.timeout,
            f"GET {spec.url}",
            missing=f"GET {spec.url}: HTTP 404 (valid: the page of Prometheus text, e.g. /metrics)",
        )
        try:
            values, total = matching_values(text, spec.metric, spec.labels)
        except Exception as exc:  # the parser's own errors on text it cannot read, whatever type
            raise SourceFailed(
                f"{spec.url}: not Prometheus text ({type(exc).__name__})", example_of(text)
            ) from None
        series = selector_text(spec.metric, spec.labels)
        if len(values) == 1:
            return {"metrics_rss_bytes": values[0]}
        if values:
            raise SourceMissing(
                f"{spec.url}: {len(values)} series match {series} "
                "(valid: exactly one; narrow it with --metrics-labels)"
            )
        raise SourceMissing(f"{spec.url} has no {series} ({total} series of {spec.metric})")
