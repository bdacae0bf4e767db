"""Online leak detection on the lower envelope of the target's memory.

Pure: no I/O, no clock. Feed it samples in time order with
:meth:`LeakDetector.add`; after every sample it answers a :class:`LeakVerdict`
(state, current slope, and the :class:`LeakEvent` s of that sample: a leak
called or cleared). At the end of a run :meth:`LeakDetector.final_verdict`
gives the :class:`FinalVerdict` and :attr:`LeakDetector.episodes` every
:class:`Episode` (a leak called and maybe cleared, a step, a growth that
ended). :func:`replay` runs a detector over the rows of a run's
``memory_samples.csv`` and gives the same final verdict as the monitor did.

The API, in short::

    det = LeakDetector(settings)              # settings: common.config.LeakDetection
    value = judged_bytes(rss, tiers)          # RSS less each tier's bytes up to its limit
    verdict = det.add(t, value, tiers)        # tiers: {name: TierReading(bytes, limit_bytes)}
    verdict.state, verdict.slope_mb_min, verdict.events
    det.episodes                              # [Episode(kind, series, called_at, cleared_at, ...)]
    final = det.final_verdict()               # FinalVerdict(verdict, reason, slope, CI, ...)
    final.as_dict()                           # what the monitor writes to leak_verdict.json
    replay(rows_or_dataframe, settings)       # the same FinalVerdict from memory_samples.csv

``verdict.trend`` and ``det.detected_at`` are those of the leak called now (the
memory series', else a tier's). An :class:`Episode` has ``kind`` "trend" (a
leak called; ``ended`` "released" when memory was given back), "plateau" (a
leak called whose growth then stopped: ``ended`` "slowed") or "step" (a level
shift of ``step_mb``, a finding, not a leak), ``series`` ("memory" or a tier),
``called_at``/``cleared_at`` on the samples' clock, and the slope and interval
of the scale that called it. :class:`FinalVerdict` has ``verdict`` ("leak", "no
leak", "not judged"), a one-line ``reason``, the calling scale's slope and
interval, ``called_at``, per-tier :class:`TierFinding` s, which tiers were
judged against a limit and which were trusted (``tiers_note``), the episodes,
and the settings it ran with.

What it judges
==============

- **The memory series** (series ``"memory"``): what :func:`judged_bytes` makes
  of a sample, the target's RSS less the bytes the target accounts to its
  tiers (caches), each tier counted **only up to its** ``limit_bytes``. A
  cache that fills to its limit is memory the target knows about; bytes above
  the limit are judged like memory nobody accounts for. A tier reported
  without a limit is subtracted whole: its tiers are *trusted*, and the final
  verdict says so.
- **Each tier with a limit** (series named after the tier): its bytes above
  the limit, ``max(0, bytes - limit_bytes)``, judged by the same rules. A
  cache whose eviction is broken grows past its limit and never shrinks; the
  finding names the tier ("conversations: +3.0 MB/min past its 8 MB limit").

How a series is judged
======================

With the settings of ``monitor.leak_detection`` (see
``stress_test_config.yml``, where each one is explained). R below is
``min_rise_mb``, the least rise a leak must make:

1. **Warm-up.** Samples in the first ``warmup_s`` seconds are ignored.
2. **Lower envelope.** Time is cut into windows of ``window_s``; each complete
   window gives one point, its minimum (at the window's middle). Garbage
   collector and allocator sawtooth faster than a window rides *above* this
   envelope. The points of the last ``lookback_s`` are kept.
3. **Kept level** (:func:`kept_level`). A sawtooth slower than a window (a
   cache or a batch of buffers filled over 20-90 s, then freed at once) is still
   in the envelope. A point counts as *given back* when the envelope later falls
   below it by more than a tolerance (:data:`GIVEBACK_SHARE` of R and
   :data:`GIVEBACK_SIGMAS` noise sigmas); it is lowered to that later level.
   Between two troughs less than a step apart the kept level is the line through
   them. So a sawtooth alone becomes the flat line of its troughs, a leak under a
   sawtooth the line its troughs climb, and growth never given back stays as it
   is. The climb since the newest trough is not judged yet (it is most likely
   memory the sawtooth gives back again) while it is younger than
   :data:`TAIL_FACTOR` times the longest climb that was given back and no higher
   than the highest; the time it took still counts in the span judged.
4. **Change points.** The kept level is cut into segments, each fit by a
   straight line (``ruptures`` binary segmentation, linear model, at least
   :data:`MIN_SEGMENT` points a segment), with a penalty of ``penalty * sigma**2
   * ln(n)``: ``sigma`` the envelope's noise (from the median absolute deviation
   of its differences, so a step or a ramp does not inflate it; at least
   :data:`NOISE_FLOOR_SHARE` of R), n its points. Each cut is one of:

   - a **step**: the two lines disagree at the cut by at least ``step_sigmas``
     sigma *and* at least :data:`STEP_SHARE` of R (a step of +40 MB; a smaller
     jump cannot make a leak's rise by itself);
   - a **bend**: the lines meet (a rate changed, a leak began or slowed).

5. **Where trends are judged.** A trend is judged only from the newest step
   back (never across a step) and never before the *floor* a clearing left
   (below). Bends do not cut: a leak that starts on a flat line is judged across
   its start, as a rise on a longer span. So a step of +40 MB after a warm-up is
   reported as a step (an :class:`Episode` of kind ``step``), not judged as
   the trend "warm-up, then up by 40 MB".

   **Step, staircase, sawtooth.** One step (or two) up is a load that stayed: a
   service that loads a model, an index, a cache once does not keep doing so at
   a steady pace. At least ``staircase_steps`` upward steps in a row, no step
   down among them, at a steady pace (the longest gap between two of them at
   most :data:`STAIR_REGULARITY` times the shortest) and still going (the newest
   step no older than :data:`STAIR_REGULARITY` times the longest gap) are a
   **staircase**, a leak that grows in chunks: the trend is judged across those
   steps, from the start of the tread before the first one. A **sawtooth** has
   no steps at all: its drops are memory given back (step 3), so its kept level
   is its troughs; a leak under it raises them by a little each period (less than
   a step: one trend), a sawtooth alone leaves them flat.
6. **Scales.** Within that span the trend is judged over the last
   ``lookback_s`` and over shorter spans (each :data:`SCALE_STEP` of the
   last), down to ``shortest_share`` of the lookback (and at least
   ``min_windows`` points, at least 8): a leak that started a minute ago fills
   a short scale long before the lookback.
7. **Enough growth.** At a scale of L minutes a leak needs a Theil-Sen slope of
   at least ``creep_mb_per_min + R / L`` (and ``min_slope_mb_per_min``): a rise of
   R above a slow creep, so a short scale cannot mistake a few MB of noise for a
   fast leak, and a long one does not call a service's slow settling (a creep)
   a leak.
8. **The full test** at that scale, all of:

   - **significant**: the Theil-Sen confidence interval
     (``scipy.stats.theilslopes``) lies above 0, and a Mann-Kendall test gives
     p < ``significance / k``, k the number of scales judged (Bonferroni); the
     interval is ``1 - 2 * significance / k``;
   - **sustained**: the slopes of both halves of the scale are at least
     ``sustain`` times the slope of the whole, and the recent half's at least
     ``sustain`` times the older half's (a cache filling ever more slowly has a
     recent half much slower than its older half);
   - **still at its high**: the newest point is within :data:`PEAK_TOLERANCE`
     of the scale's required rise of the scale's highest point.

   A rise that passes on ``confirm`` consecutive judgements (one a window) is
   called a leak (an :class:`Episode` of kind ``trend``).
9. **Cleared on evidence.** A called leak clears when the Theil-Sen slope of
   the *newest segment* (from the newest cut of any kind, or across the steps
   of a staircase that is still going; its last L seconds of judged points at
   most, L the span that called the leak, and at least the shortest span) has
   had the high end of its ``1 - 2 * significance`` confidence interval below
   the slope a leak needs at L, for ``clear_hold_s`` seconds. The question is the
   one that called the leak, asked of the newest data: a filling cache clears as
   its rate falls, a slow creep after a step or a fill does not keep a leak
   alive, and a steady leak does not clear (its interval holds its own rate, at
   least what was needed). The leak's episode becomes a ``plateau``: growth that
   ended. It also clears when the envelope falls :data:`RELEASE_FACTOR` times R
   below the kept level's peak since the call: memory was given back (the
   episode stays a ``trend``, ``ended`` "released"). Either way the clearing
   time becomes the *floor*: a new leak must make the required rise again after
   it, so the growth that was just cleared is not called twice.

Rates are MB per minute with MB = 2**20 bytes, as the reference service counts.
Fixed constants (below) are the ones whose value follows from the method; the
ones a user may tune are settings.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ruptures as rpt
from scipy.stats import kendalltau, theilslopes

from memstress.common.config import Config, LeakDetection
from memstress.common.units import MB

SCALE_STEP = 0.9
"""Each scale is this share of the next longer one: a fine grid, so a leak is
judged soon after it has made the required rise, whatever its rate."""

MIN_HALF = 4
"""Fewest envelope points in each half of a scale (8 points to judge a trend)."""

MIN_SEGMENT = 2
"""Fewest envelope points in a segment: two points already fix a line, so a
step is cut two windows after it happened, before ``confirm`` judgements could
have called the rise across it."""

STEP_SHARE = 1.0
"""A cut is a step only when its jump is at least this share of the rise a leak
needs: a smaller jump cannot by itself make a leak's rise, and judging across it
keeps a leak with a hiccup one trend (and a leak under a sawtooth, whose kept
level rises by a little each period, one trend)."""

NOISE_FLOOR_SHARE = 0.125
"""Change points take the envelope's noise as at least this share of the required
rise: finer wiggles (an allocator's, or what a sawtooth leaves under the give-back
tolerance) are not worth a segment of their own."""

GIVEBACK_SHARE = 0.25
"""Memory counts as given back when the series later falls below it by at least
this share of the required rise ..."""

GIVEBACK_SIGMAS = 4.0
"""... and by at least this many noise sigmas (noise alone is not memory given back)."""

TAIL_FACTOR = 1.5
"""After memory was given back, the climb since is not judged while it is younger
than this many times the longest climb that was given back (capped at half the
lookback) and no higher than this many times the highest: a sawtooth's next
climb is memory it will most likely give back too (a leak under it makes each
climb a little higher than the last)."""

STAIR_REGULARITY = 2.0
"""A staircase's steps come at a steady pace: the longest gap between two steps
at most this many times the shortest, and the newest step no older than this
many longest gaps."""

PEAK_TOLERANCE = 0.5
"""The newest point may lie at most this share of the required rise below the scale's peak."""

