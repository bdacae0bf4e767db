"""The leak detector: the memory series and each tier past its limit, the final verdict, replays.

What it judges (:mod:`memstress.monitors.leak`, "What it judges"): :func:`judged_bytes`
of each sample, RSS less each tier's bytes up to its limit, and each tier with
a limit on its bytes above it. :func:`replay` runs a detector over a run's
``memory_samples.csv`` and gives the final verdict the monitor gave.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memstress.common.config import Config, LeakDetection
from memstress.common.units import MB
from memstress.monitors.leak.series import Series
from memstress.monitors.leak.trend import min_points, required_rise_mb
from memstress.monitors.leak.verdict import (
    LEAK,
    LEAK_VERDICT,
    MEMORY,
    NO_LEAK,
    NOT_JUDGED,
    STEP,
    WARMUP,
    Episode,
    FinalVerdict,
    LeakVerdict,
    TierFinding,
    no_leak_reason,
    tiers_note,
)

# --- input ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TierReading:
    """One tier of the target's ``/memory/stats`` in one sample."""

    bytes: float
    limit_bytes: float | None = None  # None: the target reported no limit (trusted)

    @property
    def over_limit(self) -> float | None:
        """Bytes above the limit (0 at or under it); None without a limit."""
        if self.limit_bytes is None:
            return None
        return max(0.0, self.bytes - self.limit_bytes)

    @property
    def accounted(self) -> float:
        """The bytes taken off RSS: all of them without a limit, else at most the limit."""
        if self.limit_bytes is None:
            return self.bytes
        return min(self.bytes, self.limit_bytes)


def judged_bytes(rss: float | None, tiers: Mapping[str, TierReading] | None) -> float | None:
    """The memory series' value: RSS less each tier's bytes up to its limit."""
    if rss is None or not math.isfinite(rss):
        return None
    return float(rss) - sum(r.accounted for r in (tiers or {}).values())


# --- the detector ---------------------------------------------------------------------


