"""Shared fixtures: the reference service as its own process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def start_redis(
    folder: Path, maxmemory: str = "64mb", policy: str = "allkeys-lru"
) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free loopback port, 64 MB allkeys-lru (or as given), no
    persistence; a missing server fails in CI (make test installs it) and skips elsewhere."""
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
            maxmemory,
            "--maxmemory-policy",
            policy,
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


# --- pytest-xdist: what runs together, and in what order ---------------------------------
# `make test` runs the tests on 4 workers (-n 4). Each test file goes to one worker as a
# whole, so a module fixture's runs (one set of real runs read by several tests) start
# once, except the files below, whose tests each start runs of their own: those are sent
# test by test to whichever worker is free. (`--dist loadgroup` would say this with
# marks, but it stops grouping on pytest 9.2: pytest-dev/pytest-xdist#1386.)
EACH_ON_ITS_OWN = frozenset(
    {
        "tests/test_cli.py",
        "tests/test_cli_runs.py",
        "tests/test_detector.py",
        "tests/test_locustfile.py",
        "tests/test_own_load.py",
        "tests/test_reliability.py",
    }
)

# Sent first, in this order: what takes a minute or more of wall time (a serial run:
# test_leak_profiling.py 185 s, test_verdict_runs.py and test_multi_host.py 95 s, the
# quick session 80 s, test_redis_pressure.py 75 s ...), so that none of it starts last
# while the others wait. Then the other slow tests, then LATE, then the rest, which fill
# the gaps at the end.
FIRST = (
    "tests/test_leak_profiling.py",
    "tests/test_verdict_runs.py",
    "tests/test_multi_host.py",
    "tests/test_cli_runs.py",
    "tests/test_own_load.py",
    "tests/test_adapters.py",
    "tests/test_redis_pressure.py",
    "tests/test_bench.py",
    "tests/test_monitor_runs.py",
    "tests/test_scenarios_run.py",
    "tests/test_monitor_hostile.py",
)
# After the other slow ones: 60 s but little CPU, its own sampler and seven targets judge
# best on a machine less busy than at the start, when every worker starts a set of runs.
LATE = ("tests/test_leak_targets.py",)


def scope_of(nodeid: str) -> str:
    """The unit a worker is given: the test's file, or the test alone."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in EACH_ON_ITS_OWN else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") not in ("load", "loadfile", "loadscope", "loadgroup"):
        return None  # --dist each, worksteal: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        """Load by :func:`scope_of`, in the collection's order (see below)."""

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False  # the order is pytest_collection_modifyitems's
    return Scheduler(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a module-scoped fixture in a file sent test by test (it would run once per
    worker); under xdist, order the units as :data:`FIRST` and :data:`LATE` say."""
    for item in items:
        if item.nodeid.split("::", 1)[0] in EACH_ON_ITS_OWN and _uses_module_fixture(item):
            raise pytest.UsageError(
                f"{item.nodeid} uses a module-scoped fixture, but its file is in "
                "EACH_ON_ITS_OWN (tests/conftest.py): take the file out of that set"
            )
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the order is pytest's own

    def rank(item: pytest.Item) -> int:
        first = [i for i, prefix in enumerate(FIRST) if item.nodeid.startswith(prefix)]
        if first:
            return first[0]
        if item.nodeid.startswith(LATE):
            return len(FIRST) + 1
        return len(FIRST) + (0 if item.get_closest_marker("slow") else 2)

    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(scope_of(item.nodeid), []).append(item)
    ordered = sorted(units.values(), key=lambda unit: min(rank(i) for i in unit))
    items[:] = [item for unit in ordered for item in unit]


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the test's fixtures
    if info is None:
        return False
    return any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())
