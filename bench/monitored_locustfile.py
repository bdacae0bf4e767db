"""The plain search user with the memory monitor attached, or not attached at all.

    BENCH_MONITOR=1 BENCH_TARGET_PID=123 BENCH_RUN_DIR=/tmp/x \\
        locust -f bench/monitored_locustfile.py --headless --host http://127.0.0.1:PORT -u 20

With ``BENCH_MONITOR=1`` the init listener builds a run context and a
:class:`monitors.monitor.MemoryMonitor` with every source at a 1 s interval, as
``locustfile.py`` does; without it nothing of the monitor is imported or
attached: "off" is truly off, not a long interval.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from locust import events

from bench.plain_locustfile import PlainSearchUser

__all__ = ["PlainSearchUser"]

MONITOR = os.environ.get("BENCH_MONITOR") == "1"


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    if not MONITOR:
        return
    import gevent

    from memstress.common.config import load_config
    from memstress.common.context import RunContext
    from memstress.common.runfiles import RunFolder
    from memstress.monitors.monitor import MemoryMonitor
    from memstress.monitors.sources import SOURCE_NAMES
    from memstress.scenarios.registry import get_scenario

    config = load_config()
    run_dir = Path(os.environ.get("BENCH_RUN_DIR", "bench-monitor-run"))
    run_dir.mkdir(parents=True, exist_ok=True)
    environment.memstress = RunContext(
        config=config,
        scenario="baseline",
        stress=config.stress(config.stress_levels.default_level),
        duration_s=get_scenario("baseline").default_duration(config),  # unscaled
        run_id="benchmon",
        host=environment.host or "",
        folder=RunFolder(run_dir),
        target_pid=int(os.environ["BENCH_TARGET_PID"]),
        monitor_interval=1.0,
    )
    environment.memstress_monitor = MemoryMonitor(
        environment, sources=list(SOURCE_NAMES), interval=1.0
    )
    # The imports above take seconds without the event loop turning; its cached clock
    # would then end a -t run as soon as it starts.
    gevent.get_hub().loop.update_now()
