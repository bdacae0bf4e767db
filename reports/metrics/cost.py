"""Memory cost per request, per stored vector and per agent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memstress.reports.collect import RunData
from memstress.reports.metrics.base import (
    StageSpan,
    col,
    finite,
)
from memstress.reports.metrics.latency import RequestMetrics, entries
from memstress.reports.metrics.memory import MemoryMetrics


@dataclass
class CostMetrics:
    per_request_kb: float | None = None
    per_vector_kb: float | None = None
    vector_basis: str = ""
    per_agent_kb: float | None = None
    agent_basis: str = ""


def _agents(spans: list[StageSpan]) -> float | None:
    counts = [
        v
        for s in spans
        for k, raw in s.params.items()
        if "agents" in str(k).lower() and (v := finite(raw)) is not None and v > 0
    ]
    return max(counts) if counts else None


def cost_metrics(
    data: RunData, memory: MemoryMetrics, req: RequestMetrics, spans: list[StageSpan]
) -> CostMetrics:
    c = CostMetrics()
    if memory.growth_mb is not None and req.requests:
        c.per_request_kb = memory.growth_mb * 1024.0 / req.requests
    s = data.samples
    vec_bytes = col(s, "vectors_bytes").dropna()
    if len(vec_bytes) and vec_bytes.max() > 0:
        stored = col(s, "stored_vectors").to_numpy(dtype=float)
        tier = col(s, "vectors_bytes").to_numpy(dtype=float)
        both = np.isfinite(stored) & np.isfinite(tier) & (stored > 0)
        if both.any():
            at = int(np.argmax(np.where(both, stored, -1.0)))  # first sample with the most
            c.per_vector_kb = float(tier[at]) / float(stored[at]) / 1024.0
            c.vector_basis = "vectors_bytes / stored_vectors (the sample with the most vectors)"
        else:
            docs = sum(
                int(e.get("num_requests") or 0) - int(e.get("num_failures") or 0)
                for e in entries(data, "POST /vectors/documents", shed=False)
            )
            if docs > 0:
                c.per_vector_kb = float(vec_bytes.max()) / docs / 1024.0
                c.vector_basis = (
                    "peak vectors_bytes / documents stored (per document: no item count)"
                )
    conv = col(s, "conversations_bytes").dropna()
    agents = _agents(spans)
    if len(conv) and conv.max() > 0 and agents:
        c.per_agent_kb = float(conv.max()) / agents / 1024.0
        c.agent_basis = f"peak conversations_bytes / {agents:g} agents (stage params)"
    return c


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "cost.per_request_kb": ("memory per request", "KB", "memory growth / requests"),
    "cost.per_vector_kb": (
        "memory per stored vector",
        "KB",
        "vector tier bytes / stored vectors, at the sample with the most (else per document)",
    ),
    "cost.per_agent_kb": ("memory per agent", "KB", "conversation tier bytes / agents"),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
