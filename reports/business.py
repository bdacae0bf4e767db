"""Aggregate: business value in dollars, each term with its inputs.

Rates and references come from ``config.business_value``::

    memory_optimization = memory_optimization_per_mb * MB freed by optimizations
    performance         = performance_improvement_per_second
                          * (reference_cycle_time_s - mean cycle time) * cycles
    stability           = stability_improvement_per_point * (stability score - stability_floor)
    error_reduction     = error_reduction_per_error
                          * (acceptable_error_rate / 100 * requests - errors)

A term can be negative: cycles slower than the reference, stability under the
floor, or more errors than the acceptable rate allows are a cost. A term whose
inputs are missing is ``None`` and adds nothing to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memstress.common.config import Config
from memstress.reports.metrics import RunMetrics


@dataclass
class ValueTerm:
    name: str
    formula: str
    rate: float
    rate_unit: str
    inputs: dict[str, Any]
    quantity: float | None  # what the rate multiplies
    value_usd: float | None
    why_na: str = ""  # why the term could not be computed from the inputs


@dataclass
class BusinessValue:
    total_usd: float
    terms: list[ValueTerm] = field(default_factory=list)


def business_value(m: RunMetrics, stability: float | None, cfg: Config) -> BusinessValue:
    bv = cfg.business_value
    terms: list[ValueTerm] = []

    freed = m.optimization.freed_mb
    terms.append(
        ValueTerm(
            "memory_optimization",
            "rate * MB freed by optimizations",
            bv.memory_optimization_per_mb,
            "$/MB",
            {"freed_mb": freed},
            freed,
            None if freed is None else bv.memory_optimization_per_mb * freed,
            "" if freed is not None else "the target reports no bytes freed by optimizations",
        )
    )

    # Only management cycles are worth "cycle time saved": a run that sent none (a Redis
    # locustfile, say) has no such term, whatever its other requests took.
    mean, cycles = m.cycle.mean_s, m.cycle.count
    saved = None if mean is None or not cycles else (bv.reference_cycle_time_s - mean) * cycles
    terms.append(
        ValueTerm(
            "performance",
            "rate * (reference cycle time - mean cycle time) * cycles",
            bv.performance_improvement_per_second,
            "$/s",
            {
                "reference_cycle_time_s": bv.reference_cycle_time_s,
                "mean_cycle_s": mean,
                "cycles": cycles,
            },
            saved,
            None if saved is None else bv.performance_improvement_per_second * saved,
            ""
            if saved is not None
            else "no management cycles were sent"
            if not cycles
            else "no cycle time",
        )
    )

    points = None if stability is None else stability - bv.stability_floor
    terms.append(
        ValueTerm(
            "stability",
            "rate * (stability score - stability floor)",
            bv.stability_improvement_per_point,
            "$/point",
            {"stability_score": stability, "stability_floor": bv.stability_floor},
            points,
            None if points is None else bv.stability_improvement_per_point * points,
        )
    )

    req, err = m.requests.requests, m.requests.failures
    avoided = None if not req else bv.acceptable_error_rate / 100.0 * req - (err or 0)
    terms.append(
        ValueTerm(
            "error_reduction",
            "rate * (acceptable error rate / 100 * requests - errors)",
            bv.error_reduction_per_error,
            "$/error",
            {"acceptable_error_rate_pct": bv.acceptable_error_rate, "requests": req, "errors": err},
            avoided,
            None if avoided is None else bv.error_reduction_per_error * avoided,
        )
    )
    total = sum(t.value_usd for t in terms if t.value_usd is not None)
    return BusinessValue(total, terms)
