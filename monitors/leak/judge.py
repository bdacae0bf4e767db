"""One look at an envelope: keep, segment, judge every scale (the method's steps 3 to 8)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from memstress.common.config import LeakDetection
from memstress.common.units import MB
from memstress.monitors.leak.segments import (
    Cut,
    cuts,
    kept_level,
    noise_mb,
    rise_start,
    staircase,
)
from memstress.monitors.leak.trend import (
    MIN_HALF,
    Trend,
    full_trend,
    median_slope,
    min_points,
    needed_slope,
    scales,
    shortest_scale,
)


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
    if np.ptp(y_mb) == 0:
        # A level that never moved (a tier at or under its limit: 0 bytes past it) has
        # no cut, gives nothing back and has slope 0: what the full look finds, for free.
        first = int(np.searchsorted(t, floor, side="left"))
        kept_flat = tuple((y_mb * MB).tolist())
        return Judgement(0.0, None, (), first, first, (), kept_flat, len(t))
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
            # The scale may begin before the leak did: report the rate since the rise began.
            # (A staircase is judged from the tread before its first step already, and a
            # hinge would start it on a later tread: a span of whole steps is its pace.)
            anchor = kept.values[start:settled] >= y_mb[start:settled] - 1e-9
            i = 0 if stairs else rise_start(ts, kept.values[start:settled], anchor)
            if 0 < i <= len(ts) - MIN_HALF:
                tr = tr.since(ts[i:], ys[i:], settings.window_s)
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
