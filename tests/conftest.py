"""Shared fixtures: the reference service as its own process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memstress.runner.service import ManagedService, free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def start_service(
    data_dir: Path,
    *extra: str,
    port: int | None = None,
    faults: bool = True,
    budget_mb: float | None = None,
    timeout: float = 30,
) -> ManagedService:
    """The reference service for a test, up once /health answers (200 or 503); its log
    beside ``data_dir``, one per port, so a restart on the same data has its own."""
    port = port or free_port()
    return ManagedService.start(
        data_dir,
        data_dir.parent / f"service-{port}.log",
        port=port,
        faults=faults,
        budget_mb=budget_mb,
        extra_args=extra,
        ready="answering",
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    """One reference service (faults enabled, default budget) for the whole session."""
    svc = start_service(tmp_path_factory.mktemp("service") / "data")
    yield svc
    svc.stop()


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[ManagedService]:
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


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free loopback port, 64 MB allkeys-lru, no persistence;
    a missing server fails in CI (make test installs it) and skips elsewhere."""
    server = shutil.which("redis-server")
    if server is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; make test installs it in CI")
        pytest.skip(message)
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(autouse=True)
def _end_the_tests_own_locust_runs() -> Iterator[None]:
    """A test that fails while its Locust run goes on would leave the process running
    (and its Popen's ResourceWarning would fail whichever test the collector hits next).
    Runs a module or session fixture started before this test stay: others read them."""
    from tests.locust_helpers import STARTED

    before = len(STARTED)
    yield
    for run in STARTED[before:]:
        run.kill()
    del STARTED[before:]