RELEASE_FACTOR = 2.0
"""A called leak clears when the envelope falls this many required rises below its peak."""

VERDICT_FILE = "leak_verdict.json"
"""The file in the run folder the monitor writes :meth:`FinalVerdict.as_dict` to at the end."""

MEMORY = "memory"
"""Name of the main series: RSS less what the tiers account for up to their limits."""

WARMUP, CLEAR, LEAK = "warmup", "clear", "leak"
TREND, STEP, PLATEAU = "trend", "step", "plateau"
LEAK_VERDICT, NO_LEAK, NOT_JUDGED = "leak", "no leak", "not judged"

_PER_MIN = 60.0 / MB  # bytes per second -> MB per minute


# --- input ------------------------------------------------------------------------------


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


# --- the trend test ---------------------------------------------------------------------


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
    sustain: float = 0.5  # the share each half's slope must keep (settings.sustain)

    @property
    def rise_mb(self) -> float:
        """The total rise a leak needs at this scale (R and the creep over the scale)."""
        return self.needed_slope * self.scale_s / 60

    @property
    def rising(self) -> bool:
        """The leak rule at this scale (module docstring, steps 7 and 8)."""
        k = self.sustain
        steady = (
            self.older_slope >= k * self.slope
            and self.recent_slope >= k * self.slope
            and self.recent_slope >= k * self.older_slope
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
        sustain=sustain,
    )


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


