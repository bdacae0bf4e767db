#!/usr/bin/env python3
"""memstress: run memory stress scenarios headless and grade the target.

    python run_stress_test.py --quick                 # the critical set, scaled down
    python run_stress_test.py --scenario memory_leak  # one scenario at its full length
    python run_stress_test.py --comprehensive         # every registered scenario
    python run_stress_test.py --list-scenarios
    python run_stress_test.py --locustfile mine.py --host redis://127.0.0.1:6379 \
        --target-cmd "redis-server --port 6379" --duration 60 --recovery-s 20   # your own

Exit codes: 0 passed, 1 failed (a grade below --fail-on), 2 bad usage or config,
3 target unreachable or lost, 4 stopped by a safety limit, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from memstress.common.config import GRADES, Config, ConfigError, load_config
from memstress.common.exitcodes import ExitCode
from memstress.common.runfiles import RESULTS_DIR, new_run_dir
from memstress.common.target import (
    REMOTE_FLAG,
    MetricsUrl,
    check_host,
    check_remote_allowed,
    check_target_pid,
    metrics_url,
)
from memstress.runner.preflight import PreflightError, check_out_dir
from memstress.scenarios.adapters import check_scenario, check_target, load_adapter
from memstress.scenarios.adapters import names as adapter_names
from memstress.scenarios.registry import (
    all_scenarios,
    check_config,
    get_scenario,
    names,
    scenario_name,
)

if TYPE_CHECKING:
    from memstress.runner.session import RunSettings

log = logging.getLogger("memstress")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line naming the problem, not a usage dump."""
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (valid: > 0, e.g. 60 or 60s)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive (valid: seconds > 0)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (valid: 1 or more)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range (valid: 1 or more)")
    return value


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _scenario(text: str) -> str:
    try:
        return scenario_name(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> Parser:
    p = Parser(
        prog="run_stress_test.py",
        description="Stress the memory management of a service and grade it.",
        epilog="Exit codes: 0 passed, 1 failed, 2 bad usage/config, 3 target lost, "
        "4 safety stop, 130 interrupted.",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--scenario",
        type=_scenario,
        metavar="NAME",
        help=f"run one scenario ({', '.join(names())}; seed keys work too)",
    )
    what.add_argument(
        "--comprehensive",
        action="store_true",
        help="run every registered scenario (the design's ten, and any added)",
    )
    what.add_argument(
        "--quick",
        action="store_true",
        help="run the config's critical set (scenarios.quick) at scaled durations",
    )
    what.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    what.add_argument(
        "--locustfile",
        type=Path,
        metavar="FILE",
        help="run your own locustfile (no memstress import needed) with the memory monitor",
    )
    p.add_argument(
        "--duration",
        type=_positive,
        metavar="S",
        help="seconds of each scenario's stage plan (default: from the config)",
    )
    p.add_argument(
        "--host",
        metavar="URL",
        help="test this service instead of starting the bundled one (loopback unless "
        f"{REMOTE_FLAG}); with --locustfile any URL (redis://..., http://...; only http(s) "
        "is health-checked)",
    )
    p.add_argument(
        REMOTE_FLAG,
        action="store_true",
        default=_env_flag("MEMSTRESS_ALLOW_REMOTE_TARGET"),
        help="let --host name another machine (env MEMSTRESS_ALLOW_REMOTE_TARGET=true, "
        "config safety.allow_remote_targets: true)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--target-pid",
        type=_count,
        metavar="PID",
        help="PID of a loopback --host service, to sample its memory with psutil",
    )
    p.add_argument(
        "--metrics-url",
        metavar="URL",
        help="Prometheus text with the target's RSS (its /metrics, a node exporter, cAdvisor)",
    )
    p.add_argument(
        "--metrics-metric",
        metavar="NAME",
        help="the metric at --metrics-url that is the RSS (default process_resident_memory_bytes)",
    )
    p.add_argument(
        "--metrics-labels",
        metavar="SEL",
        help="labels of the one series to read, e.g. container=api,namespace=staging",
    )
    target.add_argument(
        "--target-cmd",
        metavar='"CMD ..."',
        help="with --locustfile: start the target with this command (output to service.log), "
        "sample its memory, stop it at the end",
    )
    p.add_argument(
        "--recovery-s",
        type=_positive,
        metavar="S",
        help="with --locustfile: after the load, stop the users and watch memory S seconds",
    )
    p.add_argument(
        "--users",
        type=_count,
        default=1,
        metavar="N",
        help="with --locustfile and no shape in it: Locust users (default 1)",
    )
    p.add_argument(
        "--health-path",
        metavar="PATH",
        help="with --locustfile and an http(s) --host: a path that answers 2xx while the "
        "target is healthy (failing repeatedly is a lost target, exit 3)",
    )
    p.add_argument(
        "--adapter",
        choices=adapter_names(),
        default="memstress",
        metavar="NAME",
        help=f"how the scenarios speak to the --host target ({', '.join(adapter_names())}; "
        "default memstress, the bundled service's API; see README Adapters)",
    )
    p.add_argument(
        "--adapter-config",
        type=Path,
        metavar="FILE",
        help="with --adapter http-map: the YAML that maps the operations onto your HTTP API",
    )
    p.add_argument(
        "--processes",
        type=_count,
        default=1,
        metavar="N",
        help="Locust worker processes on this machine (default 1)",
    )
    p.add_argument(
        "--expect-workers",
        type=_count,
        metavar="N",
        help="run Locust as a master and wait for N workers started by hand "
        "(locust -f locustfile.py --worker --master-host THIS_HOST), on other machines too",
    )
    p.add_argument(
        "--master-bind-host",
        metavar="ADDR",
        help="with --expect-workers: the address workers connect to (default: all, *)",
    )
    p.add_argument(
        "--master-bind-port",
        type=_count,
        metavar="PORT",
        help="with --expect-workers: the port workers connect to (default 5557)",
    )
    p.add_argument(
        "--stress-level",
        type=int,
        metavar="I",
        help="index into the config's stress lists (default: stress_levels.default_level)",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="config file (default: the shipped one)"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=RESULTS_DIR,
        help="where run folders go (default: results/)",
    )
    p.add_argument(
        "--fail-on",
        choices=GRADES,
        metavar="GRADE",
        help=f"fail when any grade is below this ({', '.join(GRADES)}; default: config fail_on)",
    )
    p.add_argument(
        "--budget-mb",
        metavar="MB",
        help="memory budget of the bundled service (a number or 'auto'); with --locustfile, "
        "the target's budget in MB (pressure is judged against it)",
    )
    p.add_argument(
        "--monitor-interval",
        type=_positive,
        metavar="S",
        help="seconds between memory samples (default: config monitor.interval)",
    )
    p.add_argument(
        "--profile-leaks",
        action="store_true",
        help="name the code that holds leaked memory: when a leak is called (or at a stage "
        "the scenario marks), capture the target's allocations with memray attach "
        "(a local Python target; needs gdb) and write leak_sites.csv",
    )
    p.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile-leaks: native (C) frames too",
    )
    p.add_argument("--debug", action="store_true", help="debug logging in the log file and console")
    return p


