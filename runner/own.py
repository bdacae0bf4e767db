"""``run_stress_test.py --locustfile FILE``: a user's own locustfile with the monitor.

Locust runs the user's file and the plugin (``memstress/plugin.py``) as two
``-f`` files, so the file needs no memstress import. With ``--target-cmd`` the
target is started here (its output in ``service.log``), waited for, and
stopped at the end; a target that exits during the run is a lost target (exit 3).
The report is built from the run folder afterwards, as for a scenario.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from rich.console import Console

import memstress
from memstress.common.exitcodes import ExitCode
from memstress.common.units import MB
from memstress.runner.progress import Snapshot, make_progress, read_snapshot
from memstress.runner.service import spawn
from memstress.runner.session import (
    RunOutcome,
    RunSettings,
    StopFlag,
    begin_meta,
    finish_run,
    locust_base_args,
    locust_exit_reason,
    run_locust,
    write_meta,
)

log = logging.getLogger("memstress")

PLUGIN = Path(memstress.__file__).with_name("plugin.py")
"""The plugin as a file, for Locust's second ``-f``."""

START_TIMEOUT_S = 30.0


class TargetStartError(RuntimeError):
    """The target command did not start, or the target did not answer."""


@dataclass
class OwnLoad:
    """What ``--locustfile`` runs and against what."""

    locustfile: Path
    host: str | None = None
    target_pid: int | None = None
    target_cmd: str | None = None
    duration_s: float | None = None
    recovery_s: float = 0.0
    users: int = 1
    health_path: str | None = None
    budget_mb: float | None = None

    @property
    def name(self) -> str:
        return self.locustfile.stem


def is_http(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("http", "https")


def check_host(url: str) -> str:
    """Any URL with a scheme and a place (``redis://127.0.0.1:6379``); ValueError otherwise."""
    parts = urlsplit(url)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError(
            f"--host: {url!r} is not a URL (valid: SCHEME://HOST:PORT, e.g. "
            "http://127.0.0.1:8000 or redis://127.0.0.1:6379)"
        )
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"--host: {url!r} has a port that is not a number") from None
    return url.rstrip("/")


@dataclass
class TargetProcess:
    """A target started from ``--target-cmd``: its own session, output in service.log."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, command: str, log_path: Path, cwd: Path) -> TargetProcess:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise TargetStartError(f"--target-cmd: {exc}") from None
        if not argv:
            raise TargetStartError("--target-cmd: empty command")
        try:
            proc = spawn(argv, log_path, cwd=cwd)
        except OSError as exc:
            raise TargetStartError(
                f"--target-cmd: cannot start {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        log.info("target pid %d: %s (log %s)", proc.pid, command, log_path)
        return cls(proc, log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM to its process group, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("target did not stop in %g s of SIGTERM; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def answers(host: str, health_path: str | None, timeout: float = 2.0) -> str | None:
    """None when the target answers; else why not. HTTP: the health path's 2xx (any answer
    without one); another scheme: a TCP connection to its host and port."""
    parts = urlsplit(host)
    if is_http(host):
        url = host + (health_path or "/")
        try:
            r = requests.get(url, timeout=timeout)
        except requests.RequestException as exc:
            return f"GET {url}: no answer ({type(exc).__name__})"
        if health_path and not 200 <= r.status_code < 300:
            return f"GET {url}: HTTP {r.status_code}"
        return None
    if parts.hostname and parts.port:
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
                return None
        except OSError as exc:
            return f"{parts.hostname}:{parts.port}: {exc.strerror or exc}"
    return None  # nothing to connect to (a unix socket, no port): take it as up


def wait_ready(
    host: str | None, health_path: str | None, target: TargetProcess | None, timeout: float
) -> None:
    """Until the target answers (and, when started here, while it runs); TargetStartError."""
    end = time.monotonic() + timeout
    why = "not started"
    while time.monotonic() < end:
        if target is not None and not target.alive():
            raise TargetStartError(
                f"--target-cmd exited with code {target.proc.returncode} before it answered: "
                f"{target.tail()} (see {target.log_path})"
            )
        if host is None:
            return
        problem = answers(host, health_path)
        if problem is None:
            return
        why = problem
        time.sleep(0.2)
    raise TargetStartError(f"{host} did not answer in {timeout:g} s ({why})")


def locust_command(o: OwnLoad, run_dir: Path, pid: int | None, s: RunSettings) -> list[str]:
    cmd = locust_base_args(f"{o.locustfile},{PLUGIN}", run_dir, s)
    cmd += ["--report-at-quit", "no", "-u", str(o.users), "-r", str(o.users)]
    if o.host:
        cmd += ["--host", o.host]
    if pid:
        cmd += ["--target-pid", str(pid)]
    if o.duration_s:
        cmd += ["--duration", f"{o.duration_s:g}"]
    if o.recovery_s:
        cmd += ["--recovery-s", f"{o.recovery_s:g}"]
    if o.health_path:
        cmd += ["--health-path", o.health_path]
    if o.budget_mb:
        cmd += ["--budget-mb", f"{o.budget_mb:g}"]
    return cmd


def run_locustfile(
    o: OwnLoad, run_dir: Path, s: RunSettings, stop: StopFlag, console: Console
) -> RunOutcome:
    """One run of the user's locustfile: target up, Locust headless, target down, report."""
    planned = (o.duration_s or 0.0) + o.recovery_s
    begin_meta(
        run_dir,
        s,
        scenario=o.name,
        kind="locustfile",
        locustfile=str(o.locustfile),
        host=o.host or "",
        duration_s=planned or None,
        purpose=f"Your own load test ({o.locustfile.name}) with the memory monitor",
        expected=[],
        budget_bytes=o.budget_mb * MB if o.budget_mb else None,
        target_cmd=o.target_cmd,
    )
    target: TargetProcess | None = None
    reason = ""
    pid = o.target_pid
    try:
        if o.target_cmd:
            target = TargetProcess.start(o.target_cmd, run_dir / "service.log", Path.cwd())
            pid = target.pid
            write_meta(run_dir, target_pid=pid)
        if target is not None or is_http(o.host):
            wait_ready(o.host, o.health_path, target, START_TIMEOUT_S if target else 5.0)
    except TargetStartError as exc:
        log.error("%s", exc)
        reason, code = f"target unreachable: {exc}", int(ExitCode.TARGET_LOST)
    else:
        view = make_progress(console)
        base = Snapshot(o.name, 1, 1, 0.0, planned or 0.0)

        def tick(elapsed: float) -> None:
            if target is not None:
                target.alive()  # reaps it once it exits, so the monitor sees it gone
            base.elapsed_s = elapsed
            view.show(read_snapshot(run_dir, base))

        cmd = locust_command(o, run_dir, pid, s)
        log.debug("locust command: %s", " ".join(cmd))
        cap = s.config.safety.max_test_duration
        try:
            code = run_locust(cmd, run_dir, planned or cap, cap, stop, tick, cwd=Path.cwd())
        finally:
            view.close()
        reason = locust_exit_reason(code)
        if target is not None and not target.alive():
            reason = f"the target exited with code {target.proc.returncode} during the run"
            if code in (ExitCode.OK, ExitCode.FAILED):
                code = ExitCode.TARGET_LOST
    finally:
        if target is not None:
            target.stop()
    return finish_run(o.name, run_dir, code, reason, stop, s)