# --- change points ----------------------------------------------------------------------


def noise_mb(y_mb: np.ndarray) -> float:
    """The envelope's noise (MB): robust sigma of its differences, over sqrt 2.

    The median absolute deviation ignores the few differences a step or a bend
    makes, and centring on the median difference ignores a steady slope.
    """
    if len(y_mb) < 3:
        return 0.0
    d = np.diff(y_mb)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


@dataclass(frozen=True)
class Cut:
    """A change point of the envelope: ``index`` is the first point after it."""

    index: int
    time: float  # halfway between the points either side
    jump_mb: float  # the newer line minus the older one, at ``time``
    step: bool  # a level shift (else a bend: the lines meet)


def _line(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y over t; flat through the point when alone."""
    if len(t) < 2:
        return 0.0, float(y[0])
    slope, intercept = np.polyfit(t, y, 1)
    return float(slope), float(intercept)


class LineCost(rpt.base.BaseCost):
    """ruptures cost of a segment: squared residuals of its least-squares line.

    The same cost as ruptures' ``CostLinear`` on the covariates (t, 1), from
    prefix sums in constant time per segment: ``CostLinear`` solves a least
    squares problem for each of the thousands of segments binary segmentation
    tries on every judgement. ``fit`` takes a (n, 2) array of (t, y).
    """

    model = "line"
    min_size = MIN_SEGMENT

    def fit(self, signal: np.ndarray) -> LineCost:
        self.signal = signal
        t, y = signal[:, 0], signal[:, 1]
        zero = np.zeros(1)
        self._sums = [
            np.concatenate([zero, np.cumsum(v)])
            for v in (np.ones_like(t), t, y, t * t, t * y, y * y)
        ]
        return self

    def error(self, start: int, end: int) -> float:
        if end - start < self.min_size:
            raise rpt.exceptions.NotEnoughPoints
        n, st, sy, stt, sty, syy = (c[end] - c[start] for c in self._sums)
        var_t = stt - st * st / n
        var_y = syy - sy * sy / n
        cov = sty - st * sy / n
        return float(max(0.0, var_y - (cov * cov / var_t if var_t > 0 else 0.0)))


def cuts(
    t: np.ndarray, y_mb: np.ndarray, settings: LeakDetection, noise: float | None = None
) -> tuple[list[Cut], float]:
    """The change points of a series (times in s, values in MB), oldest first, and its noise.

    ``noise``: the series' noise in MB when the caller knows it better (the raw
    envelope's, for its kept level); else :func:`noise_mb` of the series.
    """
    n = len(t)
    floor = NOISE_FLOOR_SHARE * required_rise_mb(settings)
    sigma = max(noise_mb(y_mb) if noise is None else noise, floor)
    if n < 2 * MIN_SEGMENT:
        return [], sigma
    x = np.column_stack([(t - t[0]) / settings.window_s, y_mb])
    algo = rpt.Binseg(custom_cost=LineCost(), min_size=MIN_SEGMENT, jump=1).fit(x)
    ends = [int(b) for b in algo.predict(pen=settings.penalty * sigma**2 * math.log(n))]
    starts = [0, *ends[:-1]]
    step_mb = max(settings.step_sigmas * sigma, STEP_SHARE * required_rise_mb(settings))
    out = []
    near = 3 * min_points(settings)  # fit each side near the cut: a long segment may curve
    for k in range(1, len(starts)):
        a, i, b = starts[k - 1], starts[k], ends[k]
        a = max(a, i - near)
        b = min(b, i + near)
        at = (t[i - 1] + t[i]) / 2
        s1, c1 = _line(t[a:i], y_mb[a:i])
        s2, c2 = _line(t[i:b], y_mb[i:b])
        jump = (s2 * at + c2) - (s1 * at + c1)
        # Lines fit to a curve (a fast fill) disagree at their bend by about what the curve
        # grows in a window or two: that is no level shift.
        bend_mb = 2 * settings.window_s * max(abs(s1), abs(s2))
        out.append(Cut(i, float(at), float(jump), abs(jump) >= max(step_mb, bend_mb)))
    return out, sigma


@dataclass(frozen=True)
class Kept:
    """The envelope less the memory it gave back later: what the target kept (MB)."""

    values: np.ndarray  # each point at most what the series later fell back to (plus noise)
    settled: int  # points from this index on are a climb not given back *yet* (len: none)
    givebacks: int  # how many times the series gave memory back
    longest_climb_s: float  # the longest climb that was given back


def kept_level(t: np.ndarray, y_mb: np.ndarray, settings: LeakDetection, sigma: float) -> Kept:
    """The kept level of an envelope (times in s, values in MB), see the module docstring.

    A point counts as given back when the series later falls below it by more
    than ``tol`` (:data:`GIVEBACK_SHARE` of the required rise and
    :data:`GIVEBACK_SIGMAS` noise sigmas); it is lowered to that later level plus
    ``tol``. A sawtooth of any period becomes its troughs' level; a leak under it
    the rise of its troughs; growth that is never given back stays as it is.
    """
    n = len(y_mb)
    tol = max(GIVEBACK_SIGMAS * sigma, GIVEBACK_SHARE * required_rise_mb(settings))
    later = np.append(np.minimum.accumulate(y_mb[::-1])[::-1][1:], np.inf)  # min of what follows
    given = y_mb > later + tol
    values = np.minimum(y_mb, later + tol)
    troughs = np.nonzero(given[:-1] & ~given[1:])[0] + 1
    if troughs.size == 0:
        return Kept(values, n, 0, 0.0)
    longest = highest = 0.0
    for tr in troughs:
        # The climb that was given back began at the last point before it no higher than
        # where it fell (a sawtooth: about one period; noise: a window or two).
        lows = np.nonzero(y_mb[:tr] <= y_mb[tr] + tol)[0]
        began = int(lows[-1]) if lows.size else 0
        longest = max(longest, float(t[tr] - t[began]))
        highest = max(highest, float(y_mb[began:tr].max() - min(y_mb[began], y_mb[tr])))
    # Between two troughs less than a step apart the kept level grows evenly: a leak under a
    # sawtooth is a line through its troughs, not a stair of tiny steps.
    step = STEP_SHARE * required_rise_mb(settings)
    for a, b in itertools.pairwise(troughs):
        if abs(y_mb[b] - y_mb[a]) < step:
            line = np.interp(t[a:b], (t[a], t[b]), (y_mb[a], y_mb[b]))
            values[a:b] = np.minimum(values[a:b], line)
    last = int(troughs[-1])
    young = t[-1] - t[last] < min(TAIL_FACTOR * longest, settings.lookback_s / 2)
    within = y_mb[last:].max() - y_mb[last] <= TAIL_FACTOR * highest
    settled = last + 1 if young and within else n
    return Kept(values, settled, int(troughs.size), longest)


def staircase(steps: list[Cut], now: float, settings: LeakDetection) -> list[Cut]:
    """The newest run of upward steps that makes a staircase still going, else []."""
    run: list[Cut] = []
    for c in reversed(steps):
        if c.jump_mb <= 0:
            break
        run.append(c)
    run.reverse()
    if len(run) < settings.staircase_steps:
        return []
    gaps = np.diff([c.time for c in run])
    if gaps.min() <= 0 or gaps.max() > STAIR_REGULARITY * gaps.min():
        return []
    if now - run[-1].time > STAIR_REGULARITY * gaps.max():
        return []
    return run


# --- judging ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One look at the envelope."""

    slope: float | None  # Theil-Sen slope of the longest scale judged, MB/min
    rising: Trend | None  # the longest scale that passed the full test
    cuts: tuple[Cut, ...] = ()
    first: int = 0  # index of the first point trends were judged from
    newest: int = 0  # index of the first point of the newest segment (clearing evidence)
    stairs: tuple[Cut, ...] = ()  # the steps of a staircase judged across, if any
    kept: tuple[float, ...] = ()  # the kept level of every envelope point, bytes
    settled: int = 0  # kept points before this index are judged (after: a climb not given back yet)


def judge(
    envelope: list[tuple[float, float]], settings: LeakDetection, floor: float = -math.inf
) -> Judgement:
    """Keep, segment, then judge every scale of the newest span with enough points, longest first.

    ``floor``: no trend is judged from points before this time (set by a clearing).
    """
    need = min_points(settings)
    if len(envelope) < need:
        return Judgement(None, None)
    t = np.fromiter((p[0] for p in envelope), float, len(envelope))
    y_mb = np.fromiter((p[1] for p in envelope), float, len(envelope)) / MB
    sigma = noise_mb(y_mb)
    kept = kept_level(t, y_mb, settings, sigma)
    settled = kept.settled
    y = kept.values * MB
    # A climb not given back yet is neither cut nor judged (but the time it took counts).
    found, _ = cuts(t[:settled], kept.values[:settled], settings, sigma)
    steps = [c for c in found if c.step]
    stairs = staircase(steps, float(t[-1]), settings)
    first = int(np.searchsorted(t, floor, side="left"))
    if stairs:
        before = [c.index for c in found if c.index < stairs[0].index]
        first = max(first, before[-1] if before else 0)
    elif steps:
        first = max(first, steps[-1].index)
    newest = max([first, *(c.index for c in found if c not in stairs)])
    base = Judgement(
        None, None, tuple(found), first, newest, tuple(stairs), tuple(y.tolist()), settled
    )
    chosen = [(length, a) for length, a in _spans(t, first, settings) if settled - a >= need]
    if not chosen:  # the newest span is too short for a trend: judged, and not rising
        n = max(settled, 2)
        return dataclasses.replace(base, slope=median_slope(t[:n], y[:n]))
    alpha = settings.significance / len(chosen)
    overall: float | None = None
    for length, start in chosen:
        # A climb not given back yet is not judged, but the span it took counts: a leak
        # under a sawtooth is judged on its troughs, as soon as a leak alone would be.
        ts, ys = t[start:settled], y[start:settled]
        slope = median_slope(ts, ys)
        if overall is None:
            overall = slope
        need_slope = needed_slope(settings, length)
        if slope < need_slope:
            continue
        tr = full_trend(ts, ys, alpha, need_slope, length, settings.sustain)
        if tr.rising:
            return dataclasses.replace(base, slope=overall, rising=tr)
    return dataclasses.replace(base, slope=overall)


def _spans(t: np.ndarray, first: int, settings: LeakDetection) -> list[tuple[float, int]]:
    """(length, first index) of each scale that fits from ``first`` on, longest first."""
    need = min_points(settings)
    shortest = shortest_scale(settings)
    chosen: list[tuple[float, int]] = []
    for scale in scales(settings):
        start = int(np.searchsorted(t, t[-1] - scale + settings.window_s / 2, side="left"))
        start = max(start, first)
        span = float(t[-1] - t[start]) + settings.window_s
        if len(t) - start < need or span < shortest - 1e-9 or (chosen and chosen[-1][1] == start):
            continue
        # Early in a run (or a segment) a scale is not full yet: judge it at the length it has.
        chosen.append((min(scale, span), start))
    return chosen


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


# --- what the detector says -------------------------------------------------------------


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


# --- one series -------------------------------------------------------------------------


class _Series:
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
            why = f"rising {tr.slope:.2f} MB/min over the last {tr.scale_s:.0f} s"
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
        """Whether the newest segment's slope is below the threshold, with its interval."""
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
        threshold = needed_slope(s, window)
        confidence = 1 - 2 * s.significance
        res = theilslopes(y, t, alpha=confidence)
        high = float(res.high_slope) * _PER_MIN
        why = (
            f"the newest {span:.0f} s rise {float(res.slope) * _PER_MIN:.2f} MB/min "
            f"({100 * confidence:.0f}% CI up to {high:.2f}), below {threshold:.2f} MB/min"
        )
        return high < threshold, why

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


# --- the detector -----------------------------------------------------------------------


class LeakDetector:
    """Stateful online detector; one per run (see the module docstring)."""

    def __init__(self, settings: LeakDetection, start: float | None = None) -> None:
        self.settings = settings
        self.start = start
        self._memory: _Series | None = None
        self._tiers: dict[str, _Series] = {}
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

    def _called(self) -> _Series | None:
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
            self._memory = _Series(MEMORY, self.settings, judged_from)
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
                series = self._tiers[name] = _Series(name, self.settings, judged_from)
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
            "tiers_note": _tiers_note(judged, trusted, self._limits),
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
        return FinalVerdict(NO_LEAK, _no_leak_reason(episodes), **common)

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


def _tiers_note(judged: tuple[str, ...], trusted: tuple[str, ...], limits: dict[str, float]) -> str:
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


def _no_leak_reason(episodes: tuple[Episode, ...]) -> str:
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


# --- replaying a run --------------------------------------------------------------------


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
