"""The online leak detector on replayed series (pure and fast).

Series come from :mod:`tests.leak_series`: sampled once a second like the
monitor at its default interval, RSS of 300 MB plus GC-like sawtooth (4 MB
every 3 s) and Gaussian noise (0.3 MB) unless a test says otherwise, judged
with the shipped ``monitor.leak_detection`` settings. A leak needs a total rise
of 3.2 MB (0.4 MB/min over 480 s) at every scale, over at least 60 s,
confirmed on 3 consecutive windows.

Seeds: every test here judges on ``JUDGING_SEEDS``; the settings were tuned
on ``TUNING_SEEDS`` (see tests/leak_series.py), which no test uses.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memstress.common.config import load_config
from memstress.monitors.leak import (
    CLEAR,
    LEAK,
    LEAK_VERDICT,
    MB,
    MEMORY,
    NO_LEAK,
    NOT_JUDGED,
    PLATEAU,
    STEP,
    TREND,
    WARMUP,
    FinalVerdict,
    LeakDetector,
    TierReading,
    cuts,
    judge,
    judged_bytes,
    kept_level,
    needed_slope,
    noise_mb,
    on_run_clock,
    replay,
    rise_start,
    scales,
    shortest_scale,
)
from tests import leak_series as ls
from tests.leak_series import JUDGING_SEEDS, TUNING_SEEDS, Shape, series

SETTINGS = load_config().monitor.leak_detection
SEEDS = JUDGING_SEEDS
Points = list[tuple[float, float]]
Events = list[tuple[float, str, str]]


def run(points: Points, settings: object = SETTINGS) -> tuple[Events, LeakDetector]:
    det = LeakDetector(settings, start=0.0)  # type: ignore[arg-type]
    out = []
    for t, v in points:
        for e in det.add(t, v).events:
            out.append((t, e.kind, e.reason))
    return out, det


def events(points: Points) -> Events:
    return run(points)[0]


def first(evs: Events, kind: str) -> float | None:
    return next((t for t, k, _ in evs if k == kind), None)


def test_tuning_and_judging_seeds_are_apart() -> None:
    assert not set(TUNING_SEEDS) & set(JUDGING_SEEDS)


# --- no leak ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_noise_alone_is_no_leak(seed: int) -> None:
    evs, det = run(series(ls.flat, 900, seed=seed, noise_mb=1.0))
    assert evs == []
    assert det.final_verdict().verdict == NO_LEAK


@pytest.mark.parametrize(
    ("amplitude_mb", "period_s"),
    [(10, 12), (15, 30), (10, 45), (8, 60), (24, 40)],
    ids=["gc-12s", "30s", "45s", "60s", "24MB-40s"],
)
def test_sawtooth_without_growth_is_no_leak(amplitude_mb: float, period_s: float) -> None:
    """Sawtooth that empties within one shortest span (60 s) never rises over a whole span."""
    pts = series(ls.flat, 900, seed=SEEDS[1], saw_mb=amplitude_mb, saw_period_s=period_s)
    evs, det = run(pts)
    assert evs == []
    final = det.final_verdict()
    assert final.verdict == NO_LEAK, final.reason  # judged, not left "not judged"


@pytest.mark.parametrize(
    "shape",
    [
        ls.warmup(40, 5, 3),  # the reference service's own warm-up shape
        lambda t: 40 * (1 - ls.np.exp(-t / 5)) + 5 * (1 - ls.np.exp(-t / 30)),
        lambda t: 50 * min(t, 45) / 45,  # a cache filled at a steady rate, flat within 60 s
        lambda t: 50 * min(t, 60) / 60,
    ],
    ids=["warmup-slow-tail", "warmup-saturating", "fill-45s", "fill-60s"],
)
def test_cache_warmup_that_plateaus_is_no_leak(shape: Shape) -> None:
    assert events(series(shape, 900, seed=SEEDS[0])) == []


@pytest.mark.parametrize(("at_s", "size_mb"), [(90, 40), (200, 30), (400, 10)])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_step_after_a_warmup_with_creep_after_it_is_a_step_not_a_leak(
    at_s: float, size_mb: float, seed: int
) -> None:
    """The issue's case: warm-up, one allocation kept for good, then a creep of 0.24 MB/min."""
    shape = ls.total(ls.warmup(), ls.step(at_s, size_mb), ls.creep(0.24, at_s))
    evs, det = run(series(shape, int(at_s) + 400, seed=seed))
    assert evs == []
    final = det.final_verdict()
    assert final.verdict == NO_LEAK and "1 step" in final.reason, final.reason
    steps = [e for e in det.episodes if e.kind == STEP]
    assert len(steps) == 1, det.episodes
    assert steps[0].step_mb == pytest.approx(size_mb, abs=3)
    assert abs(steps[0].called_at - at_s) <= SETTINGS.window_s
    assert steps[0].text == f"a step of +{steps[0].step_mb:.1f} MB"


