"""What a memory source returns, how it fails, and which figures cannot be true.

A source (:mod:`monitors.sources` lists them) has a ``name`` and a ``read()`` that
returns a :data:`Reading` (sample columns to figures) or raises:

- :class:`SourceMissing` when the source is not there at all (no PID, a 404,
  no ``/proc/pressure``, an unreadable cgroup). The sampler notes that once
  and stops asking; the source's columns stay empty.
- :class:`SourceFailed` when it is there but did not answer well this time:
  the target refused the connection, reset it, answered 5xx, sent a body too
  large or one that does not parse, or figures of the wrong type. It carries
  an example of what came back (:func:`example_of`), for the ``source_degraded`` event.
  :class:`TargetGone` (a SourceFailed) when the target process itself is gone.

Every reading is checked again by :func:`junk_values` (NaN, negative figures, an RSS
above the host's memory, a pressure outside 0-100) before a sample uses it.
"""

from __future__ import annotations

import math
from typing import Any

Reading = dict[str, Any]
"""One source's figures: sample column -> value."""


class SourceMissing(Exception):
    """The source is not available here; asking again will not help."""


class SourceFailed(Exception):
    """The source did not answer well this time; ``example`` is what came back, if anything."""

    def __init__(self, reason: str, example: str = "") -> None:
        super().__init__(reason)
        self.example = example


class TargetGone(SourceFailed):
    """The target process (known by its PID) is not there any more."""


EXAMPLE_CHARS = 120
"""How much of a bad answer an event quotes."""


def example_of(text: str | bytes) -> str:
    """The start of a bad answer, printable, for an event's ``example``."""
    if isinstance(text, bytes):
        text = text[: 4 * EXAMPLE_CHARS].decode("utf-8", errors="replace")
    short = text[:EXAMPLE_CHARS]
    return repr(short)[1:-1] + (" ..." if len(text) > EXAMPLE_CHARS else "")


RSS_COLUMNS = ("proc_rss_bytes", "prom_rss_bytes", "stats_rss_bytes")
"""Readings of the target's resident memory, one per source that has one."""

PERCENT_COLUMNS = ("pressure", "host_percent", "psi_some_avg10", "psi_full_avg10")


def junk_values(reading: Reading, host_total_bytes: float | None) -> list[str]:
    """What in a reading cannot be true: each as ``column=value (why)``; empty when sound.

    Every figure of a sample is a finite quantity at or above zero. An RSS
    cannot exceed the host's memory (the target runs on this host: targets are
    on loopback). A percentage is 0-100, except the target's own ``pressure``
    (100 x RSS / budget), which may exceed 100 when the same answer puts its
    RSS above its budget.
    """
    bad: list[str] = []
    for key, value in reading.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            bad.append(f"{key}={value} (not a number)")
        elif value < 0:
            bad.append(f"{key}={value:g} (negative)")
        elif key in RSS_COLUMNS and host_total_bytes and value > host_total_bytes:
            bad.append(f"{key}={value:.4g} (above the host's {host_total_bytes / 2**30:.1f} GiB)")
        elif key in PERCENT_COLUMNS and value > 100 and not _over_budget(key, reading):
            bad.append(f"{key}={value:g} (valid: 0-100)")
    return bad


def _over_budget(key: str, reading: Reading) -> bool:
    rss, budget = reading.get("stats_rss_bytes"), reading.get("budget_bytes")
    return key == "pressure" and bool(rss and budget and rss > budget)
