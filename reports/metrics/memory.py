"""Memory levels and the target's optimization counters over the run."""

from __future__ import annotations

from dataclasses import dataclass

from memstress.reports.collect import RunData
from memstress.reports.metrics.base import (
    MB,
    budget_mb,
    col,
    counter_delta,
    few,
    median,
    pct,
    rss_series,
    whole,
)


@dataclass
class MemoryMetrics:
    samples: int = 0
    rss_source: str | None = None
    start_mb: float | None = None
    end_mb: float | None = None
    growth_mb: float | None = None
    peak_mb: float | None = None
    budget_mb: float | None = None
    peak_pct_of_budget: float | None = None
    end_vs_start_pct: float | None = None
    returned_to_start: bool | None = None
    tolerance_pct: float = 0.0


@dataclass
class OptimizationMetrics:
    count: int | None = None
    failed: int | None = None
    success_rate_pct: float | None = None
    freed_mb: float | None = None


def memory_metrics(data: RunData, tol_pct: float) -> MemoryMetrics:
    _, rss = rss_series(data.samples)
    m = MemoryMetrics(samples=len(rss), tolerance_pct=tol_pct, budget_mb=budget_mb(data))
    if not len(rss):
        return m
    src = data.samples["rss_source"].astype("str")
    src = src[src.str.len() > 0]
    m.rss_source = str(src.mode().iloc[0]) if len(src) else None
    k = few(len(rss))
    m.start_mb = median(rss[:k])
    m.end_mb = median(rss[-k:])
    assert m.start_mb is not None and m.end_mb is not None
    m.growth_mb = m.end_mb - m.start_mb
    m.peak_mb = float(rss.max())
    m.peak_pct_of_budget = pct(m.peak_mb, m.budget_mb)
    m.end_vs_start_pct = pct(m.growth_mb, m.start_mb)
    m.returned_to_start = bool(m.end_mb <= m.start_mb * (1 + tol_pct / 100.0))
    return m


def optimization_metrics(data: RunData) -> OptimizationMetrics:
    s = data.samples
    count = counter_delta(col(s, "optimizations_total"))
    failed = counter_delta(col(s, "optimizations_failed"))
    freed = counter_delta(col(s, "bytes_freed_total"))
    o = OptimizationMetrics(
        count=whole(count), failed=whole(failed), freed_mb=None if freed is None else freed / MB
    )
    if o.count:
        o.success_rate_pct = 100.0 * (o.count - (o.failed or 0)) / o.count
    return o


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "memory.start_mb": (
        "start memory",
        "MB",
        "target RSS at the start: median of the first 5 samples",
    ),
    "memory.end_mb": ("end memory", "MB", "target RSS at the end: median of the last 5 samples"),
    "memory.growth_mb": ("memory growth", "MB", "end memory minus start memory"),
    "memory.peak_mb": ("peak memory", "MB", "highest target RSS sampled"),
    "memory.budget_mb": (
        "memory budget",
        "MB",
        "the target's budget (its /memory/stats, else run_meta)",
    ),
    "memory.peak_pct_of_budget": ("peak % of budget", "%", "100 * peak memory / budget"),
    "memory.end_vs_start_pct": ("end vs start", "%", "100 * (end - start) / start memory"),
    "memory.returned_to_start": (
        "returned to start memory",
        "",
        "end memory <= start memory * (1 + scenarios.recovery_tolerance_pct / 100)",
    ),
    "optimization.count": (
        "optimizations",
        "",
        "increase of the target's optimizations_total over the run",
    ),
    "optimization.failed": (
        "failed optimizations",
        "",
        "increase of optimizations_failed over the run",
    ),
    "optimization.success_rate_pct": (
        "optimization success rate",
        "%",
        "100 * (count - failed) / count",
    ),
    "optimization.freed_mb": (
        "memory freed by optimizations",
        "MB",
        "increase of bytes_freed_total over the run",
    ),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
