"""Aggregate: the metrics of a run from a :class:`RunData`, as plain dataclasses.

One module per concern: :mod:`.memory`, :mod:`.leak`, :mod:`.latency`,
:mod:`.pressure`, :mod:`.recovery`, :mod:`.cost`, :mod:`.stages`; shared units
and helpers in :mod:`.base`. :data:`DEFINITIONS` holds the one-line definition
the report prints next to every figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from common.config import Config
from reports.collect import CYCLE_REQUEST, RunData
from reports.metrics.base import MB, StageSpan, few, finite, parse_params, stage_spans, timeline
from reports.metrics.cost import CostMetrics, cost_metrics
from reports.metrics.latency import (
    Latency,
    NamedLatency,
    RequestMetrics,
    aggregated_latency,
    latency_by_name,
    latency_from_stats,
    locust_percentile,
    request_latency,
    request_metrics,
)
from reports.metrics.leak import LeakEpisode, LeakMetrics, leak_metrics
from reports.metrics.memory import (
    MemoryMetrics,
    OptimizationMetrics,
    memory_metrics,
    optimization_metrics,
)
from reports.metrics.pressure import PressureMetrics, pressure_metrics
from reports.metrics.recovery import RecoveryMetrics, recovery_metrics
from reports.metrics.stages import (
    StageMetrics,
    StopInfo,
    first_shed,
    health_failures,
    stage_metrics,
    stop_info,
    worker_summary,
)

__all__ = [
    "DEFINITIONS",
    "MB",
    "CostMetrics",
    "Latency",
    "LeakEpisode",
    "LeakMetrics",
    "MemoryMetrics",
    "OptimizationMetrics",
    "PressureMetrics",
    "RecoveryMetrics",
    "RequestMetrics",
    "RunMetrics",
    "StageMetrics",
    "StageSpan",
    "StopInfo",
    "aggregated_latency",
    "compute",
    "few",
    "finite",
    "health_failures",
    "latency_from_stats",
    "locust_percentile",
    "parse_params",
]


@dataclass
class RunMetrics:
    t0: float
    t_end: float
    duration_s: float
    memory: MemoryMetrics
    optimization: OptimizationMetrics
    cycle: Latency  # the management-cycle requests only (count 0: the run sent none)
    latency: Latency  # what the response-time grade judges: cycles if any, else all requests
    latency_basis: str
    latency_by_name: list[NamedLatency]
    requests: RequestMetrics
    leak: LeakMetrics
    pressure: PressureMetrics
    recovery: RecoveryMetrics
    cost: CostMetrics
    stop: StopInfo
    stages: list[StageMetrics]
    workers: dict[str, Any] = field(default_factory=dict)
    source_figures: list[dict[str, Any]] = field(default_factory=list)


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
    "cycle.count": ("management cycles", "", f"Locust requests named {CYCLE_REQUEST!r}"),
    "cycle.mean_s": (
        "mean cycle time",
        "s",
        "mean response time of the cycle requests (locust.json totals)",
    ),
    "cycle.p50_s": ("p50 cycle time", "s", "median cycle response time (Locust's histogram)"),
    "cycle.p95_s": ("p95 cycle time", "s", "95th percentile cycle response time"),
    "cycle.p99_s": ("p99 cycle time", "s", "99th percentile cycle response time"),
    "cycle.max_s": ("max cycle time", "s", "slowest cycle request"),
    "requests.requests": ("requests", "", "Locust requests of every name, SHED rows excluded"),
    "requests.failures": ("errors", "", "Locust failures, SHED rows excluded"),
    "requests.error_rate_pct": ("error rate", "%", "100 * errors / requests"),
    "requests.shed": (
        "shed",
        "",
        "answers shed with 429/503 + Retry-After (Locust type SHED); not errors",
    ),
    "requests.shed_pct": ("shed rate", "%", "100 * shed / requests"),
    "requests.exceptions": (
        "user exceptions",
        "",
        "exceptions raised in Locust users (locust_exceptions.csv)",
    ),
    "requests.rps": (
        "requests/s",
        "",
        "requests over the time from the first to the last request",
    ),
    "requests.peak_users": ("peak users", "", "highest Locust user count"),
    "leak.verdict": (
        "leak verdict",
        "",
        "the online detector's state at the end of the run (monitors/leak.py): leak, no leak, "
        "or not judged (too few samples)",
    ),
    "leak.slope_mb_min": (
        "leak slope",
        "MB/min",
        "Theil-Sen slope of the scale that called the leak held at the end (lower envelope "
        "of RSS less the target's accounted tier bytes)",
    ),
    "leak.ci_low_mb_min": ("leak slope CI low", "MB/min", "lower bound of its confidence interval"),
    "leak.ci_high_mb_min": (
        "leak slope CI high",
        "MB/min",
        "upper bound of its confidence interval",
    ),
    "leak.called_at_s": ("leak called at", "s", "run time the detector called that leak"),
    "leak.injected_start_s": (
        "leak injected at",
        "s",
        "run time the first stage declaring injects: leak began",
    ),
    "leak.detection_delay_s": (
        "detection delay",
        "s",
        "first detection at or after injection minus injection start",
    ),
    "leak.false_alarms": (
        "false alarms",
        "",
        "leak_detected events before the scenario injected its leak (only where it injects one)",
    ),
    "leak.target_flagged": (
        "target flagged a leak",
        "",
        "the target's leak_suspected was 1 in some sample",
    ),
    "leak.whole_run_slope_mb_min": (
        "whole-run slope (context only)",
        "MB/min",
        "Theil-Sen slope of every judged sample over the whole run; feeds no score, grade or "
        "verdict",
    ),
    "leak.unaccounted_peak_mb": (
        "unaccounted memory",
        "MB",
        "highest unaccounted_bytes the target reported",
    ),
    "pressure.source": ("pressure source", "", "the target's own score, else 100 * RSS / budget"),
    "pressure.peak": ("peak pressure", "%", "highest memory pressure score"),
    "pressure.mean": ("mean pressure", "%", "mean memory pressure score"),
    "pressure.final": ("final pressure", "%", "median pressure of the last 5 samples"),
    "pressure.psi_some_avg10_max": ("PSI some avg10", "%", "highest Linux memory PSI 'some' avg10"),
    "pressure.psi_full_avg10_max": ("PSI full avg10", "%", "highest Linux memory PSI 'full' avg10"),
    "pressure.host_percent_max": ("peak host memory", "%", "highest host memory use"),
    "pressure.max_strategy": ("strongest strategy", "", "most drastic strategy the target used"),
    "pressure.cgroup_events": ("cgroup events", "", "last cgroup memory events (oom, max) sampled"),
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
        "from the end of stress to RSS <= pre-stress * (1 + recovery_tolerance_pct/100)",
    ),
    "recovery.recovered": (
        "recovered",
        "",
        "RSS came back within tolerance of the pre-stress level",
    ),
    "recovery.observed_s": (
        "observed after stress",
        "s",
        "time memory was sampled after the stress ended",
    ),
    "cost.per_request_kb": ("memory per request", "KB", "memory growth / requests"),
    "cost.per_vector_kb": ("memory per stored vector", "KB", "vector tier bytes / stored items"),
    "cost.per_agent_kb": ("memory per agent", "KB", "conversation tier bytes / agents"),
    "duration_s": ("duration", "s", "from the run's start to its end"),
}


def compute(data: RunData, cfg: Config) -> RunMetrics:
    """Every run-level and per-stage metric of a run."""
    tol = cfg.scenarios.recovery_tolerance_pct
    t0, t_end = timeline(data)
    spans = stage_spans(data, t0, t_end)
    memory = memory_metrics(data, tol)
    req = request_metrics(data)
    cycle = request_latency(data, CYCLE_REQUEST)
    if cycle.count:
        latency, basis = cycle, CYCLE_REQUEST
    else:
        latency, basis = aggregated_latency(data), "all requests"
    req.first_shed_s = first_shed(data, t0)
    return RunMetrics(
        t0=t0,
        t_end=t_end,
        duration_s=t_end - t0,
        memory=memory,
        optimization=optimization_metrics(data),
        cycle=cycle,
        latency=latency,
        latency_basis=basis,
        latency_by_name=latency_by_name(data),
        requests=req,
        leak=leak_metrics(data, cfg, t0, spans),
        pressure=pressure_metrics(data),
        recovery=recovery_metrics(data, spans, t0, tol, cfg.scenarios.recovery_min_observed_s),
        cost=cost_metrics(data, memory, req, spans),
        stop=stop_info(data),
        stages=stage_metrics(data, spans, t0, cfg),
        workers=worker_summary(data),
        source_figures=source_figures(data),
    )


def source_figures(data: RunData) -> list[dict[str, Any]]:
    """First, last, lowest and highest value of each registered source's own column
    (``<source>_<figure>`` in memory_samples.csv beyond the suite's columns, e.g.
    ``redis_used_memory``)."""
    from common.runfiles import SAMPLE_COLUMNS

    out: list[dict[str, Any]] = []
    for column in data.samples.columns:
        if column in SAMPLE_COLUMNS or "_" not in column:
            continue
        values = pd.to_numeric(data.samples[column], errors="coerce").dropna()
        if values.empty:
            continue
        out.append(
            {
                "column": column,
                "first": float(values.iloc[0]),
                "last": float(values.iloc[-1]),
                "min": float(values.min()),
                "max": float(values.max()),
            }
        )
    return out
