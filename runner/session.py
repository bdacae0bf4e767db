"""Run scenarios headless, one Locust process per scenario, and build their reports."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from memstress.common.checkout import identity
from memstress.common.config import ROOT, Config
from memstress.common.exitcodes import ExitCode, worst
from memstress.common.runfiles import new_run_dir, write_meta
from memstress.common.target import MetricsUrl, TargetError, is_loopback
from memstress.runner.progress import Snapshot, make_progress, read_snapshot
from memstress.runner.service import ManagedService, free_port, spawn

log = logging.getLogger("memstress")

GRACE_S = 60.0
"""Past its planned length (plus this) a Locust run is asked to stop, then killed."""

WORKERS_WAIT_S = 300.0
"""How long a master waits for --expect-workers workers before it gives up (exit 1)."""


@dataclass
class StopFlag:
    """Set by the signal handlers; the run loops poll it."""

    requested: bool = False
    signal_name: str = ""

    def install(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                log.warning("second Ctrl-C: stopping harder")
            self.requested = True
            self.signal_name = signal.Signals(signum).name

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


@dataclass
class RunSettings:
    config: Config
    config_path: Path
    stress_level: int
    host: str | None = None
    target_pid: int | None = None
    processes: int = 1
    fail_on: str | None = None
    debug: bool = False
    budget_mb: str | None = None
    monitor_interval: float | None = None
    profile_leaks: bool = False
    profile_native: bool = False
    allow_remote: bool = False
    metrics: MetricsUrl | None = None
    expect_workers: int | None = None  # a master for workers started by hand
    master_bind_host: str | None = None
    master_bind_port: int | None = None
    adapter: str = "memstress"
    adapter_config: Path | None = None

    def profile_mode(self) -> str:
        """``--profile-leaks`` for Locust: on when asked (flag or config ``on``); with the
        config's ``auto``, only the stages a scenario marks, and only on the bundled service."""
        mode = self.config.monitor.leak_profiling.mode
        if self.profile_leaks or mode == "on":
            return "on"
        if mode == "auto" and self.host is None:
            return "marked"
        return "off"


@dataclass
class RunOutcome:
    scenario: str
    run_dir: Path
    exit_code: int
    grade: str = "n/a"
    report: Path | None = None
    notes: list[str] = field(default_factory=list)


def locust_command(
    scenario: str, duration_s: float, run_dir: Path, host: str, pid: int | None, s: RunSettings
) -> list[str]:
    cmd = locust_base_args(str(ROOT / "locustfile.py"), run_dir, s)
    cmd += [
        "--host",
        host,
        "--scenario",
        scenario,
        "--stress-level",
        str(s.stress_level),
        "--duration",
        f"{duration_s:g}",
    ]
    if pid:
        cmd += ["--target-pid", str(pid)]
    if s.adapter != "memstress":
        cmd += ["--adapter", s.adapter]
    if s.adapter_config is not None:
        cmd += ["--adapter-config", str(s.adapter_config)]
    return cmd


