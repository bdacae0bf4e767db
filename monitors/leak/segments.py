"""The kept level of an envelope and its change points (steps 3 to 5 of the package's method).

:func:`kept_level` takes away the memory a series gave back later (a sawtooth of
any period becomes its troughs), :func:`cuts` segments what is left with
``ruptures`` into steps and bends, :func:`staircase` finds the upward steps
that come at a steady pace (a leak in chunks), and :func:`rise_start` where a
rise began (its rate is measured from there).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import ruptures as rpt

from memstress.common.config import LeakDetection
from memstress.monitors.leak.trend import min_points, required_rise_mb

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
many longest gaps. Under a sawtooth, two neighbouring pairs of troughs rise at a
leak's pace when the larger rise is at most this many times the smaller."""

# --- the kept level -------------------------------------------------------------------


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
        took = float(t[tr] - t[began]) if lows.size else _climb_before(t, y_mb, int(tr), tol)
        longest = max(longest, took)
        highest = max(highest, float(y_mb[began:tr].max() - min(y_mb[began], y_mb[tr])))
    # Between two troughs the kept level grows evenly: a leak under a sawtooth is a line
    # through its troughs, not a stair. A stair's treads are flat for a whole period and its
    # risers sit right after each trough: cut there, the newest segment was one flat tread,
    # and a leak under a sawtooth slower than a shortest span was cleared as growth that
    # ended, one period after it was called. A rise of a step or more between two troughs
    # stays a step (a load that stayed) unless a neighbouring pair rises about as much: a
    # leak under a large sawtooth raises each trough by its rate times the period (2 MB/min
    # under a 90 s one: 3 MB, more than a step). Waiting for a staircase's three such pairs
    # called those leaks a period late on some phases, and cleared them once in between.
    # (One trough read high, a sample missed right after a drop, lifts the line by less
    # than a step over a period and back: less than the rise a leak needs over that span.)
    step = STEP_SHARE * required_rise_mb(settings)
    rises = np.diff(y_mb[troughs])
    for k, (a, b) in enumerate(itertools.pairwise(troughs)):
        if abs(rises[k]) < step or _steady(rises, k):
            line = np.interp(t[a:b], (t[a], t[b]), (y_mb[a], y_mb[b]))
            values[a:b] = np.minimum(values[a:b], line)
    last = int(troughs[-1])
    young = t[-1] - t[last] < min(TAIL_FACTOR * longest, settings.lookback_s / 2)
    within = y_mb[last:].max() - y_mb[last] <= TAIL_FACTOR * highest
    settled = last + 1 if young and within else n
    return Kept(values, settled, int(troughs.size), longest)


def _steady(rises: np.ndarray, k: int) -> bool:
    """Whether trough pair ``k`` rises about as much as a neighbouring pair (both up, the
    larger at most :data:`STAIR_REGULARITY` times the smaller): a leak's pace under a
    sawtooth, which raises each trough by its rate times the period."""
    r = float(rises[k])
    if r <= 0:
        return False
    for j in (k - 1, k + 1):
        other = float(rises[j]) if 0 <= j < len(rises) else 0.0
        if other > 0 and max(r, other) <= STAIR_REGULARITY * min(r, other):
            return True
    return False


def _climb_before(t: np.ndarray, y_mb: np.ndarray, trough: int, tol: float) -> float:
    """How long a climb given back at ``trough`` took when it began before the first point.

    The envelope begins mid-climb (at the end of the warm-up, or of the lookback): the
    climb took at least the time seen, and, at the rate seen, as long as it takes to
    rise from the trough's level to its top. Taking only the time seen (a climb of 60 s
    seen for its last 10 s) let the sawtooth's next climb be judged a third of the way up,
    across the drop, and called a leak.
    """
    seen = float(t[trough] - t[0])
    top = int(np.argmax(y_mb[:trough]))
    rose = float(y_mb[top] - y_mb[0])
    if top == 0 or rose <= tol:  # no rate to go by: a climb seen for a window or two
        return seen
    to_top = float(y_mb[top] - y_mb[trough]) / rose * float(t[top] - t[0])
    return max(seen, to_top + float(t[trough] - t[top]))


# --- change points --------------------------------------------------------------------


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


def rise_start(t: np.ndarray, kept_mb: np.ndarray, anchor: np.ndarray) -> int:
    """Index of the first anchor at or after the start of a span's rise.

    ``anchor`` marks the points the kept level did not lower (a sawtooth's
    troughs; nearly every point of a series without one): between them the kept
    level is only a line drawn from trough to trough, and the line across the
    start of a leak mixes flat time with the leak's. The start is where a
    continuous hinge, flat and then a straight line, fits the anchors best (least
    squares, tried at every point's time); the rise is measured from the first
    anchor at or after it. 0 when there are too few anchors to tell.
    """
    a = np.nonzero(anchor)[0]
    if a.size < 3:
        return 0
    ta, ya = t[a], kept_mb[a]
    taus = t[t < ta[-2]]  # at least two anchors after the hinge
    if taus.size == 0:
        return 0
    x = np.maximum(0.0, ta[None, :] - taus[:, None])  # (tau, anchor)
    n = float(a.size)
    sx, sxx = x.sum(axis=1), (x * x).sum(axis=1)
    sy, sxy, syy = float(ya.sum()), x @ ya, float(ya @ ya)
    var_x = sxx - sx * sx / n
    cov = sxy - sx * sy / n
    sse = (syy - sy * sy / n) - np.where(var_x > 0, cov * cov / np.where(var_x > 0, var_x, 1), 0)
    best = float(taus[int(np.argmin(sse))])  # the earliest of equal fits: the plain line first
    later = a[ta >= best]
    return int(later[0]) if later.size else 0


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
