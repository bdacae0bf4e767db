"""Realistic memory series for the leak detector's tests and its before/after measurement.

A series is sampled once a second (the monitor's default interval): a base of
300 MB, the shape under test, GC-like sawtooth (4 MB every 3 s) and Gaussian
noise (0.3 MB) unless a caller says otherwise. Shapes are functions of seconds
to MB above the base and add up.

:func:`background` gives the slow sawtooth real targets carry instead (as
``bench/leak_target.py`` does): 4 MB taken over a period of 20-50 s and given
back at once, its period and phase drawn from the seed, with little noise.

Seeds: the detector's settings (``penalty``, ``step_sigmas``, ``clear_hold_s``)
were tuned on seeds from :data:`TUNING_SEEDS` only; the tests judge on
:data:`JUDGING_SEEDS`, which tuning never saw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memstress.common.units import MB

Shape = Callable[[float], float]  # seconds -> MB above the base

TUNING_SEEDS = range(100, 110)
"""Seeds the settings were tuned on (never used by a test)."""

JUDGING_SEEDS = range(0, 4)
"""Seeds the tests judge by."""


def series(
    shape: Shape,
    seconds: int,
    *,
    seed: int = 0,
    noise_mb: float = 0.3,
    saw_mb: float = 4.0,
    saw_period_s: float = 3.0,
    saw_phase_s: float = 0.0,
) -> list[tuple[float, float]]:
    """(t, bytes) once a second for ``seconds``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(seconds):
        t = float(i)
        into = ((t + saw_phase_s) % saw_period_s) / saw_period_s
        mb = 300 + shape(t) + saw_mb * into
        out.append((t, (mb + rng.normal(0, noise_mb)) * MB))
    return out


def background(seed: int) -> dict[str, float]:
    """:func:`series` options for a slow sawtooth: 4 MB over 20-50 s, period and phase by seed."""
    rng = np.random.default_rng(10_000 + seed)
    period = float(rng.uniform(20, 50))
    return {
        "saw_mb": 4.0,
        "saw_period_s": period,
        "saw_phase_s": float(rng.uniform(0, period)),
        "noise_mb": 0.1,
    }


def total(*shapes: Shape) -> Shape:
    return lambda t: sum(s(t) for s in shapes)


def flat(t: float) -> float:
    return 0.0


def warmup(size_mb: float = 30.0, tau_s: float = 8.0, tail_mb: float = 3.0) -> Shape:
    """A service's own warm-up: fast growth, then a slow tail (the old detector's trap)."""
    return lambda t: size_mb * (1 - np.exp(-t / tau_s)) + tail_mb * (1 - np.exp(-t / 90))


def step(at_s: float, size_mb: float) -> Shape:
    return lambda t: size_mb if t >= at_s else 0.0


def creep(rate_mb_min: float, start_s: float) -> Shape:
    return lambda t: max(0.0, t - start_s) * rate_mb_min / 60


leak = creep  # a steady leak is a creep fast enough to call


def fill(size_mb: float, tau_s: float, start_s: float = 0.0) -> Shape:
    """A cache filling to a plateau: ``size * (1 - exp(-(t - start) / tau))``."""
    return lambda t: size_mb * (1 - np.exp(-max(0.0, t - start_s) / tau_s))


def stairs(size_mb: float, every_s: float, start_s: float, count: int = 1000) -> Shape:
    """``size_mb`` more every ``every_s`` from ``start_s`` on (a leak in chunks)."""
    return lambda t: size_mb * min(count, int((t - start_s) // every_s) + 1) if t >= start_s else 0


def fill_rate_below(size_mb: float, tau_s: float, rate_mb_min: float) -> float:
    """Seconds after a fill's start when its rate falls below ``rate_mb_min``."""
    return float(tau_s * np.log(size_mb * 60 / tau_s / rate_mb_min))
