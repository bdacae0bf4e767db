"""Memory pressure: the target's own score, else RSS over its budget; PSI and strategies."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from memstress.reports.collect import RunData
from memstress.reports.metrics.base import (
    MB,
    budget_mb,
    col,
    few,
    median,
)

STRATEGY_RANK = {"normal": 0, "aggressive": 1, "emergency": 2}


@dataclass
class PressureMetrics:
    source: str | None = None  # target | rss/budget
    peak: float | None = None
    mean: float | None = None
    final: float | None = None
    psi_some_avg10_max: float | None = None
    psi_full_avg10_max: float | None = None
    host_percent_max: float | None = None
    max_strategy: str | None = None
    strategy_share_pct: dict[str, float] = field(default_factory=dict)
    cgroup_events: str | None = None


def pressure_series(data: RunData) -> tuple[pd.Series, str | None]:
    p = col(data.samples, "pressure")
    if p.notna().any():
        return p, "target"
    b = budget_mb(data)
    rss = col(data.samples, "rss_bytes")
    if b and rss.notna().any():
        return 100.0 * rss / MB / b, "rss/budget"
    return pd.Series(dtype="float64"), None


def pressure_metrics(data: RunData) -> PressureMetrics:
    p, source = pressure_series(data)
    m = PressureMetrics(source=source)
    v = p.dropna().to_numpy(dtype=float)
    if len(v):
        m.peak = float(v.max())
        m.mean = float(v.mean())
        m.final = median(v[-few(len(v)) :])
    s = data.samples
    for attr, column in (
        ("psi_some_avg10_max", "psi_some_avg10"),
        ("psi_full_avg10_max", "psi_full_avg10"),
        ("host_percent_max", "host_percent"),
    ):
        c = col(s, column).dropna()
        if len(c):
            setattr(m, attr, float(c.max()))
    strat = s["strategy"].astype("str")
    strat = strat[strat.str.len() > 0]
    if len(strat):
        share = strat.value_counts(normalize=True) * 100.0
        m.strategy_share_pct = {str(k): round(float(v), 2) for k, v in share.items()}
        m.max_strategy = max(m.strategy_share_pct, key=lambda k: STRATEGY_RANK.get(k, -1))
    cg = (
        s["cgroup_events"].astype("str") if "cgroup_events" in s.columns else pd.Series(dtype="str")
    )
    cg = cg[cg.str.len() > 0]
    if len(cg):
        m.cgroup_events = str(cg.iloc[-1])
    return m


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "pressure.source": ("pressure source", "", "the target's own score, else 100 * RSS / budget"),
    "pressure.peak": ("peak pressure", "%", "highest memory pressure score"),
    "pressure.mean": ("mean pressure", "%", "mean memory pressure score"),
    "pressure.final": ("final pressure", "%", "median pressure of the last 5 samples"),
    "pressure.psi_some_avg10_max": ("PSI some avg10", "%", "highest Linux memory PSI 'some' avg10"),
    "pressure.psi_full_avg10_max": ("PSI full avg10", "%", "highest Linux memory PSI 'full' avg10"),
    "pressure.host_percent_max": ("peak host memory", "%", "highest host memory use"),
    "pressure.max_strategy": ("strongest strategy", "", "most drastic strategy the target used"),
    "pressure.cgroup_events": ("cgroup events", "", "last cgroup memory events (oom, max) sampled"),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
