"""What the monitor remembers of its samples, and the views it gives its readers.

- :class:`History` keeps, on the master, what readers ask of past samples: the last
  :data:`HISTORY` points for the live view (as columns of floats, not objects), the
  latest row, the peak RSS, the first and last few RSS readings (memory growth),
  whether a stage injected a leak;
- :class:`Point` is one sample as the live view draws it, :class:`Snapshot` the
  monitor's figures now as one frozen value (``MemoryMonitor.snapshot()``; the web UI
  reads only that and the points, never the monitor's internals);
- :func:`verdict_inputs` is what the verdict at quit (:mod:`reports.quit_verdict`) needs
  from the monitor: growth, and the leak the detector holds, as the report judges it.

Pure: no Locust, no clocks; the monitor feeds :meth:`History.add` one row per sample.
"""

from __future__ import annotations

import math
import statistics
from array import array
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
    """The samples a monitor has taken, as far as its readers need them.

    The live view's points are kept as columns (``array('d')`` of floats, NaN for None,
    and the stage and leak state as indices into a list of the names seen), not as one
    :class:`Point` per sample: a long run's master keeps no object per sample (a Point
    with its fields held about 250 bytes, some 0.9 MB an hour at 1 s; bench
    ``self_rss_slope_mb_per_hour``). At most ``keep`` samples are kept, the oldest
    dropped in chunks of a tenth of it.
    """

    def __init__(self, keep: int = HISTORY) -> None:
        if keep < 1:
            raise ValueError(f"History keep: {keep!r} (valid: 1 or more samples)")
        self.keep = keep
        self._floats = {name: array("d") for name in _FLOAT_FIELDS}
        self._labels: list[str] = []  # stage names and leak states, in the order first seen
        self._label_at: dict[str, int] = {}
        self._stage = array("I")
        self._state = array("I")
        self.latest: dict[str, Any] = {}  # the last sample's row
        self.peak_rss: float | None = None
        self.first_rss: list[float] = []  # the first few RSS readings: start memory
        self.last_rss: deque[float] = deque(maxlen=EDGE)  # the last few: end memory
        self.injected_leak = False  # a stage declared injects: leak
        self.t0 = 0.0  # Unix time of elapsed_s 0 (the first sample's clock)
        self.added = 0  # samples added in all, those dropped included

    def __len__(self) -> int:
        return len(self._stage)

    def add(self, row: dict[str, Any], verdict: LeakVerdict, injects_leak: bool) -> None:
        """One sample's row (``time``, ``elapsed_s``, ``stage`` set) and the detector's verdict."""
        self.latest = row
        rss = row.get("rss_bytes")
        if not self.added:
            self.t0 = float(row["time"]) - float(row["elapsed_s"])
        self.added += 1
        if rss is not None:
            if len(self.first_rss) < EDGE:
                self.first_rss.append(float(rss))
            self.last_rss.append(float(rss))
            if self.peak_rss is None or rss > self.peak_rss:
                self.peak_rss = float(rss)
        self.injected_leak = self.injected_leak or injects_leak
        values = (
            row["time"],
            row["elapsed_s"],
            rss,
            row.get("pressure"),
            row.get("host_percent"),
            verdict.slope_mb_min,
        )
        for column, value in zip(self._floats.values(), values, strict=True):
            column.append(_NAN if value is None else float(value))
        self._stage.append(self._label(str(row["stage"])))
        self._state.append(self._label(verdict.state))
        if len(self._stage) > self.keep:
            drop = len(self._stage) - self.keep + self.keep // 10
            for floats in self._floats.values():
                del floats[:drop]
            del self._stage[:drop], self._state[:drop]

    @property
    def points(self) -> list[Point]:
        """The samples kept, oldest first, as the live view draws them."""
        f, labels = self._floats, self._labels
        return [
            Point(
                t,
                elapsed,
                labels[stage],
                _none(rss),
                _none(pressure),
                _none(host),
                _none(slope),
                labels[state],
            )
            for t, elapsed, rss, pressure, host, slope, stage, state in zip(
                f["time"],
                f["elapsed_s"],
                f["rss_bytes"],
                f["pressure"],
                f["host_percent"],
                f["leak_slope_mb_min"],
                self._stage,
                self._state,
                strict=True,
            )
        ]

    def _label(self, name: str) -> int:
        at = self._label_at.get(name)
        if at is None:
            at = self._label_at[name] = len(self._labels)
            self._labels.append(name)
        return at


_FLOAT_FIELDS = ("time", "elapsed_s", "rss_bytes", "pressure", "host_percent", "leak_slope_mb_min")
_NAN = math.nan


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


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