def test_two_steps_are_no_staircase() -> None:
    shape = ls.total(ls.warmup(), ls.stairs(8, 90, 100, count=2))
    evs, det = run(series(shape, 600, seed=SEEDS[2]))
    assert evs == [] and det.final_verdict().verdict == NO_LEAK
    assert sum(e.kind == STEP for e in det.episodes) == 2


# --- growth that ends -------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_mb", "tau_s", "start_s"), [(40, 90, 0), (40, 90, 60), (60, 120, 30)]
)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_saturating_fill_is_a_growth_episode_that_ends(
    size_mb: float, tau_s: float, start_s: float, seed: int
) -> None:
    """Called while it grows fast, cleared within 120 s of its rate falling below 0.4 MB/min."""
    shape = ls.total(ls.warmup(), ls.fill(size_mb, tau_s, start_s))
    below = start_s + ls.fill_rate_below(size_mb, tau_s, SETTINGS.min_slope_mb_per_min)
    evs, det = run(series(shape, int(below) + 300, seed=seed))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"], evs
    called, cleared = first(evs, "leak_detected"), first(evs, "leak_cleared")
    assert called is not None and cleared is not None
    assert called <= start_s + tau_s  # in the fast phase (the rate is above 5 MB/min)
    assert cleared <= below + 120
    final = det.final_verdict()
    assert final.verdict == NO_LEAK and "growth episode" in final.reason
    (ep,) = [e for e in det.episodes if e.kind != STEP]
    assert ep.kind == PLATEAU and ep.ended == "slowed"
    assert (ep.called_at, ep.cleared_at) == (called, cleared)


# --- leaks ------------------------------------------------------------------------

# rate MB/min -> detected within this many seconds of the leak's start (the benchmark goals)
BOUNDS = {0.5: 600, 1.0: 300, 2.0: 120, 5.0: 120, 20.0: 120}

# Detection delays of the detector before change points (commit 3ecb84a), measured on these
# very series (leak from 60 s, judging seeds 0-2): the new one must be no later.
TODAY = {
    0.5: (370, 375, 360),
    1.0: (185, 185, 175),
    2.0: (100, 95, 85),
    5.0: (65, 65, 60),
    20.0: (60, 65, 65),
}


@pytest.mark.parametrize("rate", list(BOUNDS))
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_steady_leak_is_found_no_later_than_before(rate: float, seed: int) -> None:
    start = 60.0  # after the warm-up, like a drip into a running service
    pts = series(ls.leak(rate, start), int(start + BOUNDS[rate] + 30), seed=seed)
    evs, det = run(pts)
    detected = first(evs, "leak_detected")
    assert detected is not None, f"{rate} MB/min not detected within {BOUNDS[rate]} s: {evs}"
    delay = detected - start
    assert 0 < delay <= min(BOUNDS[rate], TODAY[rate][seed]), (rate, delay)
    assert first(evs, "leak_cleared") is None
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT and final.series == MEMORY
    assert final.ci_low_mb_min is not None and final.ci_high_mb_min is not None
    assert final.ci_low_mb_min <= rate <= final.ci_high_mb_min * 1.05
    assert final.called_at == detected


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_leak_right_after_a_step_is_found_as_soon_as_a_leak_alone(seed: int) -> None:
    at = 120.0
    shape = ls.total(ls.warmup(), ls.step(at, 30), ls.leak(2.0, at))
    evs, det = run(series(shape, 400, seed=seed))
    detected = first(evs, "leak_detected")
    assert detected is not None and 60 <= detected - at <= BOUNDS[2.0], evs
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT
    assert final.slope_mb_min is not None and 1.5 <= final.slope_mb_min <= 3.0
    assert [e.kind for e in det.episodes] == [STEP, TREND]


