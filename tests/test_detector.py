"""The online leak detector on constructed series (pure and fast).

Every series is sampled once a second, like the monitor at its default
interval, with the shipped ``monitor.leak_detection`` settings: RSS of 300 MB,
plus GC-like sawtooth (4 MB every 3 s) and Gaussian noise (0.3 MB) unless a
test says otherwise. A leak needs a total rise of 3.2 MB (0.4 MB/min over
480 s) at every scale, over at least 60 s (an eighth of the lookback), confirmed on 3
consecutive windows; the delay bounds below are the benchmark goals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from common.config import load_config
from monitors.leak import (
    CLEAR,
    LEAK,
    MB,
    WARMUP,
    LeakDetector,
    judge,
    needed_slope,
    on_run_clock,
    scales,
)

SETTINGS = load_config().monitor.leak_detection
Shape = Callable[[float], float]  # seconds -> MB above the base


def series(
    shape: Shape,
    seconds: int,
    *,
    seed: int = 0,
    noise_mb: float = 0.3,
    saw_mb: float = 4.0,
    saw_period_s: float = 3.0,
) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(seconds):
        t = float(i)
        mb = 300 + shape(t) + saw_mb * ((t % saw_period_s) / saw_period_s)
        out.append((t, (mb + rng.normal(0, noise_mb)) * MB))
    return out


def events(points: list[tuple[float, float]]) -> list[tuple[float, str, str]]:
    det = LeakDetector(SETTINGS, start=0.0)
    out = []
    for t, v in points:
        verdict = det.add(t, v)
        if verdict.changed:
            out.append((t, verdict.changed, verdict.reason))
    return out


def leak(rate_mb_min: float, start_s: float) -> Shape:
    return lambda t: max(0.0, t - start_s) * rate_mb_min / 60


def first(evs: list[tuple[float, str, str]], kind: str) -> float | None:
    return next((t for t, k, _ in evs if k == kind), None)


# --- no leak ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_noise_alone_is_no_leak(seed: int) -> None:
    assert events(series(lambda t: 0.0, 900, seed=seed, noise_mb=1.0)) == []


@pytest.mark.parametrize(
    ("amplitude_mb", "period_s"),
    [(10, 12), (15, 30), (10, 45), (8, 60)],
    ids=["gc-12s", "30s", "45s", "60s"],
)
def test_sawtooth_without_growth_is_no_leak(amplitude_mb: float, period_s: float) -> None:
    """Sawtooth that empties within one shortest span (60 s) never rises over a whole span."""
    pts = series(lambda t: 0.0, 900, saw_mb=amplitude_mb, saw_period_s=period_s)
    assert events(pts) == []


@pytest.mark.parametrize(
    "shape",
    [
        # fast growth, then slower, then flat (the reference service's own warm-up shape)
        lambda t: 40 * (1 - np.exp(-t / 5)) + 3 * (1 - np.exp(-t / 90)),
        lambda t: 40 * (1 - np.exp(-t / 5)) + 5 * (1 - np.exp(-t / 30)),
        # a cache filled at a steady rate that plateaus within the first shortest span
        lambda t: 50 * min(t, 45) / 45,
        lambda t: 50 * min(t, 60) / 60,
    ],
    ids=["warmup-slow-tail", "warmup-saturating", "fill-45s", "fill-60s"],
)
@pytest.mark.parametrize("seed", range(2))
def test_cache_warmup_that_plateaus_is_no_leak(shape: Shape, seed: int) -> None:
    assert events(series(shape, 900, seed=seed)) == []


@pytest.mark.parametrize("at_s", [100, 200, 400])
def test_a_step_is_no_leak(at_s: float) -> None:
    """One allocation kept for good: 30 MB once, flat before and after."""
    assert events(series(lambda t: 30.0 if t >= at_s else 0.0, 900)) == []


# --- leaks ------------------------------------------------------------------------

# rate MB/min -> detected within this many seconds of the leak's start (the benchmark goals)
BOUNDS = {0.5: 600, 1.0: 300, 2.0: 120, 5.0: 120}


@pytest.mark.parametrize("rate", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(3))
def test_leak_is_detected_within_its_bound(rate: float, seed: int) -> None:
    start = 60.0  # after the warm-up, like a drip into a running service
    bound = BOUNDS[rate]
    pts = series(leak(rate, start), int(start + bound + 30), seed=seed)
    evs = events(pts)
    detected = first(evs, "leak_detected")
    assert detected is not None, f"{rate} MB/min not detected within {bound} s: {evs}"
    delay = detected - start
    assert 0 < delay <= bound, (rate, delay)
    assert first(evs, "leak_cleared") is None


def test_a_leak_from_the_start_is_judged_after_the_warmup() -> None:
    evs = events(series(leak(2.0, 0.0), 200))
    detected = first(evs, "leak_detected")
    assert detected is not None and SETTINGS.warmup_s + 60 <= detected <= 140


def test_detection_reports_the_rate_with_its_interval() -> None:
    det = LeakDetector(SETTINGS, start=0.0)
    for t, v in series(leak(5.0, 60.0), 200):
        verdict = det.add(t, v)
        if verdict.changed:
            break
    assert verdict.state == LEAK and verdict.trend is not None
    tr = verdict.trend
    assert tr.ci_low <= 5.0 <= tr.ci_high and 4.0 <= tr.slope <= 6.0
    assert tr.p_value < tr.alpha and tr.confidence == pytest.approx(1 - 2 * tr.alpha)
    detail = tr.as_detail()
    assert set(detail) >= {"slope_mb_min", "ci_low_mb_min", "ci_high_mb_min", "p_value"}


def test_cleared_when_memory_is_given_back() -> None:
    shape: Shape = lambda t: (t - 60) * 5 / 60 if 60 <= t < 300 else 0.0  # noqa: E731
    evs = events(series(shape, 420))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"]
    cleared = first(evs, "leak_cleared")
    assert cleared is not None and 300 < cleared <= 315
    assert "below its peak" in evs[1][2]


def test_cleared_when_the_growth_stops() -> None:
    shape: Shape = lambda t: (min(t, 300) - 60) * 5 / 60 if t >= 60 else 0.0  # noqa: E731
    evs = events(series(shape, 600))
    assert [k for _, k, _ in evs] == ["leak_detected", "leak_cleared"]
    cleared = first(evs, "leak_cleared")
    # no new high for twice the span that called it (at most the lookback)
    assert cleared is not None and 300 < cleared <= 300 + SETTINGS.lookback_s
    assert "no new high" in evs[1][2]


def test_states_and_missing_readings() -> None:
    det = LeakDetector(SETTINGS, start=0.0)
    assert det.add(0.0, 100 * MB).state == WARMUP
    for i in range(1, 200):
        # every other reading missing: the clock still runs, windows still close
        verdict = det.add(float(i), None if i % 2 else 100 * MB)
    assert verdict.state == CLEAR and verdict.slope_mb_min == pytest.approx(0.0)
    assert len(det.envelope) >= SETTINGS.min_windows


# --- the pieces ---------------------------------------------------------------------


def test_scales_and_needed_slopes() -> None:
    sc = scales(SETTINGS)
    assert sc[0] == SETTINGS.lookback_s
    assert sc[-1] >= SETTINGS.lookback_s / 8 > sc[-1] * 0.9
    assert sc[-1] >= SETTINGS.min_windows * SETTINGS.window_s
    rises = {round(needed_slope(SETTINGS, s) * s / 60, 6) for s in sc}
    assert rises == {round(SETTINGS.min_slope_mb_per_min * SETTINGS.lookback_s / 60, 6)}


def test_judge_needs_min_windows() -> None:
    env = [(5.0 * i, 100.0 * MB + i * MB) for i in range(SETTINGS.min_windows - 1)]
    j = judge(env, SETTINGS)
    assert j.slope is None and j.rising is None


def test_run_clock_keeps_the_required_rise() -> None:
    quick = on_run_clock(SETTINGS, 0.2, interval_s=1.0)
    assert quick.warmup_s == pytest.approx(SETTINGS.warmup_s * 0.2)
    assert quick.window_s == pytest.approx(1.0)
    assert quick.lookback_s == pytest.approx(SETTINGS.lookback_s * 0.2)
    rise = SETTINGS.min_slope_mb_per_min * SETTINGS.lookback_s
    assert quick.min_slope_mb_per_min * quick.lookback_s == pytest.approx(rise)
    assert on_run_clock(SETTINGS, 1.5, 1.0) is SETTINGS
    # the window is never shorter than the sampling interval
    assert on_run_clock(SETTINGS, 0.05, interval_s=0.5).window_s == 0.5


def test_a_quick_runs_leak_is_caught_on_its_clock() -> None:
    """memory_leak at --quick (36 s): 7 s baseline, 18 s of 30 MB/min, then reset."""
    quick = on_run_clock(SETTINGS, 0.2, interval_s=1.0)
    det = LeakDetector(dataclasses.replace(quick), start=0.0)
    shape = leak(30.0, 7.0)
    found = None
    for t, v in series(lambda t: shape(t) if t < 25 else 0.0, 36, saw_mb=0.5):
        if det.add(t, v).changed == "leak_detected":
            found = t
    assert found is not None and 7 < found < 25
