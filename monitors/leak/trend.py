"""The leak detector's trend test: its scales, the slope a leak needs, Theil-Sen and Mann-Kendall.

Steps 6 to 8 of the method (:mod:`memstress.monitors.leak`): the scales a span is judged
at, the slope a leak needs at each (``creep + min_rise / L``, and at least the
minimum slope), and the full test (significant, sustained, still at its high)
on the points of one scale. :func:`on_run_clock` puts the settings on the clock
of a shortened run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, theilslopes

from memstress.common.config import LeakDetection
from memstress.common.units import MB

SCALE_STEP = 0.9
"""Each scale is this share of the next longer one: a fine grid, so a leak is
judged soon after it has made the required rise, whatever its rate."""

MIN_HALF = 4
"""Fewest envelope points in each half of a scale (8 points to judge a trend)."""

PEAK_TOLERANCE = 0.5
"""The newest point may lie at most this share of the required rise below the scale's peak."""

PER_MIN = 60.0 / MB  # bytes per second -> MB per minute

# --- the trend test -------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """The full trend test on the envelope points of one scale; slopes in MB/min.

    ``slope``, ``ci_low`` and ``ci_high`` are the figures reported: the rate
    since the leak began (:meth:`since`), the scale's own until then. The test
    itself (:attr:`rising`) judges the scale's own ``scale_slope`` and
    ``scale_ci_low``: a scale that began before the leak judges flat time too,
    and its slope is lower than the leak's rate.
    """

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
    sustain: float = 0.5  # the share each half's slope must keep (settings.sustain)
    scale_slope: float = math.nan  # the scale's own Theil-Sen slope (nan: ``slope``)
    scale_ci_low: float = math.nan
    since_s: float = math.nan  # the span ``slope`` was measured over (nan: the scale)

    def since(self, t: np.ndarray, y: np.ndarray, window_s: float) -> Trend:
        """This test, reporting the Theil-Sen rate of the points ``t, y`` (since the leak began).

        The interval reported spans both this fit's and the scale's: under a
        sawtooth the points since the start may be a line drawn between two
        troughs, whose own interval is far too narrow.
        """
        res = theilslopes(y, t, alpha=self.confidence)
        return dataclasses.replace(
            self,
            slope=float(res.slope) * PER_MIN,
            ci_low=min(float(res.low_slope) * PER_MIN, self.ci_low),
            ci_high=max(float(res.high_slope) * PER_MIN, self.ci_high),
            scale_slope=self.tested_slope,
            scale_ci_low=self._tested_ci_low,
            since_s=float(t[-1] - t[0]) + window_s,
        )

    @property
    def tested_slope(self) -> float:
        """The slope the test judged: the scale's own."""
        return self.slope if math.isnan(self.scale_slope) else self.scale_slope

    @property
    def _tested_ci_low(self) -> float:
        return self.ci_low if math.isnan(self.scale_ci_low) else self.scale_ci_low

    @property
    def reported_s(self) -> float:
        """The span the reported slope was measured over."""
        return self.scale_s if math.isnan(self.since_s) else self.since_s

    @property
    def rise_mb(self) -> float:
        """The total rise a leak needs at this scale (R and the creep over the scale)."""
        return self.needed_slope * self.scale_s / 60

    @property
    def rising(self) -> bool:
        """The leak rule at this scale (module docstring, steps 7 and 8)."""
        k = self.sustain
        slope = self.tested_slope
        steady = (
            self.older_slope >= k * slope
            and self.recent_slope >= k * slope
            and self.recent_slope >= k * self.older_slope
        )
        return (
            slope >= self.needed_slope
            and self._tested_ci_low > 0
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
            "scale_slope_mb_min": round(self.tested_slope, 4),
            "since_s": round(self.reported_s, 1),
        }


def median_slope(t: np.ndarray, y: np.ndarray) -> float:
    """Theil-Sen slope (median pairwise slope) in MB/min, without its interval."""
    i, j = _pairs(len(t))
    return float(np.median((y[j] - y[i]) / (t[j] - t[i]))) * PER_MIN