def list_scenarios(console: Console) -> None:

    cfg = load_config()
    table = Table(title="memstress scenarios")
    table.add_column("scenario", no_wrap=True)
    table.add_column("config key", no_wrap=True)
    table.add_column("default s", justify="right", no_wrap=True)
    table.add_column("purpose")
    for info in all_scenarios():
        table.add_row(
            info.name,
            info.seed_key or "-",
            f"{info.default_duration(cfg):g}",
            info.purpose,
        )
    console.print(table)


def setup_logging(log_path: Path, debug: bool) -> None:
    log.setLevel(logging.DEBUG)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    fh = logging.FileHandler(log_path, encoding="utf-8")
    fh.setLevel(logging.DEBUG if debug else logging.INFO)
    fh.setFormatter(fmt)
    ch = logging.StreamHandler(sys.stderr)
    ch.setLevel(logging.DEBUG if debug else logging.WARNING)
    ch.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(fh)
    log.addHandler(ch)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # No wrapping of plain lines when the output is a pipe or a CI log.
    console = Console(soft_wrap=True)
    if args.list_scenarios:
        list_scenarios(console)
        return ExitCode.OK
    if not (args.scenario or args.comprehensive or args.quick or args.locustfile):
        parser.error(
            "say what to run: --scenario NAME, --quick, --comprehensive, --locustfile FILE "
            "or --list-scenarios"
        )
    if args.locustfile:
        return run_own(parser, args, console)
    for option in ("target_cmd", "recovery_s", "health_path"):
        if getattr(args, option):
            parser.error(f"--{option.replace('_', '-')} goes with --locustfile FILE")
    try:
        config = check_config(load_config(args.config))
        level = (
            config.stress_levels.default_level if args.stress_level is None else args.stress_level
        )
        config.stress(level)
        allow_remote = args.allow_remote_target or config.safety.allow_remote_targets
        adapter = load_adapter(args.adapter, str(args.adapter_config or "") or None)
        host = (
            check_host(args.host, allow_remote=allow_remote, schemes=adapter.schemes)
            if args.host
            else None
        )
        if host:
            check_target_pid(host, args.target_pid)
        if adapter.name != "memstress" and host is None:
            raise ConfigError(f"--adapter {adapter.name} needs --host (the target to speak to)")
        metrics = _metrics(args)
    except (ConfigError, ValueError) as exc:
        print(f"run_stress_test.py: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.target_pid and not host:
        parser.error("--target-pid goes with --host (the bundled service's PID is known)")
    if args.budget_mb and host:
        parser.error("--budget-mb sets the bundled service's budget; it cannot apply with --host")
    if (args.metrics_metric or args.metrics_labels) and not metrics:
        parser.error("--metrics-metric and --metrics-labels go with --metrics-url")
    if args.expect_workers and args.processes > 1:
        parser.error("--expect-workers and --processes both choose the workers; give one")
    if (args.master_bind_host or args.master_bind_port) and not args.expect_workers:
        parser.error("--master-bind-host and --master-bind-port go with --expect-workers N")
    out: Path = args.out
    try:
        check_out_dir(out)
    except PreflightError as exc:
        print(f"run_stress_test.py: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE

    from memstress.runner.session import StopFlag, run_scenario, run_session

    settings = run_settings(
        args,
        config,
        level,
        host,
        budget_mb=args.budget_mb,
        allow_remote=allow_remote,
        metrics=metrics,
        expect_workers=args.expect_workers,
        master_bind_host=args.master_bind_host,
        master_bind_port=args.master_bind_port,
        adapter=adapter.name,
        adapter_config=args.adapter_config.resolve() if args.adapter_config else None,
    )
    if args.scenario:
        chosen, scale = [args.scenario], 1.0
    elif args.comprehensive:
        chosen, scale = list(names()), 1.0
    else:
        chosen = [scenario_name(n) for n in config.scenarios.quick]
        scale = config.scenarios.quick_duration_scale
    plan = [(n, args.duration or get_scenario(n).default_duration(config) * scale) for n in chosen]
    try:
        for name, _ in plan:  # before any load: what each scenario needs, the adapter has
            check_scenario(get_scenario(name), adapter)
        for name, _ in plan:  # ... and the target (a Redis without maxmemory has no pressure)
            check_target(get_scenario(name), adapter, host or "")
        check_plans(plan, config, level)
    except (ConfigError, ValueError) as exc:
        print(f"run_stress_test.py: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    kind = args.scenario or ("comprehensive" if args.comprehensive else "quick")
    try:
        folder = new_run_dir(kind, out)
    except OSError as exc:
        print(
            f"run_stress_test.py: error: --out {out}: cannot create a run folder ({exc})",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    setup_logging(folder / "memory_stress_test.log", args.debug)
    stop = StopFlag()
    stop.install()
    if args.scenario:
        (duration,) = (d for _, d in plan)
        console.print(f"memstress: {args.scenario} for {duration:g} s -> {folder}", highlight=False)
        outcome = run_scenario(args.scenario, duration, folder, settings, stop, console)
        console.print(
            f"memstress: {args.scenario}: grade {outcome.grade}, exit code {outcome.exit_code}; "
            f"report {outcome.report or folder}",
            highlight=False,
        )
        return outcome.exit_code
    total = sum(d for _, d in plan)
    console.print(
        f"memstress: {kind} session, {len(plan)} scenarios, about {total / 60:.1f} min of load "
        f"-> {folder}",
        highlight=False,
    )
    _, code = run_session(folder, plan, settings, stop, console)
    console.print(
        f"memstress: {kind} session done, exit code {code}; "
        f"report {folder / 'stress_test_report.md'}",
        highlight=False,
    )
    return code


def run_settings(
    args: argparse.Namespace, config: Config, level: int, host: str | None, **more: Any
) -> RunSettings:
    """What every run of this CLI is given from its flags; ``more``: a mode's own settings."""
    from memstress.runner.session import RunSettings  # the runner is heavy: import late

    return RunSettings(
        config=config,
        config_path=(args.config or Path(config.source)).resolve(),
        stress_level=level,
        host=host,
        target_pid=args.target_pid,
        processes=args.processes,
        fail_on=args.fail_on,
        debug=args.debug,
        monitor_interval=args.monitor_interval,
        profile_leaks=args.profile_leaks,
        profile_native=args.profile_native,
        **more,
    )


def _metrics(args: argparse.Namespace) -> MetricsUrl | None:
    """``--metrics-url`` and its metric and labels, checked as the locustfile checks them."""
    return metrics_url(args.metrics_url, args.metrics_metric, args.metrics_labels)


def run_own(parser: Parser, args: argparse.Namespace, console: Console) -> int:
    """``--locustfile FILE``: the user's own load test, one run folder, one report."""
    from memstress.runner.own import OwnLoad, check_host, is_http

    path: Path = args.locustfile
    if args.adapter != "memstress" or args.adapter_config:
        parser.error(
            "--adapter goes with --scenario, --quick or --comprehensive (a locustfile "
            "speaks to its target itself)"
        )
    if path.suffix != ".py" or not path.is_file():
        parser.error(f"--locustfile: {str(path)!r} is not a .py file (valid: a locustfile)")
    try:
        config = load_config(args.config)
        level = (
            config.stress_levels.default_level if args.stress_level is None else args.stress_level
        )
        config.stress(level)
        host = check_host(args.host) if args.host else None
        if host:
            allow = args.allow_remote_target or config.safety.allow_remote_targets
            check_remote_allowed(host, allow_remote=allow)
        budget = None
        if args.budget_mb is not None:
            budget = _positive(args.budget_mb)
    except (ConfigError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"run_stress_test.py: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.health_path and not (is_http(host) and args.health_path.startswith("/")):
        parser.error("--health-path: a path such as /healthz, on an http(s) --host")
    out: Path = args.out
    try:
        check_out_dir(out)
        folder = new_run_dir(path.stem, out)
    except (PreflightError, OSError) as exc:
        print(f"run_stress_test.py: error: --out {out}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    setup_logging(folder / "memory_stress_test.log", args.debug)

    from memstress.runner.own import run_locustfile
    from memstress.runner.session import StopFlag

    settings = run_settings(args, config, level, host)
    own = OwnLoad(
        locustfile=path.resolve(),
        host=host,
        target_pid=args.target_pid,
        target_cmd=args.target_cmd,
        duration_s=args.duration,
        recovery_s=args.recovery_s or 0.0,
        users=args.users,
        health_path=args.health_path,
        budget_mb=budget,
    )
    stop = StopFlag()
    stop.install()
    console.print(f"memstress: {path.name} -> {folder}", highlight=False)
    outcome = run_locustfile(own, folder, settings, stop, console)
    console.print(
        f"memstress: {path.name}: grade {outcome.grade}, exit code {outcome.exit_code}; "
        f"report {outcome.report or folder}",
        highlight=False,
    )
    return outcome.exit_code


def check_plans(plan: list[tuple[str, float]], config: Config, level: int) -> None:
    """Every scenario's stage plan is playable at its duration (ValueError otherwise)."""
    for name, duration in plan:
        get_scenario(name).build_plan(config, config.stress(level), duration)


if __name__ == "__main__":
    sys.exit(main())
