"""Start and stop the bundled reference service: for a run, a benchmark or a test."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import psutil
import requests

from memstress.common.config import ROOT
from memstress.common.target import TargetClient, TargetError

log = logging.getLogger("memstress")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child on loopback (benchmarks, tests): no proxies, none of
    the suite's own ``MEMSTRESS_*``/``LOCUST_*`` options, unbuffered output; plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MEMSTRESS_", "LOCUST_")) and "proxy" not in k.lower()
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def spawn(
    args: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    mode: str = "a",
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A child of the suite (the service, Locust) in its own session, output to ``log_path``
    (``mode`` "a" appends to it, "w" starts it anew).

    Its own session: a Ctrl-C in the terminal reaches only us, and we stop the child in
    order (or kill its whole process group). ``env`` None inherits ours.
    """
    with open(log_path, mode + "b") as fh:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


Ready = Literal["healthy", "answering"]
"""When a started service counts as up: ``healthy``, /health says ok or degraded (a run
needs a target that can take load); ``answering``, /health answers at all, 200 or 503
(a test or benchmark that starts the service under a budget it may already exceed)."""


def pin(pid: int, cpu: int | None) -> None:
    """Pin a process (and the threads it has now) to one CPU; a no-op for None."""
    if cpu is None:
        return
    try:
        proc = psutil.Process(pid)
        proc.cpu_affinity([cpu])
        for t in proc.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(t.id, {cpu})
    except (psutil.Error, OSError, AttributeError):
        pass


@dataclass
class ManagedService:
    """A ``python -m memstress.service`` child on a free loopback port: the one way the CLI, the
    benchmarks and the tests start the reference service."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @classmethod
    def start(
        cls,
        data_dir: Path,
        log_path: Path,
        *,
        port: int | None = None,
        config_path: Path | None = None,
        budget_mb: float | str | None = None,
        faults: bool = True,
        bind: str | None = None,
        log_level: str | None = None,
        extra_args: Sequence[str] = (),
        python_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        ready: Ready = "healthy",
        timeout: float = 60.0,
    ) -> Self:
        """Start the service and wait until it is ``ready``; TargetError (naming its log)
        if it exits first or is not ready within ``timeout`` s, and then it is stopped.

        ``None`` leaves a flag to the service's own default (bind 127.0.0.1, log level
        info, the shipped config and its budget); ``env`` None inherits this process's
        environment; ``cpu`` pins the service to that CPU once it is up. ``python_args`` go
        to the interpreter before ``-m memstress.service``: ``("-m", "memray", "run", ...)``
        runs the service under a tool that runs it in the same process (the pid, the pin and
        the SIGTERM stay the service's).
        """
        port = port or free_port()
        args = [
            sys.executable,
            *python_args,
            "-m",
            "memstress.service",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        if faults:
            args.append("--enable-faults")
        if config_path is not None:
            args += ["--config", str(config_path)]
        if budget_mb is not None:
            args += ["--budget-mb", budget_mb if isinstance(budget_mb, str) else f"{budget_mb:g}"]
        if bind is not None:
            args += ["--bind", bind]
        if log_level is not None:
            args += ["--log-level", log_level]
        args += list(extra_args)
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = spawn(args, log_path, env=env)
        svc = cls(proc, f"http://127.0.0.1:{port}", data_dir, log_path)
        try:
            svc._wait_ready(ready, timeout)
        except TargetError:
            svc.stop(timeout=5)
            raise
        pin(proc.pid, cpu)
        log.info("reference service pid %d on %s (log %s)", proc.pid, svc.url, log_path)
        return svc

    def _wait_ready(self, ready: Ready, timeout: float) -> None:
        client = TargetClient(self.url, timeout=1.0)
        deadline = time.monotonic() + timeout
        last = "no answer"
        try:
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    raise TargetError(
                        f"reference service exited with code {code}: {self.last_line()} "
                        f"(see {self.log_path})"
                    )
                try:
                    h = client.health()
                    if ready == "answering" and h["http_status"] in (200, 503):
                        return
                    if h.get("status") in ("ok", "degraded"):
                        return
                    last = f"status {h.get('status')!r}"
                except (requests.RequestException, ValueError) as exc:
                    last = type(exc).__name__
                time.sleep(0.1)
        finally:
            client.close()
        raise TargetError(
            f"reference service: {self.url} was not {ready} within {timeout:g} s ({last}; "
            f"see {self.log_path})"
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """The service's whole log so far ('' when it cannot be read)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        return (self.log().strip().splitlines() or [""])[-1]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Send ``sig`` (SIGTERM: a clean stop), then kill its process group after
        ``timeout`` s; returns the exit code (negative: the signal that ended it)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("reference service did not stop in %g s; killing it", timeout)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
        return self.proc.returncode
