"""Memory sources by name, beyond the six built in: the shipped ``redis`` and a user's own.

A source is a small object (STYLE point 12): a ``name``, the extra ``figures``
it reports, and ``read()`` returning a dict with any of

- ``rss_bytes``: the target's resident memory (used when psutil cannot read it);
- ``accounted_bytes``: memory the target knows it holds on purpose (a cache, a
  store); the leak detector judges RSS less this, so a cache that fills is no leak;
- ``budget_bytes``: the target's memory budget; ``budget_enforced`` (true) says
  the target keeps itself under it (an LRU cache evicting), so sitting at it is
  normal and never a safety stop;
- ``pressure``: 0-100, the target's own pressure score (judged by the safety guard);
- any name in ``figures``: kept as the column ``<source>_<figure>`` of
  ``memory_samples.csv``.

``read()`` raises :class:`~monitors.sources.SourceMissing` when the source is
not there at all, :class:`~monitors.sources.SourceFailed` when it did not answer
this time. A user's source is registered once, by name, with
:func:`register_source` (or ``memstress.register_source``), and chosen with
``--monitor-sources NAME``; none of these sources ever counts toward a lost target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from memstress.monitors.readings import SourceFailed, SourceMissing

log = logging.getLogger(__name__)

STANDARD = ("rss_bytes", "accounted_bytes", "budget_bytes", "pressure")
"""The figures every source may return, with the sample columns they fill."""

COLUMN_OF = {
    "rss_bytes": "custom_rss_bytes",  # the row's RSS when psutil has none (rss_source "custom")
    "accounted_bytes": "accounted_bytes",
    "budget_bytes": "budget_bytes",
    "pressure": "pressure",
}


@dataclass(frozen=True)
class SourceTarget:
    """What a source factory is told about the target."""

    host: str  # --host as given, any scheme (redis://..., http://...)
    pid: int | None
    timeout: float  # seconds a read may take


class MemorySource(Protocol):
    name: str
    figures: tuple[str, ...]

    def read(self) -> dict[str, Any]: ...


SourceFactory = Callable[[SourceTarget], MemorySource]


class SourceRegistry:
    """Name -> factory; :data:`REGISTRY` is the one the monitor reads."""

    def __init__(self) -> None:
        self._factories: dict[str, SourceFactory] = {}
        self.shipped: set[str] = set()  # chosen by --host's scheme, not by auto

    def register(self, name: str, factory: SourceFactory) -> None:
        from memstress.monitors.sources import SOURCE_NAMES

        if not name.isidentifier() or name in SOURCE_NAMES:
            raise ValueError(
                f"source name {name!r} is not valid (valid: an identifier other than "
                f"{', '.join(SOURCE_NAMES)})"
            )
        self._factories[name] = factory

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def users(self) -> tuple[str, ...]:
        """The sources a user registered: part of ``--monitor-sources auto``."""
        return tuple(n for n in self._factories if n not in self.shipped)

    def make(self, name: str, target: SourceTarget) -> NamedSource:
        return NamedSource(self._factories[name](target), name)


REGISTRY = SourceRegistry()
"""Sources by name. Registration is an explicit call by the user (or the shipped
``redis`` below), like subscribing to one of Locust's ``events``."""


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``--monitor-sources NAME`` build a source with ``factory(SourceTarget)``."""
    REGISTRY.register(name, factory)


class NamedSource:
    """Adapts a registered source to the sampler: its figures become sample columns."""

    def __init__(self, source: MemorySource, name: str) -> None:
        self.source = source
        self.name = name
        self.figures = tuple(getattr(source, "figures", ()))
        self.columns = tuple(f"{name}_{f}" for f in self.figures)

    def read(self) -> dict[str, Any]:
        try:
            raw = self.source.read()
        except (SourceMissing, SourceFailed):
            raise
        except Exception as exc:  # a user's source: its own errors are its failures
            raise SourceFailed(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(raw, dict):
            raise SourceFailed(f"read() returned {type(raw).__name__}, not a dict")
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key in COLUMN_OF:
                row[COLUMN_OF[key]] = _figure(value)
            elif key == "budget_enforced":
                row["budget_enforced"] = bool(value)
            elif key in self.figures:
                row[f"{self.name}_{key}"] = _figure(value)
        return row


def _figure(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


from memstress.monitors.redis_source import RedisSource  # noqa: E402  (it uses the classes above)

register_source("redis", RedisSource)
REGISTRY.shipped.add("redis")
