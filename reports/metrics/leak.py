"""The leak judgment of a run: what the monitor's online detector said, never a second algorithm.

The source of truth is the detector the monitor ran (:mod:`monitors.leak`): its
``leak_detected`` / ``leak_cleared`` events in ``events.csv``, each with the
slope and confidence interval of the scale that called it. A run folder without
``events.csv`` (or an old one) is judged by replaying the same detector over
``memory_samples.csv`` with the settings the run used (its ``leak_settings``
event, else the config's scaled to the run's length).

The verdict at the end of the run:

- **leak**: the detector's state at the end is "leak" (a leak it called and
  has not cleared), or, in a scenario that injects a leak, the detector found
  the injected leak (it may clear after the scenario's reset);
- **no leak**: it judged the run and holds no leak at the end; episodes that
  were called and cleared (a cache filling to a plateau) are listed as growth
  episodes that ended;
- **not judged**: no memory samples, or too few for the detector to leave its
  warm-up (run too short).

What the ``leak`` grade judges (``graded_slope_mb_min``): the slope of the leak
held at the end, 0 when there is none. In a scenario that injects a leak on
purpose (a stage with ``injects: leak``) the leak is the scenario's own and its
checks judge it; the grade is then n/a. A detection before the first injecting
stage is a false alarm: the truth is known there. Anywhere else a detection is
a finding about the target.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common.config import Config, LeakDetection
from monitors.leak import LEAK, WARMUP, LeakDetector, on_run_clock
from reports.collect import RunData
from reports.metrics.base import MB, StageSpan, col, finite, rss_series

JUDGED_TIERS = ("conversations_bytes", "vectors_bytes", "embedding_cache_bytes", "ballast_bytes")
"""The tier columns the monitor subtracts from RSS before the detector judges it."""


@dataclass
class LeakEpisode:
    """One leak the detector called: when, how fast, and when (and why) it cleared."""

    called_at_s: float
    cleared_at_s: float | None
    slope_mb_min: float | None
    ci_low_mb_min: float | None
    ci_high_mb_min: float | None
    scale_s: float | None
    reason: str
    cleared_because: str = ""
    before_injection: bool = False


@dataclass
class LeakMetrics:
    verdict: str = "not judged"  # leak | no leak | not judged
    reason: str = ""
    basis: str = ""  # where the verdict comes from
    slope_mb_min: float | None = None  # the scale that called the leak held at the end
    ci_low_mb_min: float | None = None
    ci_high_mb_min: float | None = None
    scale_s: float | None = None
    called_at_s: float | None = None
    episodes: list[LeakEpisode] = field(default_factory=list)
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
            own = " (injected by the scenario)" if self.injected_start_s is not None else ""
            return f"leak {slope} MB/min{ci}{at}{own}"
        if self.verdict == "no leak":
            ended = [e for e in self.episodes if e.cleared_at_s is not None]
            return "no leak" + (
                f" ({len(ended)} growth episode(s) called and cleared)" if ended else ""
            )
        return f"leak not judged ({self.reason})"


def _detail(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text.startswith("{"):
        return {"reason": text if isinstance(text, str) else ""}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def settings_used(data: RunData, cfg: Config) -> tuple[LeakDetection, float]:
    """The detector settings and sampling interval the run used."""
    ev = data.events
    rows = ev.loc[ev["kind"] == "leak_settings", "detail"]
    base = cfg.monitor.leak_detection
    if len(rows):
        d = _detail(rows.iloc[-1])
        names = {f.name for f in dataclasses.fields(LeakDetection)}
        try:
            values = {k: type(getattr(base, k))(d[k]) for k in names}
            return dataclasses.replace(base, **values), float(d.get("interval_s", 1.0))
        except (KeyError, TypeError, ValueError):
            pass
    meta = data.meta or {}
    planned = finite(meta.get("planned_duration_s"))
    actual = finite(meta.get("duration_s"))
    interval = cfg.monitor.interval
    if planned and actual:
        return on_run_clock(base, actual / planned, interval), interval
    return base, interval


def judged_series(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times and bytes the detector judges: RSS less the accounted tiers, as the monitor does."""
    rss = col(samples, "rss_bytes")
    tiers = [c for c in (col(samples, n) for n in JUDGED_TIERS) if c.notna().any()]
    net = rss - sum(c.fillna(0.0) for c in tiers) if tiers else rss
    ok = net.notna().to_numpy()
    t = col(samples, "time").to_numpy(dtype=float)[ok]
    return t, net.to_numpy(dtype=float)[ok]


