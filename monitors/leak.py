"""Online leak detection on the lower envelope of the target's memory.

Pure: no I/O, no clock. Feed it ``(time, bytes)`` samples in time order with
:meth:`LeakDetector.add`; after every sample it answers a :class:`LeakVerdict`,
which says when the state changed (``leak_detected`` / ``leak_cleared``).
What it is fed is the monitor's choice (see :mod:`monitors.monitor`): the
target's RSS, less the bytes the target itself accounts to its caches when it
reports them.

The algorithm, with the settings of ``monitor.leak_detection``:

1. **Warm-up.** Samples in the first ``warmup_s`` seconds are ignored: caches
   fill and allocator arenas grow fastest right after start.
2. **Lower envelope.** Time is cut into windows of ``window_s``; each complete
   window gives one point, its minimum (at the window's middle). Garbage
   collector and allocator sawtooth rides *above* this envelope, so it does
   not look like growth; memory that is never given back lifts it.
3. **Scales.** The trend is judged over the last ``lookback_s`` of envelope
   points and over shorter spans (each :data:`SCALE_STEP` of the last), down
   to :data:`SHORTEST_SHARE` of the lookback (and at least ``min_windows``
   points, at least 8). A leak that started a minute ago fills a short
   scale long before it fills the lookback, where the flat history before it
   would dilute it.
4. **Enough growth.** At a scale of L seconds a leak needs a Theil-Sen slope
   (median of the pairwise slopes) of at least
   ``min_slope_mb_per_min * lookback_s / L``: the same *total rise* at every
   scale, the rise ``min_slope_mb_per_min`` makes over the whole lookback
   (3.2 MB with the shipped 0.4 MB/min over 480 s). So a short scale cannot
   mistake a few MB of noise or wander for a fast leak, a fast leak is called
   about as soon as it has made that rise, and a slow one at the full
   lookback. Only scales that pass this cheap check get the full test.
5. **The full test** at that scale, all of:

   - **significant**: the Theil-Sen confidence interval
     (``scipy.stats.theilslopes``) lies above 0, and a Mann-Kendall test
     (Kendall's tau of the envelope against time, one-sided for "rising")
     gives p < ``significance / k``, k being the number of scales judged
     (Bonferroni); the interval is ``1 - 2 * significance / k``, so its lower
     bound is one-sided at that level;
   - **sustained**: the slopes of both halves of the scale are at least
     :data:`SUSTAIN` times the slope of the whole, and the recent half's at
     least :data:`SUSTAIN` times the older half's;
   - **still at its high**: the newest point is within :data:`PEAK_TOLERANCE`
     of the required rise of the scale's highest point.

   Why "sustained" and "at its high": a leak grows at a steady rate, so both
   halves show about the slope of the whole and the newest point is the
   highest. A cache that fills and then stays flat has a flat recent half; one
   that fills ever more slowly (a saturating curve) has a recent half much
   slower than its older half; a single step (one allocation kept for good)
   has one flat half, whichever side of the step it lies; memory given back
   puts the newest point far below the peak. Each of these makes the whole
   window a significant rise for as long as it is inside the lookback, and
   Kendall's tau alone would call it a trend.
6. **Cleared** (after a leak was called) when the envelope has made no new
   high for twice the scale that called the leak (at most ``lookback_s``), or
   has fallen :data:`RELEASE_FACTOR` times the required rise below its peak
   (memory was given back).

Rates are MB per minute with MB = 2**20 bytes, as the reference service counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, theilslopes

from common.config import LeakDetection
from common.units import MB

SCALE_STEP = 0.9
"""Each scale is this share of the next longer one: a fine grid, so a leak is
judged soon after it has made the required rise, whatever its rate."""

MIN_HALF = 4
"""Fewest envelope points in each half of a scale."""

SHORTEST_SHARE = 1 / 8
"""The shortest span judged is this share of the lookback (60 s of the shipped 480 s): a
filling cache or a sawtooth must keep rising that long before it can look like a leak."""

SUSTAIN = 0.5
"""Each half's slope must be at least this share of the whole (and the recent of the older)."""

