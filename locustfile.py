"""memstress: the Locust entry point.

    locust -f locustfile.py --headless --host http://127.0.0.1:8000 --scenario memory_leak
    locust -f locustfile.py --host http://127.0.0.1:8000            # web UI, options in the form
    locust -f locustfile.py --headless --processes 4 ...             # or --master / --worker

Thin on purpose: it registers the suite's options, builds the run context in
``init``, exposes the user classes and the one shape. The scenarios live in
``scenarios/``, the stage plans in ``shapes/``, the monitor in ``monitors/``.

With ``--headless`` the run ends by itself after the scenario's last stage:
the shape's ``tick()`` returns ``None``, on which Locust's shape worker calls
``runner.quit()`` (``-t/--run-time`` plays no part while a shape drives a run).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from locust import events

from memstress.common.checkout import VersionCheck
from memstress.common.config import DEFAULT_CONFIG_PATH, ConfigError
from memstress.common.context import build_context
from memstress.common.exitcodes import ExitCode
from memstress.common.locustfix import (
    PerSecondArchive,
    stop_csv_writer_at_quit,
    stop_forked_workers,
)
from memstress.monitors.options import TargetProfile, add_monitor_options
from memstress.monitors.worker import attach_monitor
from memstress.reports.quit_verdict import QuitVerdict
from memstress.scenarios.adapters import check_scenario, check_target, load_adapter
from memstress.scenarios.adapters import names as adapter_names
from memstress.scenarios.options import resolve_settings
from memstress.scenarios.registry import get_scenario, user_classes
from memstress.scenarios.registry import names as registered_names
from memstress.shapes.plan import PlanError
from memstress.shapes.scenario import ScenarioShape, wire_stages

log = logging.getLogger("memstress")

# Locust picks user classes from this module's names. All scenarios' classes are
# here so a worker can run whichever the master asks for; the shape narrows the
# run to the chosen scenario's (see shapes/scenario.py).
globals().update(user_classes())


class MemstressShape(ScenarioShape):
    """The one load shape: plays the chosen scenario's stage plan."""


@events.init_command_line_parser.add_listener
def add_options(parser: Any, **_: Any) -> None:
    names = ", ".join(registered_names())
    parser.add_argument(
        "--scenario",
        default="baseline",
        env_var="MEMSTRESS_SCENARIO",
        help=f"Scenario to run: {names} (or its seed config key). Default: baseline.",
    )
    parser.add_argument(
        "--stress-level",
        default=None,
        env_var="MEMSTRESS_STRESS_LEVEL",
        help="Stress level 0-4, an index into the config's stress lists. "
        "Default: the config's stress_levels.default_level.",
    )
    parser.add_argument(
        "--duration",
        default=None,
        env_var="MEMSTRESS_DURATION",
        help="Total seconds of the scenario's stage plan. Default: the scenario's "
        "test_duration in the config (its own default for one outside the ten).",
    )
    parser.add_argument(
        "--duration-scale",
        default="1.0",
        env_var="MEMSTRESS_DURATION_SCALE",
        help="Multiply the plan's duration by this (e.g. 0.2 for a quick run). Default: 1.0.",
    )
    parser.add_argument(
        "--memstress-config",
        default=str(DEFAULT_CONFIG_PATH),
        env_var="MEMSTRESS_CONFIG",
        help="The suite's YAML config (Locust's own --config is its locust.conf). "
        "Default: the shipped stress_test_config.yml.",
    )
    parser.add_argument(
        "--allow-remote-target",
        action="store_true",
        default=False,
        env_var="MEMSTRESS_ALLOW_REMOTE_TARGET",
        help="Let --host name another machine (a staging service, say). Without it only "
        "127.0.0.0/8, localhost and [::1] are loaded; config: safety.allow_remote_targets.",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        env_var="MEMSTRESS_RUN_DIR",
        help="Folder for the run's files (stages.csv, events.csv, memory samples). "
        "Default: a new folder under results/.",
    )
    parser.add_argument(
        "--adapter",
        default="memstress",
        env_var="MEMSTRESS_ADAPTER",
        help=f"How the users speak to the target: {', '.join(adapter_names())}. "
        "Default: memstress (the bundled service's HTTP API).",
    )
    parser.add_argument(
        "--adapter-config",
        default=None,
        env_var="MEMSTRESS_ADAPTER_CONFIG",
        help="The adapter's YAML file (http-map: your HTTP API's operations). Default: none.",
    )
    add_monitor_options(parser)


@events.init.add_listener
def on_init(environment: Any, runner: Any, web_ui: Any = None, **_: Any) -> None:
    opts = environment.parsed_options
    try:
        settings = resolve_settings(opts)
        scenario = get_scenario(settings.scenario)
        adapter = load_adapter(settings.adapter, settings.adapter_config)
        check_scenario(scenario, adapter)  # before any load: what the scenario needs is there
        if not getattr(opts, "worker", False):  # ... on this target too (the master asks)
            check_target(scenario, adapter, environment.host or "")
        scenario.build_plan(settings.config, settings.stress, settings.duration_s)  # refuse now
        ctx = build_context(environment, settings, adapter.schemes)
        ctx.adapter = adapter
    except (ConfigError, PlanError) as exc:
        # One line and exit code 2; a --processes child stays quiet (its parent says it).
        if not (getattr(opts, "worker", False) and getattr(opts, "processes", None)):
            log.error("%s", exc)
        stop_forked_workers(opts)  # a --processes parent's; see common/locustfix.py
        sys.exit(ExitCode.USAGE)
    environment.memstress = ctx
    # The reports find the run's searches (and drops) by these names, whatever the target.
    ctx.record("adapter", {"name": adapter.name, "requests": dict(adapter.request_names)})
    if not ctx.is_worker:
        environment.user_classes = list(scenario.user_classes)
    wire_stages(environment)
    expected = [
        e.describe(e.setting(settings.config, scenario.name).bound) for e in scenario.expected
    ]
    ctx.start_meta(opts, scenario.purpose, expected)

    def on_quit(exit_code: int | None = None, **_kw: Any) -> None:
        ctx.end_meta(exit_code)
        ctx.close()

    environment.events.quit.add_listener(on_quit)
    stop_csv_writer_at_quit(environment)  # a Locust 2.47 race; see common/locustfix.py
    if not ctx.is_worker:  # Locust 2.47 keeps every second's counts; see common/locustfix.py
        PerSecondArchive(environment).start()
    # --- distributed: every worker runs the master's checkout, or is refused ---
    VersionCheck(environment)

    # --- the memory monitor (monitors/): on a worker only its own figures, so a worker
    # never loads the master's detector (numpy, scipy, ruptures) or the redis source ---
    profile = None
    if adapter.name != "memstress":  # a foreign target: no memstress API (README Adapters)
        profile = TargetProfile(api="auto", health_path=adapter.health_path)
    monitor = attach_monitor(environment, profile)
    # --- the verdict of a run started with plain `locust`: exit code 1 when it fails ---
    if not ctx.is_worker:
        QuitVerdict(environment, settings.config, monitor=monitor)