@pytest.mark.parametrize(("size_mb", "every_s"), [(5, 60), (8, 90), (3, 45)])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_staircase_is_a_leak(size_mb: float, every_s: float, seed: int) -> None:
    """Steps at a steady pace, still going: a leak that grows in chunks."""
    start = 100.0
    shape = ls.total(ls.warmup(), ls.stairs(size_mb, every_s, start))
    evs, det = run(series(shape, int(start + 6 * every_s), seed=seed))
    detected = first(evs, "leak_detected")
    assert detected is not None, evs
    assert detected - start <= 3 * every_s + 60
    assert "staircase" in evs[0][2] or size_mb < 3.2  # small chunks: a ramp across them
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT
    if "staircase" in final.reason:
        # Its rate is its pace, over whole steps (not from a later tread, which reads high).
        assert final.slope_mb_min == pytest.approx(size_mb * 60 / every_s, rel=0.1), final


def test_a_staircase_that_stops_is_cleared() -> None:
    shape = ls.total(ls.warmup(), ls.stairs(5, 60, 100, count=5))
    evs, det = run(series(shape, 900, seed=SEEDS[3]))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"], evs
    assert det.final_verdict().verdict == NO_LEAK


def test_a_leak_from_the_start_is_judged_after_the_warmup() -> None:
    evs = events(series(ls.leak(2.0, 0.0), 200))
    detected = first(evs, "leak_detected")
    assert detected is not None and SETTINGS.warmup_s + 60 <= detected <= 140


def test_detection_reports_the_rate_with_its_interval() -> None:
    det = LeakDetector(SETTINGS, start=0.0)
    for t, v in series(ls.leak(5.0, 60.0), 200):
        verdict = det.add(t, v)
        if verdict.events:
            break
    assert verdict.state == LEAK and verdict.trend is not None
    assert verdict.changed == "leak_detected" and verdict.events[0].series == MEMORY
    tr = verdict.trend
    assert tr.ci_low <= 5.0 <= tr.ci_high and 4.0 <= tr.slope <= 6.0
    assert tr.p_value < tr.alpha and tr.confidence == pytest.approx(1 - 2 * tr.alpha)
    detail = tr.as_detail()
    assert set(detail) >= {"slope_mb_min", "ci_low_mb_min", "ci_high_mb_min", "p_value"}


def test_cleared_when_memory_is_given_back() -> None:
    shape: Shape = lambda t: (t - 60) * 5 / 60 if 60 <= t < 300 else 0.0  # noqa: E731
    evs, det = run(series(shape, 420))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"]
    cleared = first(evs, "leak_cleared")
    assert cleared is not None and 300 < cleared <= 315
    assert "below its peak" in evs[1][2]
    (ep,) = det.episodes
    assert ep.kind == TREND and ep.ended == "released" and ep.cleared_at == cleared
    assert det.final_verdict().verdict == NO_LEAK


def test_cleared_on_evidence_when_the_growth_stops_even_with_a_creep() -> None:
    shape = ls.total(lambda t: (min(t, 300) - 60) * 5 / 60 if t >= 60 else 0.0, ls.creep(0.2, 300))
    evs, det = run(series(shape, 600, seed=SEEDS[1]))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"]
    cleared = first(evs, "leak_cleared")
    assert cleared is not None and 300 < cleared <= 300 + 120
    assert "below" in evs[1][2] and "CI" in evs[1][2]
    assert det.episodes[-1].kind == PLATEAU


def test_states_and_missing_readings() -> None:
    det = LeakDetector(SETTINGS, start=0.0)
    assert det.add(0.0, 100 * MB).state == WARMUP
    for i in range(1, 200):
        # every other reading missing: the clock still runs, windows still close
        verdict = det.add(float(i), None if i % 2 else 100 * MB)
    assert verdict.state == CLEAR and verdict.slope_mb_min == pytest.approx(0.0)
    assert len(det.envelope) >= SETTINGS.min_windows


def test_a_run_too_short_is_not_judged() -> None:
    evs, det = run(series(ls.leak(20, 0), 40))
    final = det.final_verdict()
    assert evs == [] and final.verdict == NOT_JUDGED
    assert "envelope windows" in final.reason and "warm-up" in final.reason


# --- under a slow sawtooth, as real targets carry ---------------------------------
#
# Series as bench/leak_target.py's memory: a 4 MB sawtooth taken over 20-50 s and given
# back at once (leak_series.background: period and phase from the seed), little noise.
# The sawtooth's drops are memory given back, not steps: the detector judges the level the
# target keeps (its troughs). Settings tuned on TUNING_SEEDS of these series and on the
# benchmark's dev seeds; judged here on JUDGING_SEEDS.

GOALS = {2.0: 90.0, 1.0: 180.0, 0.5: 420.0}  # issue 18: found within this long of the start