class LeakDetector:
    """Stateful online detector; one per run (see the module docstring)."""

    def __init__(self, settings: LeakDetection, start: float | None = None) -> None:
        self.settings = settings
        self.start = start
        self._memory: Series | None = None
        self._tiers: dict[str, Series] = {}
        self._limits: dict[str, float] = {}  # latest limit of each tier judged
        self._trusted: set[str] = set()
        self.verdict = LeakVerdict(WARMUP)

    @property
    def rise_mb(self) -> float:
        """The least rise a leak must make (``min_rise_mb``)."""
        return required_rise_mb(self.settings)

    @property
    def envelope(self) -> list[tuple[float, float]]:
        """The memory series' envelope points kept: (window middle, minimum bytes)."""
        return [] if self._memory is None else list(self._memory.envelope)

    def _called(self) -> Series | None:
        """The series whose leak is called now: the memory series first, else a tier."""
        for x in (self._memory, *self._tiers.values()):
            if x is not None and x.state == LEAK:
                return x
        return None

    @property
    def detected_at(self) -> float | None:
        """When the current leak was called (the memory series', else a tier's)."""
        x = self._called()
        return None if x is None or x._open is None else x.episodes[x._open].called_at

    @property
    def episodes(self) -> list[Episode]:
        """Every episode of every series so far, in the order they began."""
        series = [s for s in (self._memory, *self._tiers.values()) if s is not None]
        return sorted((e for s in series for e in s.episodes), key=lambda e: e.called_at)

    def add(
        self, t: float, value: float | None, tiers: Mapping[str, TierReading] | None = None
    ) -> LeakVerdict:
        """Take one sample; ``value`` None (no reading) only advances the clock.

        ``value`` is the memory series' value (:func:`judged_bytes` of the
        sample); ``tiers`` the target's tiers in the same sample, if it reports
        them: each with a limit is judged on its bytes above it. Judged again
        each time a window completes; ``events`` are set only on the sample that
        changed a state.
        """
        if self.start is None:
            self.start = t
        judged_from = self.start + self.settings.warmup_s
        if self._memory is None:
            self._memory = Series(MEMORY, self.settings, judged_from)
        events = self._memory.add(t, value)
        for name, reading in (tiers or {}).items():
            over = reading.over_limit
            if over is None:
                self._trusted.add(name)
                continue
            assert reading.limit_bytes is not None
            self._limits[name] = reading.limit_bytes
            series = self._tiers.get(name)
            if series is None:
                series = self._tiers[name] = Series(name, self.settings, judged_from)
            events += series.add(t, over)
        m = self._memory
        called = self._called()
        state = LEAK if called is not None else m.state
        first = events[0] if events else None
        self.verdict = LeakVerdict(
            state,
            m.slope,
            None if called is None else called.trend,
            first.kind if first else None,
            first.reason if first else "",
            tuple(events),
        )
        return self.verdict

    def final_verdict(self) -> FinalVerdict:
        """The verdict from the detector's state now (call it at the end of the run)."""
        s = self.settings
        m = self._memory
        episodes = tuple(self.episodes)
        findings = tuple(self._tier_findings())
        judged, trusted = (
            tuple(sorted(self._limits)),
            tuple(sorted(self._trusted - set(self._limits))),
        )
        common: dict[str, Any] = {
            "tiers": findings,
            "tiers_judged": judged,
            "tiers_trusted": trusted,
            "tiers_note": tiers_note(judged, trusted, self._limits),
            "episodes": episodes,
            "start": self.start,
            "settings": dataclasses.asdict(s),
        }
        x = self._called()
        if x is not None:
            assert x._open is not None
            ep = x.episodes[x._open]
            return FinalVerdict(
                LEAK_VERDICT,
                ep.text,
                x.name,
                ep.slope_mb_min,
                ep.ci_low_mb_min,
                ep.ci_high_mb_min,
                ep.confidence,
                ep.scale_s,
                ep.called_at,
                **common,
            )
        if m is None or not (m.judged or any(x.judged for x in self._tiers.values())):
            points = 0 if m is None else len(m.envelope)
            why = (
                f"not enough memory samples to judge: {points} of the {min_points(s)} "
                f"envelope windows ({s.window_s:g} s each) needed after the {s.warmup_s:g} s "
                "warm-up"
            )
            return FinalVerdict(NOT_JUDGED, why, **common)
        return FinalVerdict(NO_LEAK, no_leak_reason(episodes), **common)

    def _tier_findings(self) -> Iterable[TierFinding]:
        for name, series in self._tiers.items():
            limit = self._limits[name]
            for ep in series.episodes:
                if ep.kind == STEP or ep.slope_mb_min is None:
                    continue
                text = f"{name}: {ep.slope_mb_min:+.1f} MB/min past its {limit / MB:g} MB limit"
                yield TierFinding(
                    name,
                    limit / MB,
                    (series.latest or 0.0) / MB,
                    ep.slope_mb_min,
                    ep.ci_low_mb_min or 0.0,
                    ep.ci_high_mb_min or 0.0,
                    ep.called_at,
                    ep.cleared_at,
                    ep.cleared_at is None,
                    text,
                )


# --- replaying a run ------------------------------------------------------------------


def tier_readings(row: Mapping[str, Any], names: Iterable[str]) -> dict[str, TierReading]:
    """The tiers of a ``memory_samples.csv`` row (``<tier>_bytes``, ``<tier>_limit_bytes``)."""
    out = {}
    for name in names:
        b = _num(row.get(f"{name}_bytes"))
        if b is None:
            continue
        out[name] = TierReading(b, _num(row.get(f"{name}_limit_bytes")))
    return out


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def replay(
    samples: Any,
    settings: LeakDetection | Mapping[str, Any] | Config,
    tiers: Iterable[str] | None = None,
) -> FinalVerdict:
    """Run a detector over a run's ``memory_samples.csv`` rows; its final verdict.

    ``samples``: a pandas DataFrame of the file, or its rows as mappings (values
    as text or numbers). ``settings``: those the monitor ran with, best the
    ``settings`` mapping of the run's ``leak_verdict.json`` (a shortened run is
    judged on a faster clock, :func:`on_run_clock`); a whole :class:`Config`
    gives its ``monitor.leak_detection`` as configured. The memory series is the
    ``judged_bytes`` column the monitor wrote; tiers come from ``<tier>_bytes``
    and ``<tier>_limit_bytes``.
    """
    from memstress.monitors.sources import TIERS  # the names the sample columns use

    if isinstance(settings, Config):
        settings = settings.monitor.leak_detection
    elif not isinstance(settings, LeakDetection):
        settings = LeakDetection(**settings)
    names = tuple(TIERS if tiers is None else tiers)
    rows = samples.to_dict("records") if hasattr(samples, "to_dict") else samples
    det = LeakDetector(settings)
    for row in rows:
        t = _num(row.get("time"))
        if t is None:
            continue
        det.add(t, _num(row.get("judged_bytes")), tier_readings(row, names))
    return det.final_verdict()
