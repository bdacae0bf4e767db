"""How the memory monitor is set up: its Locust options and what it may assume of the target.

- :func:`add_monitor_options` registers ``--monitor-interval``, ``--target-pid``,
  ``--monitor-sources``, ``--metrics-*`` and ``--profile-*`` on Locust's parser (the
  locustfile and ``memstress.plugin`` call it);
- :func:`option_sources` and :func:`profile_mode` read them back, a bad value from the
  web UI's form logged and replaced by the default;
- :class:`TargetProfile` says whether the target speaks the memstress API, and which
  health path and memory budget a user's own target has.

Nothing here imports Locust: the options are plain ``argparse`` arguments with Locust's
``env_var`` keyword.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from memstress.common.target import DEFAULT_METRIC
from memstress.monitors.allocations import MODES
from memstress.monitors.sources import parse_source_names

log = logging.getLogger(__name__)


def add_monitor_options(parser: Any) -> None:
    """The monitor's own Locust options; call it from ``init_command_line_parser``."""
    parser.add_argument(
        "--monitor-interval",
        default=None,
        env_var="MEMSTRESS_MONITOR_INTERVAL",
        help="Seconds between memory samples, 0.05-3600. Default: the config's monitor.interval.",
    )
    parser.add_argument(
        "--target-pid",
        default=None,
        env_var="MEMSTRESS_TARGET_PID",
        help="PID of the target process, for the monitor's psutil readings (loopback "
        "targets only). Default: found from the port --host listens on, where possible.",
    )
    parser.add_argument(
        "--monitor-sources",
        default="auto",
        type=sources_option,
        env_var="MEMSTRESS_MONITOR_SOURCES",
        help="Memory sample sources: auto (every one that is there), or a comma-separated "
        "list of process, smaps, metrics_url, prometheus, stats, host, psi, cgroup. Default: auto.",
    )
    parser.add_argument(
        "--metrics-url",
        default=None,
        env_var="MEMSTRESS_METRICS_URL",
        help="Prometheus text with the target's RSS, for a target whose PID this machine "
        "cannot see: its /metrics on another port, a node exporter, cAdvisor. "
        "Default: none (RSS by PID, else the target's own /metrics or /memory/stats).",
    )
    parser.add_argument(
        "--metrics-metric",
        default=DEFAULT_METRIC,
        env_var="MEMSTRESS_METRICS_METRIC",
        help=f"The metric at --metrics-url that is the target's RSS in bytes, e.g. "
        f"container_memory_rss. Default: {DEFAULT_METRIC}.",
    )
    parser.add_argument(
        "--metrics-labels",
        default="",
        env_var="MEMSTRESS_METRICS_LABELS",
        help="Labels the one series at --metrics-url must have, comma-separated "
        "name=value (e.g. container=api,namespace=staging). Default: none.",
    )

    parser.add_argument(
        "--profile-leaks",
        nargs="?",
        const="on",
        default=None,
        choices=MODES,
        env_var="MEMSTRESS_PROFILE_LEAKS",
        help="Name the code holding leaked memory: capture the target's allocations with "
        "memray attach (a local Python target; needs gdb) when the detector calls a leak or "
        "at a stage the scenario marks (on), only at a marked stage (marked), or never "
        "(off). Alone: on. Default: the config's monitor.leak_profiling.mode, where auto "
        "means off for a target this run did not start.",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        default=False,
        env_var="MEMSTRESS_PROFILE_NATIVE",
        help="With --profile-leaks: capture native (C) frames too (slower capture).",
    )


def profile_mode(options: Any, config_mode: str) -> str:
    """``--profile-leaks`` as given, else the config's mode (auto is off: the target is
    not known to be the bundled service here; run_stress_test.py decides that)."""
    value = getattr(options, "profile_leaks", None)
    text = str(value).strip() if value is not None else ""
    if text in MODES:
        return text
    if text:
        log.error(
            "memory monitor: --profile-leaks %r is not valid (valid: %s); off",
            text,
            ", ".join(MODES),
        )
        return "off"
    return "on" if config_mode == "on" else "off"


def sources_option(text: str) -> tuple[str, ...]:
    """``--monitor-sources`` as argparse's ``type``: the names, or the error listing the valid."""
    try:
        return parse_source_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--monitor-sources: ")) from None


def option_sources(options: Any) -> tuple[str, ...]:
    """``--monitor-sources`` from parsed options (a tuple, or text from the web UI form)."""
    value = getattr(options, "monitor_sources", None)
    if isinstance(value, tuple | list):
        return tuple(value)
    try:
        return parse_source_names(value)
    except ValueError as exc:
        log.error("memory monitor: %s; using every source", exc)
        return parse_source_names(None)


@dataclass(frozen=True)
class TargetProfile:
    """What the monitor may assume about the target.

    The suite's own scenarios drive a target of the memstress API (the default).
    A user's own load test (``memstress.plugin``, ``run_stress_test.py
    --locustfile``) says ``api="auto"``: health checks and cleanup cycles run
    only once the target has answered ``/memory/stats`` (it speaks the API), or
    against the ``health_path`` the user gave, whose repeated failure is a lost
    target; pressure is judged only against a known budget; and the leak
    detector keeps the config's clock (there is no scenario length to scale by).
    """

    api: str = "memstress"  # memstress | auto
    health_path: str | None = None  # a user's health check: any 2xx is healthy
    budget_bytes: float | None = None  # a configured budget (pressure = 100 x RSS / budget)

    @property
    def own_load(self) -> bool:
        return self.api != "memstress"
