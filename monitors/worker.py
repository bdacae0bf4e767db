"""The memory monitor's worker side, and the one call that attaches the right side.

A Locust worker reads nothing of the target: it adds its own RSS, CPU and user
count to every report to the master (:class:`WorkerReport`; the master's
:class:`~memstress.monitors.monitor.MemoryMonitor` writes them to
``worker_samples.csv``). This module imports only psutil, so
:func:`attach_monitor` can leave the master's machinery (the leak detector's
numpy, scipy and ruptures; the redis source) unloaded in a worker: a load tool's
workers stay lean (``tests/test_locustfile.py`` checks what a worker loads).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from memstress.monitors.monitor import MemoryMonitor
    from memstress.monitors.options import TargetProfile

WORKER_KEY = "memstress_worker"
"""Key of the worker's self-report in Locust's report_to_master data."""


def is_worker(environment: Any) -> bool:
    """Whether this Locust process is a worker (its runner, or its options, say so)."""
    from locust.runners import WorkerRunner

    context = getattr(environment, "memstress", None)
    return (
        isinstance(environment.runner, WorkerRunner)
        or bool(getattr(context, "is_worker", False))
        or bool(getattr(environment.parsed_options, "worker", False))
    )


class WorkerReport:
    """A listener object: on a worker, adds this process's figures to each report."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call starts the CPU clock
        environment.events.report_to_master.add_listener(self.on_report_to_master)

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        runner = self.environment.runner
        data[WORKER_KEY] = {
            "time": time.time(),
            "rss_bytes": self._process.memory_info().rss,
            "cpu_percent": self._process.cpu_percent(None),
            "user_count": runner.user_count if runner is not None else 0,
        }


def attach_monitor(
    environment: Any, profile: TargetProfile | None = None
) -> MemoryMonitor | WorkerReport:
    """A :class:`WorkerReport` on a worker; elsewhere the :class:`MemoryMonitor`, imported
    only here, on the master or a local runner, where it samples and judges."""
    if is_worker(environment):
        return WorkerReport(environment)
    from memstress.monitors.monitor import MemoryMonitor

    return MemoryMonitor(environment, profile=profile)