@pytest.mark.parametrize("rate", list(GOALS))
@pytest.mark.parametrize("seed", SEEDS)
def test_a_leak_under_a_slow_sawtooth_is_found_within_its_goal(rate: float, seed: int) -> None:
    start = 60.0
    saw = ls.background(seed)
    pts = series(ls.leak(rate, start), int(start + GOALS[rate] + 30), seed=seed, **saw)
    evs, det = run(pts)
    detected = first(evs, "leak_detected")
    assert detected is not None, (rate, saw, evs)
    assert 0 < detected - start <= GOALS[rate], (rate, saw, evs)
    assert first(evs, "leak_cleared") is None
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT and final.series == MEMORY
    assert final.slope_mb_min == pytest.approx(rate, rel=0.25), final


def test_the_rate_reported_is_the_rate_since_the_leak_began() -> None:
    """The scale that calls a leak may begin in flat time before it: its slope is too low.

    Issue 18's ``leak_slope_error_pct``: the slope reported is measured from the start of
    the rise (under a slow sawtooth, from the first trough after it), within 8 % of the
    rate, and the test's own scale slope stays in the event's detail.
    """
    earlier = []
    for rate in GOALS:
        for seed in SEEDS:
            start = 60.0
            saw = ls.background(seed)
            pts = series(ls.leak(rate, start), int(start + GOALS[rate] + 30), seed=seed, **saw)
            _, det = run(pts)
            tr = det.verdict.trend
            assert tr is not None, (rate, seed)
            assert tr.slope == pytest.approx(rate, rel=0.08), (rate, seed, tr)
            assert tr.ci_low <= tr.slope <= tr.ci_high
            assert tr.rising  # the test is still the scale's own
            detail = tr.as_detail()
            assert detail["since_s"] <= detail["scale_s"]
            assert detail["scale_slope_mb_min"] == pytest.approx(tr.tested_slope, abs=1e-4)
            final = det.final_verdict()
            assert final.slope_mb_min == tr.slope
            earlier.append(tr.reported_s < tr.scale_s)
    assert sum(earlier) >= len(earlier) // 2  # most scales began before the leak


def test_rise_start_is_where_a_flat_line_bends_up() -> None:
    t = np.arange(40, dtype=float) * 5
    y = np.where(t < 100, 10.0, 10.0 + (t - 100) / 30)
    assert rise_start(t, y, np.ones(40, bool)) == 20
    # Only troughs are anchors (the kept level between them is a drawn line): the first
    # trough at or after the bend.
    anchor = np.zeros(40, bool)
    anchor[[0, 7, 15, 24, 31, 39]] = True
    assert rise_start(t, y, anchor) == 24
    assert rise_start(t, 10.0 + t / 30, np.ones(40, bool)) == 0  # a line from the start
    assert rise_start(t, y, anchor & (np.arange(40) < 10)) == 0  # too few anchors


@pytest.mark.parametrize("seed", SEEDS)
def test_a_leak_starting_mid_run_under_a_slow_sawtooth(seed: int) -> None:
    start = 240.0
    pts = series(ls.leak(1.0, start), int(start + 210), seed=seed, **ls.background(seed))
    evs, det = run(pts)
    assert [k for _, k, _ in evs] == ["leak_detected"], evs
    assert 0 < evs[0][0] - start <= GOALS[1.0]
    assert det.final_verdict().verdict == LEAK_VERDICT


