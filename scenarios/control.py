"""Pure arithmetic of the scenarios' controllers (no Locust, no I/O)."""

from __future__ import annotations

from memstress.common.units import MB


def ballast_step(
    pressure: float,
    target: float,
    *,
    budget_bytes: float,
    tolerance: float,
    gain: float = 0.6,
    max_fraction: float = 0.1,
    min_bytes: float = 1 * MB,
) -> int:
    """Bytes of ballast to add now so the target's pressure reaches ``target`` and stays.

    While the pressure is below ``target`` the step aims a third of the tolerance
    above it (so a threshold *at* the target, like the service's 80 % and 95 %,
    is crossed), proportional to the gap: ``gain`` of the bytes the gap stands
    for, so the pressure approaches from below instead of overshooting; at least
    ``min_bytes``, at most ``max_fraction`` of the budget. Zero at or above the
    target: ballast can only be added, it falls away when its ttl ends.
    """
    if pressure >= target or budget_bytes <= 0:
        return 0
    aim = target + tolerance / 3
    want = gain * (aim - pressure) / 100.0 * budget_bytes
    return int(min(max(want, min_bytes), max_fraction * budget_bytes))


def leak_bytes(rate_mb_per_min: float, seconds: float, *, max_seconds: float = 5.0) -> int:
    """Bytes a leak at ``rate_mb_per_min`` adds over ``seconds`` (bounded after a stall)."""
    if rate_mb_per_min <= 0 or seconds <= 0:
        return 0
    return int(rate_mb_per_min * MB / 60.0 * min(seconds, max_seconds))


def within(pressure: float, target: float, tolerance: float) -> bool:
    """True when ``pressure`` is within ``tolerance`` points of ``target``."""
    return abs(pressure - target) <= tolerance
