"""``GET /metrics``: Prometheus text from a registry of the app's own.

The standard process collector gives ``process_resident_memory_bytes``; one
custom collector reads the manager at scrape time, so no gauge can drift from
the numbers ``/memory/stats`` shows.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memstress.service.manager import STRATEGIES, MemoryManager


class ManagerCollector(Collector):
    def __init__(self, manager: MemoryManager) -> None:
        self.m = manager

    def collect(self) -> Iterator[Metric]:
        m = self.m
        m.measure()
        yield GaugeMetricFamily("memstress_budget_bytes", "Memory budget", value=m.budget)
        yield GaugeMetricFamily(
            "memstress_memory_pressure", "100 * RSS / budget", value=round(m.pressure, 3)
        )
        strategy = GaugeMetricFamily(
            "memstress_strategy", "1 for the strategy in force", labels=["strategy"]
        )
        for name in STRATEGIES:
            strategy.add_metric([name], 1.0 if m.strategy == name else 0.0)
        yield strategy
        tiers = m.tiers()
        for field, help_text in (
            ("items", "Items held in RAM per tier"),
            ("bytes", "Accounted bytes per tier"),
            ("limit_bytes", "Limit per tier"),
        ):
            g = GaugeMetricFamily(f"memstress_tier_{field}", help_text, labels=["tier"])
            for tier, values in tiers.items():
                g.add_metric([tier], values[field])
            yield g
        yield GaugeMetricFamily(
            "memstress_unaccounted_bytes",
            "RSS growth not explained by accounted growth",
            value=m.unaccounted,
        )
        yield GaugeMetricFamily(
            "memstress_leak_suspected",
            "1 while unaccounted memory keeps rising",
            value=int(m.leak_suspected),
        )
        yield CounterMetricFamily(
            "memstress_optimizations", "Optimizations run", value=m.optimizations_total
        )
        yield CounterMetricFamily(
            "memstress_optimizations_failed",
            "Optimizations that failed",
            value=m.optimizations_failed,
        )
        yield CounterMetricFamily(
            "memstress_freed_bytes", "RSS freed by optimizations", value=m.bytes_freed_total
        )
        yield CounterMetricFamily("memstress_cycles", "Management cycles run", value=m.cycles)
        yield CounterMetricFamily(
            "memstress_writes_shed", "Writes answered 503 under emergency", value=m.writes_shed
        )
        q = m.queue.stats()
        yield GaugeMetricFamily(
            "memstress_optimization_queue_length", "Queued optimization requests", value=q["length"]
        )
        for key in ("accepted", "coalesced", "rejected"):
            yield CounterMetricFamily(
                f"memstress_optimization_requests_{key}",
                f"Optimization requests {key}",
                value=q[key],
            )
        yield CounterMetricFamily(
            "memstress_embedding_cache_hits", "Embedding cache hits", value=m.cache.hits
        )
        yield CounterMetricFamily(
            "memstress_embedding_cache_misses", "Embedding cache misses", value=m.cache.misses
        )


def build_registry(manager: MemoryManager) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ManagerCollector(manager))
    return registry
