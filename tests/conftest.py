"""Shared fixtures: the reference service as its own process on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from runner.service import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class ServiceProcess:
    """A running ``python -m service`` and how to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def start_service(
    data_dir: Path,
    *extra: str,
    port: int | None = None,
    faults: bool = True,
    budget_mb: float | None = None,
    timeout: float = 30,
) -> ServiceProcess:
    """Start the reference service and wait until /health answers."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"service-{port}.log"
    args = [PYTHON, "-m", "service", "--port", str(port), "--data-dir", str(data_dir)]
    if faults:
        args.append("--enable-faults")
    if budget_mb is not None:
        args += ["--budget-mb", str(budget_mb)]
    args += list(extra)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    svc = ServiceProcess(proc, port, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{svc.log()}")
        try:
            if requests.get(f"{svc.url}/health", timeout=1).status_code in (200, 503):
                return svc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    svc.stop(signal.SIGKILL)
    raise RuntimeError(f"service did not answer /health within {timeout} s:\n{svc.log()}")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One reference service (faults enabled, default budget) for the whole session."""
    svc = start_service(tmp_path_factory.mktemp("service") / "data")
    yield svc
    svc.stop()


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A service of the test's own, for tests that change its state heavily."""
    svc = start_service(tmp_path / "data")
    yield svc
    svc.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic never goes through a proxy from the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