PEAK_TOLERANCE = 0.5
"""The newest point may lie at most this share of the required rise below the scale's peak."""

RELEASE_FACTOR = 2.0
"""A called leak clears when the envelope falls this many required rises below its peak."""

CONFIRM = 3
"""Consecutive judgements (one per window) a rise must pass before it is called a leak."""

WARMUP, CLEAR, LEAK = "warmup", "clear", "leak"

_PER_MIN = 60.0 / MB  # bytes per second -> MB per minute


@dataclass(frozen=True)
class Trend:
    """The full trend test on the envelope points of one scale; slopes in MB/min."""

    scale_s: float  # the scale judged (shorter than nominal while the run is young)
    points: int
    slope: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float  # one-sided Mann-Kendall p-value for a rising trend
    older_slope: float
    recent_slope: float
    needed_slope: float  # the slope a leak needs at this scale
    alpha: float  # the significance this scale is judged at
    below_peak_mb: float  # how far the newest point lies below the highest one

    @property
    def rise_mb(self) -> float:
        """The total rise a leak needs at this scale (the same at every scale)."""
        return self.needed_slope * self.scale_s / 60

    @property
    def rising(self) -> bool:
        """The leak rule at this scale (module docstring, steps 4 and 5)."""
        steady = (
            self.older_slope >= SUSTAIN * self.slope
            and self.recent_slope >= SUSTAIN * self.slope
            and self.recent_slope >= SUSTAIN * self.older_slope
        )
        return (
            self.slope >= self.needed_slope
            and self.ci_low > 0
            and self.p_value < self.alpha
            and steady
            and self.below_peak_mb <= PEAK_TOLERANCE * self.rise_mb
        )

    def as_detail(self) -> dict[str, float | int]:
        """The figures an event row carries (rounded for a human reader)."""
        return {
            "slope_mb_min": round(self.slope, 4),
            "ci_low_mb_min": round(self.ci_low, 4),
            "ci_high_mb_min": round(self.ci_high, 4),
            "confidence": round(self.confidence, 5),
            "p_value": float(f"{self.p_value:.3g}"),
            "older_slope_mb_min": round(self.older_slope, 4),
            "recent_slope_mb_min": round(self.recent_slope, 4),
            "needed_slope_mb_min": round(self.needed_slope, 4),
            "below_peak_mb": round(self.below_peak_mb, 3),
            "scale_s": round(self.scale_s, 1),
            "windows": self.points,
        }


def median_slope(t: np.ndarray, y: np.ndarray) -> float:
    """Theil-Sen slope (median pairwise slope) in MB/min, without its interval."""
    i, j = np.triu_indices(len(t), 1)
    return float(np.median((y[j] - y[i]) / (t[j] - t[i]))) * _PER_MIN


def _mann_kendall_rising(t: np.ndarray, y: np.ndarray) -> float:
    """One-sided p-value that ``y`` rises with ``t`` (1.0 when it does not vary)."""
    if np.ptp(y) == 0:
        return 1.0
    tau, p_two = kendalltau(t, y)
    if not math.isfinite(tau) or not math.isfinite(p_two):
        return 1.0
    return float(p_two / 2 if tau > 0 else 1 - p_two / 2)


def full_trend(
    t: np.ndarray, y: np.ndarray, alpha: float, needed_slope: float, scale_s: float
) -> Trend:
    """The full test on envelope points (times in s, values in bytes)."""
    n = len(t)
    if n < 2 * MIN_HALF:
        raise ValueError(f"a trend needs at least {2 * MIN_HALF} points, got {n}")
    confidence = 1 - 2 * alpha
    res = theilslopes(y, t, alpha=confidence)
    half = n // 2
    return Trend(
        scale_s=scale_s,
        points=n,
        slope=float(res.slope) * _PER_MIN,
        ci_low=float(res.low_slope) * _PER_MIN,
        ci_high=float(res.high_slope) * _PER_MIN,
        confidence=confidence,
        p_value=_mann_kendall_rising(t, y),
        older_slope=median_slope(t[:half], y[:half]),
        recent_slope=median_slope(t[n - half :], y[n - half :]),
        needed_slope=needed_slope,
        alpha=alpha,
        below_peak_mb=float(y.max() - y[-1]) / MB,
    )


