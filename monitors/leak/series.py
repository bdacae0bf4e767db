"""One judged series: its lower envelope, its state (warm-up, clear, leak) and its episodes.

Steps 1, 2 and 9 of :mod:`memstress.monitors.leak`: windows and their minima, calling a
leak after ``confirm`` judgements, and clearing it on evidence or when memory is
given back. :class:`~memstress.monitors.leak.detector.LeakDetector` keeps one series for
memory and one for each tier reported with a limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np
from scipy.stats import theilslopes

from memstress.common.config import LeakDetection
from memstress.common.units import MB
from memstress.monitors.leak.judge import Judgement, judge
from memstress.monitors.leak.trend import (
    MIN_HALF,
    PER_MIN,
    Trend,
    min_points,
    needed_slope,
    required_rise_mb,
    shortest_scale,
)
from memstress.monitors.leak.verdict import (
    CLEAR,
    LEAK,
    MEMORY,
    PLATEAU,
    STEP,
    TREND,
    WARMUP,
    Episode,
    LeakEvent,
)

RELEASE_FACTOR = 2.0
"""A called leak clears when the envelope falls this many required rises below its peak."""

CLEAR_SHARE = 0.5
"""A called leak clears on evidence only when its slope is below this share of the slope
its calling scale needs (and the slope's interval below that need). A fixed hysteresis,
not a tunable: between calling and clearing there must be a gap, or a leak growing right
at a scale's threshold flips between the two; a half is the usual choice, not fitted to
any recording."""


class Series:
    """The envelope, state and episodes of one judged series."""

    def __init__(self, name: str, settings: LeakDetection, judged_from: float) -> None:
        self.name = name
        self.settings = settings
        self.judged_from = judged_from
        self._window: int | None = None
        self._window_min = math.inf
        keep = int(settings.lookback_s / settings.window_s) + 2
        self.envelope: deque[tuple[float, float]] = deque(maxlen=keep)
        self.state = WARMUP
        self.slope: float | None = None
        self.trend: Trend | None = None  # the test that called the current leak
        self.judged = False  # a slope was judged at least once
        self.episodes: list[Episode] = []
        self.latest: float | None = None
        self._floor = -math.inf
        self._streak = 0
        self._peak = -math.inf
        self._below_since: float | None = None
        self._open: int | None = None  # index in episodes of the leak called now

    @property
    def rise_mb(self) -> float:
        return required_rise_mb(self.settings)

    def add(self, t: float, value: float | None) -> list[LeakEvent]:
        s = self.settings
        if t < self.judged_from:
            return []
        index = int((t - self.judged_from) // s.window_s)
        events: list[LeakEvent] = []
        if self._window is None:
            self._window = index
        elif index != self._window:
            if math.isfinite(self._window_min):
                middle = self.judged_from + (self._window + 0.5) * s.window_s
                self.envelope.append((middle, self._window_min))
            self._window, self._window_min = index, math.inf
            horizon = self.judged_from + index * s.window_s - s.lookback_s
            while self.envelope and self.envelope[0][0] < horizon:
                self.envelope.popleft()
            events = self._judge(t)
        if value is not None and math.isfinite(value):
            self._window_min = min(self._window_min, float(value))
            self.latest = float(value)
        return events

    def _judge(self, t: float) -> list[LeakEvent]:
        j = judge(list(self.envelope), self.settings, self._floor)
        self.slope = j.slope
        self._note_steps(j)
        if j.slope is not None:
            self.judged = True
        if self.state == LEAK:
            return self._judge_leak(t, j)
        self._streak = self._streak + 1 if j.rising is not None else 0
        if j.rising is not None and self._streak >= self.settings.confirm:
            tr = j.rising
            self.state, self.trend = LEAK, tr
            self._peak = _kept_peak(j)
            self._below_since = None
            why = f"rising {tr.slope:.2f} MB/min over the last {tr.reported_s:.0f} s"
            if tr.reported_s != tr.scale_s:
                why += f" (since it began; judged over {tr.scale_s:.0f} s)"
            if j.stairs:
                gaps = np.diff([c.time for c in j.stairs])
                size = float(np.median([c.jump_mb for c in j.stairs]))
                why += (
                    f" (a staircase: {len(j.stairs)} steps of about {size:.1f} MB "
                    f"every {float(np.median(gaps)):.0f} s)"
                )
            if self.name != MEMORY:
                why = f"{self.name}: {why} past its limit"
            self._open = len(self.episodes)
            self.episodes.append(
                Episode(
                    TREND,
                    self.name,
                    t,
                    slope_mb_min=tr.slope,
                    ci_low_mb_min=tr.ci_low,
                    ci_high_mb_min=tr.ci_high,
                    confidence=tr.confidence,
                    scale_s=tr.scale_s,
                    text=why,
                )
            )
            return [LeakEvent("leak_detected", self.name, why, tr)]
        if j.slope is not None:
            self.state = CLEAR
        return []

    def _judge_leak(self, t: float, j: Judgement) -> list[LeakEvent]:
        called = self.trend
        assert called is not None
        value = self.envelope[-1][1]  # the raw newest point: memory given back shows at once
        self._peak = max(self._peak, _kept_peak(j))
        drop_mb = (self._peak - value) / MB
        if drop_mb > RELEASE_FACTOR * self.rise_mb:
            return self._clear(t, "released", f"the envelope fell {drop_mb:.1f} MB below its peak")
        below, why = self._slowed(j, called)
        if not below:
            self._below_since = None
            return []
        if self._below_since is None:
            self._below_since = t
        if t - self._below_since < self.settings.clear_hold_s:
            return []
        return self._clear(t, "slowed", why)

    def _slowed(self, j: Judgement, called: Trend) -> tuple[bool, str]:
        """Whether the newest segment's slope is below the calling scale's need with its
        interval, and below :data:`CLEAR_SHARE` of that need itself."""
        s = self.settings
        window = max(called.scale_s, shortest_scale(s))
        times = [p[0] for p in self.envelope]
        if j.settled < 1:
            return False, ""
        end = times[j.settled - 1]  # the newest settled point: a climb since is not evidence
        # From the newest cut, and at least the fewest points a trend is judged on.
        start = max(0, min(j.newest, j.settled - min_points(s)))
        idx = [i for i in range(start, j.settled) if times[i] > end - window]
        if len(idx) < 2 * MIN_HALF:
            return False, ""
        t = np.array([times[i] for i in idx])
        y = np.array([j.kept[i] for i in idx])
        span = float(t[-1] - t[0]) + s.window_s
        # The slope itself must also be under CLEAR_SHARE of the need: with the interval
        # alone, a per-request leak of 1.23 MB/min called at the 120 s scale (which needs
        # 1.25) was cleared while it went on growing, and its run ended on "no leak".
        threshold = needed_slope(s, window)
        confidence = 1 - 2 * s.significance
        res = theilslopes(y, t, alpha=confidence)
        slope, high = float(res.slope) * PER_MIN, float(res.high_slope) * PER_MIN
        why = (
            f"the newest {span:.0f} s rise {slope:.2f} MB/min "
            f"({100 * confidence:.0f}% CI up to {high:.2f}), below {threshold:.2f} MB/min "
            f"(and the rise below {CLEAR_SHARE * threshold:.2f})"
        )
        return high < threshold and slope < CLEAR_SHARE * threshold, why

    def _clear(self, t: float, ended: str, why: str) -> list[LeakEvent]:
        self.state, self._streak, self._below_since = CLEAR, 0, None
        # From now on a leak must make the required rise again: what was cleared is not
        # judged a second time.
        self._floor = self.envelope[-1][0]
        called, self.trend = self.trend, None
        assert self._open is not None
        last = self.episodes[self._open]
        kind = PLATEAU if ended == "slowed" else TREND
        text = last.text + ("; growth ended" if ended == "slowed" else "; memory was given back")
        self.episodes[self._open] = dataclasses.replace(
            last, kind=kind, cleared_at=t, ended=ended, text=text
        )
        self._open = None
        if self.name != MEMORY:
            why = f"{self.name}: {why}"
        return [LeakEvent("leak_cleared", self.name, why, called)]

    def _note_steps(self, j: Judgement) -> None:
        """Keep each upward step, once, when a trend's worth of points after it still show it.

        Cuts in a short envelope come and go as points arrive; one that is still
        there with ``min_points`` after it is a level shift of the series.
        """
        if not j.cuts:
            return
        n = j.settled  # cuts are made on the settled points only
        tol = 2 * self.settings.window_s
        for c in j.cuts:
            if not c.step or c.jump_mb <= 0 or n - c.index < min_points(self.settings):
                continue
            if any(e.kind == STEP and abs(e.called_at - c.time) <= tol for e in self.episodes):
                continue
            text = f"a step of {c.jump_mb:+.1f} MB"
            if self.name != MEMORY:
                text = f"{self.name}: {text} past its limit"
            self.episodes.append(
                Episode(STEP, self.name, c.time, c.time, step_mb=c.jump_mb, text=text)
            )


def _kept_peak(j: Judgement) -> float:
    """The highest kept level of the settled points (bytes)."""
    return max(j.kept[: max(j.settled, 1)]) if j.kept else -math.inf
