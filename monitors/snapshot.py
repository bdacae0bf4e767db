"""What the monitor remembers of its samples, and the views it gives its readers.

- :class:`History` keeps, on the master, what readers ask of past samples: the last
  :data:`HISTORY` points for the live view, the latest row, the peak RSS, the first and
  last few RSS readings (memory growth), whether a stage injected a leak;
- :class:`Point` is one sample as the live view draws it, :class:`Snapshot` the
  monitor's figures now as one frozen value (``MemoryMonitor.snapshot()``; the web UI
  reads only that and the points, never the monitor's internals);
- :func:`verdict_inputs` is what the verdict at quit (:mod:`reports.quit_verdict`) needs
  from the monitor: growth, and the leak the detector holds, as the report judges it.

Pure: no Locust, no clocks; the monitor feeds :meth:`History.add` one row per sample.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memstress.common.units import MB
from memstress.monitors.leak import LEAK, WARMUP, LeakDetector, LeakVerdict

HISTORY = 20_000
"""Samples kept in memory for the live view (about 5.5 h at 1 s)."""

EDGE = 5
"""Samples whose median RSS is the memory at the start, and at the end, of a run."""


@dataclass(frozen=True)
class Point:
    """One sample, as the live view shows it."""

    time: float
    elapsed_s: float
    stage: str
    rss_bytes: float | None
    pressure: float | None
    host_percent: float | None
    leak_slope_mb_min: float | None
    leak_state: str


@dataclass(frozen=True)
class Snapshot:
    """What the monitor knows now, for readers such as the live view: the last sample's
    figures, the peak, the leak verdict, the stage and why the run stopped (if it did)."""

    scenario: str
    stage: str
    samples: int
    interval_s: float
    rss_bytes: float | None
    peak_rss_bytes: float | None
    rss_source: str | None
    budget_bytes: float | None
    pressure: float | None
    strategy: str | None
    host_percent: float | None
    leak_slope_mb_min: float | None
    leak_state: str
    stop_reason: str
    samples_csv: Path | None
    """``memory_samples.csv`` of the run (None on a worker)."""


class History:
    """The samples a monitor has taken, as far as its readers need them."""

    def __init__(self) -> None:
        self.points: deque[Point] = deque(maxlen=HISTORY)
        self.latest: dict[str, Any] = {}  # the last sample's row
        self.peak_rss: float | None = None
        self.first_rss: list[float] = []  # the first few RSS readings: start memory
        self.last_rss: deque[float] = deque(maxlen=EDGE)  # the last few: end memory
        self.injected_leak = False  # a stage declared injects: leak
        self.t0 = 0.0  # Unix time of elapsed_s 0 (the first sample's clock)

    def add(self, row: dict[str, Any], verdict: LeakVerdict, injects_leak: bool) -> None:
        """One sample's row (``time``, ``elapsed_s``, ``stage`` set) and the detector's verdict."""
        self.latest = row
        rss = row.get("rss_bytes")
        if not self.points:
            self.t0 = float(row["time"]) - float(row["elapsed_s"])
        if rss is not None:
            if len(self.first_rss) < EDGE:
                self.first_rss.append(float(rss))
            self.last_rss.append(float(rss))
            if self.peak_rss is None or rss > self.peak_rss:
                self.peak_rss = float(rss)
        self.injected_leak = self.injected_leak or injects_leak
        self.points.append(
            Point(
                row["time"],
                row["elapsed_s"],
                row["stage"],
                rss,
                row.get("pressure"),
                row.get("host_percent"),
                verdict.slope_mb_min,
                verdict.state,
            )
        )


def verdict_inputs(history: History, detector: LeakDetector) -> dict[str, Any] | None:
    """Memory growth (MB, median of the last samples less the first) and the leak the
    detector holds now, as the report judges it; None before any RSS was read."""
    if not history.first_rss:
        return None
    growth = (statistics.median(history.last_rss) - statistics.median(history.first_rss)) / MB
    v = detector.verdict
    tr = v.trend
    if v.state == WARMUP:
        slope, note, headline = None, "run too short for the leak detector", ""
    elif v.state == LEAK and tr is not None:
        called = (detector.detected_at or 0.0) - history.t0
        headline = (
            f"leak {tr.slope:.2f} MB/min (CI {tr.ci_low:.2f}–{tr.ci_high:.2f}) "
            f"detected at {called:.0f} s"
        )
        slope, note = tr.slope, ""
    else:
        slope, note, headline = 0.0, "", "no leak"
    if history.injected_leak:
        slope, note = None, "the scenario injects its leak: its checks judge it"
    return {
        "growth_mb": growth,
        "leak_slope_mb_min": slope,
        "leak_note": note,
        "leak_headline": headline,
    }