def shortest_scale(settings: LeakDetection) -> float:
    """The shortest span judged: :data:`SHORTEST_SHARE` of the lookback, and enough windows."""
    windows = max(settings.min_windows, 2 * MIN_HALF)
    return max(settings.lookback_s * SHORTEST_SHARE, windows * settings.window_s)


def scales(settings: LeakDetection) -> list[float]:
    """The nominal scales, longest first: the lookback, then each SCALE_STEP of the last."""
    shortest = shortest_scale(settings)
    out = [float(settings.lookback_s)]
    while out[-1] * SCALE_STEP >= shortest:
        out.append(out[-1] * SCALE_STEP)
    return out


def needed_slope(settings: LeakDetection, scale_s: float) -> float:
    """MB/min a leak needs at a scale: the minimum slope's total rise over the lookback."""
    return settings.min_slope_mb_per_min * settings.lookback_s / scale_s


@dataclass(frozen=True)
class Judgement:
    """One look at the envelope: the overall slope and, if found, the scale that rises."""

    slope: float | None  # Theil-Sen slope of the longest scale, MB/min
    rising: Trend | None  # the longest scale that passed the full test


def judge(envelope: list[tuple[float, float]], settings: LeakDetection) -> Judgement:
    """Judge every scale with enough points, longest first; stop at the first that rises."""
    need = max(settings.min_windows, 2 * MIN_HALF)
    shortest = shortest_scale(settings)
    if len(envelope) < need:
        return Judgement(None, None)
    t = np.fromiter((p[0] for p in envelope), float, len(envelope))
    y = np.fromiter((p[1] for p in envelope), float, len(envelope))
    chosen: list[tuple[float, int]] = []  # (length judged, first index)
    for scale in scales(settings):
        first = int(np.searchsorted(t, t[-1] - scale + settings.window_s / 2, side="left"))
        span = float(t[-1] - t[first]) + settings.window_s
        if len(t) - first < need or span < shortest - 1e-9 or (chosen and chosen[-1][1] == first):
            continue
        # Early in a run a scale is not full yet: judge it at the length it has.
        chosen.append((min(scale, span), first))
    if not chosen:
        return Judgement(None, None)
    alpha = settings.significance / len(chosen)
    overall: float | None = None
    for length, first in chosen:
        ts, ys = t[first:], y[first:]
        slope = median_slope(ts, ys)
        if overall is None:
            overall = slope
        need_slope = needed_slope(settings, length)
        if slope < need_slope:
            continue
        tr = full_trend(ts, ys, alpha, need_slope, length)
        if tr.rising:
            return Judgement(overall, tr)
    return Judgement(overall, None)


def on_run_clock(settings: LeakDetection, factor: float, interval_s: float) -> LeakDetection:
    """The settings for a run shortened to ``factor`` of its scenario's configured length.

    Times (warm-up, window, lookback) shrink by the factor and the minimum slope
    grows by it, so a short run (``--quick``, tests) is judged on a faster clock
    but needs the same total rise in MB. A window is never shorter than the
    sampling interval; ``factor`` >= 1 leaves the settings as they are.
    """
    if factor >= 1:
        return settings
    f = max(factor, 0.01)
    window = max(settings.window_s * f, interval_s)
    lookback = max(settings.lookback_s * f, window * max(settings.min_windows, 2 * MIN_HALF))
    rise = settings.min_slope_mb_per_min * settings.lookback_s
    return dataclasses.replace(
        settings,
        warmup_s=settings.warmup_s * f,
        window_s=window,
        lookback_s=lookback,
        min_slope_mb_per_min=rise / lookback,
    )