def locust_base_args(locustfiles: str, run_dir: Path, s: RunSettings) -> list[str]:
    """Headless Locust writing into ``run_dir``, with the suite's config and monitor settings."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locustfiles,
        "--headless",
        # Locust's own --config reads a Locust conf file; ours has its own name.
        "--memstress-config",
        str(s.config_path),
        "--run-dir",
        str(run_dir),
        "--csv",
        str(run_dir / "locust"),
        "--csv-full-history",
        "--json-file",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "locust_report.html"),
        # The verdict (reports/) decides pass or fail, not the mere presence of a failure.
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "DEBUG" if s.debug else "INFO",
    ]
    if s.processes > 1:
        # The forked workers talk to their master on loopback, on a port of this run's own:
        # Locust's default (5557 on every interface) collides with any other run on the host.
        port = str(free_port())
        cmd += ["--processes", str(s.processes), "--master-bind-host", "127.0.0.1"]
        cmd += ["--master-bind-port", port, "--master-port", port]
    if s.expect_workers:
        cmd += ["--master", "--expect-workers", str(s.expect_workers)]
        cmd += ["--expect-workers-max-wait", f"{WORKERS_WAIT_S:g}"]
        if s.master_bind_host:
            cmd += ["--master-bind-host", s.master_bind_host]
        if s.master_bind_port:
            cmd += ["--master-bind-port", str(s.master_bind_port)]
    if s.allow_remote:
        cmd += ["--allow-remote-target"]
    if s.metrics is not None:
        cmd += ["--metrics-url", s.metrics.url, "--metrics-metric", s.metrics.metric]
        if s.metrics.labels:
            cmd += ["--metrics-labels", ",".join(f"{k}={v}" for k, v in s.metrics.labels)]
    if s.monitor_interval:
        cmd += ["--monitor-interval", f"{s.monitor_interval:g}"]
    cmd += ["--profile-leaks", s.profile_mode()]
    if s.profile_native:
        cmd += ["--profile-native"]
    return cmd


def run_locust(
    cmd: list[str],
    run_dir: Path,
    planned_s: float,
    cap_s: float,
    stop: StopFlag,
    on_tick: Callable[[float], None],
    cwd: Path = ROOT,
) -> int:
    # Its own session, so a terminal Ctrl-C reaches only us; we forward it once.
    proc = spawn(cmd, run_dir / "locust.log", env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=cwd)
    start = time.monotonic()
    asked_at: float | None = None
    limit = min(planned_s + GRACE_S, cap_s)
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        on_tick(elapsed)
        if asked_at is None and (stop.requested or elapsed > limit):
            why = f"signal {stop.signal_name}" if stop.requested else f"time cap {limit:g} s"
            log.warning("stopping Locust (%s)", why)
            proc.send_signal(signal.SIGINT)
            asked_at = time.monotonic()
        elif asked_at is not None and time.monotonic() - asked_at > 30:
            log.error("Locust did not stop within 30 s of SIGINT; killing it")
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.5)
    return int(proc.returncode)


def run_scenario(
    scenario: str,
    duration_s: float,
    run_dir: Path,
    s: RunSettings,
    stop: StopFlag,
    console: Console,
    index: int = 1,
    total: int = 1,
) -> RunOutcome:
    """One scenario: service up (unless --host), Locust headless, service down, report."""
    from memstress.scenarios.registry import (
        get_scenario,  # the scenario package is heavy: import late
    )

    info = get_scenario(scenario)
    begin_meta(
        run_dir,
        s,
        scenario=scenario,
        host=s.host or "",
        duration_s=duration_s,
        purpose=info.purpose,
        expected=[e.describe(e.setting(s.config, info.name).bound) for e in info.expected],
        budget_bytes=None,
        expect_workers=s.expect_workers,
        remote_target=bool(s.host) and not is_loopback(s.host or ""),
        allow_remote_target=s.allow_remote,
        metrics_url=s.metrics.url if s.metrics else None,
        memstress=identity(),
        adapter=s.adapter,
    )
    service: ManagedService | None = None
    code: int
    pid: int | None
    reason = ""
    try:
        if s.host is None:
            service = ManagedService.start(
                run_dir / "service-data",
                run_dir / "service.log",
                config_path=s.config_path,
                budget_mb=s.budget_mb,
            )
            host, pid = service.url, service.pid
            write_meta(run_dir, host=host)
        else:
            host, pid = s.host, s.target_pid
            from memstress.scenarios.adapters import load_adapter

            adapter = load_adapter(
                s.adapter, None if s.adapter_config is None else str(s.adapter_config)
            )
            adapter.wait_ready(host, 5.0)
    except TargetError as exc:
        log.error("%s", exc)
        reason = f"target unreachable: {exc}"
        code = ExitCode.TARGET_LOST
    else:
        log.info("scenario %s: %g s of stages against %s", scenario, duration_s, host)
        view = make_progress(console)
        base = Snapshot(scenario, index, total, 0.0, duration_s)

        def tick(elapsed: float) -> None:
            base.elapsed_s = elapsed
            view.show(read_snapshot(run_dir, base))

        cmd = locust_command(scenario, duration_s, run_dir, host, pid, s)
        log.debug("locust command: %s", " ".join(cmd))
        try:
            waits = WORKERS_WAIT_S if s.expect_workers else 0.0
            code = run_locust(
                cmd, run_dir, duration_s + waits, s.config.safety.max_test_duration, stop, tick
            )
        finally:
            view.close()
        reason = locust_exit_reason(code)
        if not reason and s.expect_workers and _gave_up_on_workers(run_dir):
            reason = (
                f"fewer than {s.expect_workers} workers connected within {WORKERS_WAIT_S:g} s "
                "(start them with: locust -f locustfile.py --worker --master-host MASTER)"
            )
            log.error("%s", reason)
        if service is not None and not service.alive():
            reason = f"reference service exited with code {service.proc.returncode}"
    finally:
        if service is not None:
            service.stop()
    return finish_run(scenario, run_dir, code, reason, stop, s)


def _gave_up_on_workers(run_dir: Path) -> bool:
    log_path = run_dir / "locust.log"
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return "Gave up waiting for workers to connect" in text


def begin_meta(run_dir: Path, s: RunSettings, **fields: Any) -> None:
    """``run_meta.json`` as a run begins (no end, no exit code yet), with the run's ``fields``."""
    write_meta(
        run_dir,
        schema=1,
        run_id=run_dir.name,
        stress_level=s.stress_level,
        started=time.time(),
        ended=None,
        exit_code=None,
        stop_reason="",
        interrupted=False,
        config_path=str(s.config_path),
        processes=s.processes,
        **fields,
    )


