"""The leak judgment of a run: what the monitor's online detector said, never a second algorithm.

The source of truth is the detector the monitor ran (:mod:`monitors.leak`): the
final verdict it wrote to ``leak_verdict.json`` at the end of the run (verdict,
the slope and confidence interval of the scale that called a leak, every
episode, the tiers judged against their limits). A run folder without that
file (a killed run, an older one) is judged by replaying the same detector over
``memory_samples.csv`` (:func:`monitors.leak.replay`) with the settings the run
used (its ``leak_settings`` event, else the config's scaled to the run's length).

The verdict:

- **leak**: the detector's final verdict is "leak" (a leak it called, in the
  memory series or in a tier growing past its limit, and has not cleared);
  or, in a scenario that injects a leak (a stage declaring ``injects: leak``),
  the detector called the injected leak (it may be given back after the
  scenario's reset);
- **no leak**: it judged the run and holds no leak at the end; a step, or a
  growth episode called and then cleared (a cache filling to a plateau), is
  listed as an episode and is no leak;
- **not judged**: no memory samples, or too few for the detector to leave its
  warm-up (run too short), with the reason.

What the ``leak`` grade judges (``graded_slope_mb_min``): the slope of the leak
held at the end, 0 when there is none. In a scenario that injects a leak on
purpose the leak is the scenario's own and its checks judge it; the grade is
then n/a. A detection before the first injecting stage is a false alarm: the
truth is known there. Anywhere else a detection is a finding about the target.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memstress.common.config import Config, LeakDetection
from memstress.monitors.leak import on_run_clock, replay
from memstress.reports.collect import RunData
from memstress.reports.metrics.base import MB, StageSpan, col, finite, parse_params, rss_series

JUDGED_TIERS = ("conversations_bytes", "vectors_bytes", "embedding_cache_bytes", "ballast_bytes")
"""The tier columns the monitor subtracts from RSS before the detector judges it."""


@dataclass
class LeakEpisode:
    """One finding of the detector: a leak called (trend), a growth that stopped
    (plateau), or a level shift (step); times are run seconds."""

    kind: str  # trend | plateau | step
    series: str  # "memory" or a tier's name
    called_at_s: float
    cleared_at_s: float | None
    slope_mb_min: float | None
    ci_low_mb_min: float | None
    ci_high_mb_min: float | None
    scale_s: float | None
    step_mb: float | None
    ended: str  # "" | slowed | released
    reason: str
    before_injection: bool = False


@dataclass
class LeakMetrics:
    verdict: str = "not judged"  # leak | no leak | not judged
    reason: str = ""
    basis: str = ""  # where the verdict comes from
    series: str | None = None  # "memory" or the tier that leaks
    slope_mb_min: float | None = None  # the scale that called the leak
    ci_low_mb_min: float | None = None
    ci_high_mb_min: float | None = None
    scale_s: float | None = None
    called_at_s: float | None = None
    held_at_end: bool = False  # the detector still holds the leak at the end
    episodes: list[LeakEpisode] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)  # e.g. "conversations: +3.0 MB/min past ..."
    tiers_note: str = ""  # which tiers were judged against limits, which trusted
    injected_start_s: float | None = None  # first stage that injects a leak
    detection_delay_s: float | None = None
    false_alarms: int = 0  # detections before the first injecting stage
    graded_slope_mb_min: float | None = None  # what the leak grade judges
    graded_note: str = ""
    target_flagged: bool | None = None  # the target's own leak_suspected
    unaccounted_peak_mb: float | None = None
    whole_run_slope_mb_min: float | None = None  # labelled as such; feeds no score or grade

    def headline(self) -> str:
        """One line: the verdict with its slope, CI and time (the verdict's wording)."""
        if self.verdict == "leak":
            ci = (
                f" (CI {self.ci_low_mb_min:.2f}–{self.ci_high_mb_min:.2f})"
                if self.ci_low_mb_min is not None and self.ci_high_mb_min is not None
                else ""
            )
            slope = "?" if self.slope_mb_min is None else f"{self.slope_mb_min:.2f}"
            at = "" if self.called_at_s is None else f" detected at {self.called_at_s:.0f} s"
            where = "" if self.series in (None, "memory") else f" in tier {self.series}"
            own = " (injected by the scenario)" if self.injected_start_s is not None else ""
            return f"leak{where} {slope} MB/min{ci}{at}{own}"
        if self.verdict == "no leak":
            ended = [e for e in self.episodes if e.kind != "step"]
            return "no leak" + (f" ({len(ended)} growth episode(s) that ended)" if ended else "")
        return f"leak not judged ({self.reason})"


def settings_used(data: RunData, cfg: Config) -> tuple[LeakDetection, float]:
    """The detector settings and sampling interval the run used."""
    base = cfg.monitor.leak_detection
    names = {f.name for f in dataclasses.fields(LeakDetection)}
    verdict = final_verdict_file(data)
    if verdict and isinstance(verdict.get("settings"), dict):
        try:
            given = {k: v for k, v in verdict["settings"].items() if k in names}
            return dataclasses.replace(base, **given), cfg.monitor.interval
        except (TypeError, ValueError):
            pass
    ev = data.events
    rows = ev.loc[ev["kind"] == "leak_settings", "detail"]
    if len(rows):
        d = parse_params(rows.iloc[-1])
        try:
            values = {k: type(getattr(base, k))(d[k]) for k in names if k in d}
            return dataclasses.replace(base, **values), float(d.get("interval_s", 1.0))
        except (TypeError, ValueError):
            pass
    meta = data.meta or {}
    planned = finite(meta.get("planned_duration_s"))
    actual = finite(meta.get("duration_s"))
    interval = cfg.monitor.interval
    if planned and actual:
        return on_run_clock(base, actual / planned, interval), interval
    return base, interval


def final_verdict_file(data: RunData) -> dict[str, Any] | None:
    """``leak_verdict.json`` of a run folder: the detector's own final verdict."""
    if data.kind != "run":
        return None
    path = data.source / "leak_verdict.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("verdict") else None


def judged_series(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times and bytes the detector judges: the monitor's ``judged_bytes`` (RSS less the
    tiers' bytes up to their limits); for an older file, RSS less the tier columns."""
    judged = col(samples, "judged_bytes")
    if judged.notna().any():
        net = judged
    else:
        rss = col(samples, "rss_bytes")
        tiers = [c for c in (col(samples, n) for n in JUDGED_TIERS) if c.notna().any()]
        net = rss - sum(c.fillna(0.0) for c in tiers) if tiers else rss
    ok = net.notna().to_numpy()
    t = col(samples, "time").to_numpy(dtype=float)[ok]
    return t, net.to_numpy(dtype=float)[ok]


def _replayed(data: RunData, settings: LeakDetection) -> dict[str, Any]:
    """The detector's final verdict, replayed over the samples as the monitor fed them."""
    samples = data.samples
    if not col(samples, "judged_bytes").notna().any():  # a file older than judged_bytes
        t, y = judged_series(samples)
        samples = pd.DataFrame({"time": t, "judged_bytes": y})
    return replay(samples, settings).as_dict()


def _episode(e: dict[str, Any], t0: float, injected_at: float | None) -> LeakEpisode:
    called = float(e["called_at"])
    cleared = finite(e.get("cleared_at"))
    return LeakEpisode(
        kind=str(e.get("kind") or "trend"),
        series=str(e.get("series") or "memory"),
        called_at_s=called - t0,
        cleared_at_s=None if cleared is None else cleared - t0,
        slope_mb_min=finite(e.get("slope_mb_min")),
        ci_low_mb_min=finite(e.get("ci_low_mb_min")),
        ci_high_mb_min=finite(e.get("ci_high_mb_min")),
        scale_s=finite(e.get("scale_s")),
        step_mb=finite(e.get("step_mb")),
        ended=str(e.get("ended") or ""),
        reason=str(e.get("text") or ""),
        before_injection=injected_at is not None and called < injected_at,
    )


def _whole_run_slope(data: RunData) -> float | None:
    """Theil-Sen slope of all judged samples, MB/min: context only, never a verdict."""
    from scipy.stats import theilslopes

    t, y = judged_series(data.samples)
    if len(t) < 3 or np.ptp(t) <= 0:
        return None
    return float(theilslopes(y / MB, (t - t[0]) / 60.0).slope)


def leak_metrics(data: RunData, cfg: Config, t0: float, spans: list[StageSpan]) -> LeakMetrics:
    m = LeakMetrics()
    _, rss = rss_series(data.samples)
    injecting = [s for s in spans if s.injects == "leak"]
    injected_at = injecting[0].start if injecting else None
    if injected_at is not None:
        m.injected_start_s = injected_at - t0
    flag = col(data.samples, "leak_suspected").dropna()
    if len(flag):
        m.target_flagged = bool((flag > 0).any())
    un = col(data.samples, "unaccounted_bytes").dropna()
    if len(un):
        m.unaccounted_peak_mb = float(un.max()) / MB
    final = final_verdict_file(data)
    if final is not None:
        m.basis = "the monitor's online detector (leak_verdict.json)"
    elif len(rss):
        settings, _ = settings_used(data, cfg)
        final = _replayed(data, settings)
        m.basis = "the detector replayed over memory_samples.csv (no leak_verdict.json)"
    else:
        m.reason = "no memory samples"
        m.graded_note = m.reason
        return m
    if len(rss):
        m.whole_run_slope_mb_min = _whole_run_slope(data)
    m.episodes = [_episode(e, t0, injected_at) for e in final.get("episodes") or []]
    m.tiers = [str(f.get("text") or f.get("tier")) for f in final.get("tiers") or []]
    m.tiers_note = str(final.get("tiers_note") or "")
    calls = [e for e in m.episodes if e.kind != "step"]
    m.false_alarms = sum(e.before_injection for e in calls)
    found = [e for e in calls if not e.before_injection] if injecting else []
    if found and injected_at is not None:
        m.detection_delay_s = found[0].called_at_s - (injected_at - t0)
    verdict = str(final.get("verdict"))
    m.reason = str(final.get("reason") or "")
    if verdict == "leak":
        m.verdict, m.held_at_end = "leak", True
        m.series = str(final.get("series") or "memory")
        m.slope_mb_min = finite(final.get("slope_mb_min"))
        m.ci_low_mb_min = finite(final.get("ci_low_mb_min"))
        m.ci_high_mb_min = finite(final.get("ci_high_mb_min"))
        m.scale_s = finite(final.get("scale_s"))
        called = finite(final.get("called_at"))
        m.called_at_s = None if called is None else called - t0
    elif found:
        # The scenario's own leak, found by the detector and (as the scenario meant)
        # given back after its reset: the headline says it was found.
        e = found[0]
        m.verdict, m.series = "leak", e.series
        m.slope_mb_min, m.ci_low_mb_min, m.ci_high_mb_min = (
            e.slope_mb_min,
            e.ci_low_mb_min,
            e.ci_high_mb_min,
        )
        m.scale_s, m.called_at_s = e.scale_s, e.called_at_s
        m.reason = f"{e.reason} (the leak the scenario injected; {m.reason})"
    elif verdict == "no leak":
        m.verdict = "no leak"
    else:
        m.graded_note = m.reason
        return m
    if injecting:
        m.graded_note = "the scenario injects its leak: its checks judge it"
    else:
        m.graded_slope_mb_min = (m.slope_mb_min or 0.0) if m.held_at_end else 0.0
    return m


def lower_envelope(t: np.ndarray, y: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-window minima: in each window of ``window_s`` seconds, the lowest sample and its time."""
    if not len(t):
        return t, y
    bins = np.floor((t - t[0]) / window_s).astype(np.int64)
    df = pd.DataFrame({"bin": bins, "t": t, "y": y})
    idx = df.groupby("bin", sort=True)["y"].idxmin()
    low = df.loc[idx.to_numpy()]
    return low["t"].to_numpy(dtype=float), low["y"].to_numpy(dtype=float)


def stage_slope(t: np.ndarray, y: np.ndarray, window_s: float, min_windows: int) -> float | None:
    """Theil-Sen slope (MB/min) of one stage's lower envelope: a stage's pace, not a verdict."""
    from scipy.stats import theilslopes

    tw, yw = lower_envelope(t, y, window_s)
    if len(tw) < max(3, min_windows):
        return None
    if np.ptp(yw) == 0:
        return 0.0
    return float(theilslopes(yw, (tw - tw[0]) / 60.0).slope)


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "leak.verdict": (
        "leak verdict",
        "",
        "the online detector's state at the end of the run (monitors/leak/): leak, no leak, "
        "or not judged (too few samples)",
    ),
    "leak.slope_mb_min": (
        "leak slope",
        "MB/min",
        "Theil-Sen slope of the scale that called the leak held at the end (lower envelope "
        "of RSS less the target's accounted tier bytes)",
    ),
    "leak.ci_low_mb_min": ("leak slope CI low", "MB/min", "lower bound of its confidence interval"),
    "leak.ci_high_mb_min": (
        "leak slope CI high",
        "MB/min",
        "upper bound of its confidence interval",
    ),
    "leak.called_at_s": ("leak called at", "s", "run time the detector called that leak"),
    "leak.injected_start_s": (
        "leak injected at",
        "s",
        "run time the first stage declaring injects: leak began",
    ),
    "leak.detection_delay_s": (
        "detection delay",
        "s",
        "first detection at or after injection minus injection start",
    ),
    "leak.false_alarms": (
        "false alarms",
        "",
        "leak_detected events before the scenario injected its leak (only where it injects one)",
    ),
    "leak.target_flagged": (
        "target flagged a leak",
        "",
        "the target's leak_suspected was 1 in some sample",
    ),
    "leak.whole_run_slope_mb_min": (
        "whole-run slope (context only)",
        "MB/min",
        "Theil-Sen slope of every judged sample over the whole run; feeds no score, grade or "
        "verdict",
    ),
    "leak.unaccounted_peak_mb": (
        "unaccounted memory",
        "MB",
        "highest unaccounted_bytes the target reported",
    ),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
