"""Aggregate: the metrics of a run from a :class:`RunData`, as plain dataclasses.

One module per concern: :mod:`.memory`, :mod:`.leak`, :mod:`.latency`,
:mod:`.pressure`, :mod:`.recovery`, :mod:`.cost`, :mod:`.vectors`, :mod:`.stages`; shared units
and helpers in :mod:`.base`. :data:`DEFINITIONS` holds the one-line definition
the report prints next to every figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from memstress.common.config import Config
from memstress.reports.collect import CYCLE_REQUEST, RunData
from memstress.reports.metrics import cost, latency, leak, memory, pressure, recovery, vectors
from memstress.reports.metrics.base import (
    MB,
    StageSpan,
    few,
    finite,
    parse_params,
    stage_spans,
    timeline,
)
from memstress.reports.metrics.cost import CostMetrics, cost_metrics
from memstress.reports.metrics.latency import (
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
from memstress.reports.metrics.leak import LeakEpisode, LeakMetrics, leak_metrics
from memstress.reports.metrics.memory import (
    MemoryMetrics,
    OptimizationMetrics,
    memory_metrics,
    optimization_metrics,
)
from memstress.reports.metrics.pressure import PressureMetrics, pressure_metrics
from memstress.reports.metrics.recovery import RecoveryMetrics, recovery_metrics
from memstress.reports.metrics.stages import (
    StageMetrics,
    StopInfo,
    first_shed,
    health_failures,
    stage_metrics,
    stop_info,
    worker_summary,
)
from memstress.reports.metrics.vectors import DropMetrics, VectorMetrics, vector_metrics

__all__ = [
    "DEFINITIONS",
    "MB",
    "CostMetrics",
    "DropMetrics",
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
    "VectorMetrics",
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
    vectors: VectorMetrics = field(default_factory=VectorMetrics)
    source_figures: list[dict[str, Any]] = field(default_factory=list)


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    **memory.DEFINITIONS,
    **latency.DEFINITIONS,
    **leak.DEFINITIONS,
    **pressure.DEFINITIONS,
    **recovery.DEFINITIONS,
    **cost.DEFINITIONS,
    **vectors.DEFINITIONS,
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
    stored = vector_metrics(data, spans, tol)
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
        vectors=stored,
        stop=stop_info(data),
        stages=stage_metrics(data, spans, t0, cfg),
        workers=worker_summary(data),
        source_figures=source_figures(data),
    )


def source_figures(data: RunData) -> list[dict[str, Any]]:
    """First, last, lowest and highest value of each registered source's own column
    (``<source>_<figure>`` in memory_samples.csv beyond the suite's columns, e.g.
    ``redis_used_memory``)."""
    from memstress.common.runfiles import SAMPLE_COLUMNS

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