def locust_exit_reason(code: int) -> str:
    """Why Locust's exit ``code`` leaves the figures untrusted; empty for a code of ours."""
    if code < 0:
        return f"Locust was killed by {signal.Signals(-code).name}; its figures are partial"
    if code not in list(ExitCode):
        return f"Locust exited with unexpected code {code} (see locust.log)"
    return ""


def finish_run(
    name: str, run_dir: Path, code: int, reason: str, stop: StopFlag, s: RunSettings
) -> RunOutcome:
    """Record how the run ended in ``run_meta.json`` (Ctrl-C or SIGTERM wins, exit 130),
    then build its report, whose verdict gives the exit code unless a stop code stands."""
    if stop.requested:
        code, reason = ExitCode.INTERRUPTED, f"interrupted by {stop.signal_name or 'the user'}"
    write_meta(
        run_dir,
        ended=time.time(),
        exit_code=code,
        interrupted=stop.requested,
        **({"stop_reason": reason} if reason else {}),
    )
    return _report(name, run_dir, code, s)


def _report(scenario: str, run_dir: Path, code: int, s: RunSettings) -> RunOutcome:
    from memstress.reports import build_run_report

    try:
        rep = build_run_report(run_dir, s.config, s.fail_on)
    except Exception:
        log.exception("building the report of %s failed", run_dir)
        return RunOutcome(scenario, run_dir, code or ExitCode.FAILED, notes=["report failed"])
    return RunOutcome(scenario, run_dir, rep.exit_code, rep.overall_grade, rep.report_path)


def run_session(
    session: Path,
    plan: list[tuple[str, float]],
    s: RunSettings,
    stop: StopFlag,
    console: Console,
) -> tuple[list[RunOutcome], int]:
    """Several scenarios, one run folder each, inside the session folder."""
    from memstress.reports import build_session_report

    outcomes: list[RunOutcome] = []
    for i, (scenario, duration) in enumerate(plan, start=1):
        if stop.requested:
            break
        run_dir = new_run_dir(scenario, session)
        console.print(f"[{i}/{len(plan)}] {scenario}: {duration:g} s -> {run_dir}", highlight=False)
        out = run_scenario(scenario, duration, run_dir, s, stop, console, i, len(plan))
        outcomes.append(out)
        console.print(
            f"[{i}/{len(plan)}] {scenario}: grade {out.grade}, exit code {out.exit_code}",
            highlight=False,
        )
        if out.exit_code == ExitCode.TARGET_LOST and s.host is not None:
            break  # an external target that is gone will not come back for the next scenario
    # A session exits with its most severe run's code.
    code: int = worst(o.exit_code for o in outcomes)
    try:
        rep = build_session_report(session, [o.run_dir for o in outcomes], s.config, s.fail_on)
        code = worst([code, rep.exit_code])
    except Exception:
        log.exception("building the session report of %s failed", session)
        code = worst([code, ExitCode.FAILED])
    if stop.requested:
        code = ExitCode.INTERRUPTED
    return outcomes, code