@pytest.mark.parametrize(
    "shape",
    [
        ls.flat,
        ls.step(120, 20),
        ls.total(ls.warmup(), ls.step(120, 20), ls.creep(0.24, 120)),
    ],
    ids=["flat", "step", "warmup-step-creep"],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_sawtooth_alone_or_with_a_step_raises_no_alarm(shape: Shape, seed: int) -> None:
    evs, det = run(series(shape, 600, seed=seed, **ls.background(seed)))
    assert evs == []
    assert det.final_verdict().verdict == NO_LEAK


@pytest.mark.parametrize("seed", SEEDS)
def test_a_fill_under_a_slow_sawtooth_ends_as_growth_that_ended(seed: int) -> None:
    evs, det = run(series(ls.fill(30, 60), 600, seed=seed, **ls.background(seed)))
    below = ls.fill_rate_below(30, 60, SETTINGS.min_slope_mb_per_min)
    assert [k for _, k, _ in evs] in ([], ["leak_detected", "leak_cleared"]), evs
    cleared = first(evs, "leak_cleared")
    assert cleared is None or cleared <= below + 120
    assert det.final_verdict().verdict == NO_LEAK


@pytest.mark.parametrize("period_s", [60.0, 75.0, 90.0, 120.0, 180.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_large_sawtooth_is_called_at_most_on_its_first_climb(period_s: float, seed: int) -> None:
    """24 MB taken over a period, given back at once, in any phase (the seed's).

    Until memory is first given back a climb longer than the shortest span is a leak of
    8-19 MB/min: it may be called, and is cleared at the drop. After the first drop no
    climb is called, even when the warm-up hid most of the first one (the kept level
    took the climb given back for only the part it saw, and called the next climb
    across the drop: a 60 s sawtooth at 24 MB/min, a 75 s one on most phases).
    """
    saw = {**ls.background(seed), "saw_mb": 24.0, "saw_period_s": period_s}
    pts = series(ls.flat, 600, seed=seed, **saw)
    evs, det = run(pts)
    assert [k for _, k, _ in evs] in ([], ["leak_detected", "leak_cleared"]), evs
    drops = [b for (_, u), (b, v) in itertools.pairwise(pts) if u - v > 12 * MB]
    drop = next(d for d in drops if d > SETTINGS.warmup_s)
    if period_s <= shortest_scale(SETTINGS):  # no climb lasts a whole span
        assert evs == []
    if evs:  # on the first climb, cleared when it gives the memory back
        assert evs[0][0] <= drop < evs[1][0] <= drop + 2 * SETTINGS.window_s, (drop, evs)
        assert "below its peak" in evs[1][2]
    assert det.final_verdict().verdict == NO_LEAK


@pytest.mark.parametrize("phase_s", [10.0 * k for k in range(6)])
def test_a_sawtooth_of_a_shortest_span_is_no_leak_in_any_phase(phase_s: float) -> None:
    """24 MB over 60 s: each climb lasts one shortest span, so none is ever called,
    whatever part of the first climb falls in the warm-up (phase 30 s: its last 10 s)."""
    seed = SEEDS[int(phase_s) // 10 % len(SEEDS)]
    saw = {"saw_mb": 24.0, "saw_period_s": 60.0, "saw_phase_s": phase_s, "noise_mb": 0.1}
    evs, det = run(series(ls.flat, 600, seed=seed, **saw))
    assert evs == []
    assert det.final_verdict().verdict == NO_LEAK


@pytest.mark.parametrize("rate", [1.0, 2.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_leak_under_a_large_sawtooth_is_called_and_held(rate: float, seed: int) -> None:
    """A steady leak under a 24 MB / 90 s sawtooth (a GC-like heap cycle) ends on "leak".

    Judged on JUDGING_SEEDS (0-3), tuned on 100-119. Its troughs rise 1.5 or 3 MB a period.
    The kept level was a stair between troughs further apart than a shortest span (and
    between troughs a step or more apart): cut at each riser, the newest segment was one
    flat tread, and the call was cleared as growth that ended a period later (1 MB/min:
    on all 20 tuning seeds, 2 MB/min: on 18). Now the troughs are a line: called once, held.
    """
    saw = {**ls.background(seed), "saw_mb": 24.0, "saw_period_s": 90.0}
    evs, det = run(series(ls.leak(rate, 60.0), 900, seed=seed, **saw))
    assert [k for _, k, _ in evs] == ["leak_detected"], evs
    assert det.verdict.state == LEAK
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT and final.series == MEMORY, final.reason
    assert final.called_at == evs[0][0]


def test_the_kept_level_of_a_sawtooth_is_its_troughs() -> None:
    """Flat under a sawtooth alone, rising at the leak's rate under a sawtooth that leaks."""
    settings = SETTINGS
    for rate in (0.0, 2.0):
        pts = series(ls.leak(rate, 0.0), 400, seed=SEEDS[0], saw_mb=6, saw_period_s=40, noise_mb=0)
        det = LeakDetector(settings, start=0.0)
        for at, v in pts:
            det.add(at, v)
        env = det.envelope
        t = np.array([p[0] for p in env])
        y = np.array([p[1] for p in env]) / MB
        kept = kept_level(t, y, settings, noise_mb(y))
        assert kept.givebacks >= 8 and 30 <= kept.longest_climb_s <= 45
        assert kept.settled <= len(y)
        k = kept.values[: kept.settled]
        slope = float(np.polyfit(t[: kept.settled], k, 1)[0]) * 60
        assert slope == pytest.approx(rate, abs=0.15), (rate, slope)
        assert np.ptp(y) >= 5  # the raw envelope still carries the sawtooth


# --- tiers ------------------------------------------------------------------------


def tier_run(
    tier_mb: Shape, limit_mb: float | None, seconds: int, seed: int
) -> tuple[Events, LeakDetector]:
    """RSS carries the tier's bytes (plus base, sawtooth, noise); the target reports them."""
    det = LeakDetector(SETTINGS, start=0.0)
    out = []
    limit = None if limit_mb is None else limit_mb * MB
    for t, v in series(tier_mb, seconds, seed=seed):
        tiers = {"conversations": TierReading(tier_mb(t) * MB, limit)}
        for e in det.add(t, judged_bytes(v, tiers), tiers).events:
            out.append((t, e.kind, e.reason))
    return out, det


def past_limit(rate: float, limit_mb: float, fill_s: float = 40.0) -> Shape:
    """Fills to its limit in ``fill_s`` seconds, then keeps growing at ``rate`` MB/min."""
    return lambda t: limit_mb * min(t, fill_s) / fill_s + max(0.0, t - fill_s) * rate / 60


@pytest.mark.parametrize("rate", [2.0, 3.0, 10.0])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_tier_growing_past_its_limit_is_called_naming_the_tier(rate: float, seed: int) -> None:
    crossed = 40.0
    evs, det = tier_run(past_limit(rate, 8.0, crossed), 8.0, 260, seed)
    tier_calls = [(t, r) for t, k, r in evs if k == "leak_detected" and r.startswith("conver")]
    assert tier_calls, evs
    assert tier_calls[0][0] - crossed <= 120
    final = det.final_verdict()
    assert final.verdict == LEAK_VERDICT
    assert det.verdict.state == LEAK and det.verdict.trend is not None  # memory's or the tier's
    assert det.detected_at is not None
    (finding,) = final.tiers
    assert finding.tier == "conversations" and finding.active and finding.limit_mb == 8
    assert finding.slope_mb_min == pytest.approx(rate, rel=0.1)
    assert finding.text == f"conversations: +{finding.slope_mb_min:.1f} MB/min past its 8 MB limit"
    assert final.tiers_judged == ("conversations",) and "8 MB" in final.tiers_note


def test_a_tier_that_fills_to_its_limit_is_no_leak() -> None:
    evs, det = tier_run(lambda t: 8.0 * min(t, 120) / 120, 8.0, 600, SEEDS[2])
    assert evs == [] and det.final_verdict().verdict == NO_LEAK
    assert det.final_verdict().tiers == ()


def test_a_tier_without_a_limit_is_trusted_and_said_so() -> None:
    evs, det = tier_run(past_limit(3.0, 8.0), None, 260, SEEDS[0])
    final = det.final_verdict()
    assert evs == [] and final.verdict == NO_LEAK
    assert final.tiers_trusted == ("conversations",) and "trusted" in final.tiers_note


def test_judged_bytes_subtracts_a_tier_only_up_to_its_limit() -> None:
    tiers = {
        "conversations": TierReading(12 * MB, 8 * MB),
        "vectors": TierReading(5 * MB, 8 * MB),
        "ballast": TierReading(3 * MB, None),
    }
    assert judged_bytes(100 * MB, tiers) == (100 - 8 - 5 - 3) * MB
    assert judged_bytes(None, tiers) is None
    assert tiers["conversations"].over_limit == 4 * MB and tiers["ballast"].over_limit is None


# --- the final verdict and replays ------------------------------------------------


def test_replaying_the_sample_rows_gives_the_same_verdict() -> None:
    """Rows as the monitor writes them to memory_samples.csv (text, empty cells)."""
    shape = past_limit(3.0, 8.0)
    det = LeakDetector(SETTINGS)
    rows = []
    for t, v in series(shape, 260, seed=SEEDS[3]):
        t += 1.7e9  # Unix seconds, as the monitor stamps rows
        tiers = {"conversations": TierReading(shape(t - 1.7e9) * MB, 8 * MB)}
        value = judged_bytes(v, tiers) if int(t) % 17 else None  # a missed stats answer
        det.add(t, value, tiers)
        rows.append(
            {
                "time": str(t),
                "rss_bytes": str(v),
                "judged_bytes": "" if value is None else str(value),
                "conversations_bytes": str(tiers["conversations"].bytes),
                "conversations_limit_bytes": str(8 * MB),
                "vectors_bytes": "",
            }
        )
    online = det.final_verdict()
    again = replay(rows, SETTINGS)
    assert again == online and again.verdict == LEAK_VERDICT
    assert replay(pd.DataFrame(rows), SETTINGS) == online
    assert replay(rows, dataclasses.asdict(SETTINGS)) == online  # leak_verdict.json's settings
    assert replay(rows, load_config()) == online  # a whole config: its leak_detection
    data = json.loads(json.dumps(online.as_dict(), allow_nan=False))
    assert data["verdict"] == "leak" and data["tiers"][0]["tier"] == "conversations"
    assert {e["kind"] for e in data["episodes"]} <= {TREND, STEP, PLATEAU}
    assert data["settings"]["window_s"] == SETTINGS.window_s


# --- recorded real runs ---------------------------------------------------------------
#
# memory_samples.csv of real `python -m bench leak` runs (bench/leak_target.py under the
# baseline scenario's load, 30 runs at once on 2 cores, BENCH_LEAK_SEEDS=dev), cut to the
# columns the detector reads and replayed through replay(). These are dev-seed runs, the
# data the settings were tuned on: regression checks of the whole path on real series, not
# a judgement (the holdout figures are bench/RESULTS.md's).

RUNS = Path(__file__).parent / "fixtures" / "leak_runs"
LEAK_STARTS = {"steady-2mb-s1": 60.5, "tier-1mb-s1": 60.8}  # s from the first sample


def recorded(name: str) -> FinalVerdict:
    return replay(pd.read_csv(RUNS / f"{name}.csv.gz"), SETTINGS)


def test_a_recorded_leak_under_a_sawtooth_is_found_within_its_goal() -> None:
    final = recorded("steady-2mb-s1")  # 2 MB/min from 60 s under a 4 MB, 27 s sawtooth
    assert final.verdict == LEAK_VERDICT and final.series == MEMORY, final.reason
    assert final.called_at is not None
    assert 0 < final.called_at - LEAK_STARTS["steady-2mb-s1"] <= GOALS[2.0]
    assert final.slope_mb_min == pytest.approx(2.0, rel=0.25)


def test_a_recorded_tier_leak_is_named() -> None:
    final = recorded("tier-1mb-s1")  # conversations: at its 6 MB limit, +1 MB/min from 60 s
    assert final.verdict == LEAK_VERDICT, final.reason
    (finding,) = final.tiers
    assert finding.tier == "conversations" and finding.active and finding.limit_mb == 6
    assert 0 < finding.called_at - LEAK_STARTS["tier-1mb-s1"] <= GOALS[1.0]
    assert finding.slope_mb_min == pytest.approx(1.0, rel=0.2)


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("free-step-s1", {STEP}),  # 20 MB once at 120 s, under the 4 MB sawtooth
        # 90 s period, first drop at 53 s: the second climb was called (at 120 s) while the
        # kept level took the first for the 33 s it saw after the warm-up
        ("free-sawtooth-24mb-s1", set()),
        ("free-service-s1", {PLATEAU}),  # the reference service under the same load
    ],
)
def test_recorded_leak_free_runs_end_without_a_leak(name: str, kinds: set[str]) -> None:
    final = recorded(name)
    assert final.verdict == NO_LEAK, final.reason
    assert {e.kind for e in final.episodes} <= kinds, final.episodes
    assert all(e.cleared_at is not None for e in final.episodes)
    assert sum(e.kind == TREND for e in final.episodes) <= 1
    if name == "free-step-s1":
        (step,) = final.episodes
        # 20 MB seen through the 4 MB sawtooth: the lines either side meet the cut mid-climb
        assert step.step_mb is not None and 16 <= step.step_mb <= 22
        assert abs(step.called_at - 120) <= 10


# --- the pieces ---------------------------------------------------------------------


def test_scales_and_needed_slopes() -> None:
    sc = scales(SETTINGS)
    assert sc[0] == SETTINGS.lookback_s
    assert sc[-1] >= SETTINGS.lookback_s * SETTINGS.shortest_share > sc[-1] * 0.9
    assert sc[-1] >= SETTINGS.min_windows * SETTINGS.window_s
    # Over every scale a leak must rise min_rise_mb above the creep, and at least min_slope.
    for s in sc:
        need = needed_slope(SETTINGS, s)
        above = (need - SETTINGS.creep_mb_per_min) * s / 60
        assert need >= SETTINGS.min_slope_mb_per_min
        assert above == pytest.approx(SETTINGS.min_rise_mb) or need == SETTINGS.min_slope_mb_per_min


def test_a_level_that_never_moved_is_judged_without_the_full_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tier at or under its limit is 0 bytes past it on every sample: judged for free.

    The short cut must say what the full look says of a flat level: kept as it
    is, no cut, slope 0; and a detector with such tiers calls what one without
    them calls, at the same times.
    """
    t = np.arange(40, dtype=float) * SETTINGS.window_s
    flat = np.full(40, 7.0)
    kept = kept_level(t, flat, SETTINGS, noise_mb(flat))
    assert kept.settled == 40 and np.array_equal(kept.values, flat)
    assert cuts(t, flat, SETTINGS)[0] == []
    j = judge([(float(x), 7.0 * MB) for x in t], SETTINGS)
    assert j.slope == 0.0 and j.rising is None and j.cuts == () and j.settled == 40
    assert j.kept == (7.0 * MB,) * 40

    judge_module = importlib.import_module("memstress.monitors.leak.judge")  # not the function
    looked: list[int] = []
    full_cuts = judge_module.cuts

    def counted(*a: Any, **k: Any) -> Any:
        looked.append(len(a[0]))
        return full_cuts(*a, **k)

    monkeypatch.setattr(judge_module, "cuts", counted)
    pts = series(ls.leak(2.0, 60.0), 200, seed=SEEDS[0], **ls.background(SEEDS[0]))
    zero = {n: TierReading(0.0, 64 * MB) for n in ("a", "b", "c")}
    plain = LeakDetector(SETTINGS, start=0.0)
    tiered = LeakDetector(SETTINGS, start=0.0)
    said: list[list[tuple[float, str, str]]] = [[], []]
    for tm, v in pts:
        before = len(looked)
        said[0] += [(tm, e.kind, e.series) for e in plain.add(tm, v).events]
        plain_looks = len(looked) - before
        before = len(looked)
        said[1] += [(tm, e.kind, e.series) for e in tiered.add(tm, v, zero).events]
        assert len(looked) - before == plain_looks  # the three flat tiers cost no look
    assert said[0] == said[1] and [k for _, k, _ in said[0]] == ["leak_detected"]


def test_judge_needs_min_windows() -> None:
    env = [(5.0 * i, 100.0 * MB + i * MB) for i in range(SETTINGS.min_windows - 1)]
    j = judge(env, SETTINGS)
    assert j.slope is None and j.rising is None


def test_run_clock_keeps_the_required_rise() -> None:
    quick = on_run_clock(SETTINGS, 0.2, interval_s=1.0)
    assert quick.warmup_s == pytest.approx(SETTINGS.warmup_s * 0.2)
    assert quick.window_s == pytest.approx(1.0)
    assert quick.lookback_s == pytest.approx(SETTINGS.lookback_s * 0.2)
    assert quick.clear_hold_s == pytest.approx(SETTINGS.clear_hold_s * 0.2)
    rise = SETTINGS.min_slope_mb_per_min * SETTINGS.lookback_s
    assert quick.min_slope_mb_per_min * quick.lookback_s == pytest.approx(rise)
    assert quick.creep_mb_per_min == pytest.approx(SETTINGS.creep_mb_per_min / 0.2)
    assert quick.min_rise_mb == SETTINGS.min_rise_mb
    assert on_run_clock(SETTINGS, 1.5, 1.0) is SETTINGS
    # the window is never shorter than the sampling interval
    assert on_run_clock(SETTINGS, 0.05, interval_s=0.5).window_s == 0.5


def test_a_quick_runs_leak_is_caught_on_its_clock() -> None:
    """memory_leak at --quick (36 s): 7 s baseline, 18 s of 30 MB/min, then reset."""
    quick = on_run_clock(SETTINGS, 0.2, interval_s=1.0)
    det = LeakDetector(dataclasses.replace(quick), start=0.0)
    shape = ls.leak(30.0, 7.0)
    found = None
    for t, v in series(lambda t: shape(t) if t < 25 else 0.0, 36, saw_mb=0.5):
        if det.add(t, v).changed == "leak_detected":
            found = t
    assert found is not None and 7 < found < 25


@pytest.mark.parametrize("rate", [1.22, 1.26, 1.3, 0.7])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_leak_near_its_calling_scales_need_is_not_cleared(rate: float, seed: int) -> None:
    """A leak found at a scale whose need it barely passed (1.25 MB/min at 120 s, 0.7 at
    240 s) goes on at the same rate: it must stay called to the end of the run, not be
    cleared as "growth ended" when its estimate dips under that scale's need. A per-request
    leak in a real bench run ended on "no leak" that way; here 1.3 MB/min was cleared with
    one seed before the clearing's hysteresis (CLEAR_SHARE)."""
    start = 60.0
    pts = series(ls.leak(rate, start), 480, seed=seed, **ls.background(seed))
    evs, det = run(pts)
    assert first(evs, "leak_detected") is not None, evs
    assert first(evs, "leak_cleared") is None, evs
    assert det.final_verdict().verdict == LEAK_VERDICT