@dataclass(frozen=True)
class LeakVerdict:
    """The detector's answer after one sample."""

    state: str  # warmup | clear | leak
    slope_mb_min: float | None = None  # Theil-Sen slope over the longest scale judged
    trend: Trend | None = None  # the full test of the scale that called the current leak
    changed: str | None = None  # "leak_detected" or "leak_cleared" on the sample that changed it
    reason: str = ""  # why it changed, for the event row and the log


class LeakDetector:
    """Stateful online detector; one per run (see the module docstring)."""

    def __init__(self, settings: LeakDetection, start: float | None = None) -> None:
        self.settings = settings
        self.start = start
        self._window: int | None = None  # index of the window being filled
        self._window_min = math.inf
        keep = int(settings.lookback_s / settings.window_s) + 2
        self._envelope: deque[tuple[float, float]] = deque(maxlen=keep)
        self.verdict = LeakVerdict(WARMUP)
        self.detected_at: float | None = None  # time of the latest leak_detected
        self._peak = -math.inf  # highest envelope point since the leak was called
        self._peak_at = 0.0
        self._streak = 0  # consecutive judgements that found a rising scale

    @property
    def rise_mb(self) -> float:
        """The total rise a leak must make (at every scale)."""
        return self.settings.min_slope_mb_per_min * self.settings.lookback_s / 60

    @property
    def envelope(self) -> list[tuple[float, float]]:
        """Complete envelope points kept for the lookback: (window middle, minimum bytes)."""
        return list(self._envelope)

    def add(self, t: float, value: float | None) -> LeakVerdict:
        """Take one sample; ``value`` None (no reading) only advances the clock.

        The verdict is judged again each time a window completes; ``changed`` is
        set only on the call that changed the state.
        """
        if self.verdict.changed is not None:
            self.verdict = dataclasses.replace(self.verdict, changed=None, reason="")
        if self.start is None:
            self.start = t
        s = self.settings
        judged_from = self.start + s.warmup_s
        if t < judged_from:
            return self.verdict
        index = int((t - judged_from) // s.window_s)
        if self._window is None:
            self._window = index
        elif index != self._window:
            if math.isfinite(self._window_min):
                middle = judged_from + (self._window + 0.5) * s.window_s
                self._envelope.append((middle, self._window_min))
            self._window, self._window_min = index, math.inf
            horizon = judged_from + index * s.window_s - s.lookback_s
            while self._envelope and self._envelope[0][0] < horizon:
                self._envelope.popleft()
            self.verdict = self._judge(t)
        if value is not None and math.isfinite(value):
            self._window_min = min(self._window_min, float(value))
        return self.verdict

    def _judge(self, t: float) -> LeakVerdict:
        j = judge(list(self._envelope), self.settings)
        state = self.verdict.state
        if state == LEAK:
            return self._judge_leak(j)
        self._streak = self._streak + 1 if j.rising is not None else 0
        if j.rising is not None and self._streak >= CONFIRM:
            tr = j.rising
            self.detected_at = t
            self._peak, self._peak_at = self._envelope[-1][1], self._envelope[-1][0]
            why = f"rising {tr.slope:.2f} MB/min over the last {tr.scale_s:.0f} s"
            return LeakVerdict(LEAK, j.slope, tr, "leak_detected", why)
        return LeakVerdict(state if j.slope is None else CLEAR, j.slope)

    def _judge_leak(self, j: Judgement) -> LeakVerdict:
        called = self.verdict.trend
        assert called is not None
        when, value = self._envelope[-1]
        if value > self._peak:
            self._peak, self._peak_at = value, when
        stall_s = min(2 * called.scale_s, self.settings.lookback_s)
        drop_mb = (self._peak - value) / MB
        if drop_mb > RELEASE_FACTOR * self.rise_mb:
            why = f"the envelope fell {drop_mb:.1f} MB below its peak"
        elif when - self._peak_at >= stall_s:
            why = f"no new high of the envelope for {stall_s:.0f} s"
        else:
            return LeakVerdict(LEAK, j.slope, called)
        self._streak = 0
        return LeakVerdict(CLEAR, j.slope, called, "leak_cleared", why)