class _PairTable:
    """The index pairs i < j of n points, ordered by j, for the largest n asked so far.

    In that order the first n(n-1)/2 pairs of any larger table are exactly n's, so one
    table serves every n below it as a view: the detector asks for every n from a few
    points up to its lookback's (and any n again after a cut), and a table per n held
    some 2.5 MB on a master (8 n(n-1) B each; bench ``self_rss_slope_mb_per_hour``), the
    one table 75 kB at the default 98 points.
    """

    def __init__(self) -> None:
        self.n = 0
        self.i = self.j = np.empty(0, dtype=np.intp)

    def __call__(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self.n:
            j, i = np.tril_indices(n, -1)  # rows j ascending, each with its i < j
            i.flags.writeable = j.flags.writeable = False
            self.n, self.i, self.j = n, i, j
        m = n * (n - 1) // 2
        return self.i[:m], self.j[:m]


_pairs = _PairTable()


def _mann_kendall_rising(t: np.ndarray, y: np.ndarray) -> float:
    """One-sided p-value that ``y`` rises with ``t`` (1.0 when it does not vary)."""
    if np.ptp(y) == 0:
        return 1.0
    tau, p_two = kendalltau(t, y)
    if not math.isfinite(tau) or not math.isfinite(p_two):
        return 1.0
    return float(p_two / 2 if tau > 0 else 1 - p_two / 2)


def full_trend(
    t: np.ndarray,
    y: np.ndarray,
    alpha: float,
    needed_slope: float,
    scale_s: float,
    sustain: float = 0.5,
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
        slope=float(res.slope) * PER_MIN,
        ci_low=float(res.low_slope) * PER_MIN,
        ci_high=float(res.high_slope) * PER_MIN,
        confidence=confidence,
        p_value=_mann_kendall_rising(t, y),
        older_slope=median_slope(t[:half], y[:half]),
        recent_slope=median_slope(t[n - half :], y[n - half :]),
        needed_slope=needed_slope,
        alpha=alpha,
        below_peak_mb=float(y.max() - y[-1]) / MB,
        sustain=sustain,
    )


# --- scales and thresholds ------------------------------------------------------------


def min_points(settings: LeakDetection) -> int:
    """Fewest envelope points a trend is judged on."""
    return max(settings.min_windows, 2 * MIN_HALF)


def shortest_scale(settings: LeakDetection) -> float:
    """The shortest span judged: ``shortest_share`` of the lookback, and enough windows."""
    return max(
        settings.lookback_s * settings.shortest_share, min_points(settings) * settings.window_s
    )


def scales(settings: LeakDetection) -> list[float]:
    """The nominal scales, longest first: the lookback, then each SCALE_STEP of the last."""
    shortest = shortest_scale(settings)
    out = [float(settings.lookback_s)]
    while out[-1] * SCALE_STEP >= shortest:
        out.append(out[-1] * SCALE_STEP)
    return out


def needed_slope(settings: LeakDetection, scale_s: float) -> float:
    """MB/min a leak needs at a scale: the minimum rise above the creep, and the minimum slope."""
    rise = settings.creep_mb_per_min + settings.min_rise_mb * 60 / scale_s
    return max(settings.min_slope_mb_per_min, rise)


def required_rise_mb(settings: LeakDetection) -> float:
    """The least total rise a leak must make (at every scale; at long ones the slope asks more)."""
    return settings.min_rise_mb


def on_run_clock(settings: LeakDetection, factor: float, interval_s: float) -> LeakDetection:
    """The settings for a run shortened to ``factor`` of its scenario's configured length.

    Times (warm-up, window, lookback, clearing hold) shrink by the factor and
    the rates (minimum slope, creep) grow by it, so a short run (``--quick``,
    tests) is judged on a faster clock but needs the same rise in MB. A window is
    never shorter than the sampling interval; ``factor`` >= 1 leaves the
    settings as they are.
    """
    if factor >= 1:
        return settings
    f = max(factor, 0.01)
    window = max(settings.window_s * f, interval_s)
    lookback = max(settings.lookback_s * f, window * min_points(settings))
    faster = settings.lookback_s / lookback  # rates grow as the clock runs faster
    return dataclasses.replace(
        settings,
        warmup_s=settings.warmup_s * f,
        window_s=window,
        lookback_s=lookback,
        min_slope_mb_per_min=settings.min_slope_mb_per_min * faster,
        creep_mb_per_min=settings.creep_mb_per_min * faster,
        clear_hold_s=settings.clear_hold_s * f,
    )