def replay(data: RunData, settings: LeakDetection) -> LeakDetector:
    """The detector fed the run's samples again, as the monitor fed it."""
    det = LeakDetector(settings)
    t, y = judged_series(data.samples)
    for ti, yi in zip(t.tolist(), y.tolist(), strict=True):
        det.add(ti, yi)
    return det


def _episodes(ev: pd.DataFrame, t0: float, injected_at: float | None) -> list[LeakEpisode]:
    out: list[LeakEpisode] = []
    rows = ev[ev["kind"].isin(["leak_detected", "leak_cleared"])]
    for kind, when, text in zip(rows["kind"], rows["time"], rows["detail"], strict=True):
        d = _detail(text)
        if kind == "leak_detected":
            out.append(
                LeakEpisode(
                    called_at_s=float(when) - t0,
                    cleared_at_s=None,
                    slope_mb_min=finite(d.get("slope_mb_min")),
                    ci_low_mb_min=finite(d.get("ci_low_mb_min")),
                    ci_high_mb_min=finite(d.get("ci_high_mb_min")),
                    scale_s=finite(d.get("scale_s")),
                    reason=str(d.get("reason", "")),
                    before_injection=injected_at is not None and float(when) < injected_at,
                )
            )
        elif out and out[-1].cleared_at_s is None:
            out[-1].cleared_at_s = float(when) - t0
            out[-1].cleared_because = str(d.get("reason", ""))
    return out


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
    if not len(rss):
        m.reason = "no memory samples"
        m.graded_note = m.reason
        return m
    m.whole_run_slope_mb_min = _whole_run_slope(data)
    settings, _ = settings_used(data, cfg)
    det = replay(data, settings)
    events_ok = any(s.name == "events.csv" and s.state == "ok" for s in data.inputs)
    if events_ok:
        m.basis = "the monitor's online detector (events.csv)"
        m.episodes = _episodes(data.events, t0, injected_at)
        held = bool(m.episodes) and m.episodes[-1].cleared_at_s is None
        judged = bool(m.episodes) or det.verdict.state != WARMUP
    else:
        m.basis = "the detector replayed over memory_samples.csv (no events.csv)"
        m.episodes = []
        held = det.verdict.state == LEAK
        judged = det.verdict.state != WARMUP
        if held and det.verdict.trend is not None and det.detected_at is not None:
            tr = det.verdict.trend
            m.episodes = [
                LeakEpisode(
                    det.detected_at - t0,
                    None,
                    tr.slope,
                    tr.ci_low,
                    tr.ci_high,
                    tr.scale_s,
                    "replayed",
                    before_injection=injected_at is not None and det.detected_at < injected_at,
                )
            ]
    if not judged:
        span = float(np.ptp(data.samples["time"].dropna())) if len(rss) > 1 else 0.0
        need = settings.warmup_s + settings.min_windows * settings.window_s
        m.reason = (
            f"run too short: memory sampled for {span:.0f} s, the detector needs "
            f"{need:.0f} s (warm-up {settings.warmup_s:.0f} s + {settings.min_windows} windows "
            f"of {settings.window_s:.3g} s)"
        )
        m.graded_note = m.reason
        return m
    m.false_alarms = sum(e.before_injection for e in m.episodes)
    if injected_at is not None:
        after = [e for e in m.episodes if not e.before_injection]
        if after:
            m.detection_delay_s = after[0].called_at_s - (injected_at - t0)
    found = [e for e in m.episodes if not e.before_injection] if injecting else []
    if held or found:
        # The leak held at the end; in a scenario that injects one, the injected leak the
        # detector found (it may have cleared after the scenario's reset).
        called = m.episodes[-1] if held else found[0]
        m.verdict = "leak"
        m.slope_mb_min, m.ci_low_mb_min, m.ci_high_mb_min = (
            called.slope_mb_min,
            called.ci_low_mb_min,
            called.ci_high_mb_min,
        )
        m.scale_s, m.called_at_s = called.scale_s, called.called_at_s
        m.reason = called.reason or "the detector holds a leak at the end of the run"
        if not held:
            m.reason += " (the leak the scenario injected)"
    else:
        m.verdict = "no leak"
        m.reason = "the detector holds no leak at the end of the run"
    if injecting:
        m.graded_note = "the scenario injects its leak: its checks judge it"
    else:
        m.graded_slope_mb_min = (m.slope_mb_min or 0.0) if m.verdict == "leak" else 0.0
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
        "the online detector's state at the end of the run (monitors/leak.py): leak, no leak, "
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
