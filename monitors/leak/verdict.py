"""What the leak detector says: state changes, the verdict after each sample, episodes, the end.

Plain frozen dataclasses; :meth:`FinalVerdict.as_dict` is what the monitor
writes to the run folder's ``leak_verdict.json`` and the report reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from memstress.common.units import MB
from memstress.monitors.leak.trend import Trend

VERDICT_FILE = "leak_verdict.json"
"""The file in the run folder the monitor writes :meth:`FinalVerdict.as_dict` to at the end."""

MEMORY = "memory"
"""Name of the main series: RSS less what the tiers account for up to their limits."""

WARMUP, CLEAR, LEAK = "warmup", "clear", "leak"

TREND, STEP, PLATEAU = "trend", "step", "plateau"

LEAK_VERDICT, NO_LEAK, NOT_JUDGED = "leak", "no leak", "not judged"

# --- what the detector says -----------------------------------------------------------


@dataclass(frozen=True)
class LeakEvent:
    """A change of one series' state on one sample (an ``events.csv`` row)."""

    kind: str  # "leak_detected" | "leak_cleared"
    series: str  # MEMORY or a tier's name
    reason: str
    trend: Trend | None  # the test that called the leak


@dataclass(frozen=True)
class LeakVerdict:
    """The detector's answer after one sample (the memory series, and any tier's events)."""

    state: str  # warmup | clear | leak (leak when any series is in a called leak)
    slope_mb_min: float | None = None  # the memory series' slope over its longest scale judged
    trend: Trend | None = None  # the test that called the current leak (memory's, else a tier's)
    changed: str | None = None  # the first event's kind, on the sample that had events
    reason: str = ""  # the first event's reason
    events: tuple[LeakEvent, ...] = ()


@dataclass(frozen=True)
class Episode:
    """One finding of the run, for the report's growth section.

    ``trend``: a leak called (``cleared_at`` None while it lasts, or when memory
    was given back: ``ended`` "released"); ``plateau``: a leak called whose
    growth then stopped (``ended`` "slowed"); ``step``: a level shift of
    ``step_mb`` at ``called_at`` (``cleared_at`` the same time: a step is not a
    state). Times are on the clock the samples came with.
    """

    kind: str
    series: str
    called_at: float
    cleared_at: float | None = None
    slope_mb_min: float | None = None  # at the scale that called it
    ci_low_mb_min: float | None = None
    ci_high_mb_min: float | None = None
    confidence: float | None = None
    scale_s: float | None = None
    step_mb: float | None = None
    ended: str | None = None  # "slowed" | "released" | None
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TierFinding:
    """A tier judged against its limit that was called a leak."""

    tier: str
    limit_mb: float
    over_limit_mb: float  # above the limit at the latest sample
    slope_mb_min: float  # at the scale that called it
    ci_low_mb_min: float
    ci_high_mb_min: float
    called_at: float
    cleared_at: float | None
    active: bool  # still called at the end
    text: str  # "conversations: +3.0 MB/min past its 8 MB limit"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinalVerdict:
    """The detector's verdict at the end of a run (see :meth:`LeakDetector.final_verdict`).

    ``verdict`` is "leak" (a series is in a called leak at the end), "no leak",
    or "not judged" (too few envelope windows after the warm-up); ``reason``
    says why in one line. The slope and its interval are those of the scale that
    called the leak, from the memory series when it is the one called, else the
    first tier that is.
    """

    verdict: str
    reason: str
    series: str | None = None
    slope_mb_min: float | None = None
    ci_low_mb_min: float | None = None
    ci_high_mb_min: float | None = None
    confidence: float | None = None
    scale_s: float | None = None
    called_at: float | None = None
    tiers: tuple[TierFinding, ...] = ()
    tiers_judged: tuple[str, ...] = ()  # tiers reported with a limit
    tiers_trusted: tuple[str, ...] = ()  # tiers reported without one: subtracted whole
    tiers_note: str = ""
    episodes: tuple[Episode, ...] = ()
    start: float | None = None  # the detector's first sample time (episodes' times are absolute)
    settings: dict[str, float] = field(default_factory=dict)  # the detector's, as run

    @property
    def leak(self) -> bool:
        return self.verdict == LEAK_VERDICT

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``leak_verdict.json``)."""
        out = dataclasses.asdict(self)
        out["tiers"] = [f.as_dict() for f in self.tiers]
        out["episodes"] = [e.as_dict() for e in self.episodes]
        out["tiers_judged"] = list(self.tiers_judged)
        out["tiers_trusted"] = list(self.tiers_trusted)
        return out


# --- the final verdict's words --------------------------------------------------------


def tiers_note(judged: tuple[str, ...], trusted: tuple[str, ...], limits: dict[str, float]) -> str:
    parts = []
    if judged:
        parts.append(
            "tiers judged against their limits: "
            + ", ".join(f"{n} ({limits[n] / MB:g} MB)" for n in judged)
        )
    if trusted:
        parts.append(
            "the target reported no limit for " + ", ".join(trusted) + ": those tiers were trusted"
        )
    if not parts:
        return "the target reported no tiers: plain RSS was judged"
    return "; ".join(parts)


def no_leak_reason(episodes: tuple[Episode, ...]) -> str:
    counts = {k: sum(e.kind == k for e in episodes) for k in (STEP, PLATEAU, TREND)}
    said = []
    if counts[STEP]:
        said.append(f"{counts[STEP]} step{'s' * (counts[STEP] > 1)}")
    if counts[PLATEAU]:
        said.append(f"{counts[PLATEAU]} growth episode{'s' * (counts[PLATEAU] > 1)} that ended")
    if counts[TREND]:
        said.append(f"{counts[TREND]} leak{'s' * (counts[TREND] > 1)} given back")
    tail = f" ({', '.join(said)})" if said else ""
    return f"no sustained growth at the end of the run{tail}"
