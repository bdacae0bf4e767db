"""One memory sample: read every source once, merge into one CSV row.

:class:`Sampler` is synchronous and has no clock of its own (the caller
passes the time), so tests drive it directly. The greenlet that calls it on a
schedule lives in :mod:`monitors.monitor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import greenlet

from monitors.sources import HTTP_SOURCES, TARGET_SOURCES, SourceFailed, SourceMissing

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def read(self) -> dict[str, Any]: ...


RSS_ORDER = (
    ("proc_rss_bytes", "psutil"),
    ("metrics_rss_bytes", "metrics_url"),
    ("prom_rss_bytes", "prometheus"),
    ("stats_rss_bytes", "stats"),
)
"""Where the target RSS of a row comes from, best first (the ``rss_source`` value)."""


@dataclass
class Sample:
    """A row for ``memory_samples.csv`` plus what the safety guard needs."""

    row: dict[str, Any]
    target_ok: bool | None  # None when no source reads the target
    failures: list[str] = field(default_factory=list)

    @property
    def rss(self) -> float | None:
        value = self.row.get("rss_bytes")
        return None if value is None else float(value)


class Sampler:
    """Reads its sources in order; a missing source is reported once and dropped."""

    def __init__(
        self,
        sources: Sequence[Source],
        on_missing: Callable[[str, str], None] = lambda name, reason: None,
    ) -> None:
        self.sources = list(sources)
        self.on_missing = on_missing
        self.missing: dict[str, str] = {}

    def take(self) -> Sample:
        row: dict[str, Any] = {}
        failures: list[str] = []
        answered: dict[str, bool] = {}
        for src in list(self.sources):
            try:
                row.update(src.read())
                answered[src.name] = True
            except SourceMissing as exc:
                self.sources.remove(src)
                self.missing[src.name] = str(exc)
                self.on_missing(src.name, str(exc))
            except SourceFailed as exc:
                answered[src.name] = False
                failures.append(f"{src.name}: {exc}")
        row["rss_bytes"], row["rss_source"] = None, None
        for key, label in RSS_ORDER:
            if row.get(key) is not None:
                row["rss_bytes"], row["rss_source"] = row[key], label
                break
        return Sample(row, _target_ok(answered), failures)


def _target_ok(answered: dict[str, bool]) -> bool | None:
    """Reachable when an HTTP source answered; with none enabled, when the process is there."""
    http = [ok for name, ok in answered.items() if name in HTTP_SOURCES]
    if http:
        return any(http)
    target = [ok for name, ok in answered.items() if name in TARGET_SOURCES]
    return any(target) if target else None


class GreenletCpuMeter:
    """CPU seconds spent *in the current greenlet* between enter and exit.

    ``time.process_time`` around a sample would also count every user greenlet
    that runs while the sample waits on HTTP; this meter installs a greenlet
    switch tracer for the duration and adds up thread CPU time only while this
    greenlet runs. The tracer is removed on exit (a chained previous tracer
    keeps working), so it costs nothing between samples.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._me: Any = None
        self._since: float | None = None
        self._prev: Any = None

    def _trace(self, event: str, args: tuple[Any, Any]) -> None:
        if event in ("switch", "throw"):
            origin, target = args
            now = time.thread_time()
            if origin is self._me and self._since is not None:
                self.seconds += now - self._since
                self._since = None
            if target is self._me:
                self._since = now
        if self._prev is not None:
            self._prev(event, args)

    def __enter__(self) -> GreenletCpuMeter:
        self.seconds = 0.0
        self._me = greenlet.getcurrent()
        self._prev = greenlet.settrace(self._trace)
        self._since = time.thread_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._since is not None:
            self.seconds += time.thread_time() - self._since
            self._since = None
        greenlet.settrace(self._prev)
        self._prev = None
