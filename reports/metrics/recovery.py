"""Recovery: how long memory took to come back to its pre-stress level after the stress.

Watched from the start of the recovery stages after the last stress stage until the
cleanup stage begins: the cleanup deletes the run's data, so memory coming back there
is the suite's doing, not the target's recovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from memstress.reports.collect import RunData
from memstress.reports.metrics.base import (
    MB,
    StageSpan,
    col,
    few,
    median,
    rss_series,
)


@dataclass
class RecoveryMetrics:
    measured: bool = False
    stress_end_s: float | None = None
    pre_stress_mb: float | None = None
    tolerance_pct: float = 0.0
    recovered: bool | None = None
    recovery_time_s: float | None = None
    observed_s: float | None = None  # how long memory was watched, stress end to cleanup
    note: str = ""


def recovery_metrics(
    data: RunData, spans: list[StageSpan], t0: float, tol_pct: float, min_observed_s: float = 0.0
) -> RecoveryMetrics:
    m = RecoveryMetrics(tolerance_pct=tol_pct)
    t, rss = rss_series(data.samples)
    if not spans:
        m.note = "no stages.csv: the stress period is unknown"
        return m
    stress = [s for s in spans if s.phase == "stress"]
    if not stress:
        m.note = "no stress stage"
        return m
    last_stress = max(i for i, s in enumerate(spans) if s.phase == "stress")
    after_stress = spans[last_stress + 1 :]
    # The cleanup stage deletes the run's own data: memory that comes back then was
    # taken back by the suite, not given back by the target, so the watch ends there.
    cleanup = next((s.start for s in after_stress if s.params.get("cleanup")), math.inf)
    trailing = [s for s in after_stress if s.phase == "recovery" and s.start < cleanup]
    if not trailing:
        m.note = "no recovery stage between the last stress stage and the cleanup"
        return m
    stress_end = trailing[0].start
    m.stress_end_s = stress_end - t0
    if not len(rss):
        m.note = "no memory samples"
        return m
    first_stress = stress[0].start
    before = rss[t < first_stress]
    m.pre_stress_mb = median(before) if len(before) else median(rss[: few(len(rss))])
    watched = (t >= stress_end) & (t < cleanup)
    after_t, after = t[watched], rss[watched]
    if not len(after):
        m.note = "no memory samples after the stress ended"
        return m
    m.observed_s = float(after_t[-1] - stress_end)
    if m.observed_s < min_observed_s:
        m.note = (
            f"not judged (watched {m.observed_s:.0f} s after the stress, needs "
            f">= {min_observed_s:g} s: scenarios.recovery_min_observed_s)"
        )
        return m
    m.measured = True
    assert m.pre_stress_mb is not None
    ok = np.nonzero(after <= m.pre_stress_mb * (1 + tol_pct / 100.0))[0]
    if len(ok):
        m.recovered = True
        m.recovery_time_s = float(after_t[ok[0]] - stress_end)
    else:
        m.recovered = False
        m.note = f"memory watched for {m.observed_s:.0f} s after the stress"
    return m


def watched_text(
    data: RunData, m: RecoveryMetrics, t0: float, stages: list[tuple[str, str, float, float]]
) -> str:
    """What memory did around the stress, in numbers: RSS before it, at its peak, at the
    end of each stage after it (``stages``: name, phase, start and end in run seconds); and
    the target's accounted bytes (Redis's ``used_memory``) before and at the end where
    it reports them, so RSS the allocator kept can be told from data the target still
    holds (the cleanup stage deletes the run's data). '' when unmeasured."""
    if not m.measured or m.stress_end_s is None or m.pre_stress_mb is None:
        return ""
    t, rss = rss_series(data.samples)
    end = t0 + m.stress_end_s
    during, after = rss[t < end], rss[t >= end]
    if not len(during) or not len(after):  # pragma: no cover - measured needs both
        return ""
    ends = []
    for name, _, a, b in stages:
        in_stage = rss[(t >= t0 + a) & (t < t0 + b)]
        if a >= m.stress_end_s - 0.5 and len(in_stage):
            ends.append(f"{float(in_stage[-1]):.1f} MB at the end of {name}")
    text = (
        f"RSS {m.pre_stress_mb:.1f} MB before the stress, {float(during.max()):.1f} MB at "
        f"its peak, {', '.join(ends) or f'{float(after[-1]):.1f} MB at the end'}"
    )
    acc = col(data.samples, "accounted_bytes")
    ta = col(data.samples, "time").to_numpy(dtype=float)
    ok = acc.notna().to_numpy()
    stress_start = min((a for _, phase, a, _ in stages if phase == "stress"), default=0.0)
    before = acc.to_numpy(dtype=float)[ok & (ta < t0 + stress_start)] / MB
    last = acc.to_numpy(dtype=float)[ok & (ta >= end)] / MB
    if len(before) and len(last):
        text += (
            f"; accounted by the target {median(before):.1f} MB before, "
            f"{float(last[-1]):.1f} MB at the end"
        )
    return text


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "recovery.pre_stress_mb": (
        "pre-stress memory",
        "MB",
        "median RSS before the first stress stage",
    ),
    "recovery.stress_end_s": (
        "stress ended at",
        "s",
        "run time the trailing recovery stages began",
    ),
    "recovery.recovery_time_s": (
        "recovery time",
        "s",
        "from the end of stress to RSS <= pre-stress * (1 + recovery_tolerance_pct/100), "
        "before the cleanup stage",
    ),
    "recovery.recovered": (
        "recovered",
        "",
        "RSS came back within tolerance of the pre-stress level",
    ),
    "recovery.observed_s": (
        "observed after stress",
        "s",
        "time memory was sampled after the stress ended, up to the cleanup stage",
    ),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
