"""A user's own load test with memstress: real runs of ``run_stress_test.py --locustfile``.

The targets are the tests' own: a small stdlib HTTP server (``tests/own/leaky_server.py``,
which leaks a few MB/min in its own code when told to) and a real Redis
(Debian's ``redis-server``, 64 MB maxmemory, allkeys-lru). The locustfiles are the
README's examples (``examples/http_locustfile.py``, ``examples/redis_locustfile.py``)
and import nothing of memstress. Each CLI runs in a folder of its own, as in a user's project.

The runs are short, so the leak detector is put on a shorter clock through the
config (``monitor.leak_detection``), as a user would for a short run: the same
knobs, not the judged data.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from memstress.runner.service import free_port
from tests.conftest import ROOT, start_redis
from tests.locust_helpers import assert_no_traceback, config_copy, run_stress

pytestmark = pytest.mark.slow

OWN = ROOT / "tests" / "own"
EXAMPLES = ROOT / "examples"  # the README's examples
LEAKY_SERVER = OWN / "leaky_server.py"
CLI = [sys.executable, str(ROOT / "run_stress_test.py")]


def short_clock_config(path: Path) -> Path:
    """The shipped config with the leak detector, health checks and the recovery watch on a
    clock for a run of under a minute."""
    return config_copy(
        path,
        safety__system_health_check_interval=2,
        scenarios__recovery_min_observed_s=3,
        monitor__leak_detection__warmup_s=5,
        monitor__leak_detection__window_s=2,
        monitor__leak_detection__lookback_s=120,
        monitor__leak_detection__min_slope_mb_per_min=1.0,
    )


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "stress_test_results.json").read_text())
    return data


def event_kinds(run_dir: Path) -> list[str]:
    with open(run_dir / "events.csv", newline="") as fh:
        return [row["kind"] for row in csv.DictReader(fh)]


def samples(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "memory_samples.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def stage_names(run_dir: Path) -> list[str]:
    with open(run_dir / "stages.csv", newline="") as fh:
        return [row["name"] for row in csv.DictReader(fh)]


RUN_FILES = (
    "run_meta.json",
    "stages.csv",
    "events.csv",
    "memory_samples.csv",
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust.json",
    "locust_report.html",
    "stress_test_results.json",
    "stress_test_report.md",
)


def assert_complete(run_dir: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f"{name} missing; {proc.stderr[-2000:]}"
    doc = results(run_dir)
    assert doc["partial"] is False, doc["missing_inputs"]
    assert doc["run"]["scenario"] == run_dir.name.split("_", 1)[1]
    assert_no_traceback(proc.stdout + proc.stderr)
    assert_no_traceback((run_dir / "locust.log").read_text())
    return doc


def start_server(port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(LEAKY_SERVER), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the test server did not answer")


@pytest.fixture
def leaky_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = start_server(port, "--leak-mb-per-min", "6")
    yield f"http://127.0.0.1:{port}", proc.pid
    proc.kill()
    proc.wait(10)


def test_a_leak_in_a_plain_http_target_is_found_and_fails_the_run(
    tmp_path: Path, leaky_server: tuple[str, int]
) -> None:
    url, pid = leaky_server
    out = tmp_path / "results"
    proc = run_stress(
        tmp_path,
        "--locustfile",
        str(EXAMPLES / "http_locustfile.py"),
        "--host",
        url,
        "--target-pid",
        str(pid),
        "--duration",
        "45",
        "--users",
        "3",
        "--monitor-interval",
        "0.5",
        "--config",
        str(short_clock_config(tmp_path / "config.yml")),
        "--out",
        str(out),
    )
    run_dir = only_run_dir(out)
    doc = assert_complete(run_dir, proc)
    assert "leak_detected" in event_kinds(run_dir)
    leak = doc["metrics"]["leak"]
    assert leak["verdict"] == "leak" and 3 < leak["slope_mb_min"] < 10, leak
    assert doc["stop"]["kind"] == "completed", doc["stop"]
    assert stage_names(run_dir) == ["load"]
    # Not one health check or cleanup cycle at a target without the memstress API.
    assert not {"health_ok", "health_failed", "cleanup", "target_lost"} & set(event_kinds(run_dir))
    assert proc.returncode == doc["exit_code"] == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "leak" in doc["verdict"]["reason"], doc["verdict"]


def test_the_same_server_without_a_leak_passes_started_and_stopped_by_target_cmd(
    tmp_path: Path,
) -> None:
    port = free_port()
    out = tmp_path / "results"
    proc = run_stress(
        tmp_path,
        "--locustfile",
        str(EXAMPLES / "http_locustfile.py"),
        "--host",
        f"http://127.0.0.1:{port}",
        "--target-cmd",
        f"{sys.executable} {LEAKY_SERVER} --port {port}",
        "--health-path",
        "/healthz",
        "--duration",
        "15",
        "--recovery-s",
        "4",
        "--users",
        "3",
        "--monitor-interval",
        "0.5",
        "--config",
        str(short_clock_config(tmp_path / "config.yml")),
        "--out",
        str(out),
    )
    run_dir = only_run_dir(out)
    doc = assert_complete(run_dir, proc)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert doc["metrics"]["leak"]["verdict"] != "leak", doc["metrics"]["leak"]
    kinds = event_kinds(run_dir)
    assert "leak_detected" not in kinds
    assert "health_ok" in kinds and "health_failed" not in kinds, "the user's health path"
    meta = json.loads((run_dir / "run_meta.json").read_text())
    target = meta["target_pid"]
    assert target and not psutil.pid_exists(target), "the target was stopped at the end"
    assert (run_dir / "service.log").is_file()
    rows = samples(run_dir)
    assert all(r["rss_source"] == "psutil" for r in rows), "RSS from the started target"
    assert stage_names(run_dir) == ["load", "recovery"]
    assert doc["metrics"]["recovery"]["measured"] is True, doc["metrics"]["recovery"]


def test_a_target_that_dies_mid_run_gives_exit_3_and_keeps_the_report(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "results"
    proc = run_stress(
        tmp_path,
        "--locustfile",
        str(EXAMPLES / "http_locustfile.py"),
        "--host",
        f"http://127.0.0.1:{port}",
        "--target-cmd",
        f"{sys.executable} {LEAKY_SERVER} --port {port} --die-after 20",
        "--duration",
        "40",
        "--monitor-interval",
        "0.5",
        "--out",
        str(out),
    )
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = only_run_dir(out)
    assert (run_dir / "stress_test_report.md").is_file()
    doc = results(run_dir)
    assert doc["stop"]["kind"] == "target_lost", doc["stop"]
    assert "target_lost" in event_kinds(run_dir)
    assert doc["exit_code"] == 3
    rows = samples(run_dir)
    assert sum(1 for r in rows if r["rss_bytes"]) >= 4, "the samples before it died are kept"
    assert [r for r in rows if not r["rss_bytes"]], "and the ones that found it gone"


def test_a_bad_host_or_locustfile_is_one_line_and_exit_2(tmp_path: Path) -> None:
    mine = tmp_path / "mine.py"
    mine.write_text("from locust import User\n")
    bad = run_stress(tmp_path, "--locustfile", str(mine), "--host", "nowhere", timeout=60)
    assert bad.returncode == 2 and "--host: 'nowhere' is not a URL" in bad.stderr, bad.stderr
    missing = run_stress(tmp_path, "--locustfile", str(tmp_path / "none.py"), timeout=60)
    assert missing.returncode == 2 and "is not a .py file" in missing.stderr, missing.stderr
    both = run_stress(
        tmp_path, "--locustfile", str(mine), "--target-pid", "1", "--target-cmd", "x", timeout=60
    )
    assert both.returncode == 2 and "not allowed with" in both.stderr, both.stderr
    stray = run_stress(tmp_path, "--scenario", "baseline", "--recovery-s", "5", timeout=60)
    assert stray.returncode == 2 and "--recovery-s goes with --locustfile" in stray.stderr


# --- Redis -------------------------------------------------------------------------------


@pytest.fixture
def redis_target(tmp_path: Path) -> Iterator[tuple[str, int]]:
    proc, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.1)
    client.close()
    yield f"redis://127.0.0.1:{port}/0", proc.pid
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def test_redis_filling_to_maxmemory_is_no_leak_and_recovers_after_a_flush(
    tmp_path: Path, redis_target: tuple[str, int]
) -> None:
    url, pid = redis_target
    out = tmp_path / "results"
    proc = run_stress(
        tmp_path,
        "--locustfile",
        str(EXAMPLES / "redis_locustfile.py"),
        "--host",
        url,
        "--target-pid",
        str(pid),
        "--duration",
        "30",
        "--recovery-s",
        "8",
        "--users",
        "2",
        "--monitor-interval",
        "0.5",
        "--config",
        str(short_clock_config(tmp_path / "config.yml")),
        "--out",
        str(out),
    )
    run_dir = only_run_dir(out)
    doc = assert_complete(run_dir, proc)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    kinds = event_kinds(run_dir)
    assert "leak_detected" not in kinds
    assert not {"emergency_stop", "target_lost"} & set(kinds), kinds
    assert doc["metrics"]["leak"]["verdict"] != "leak", doc["metrics"]["leak"]
    rows = samples(run_dir)
    used = [float(r["redis_used_memory"]) for r in rows if r["redis_used_memory"]]
    assert max(used) > 55 * 2**20, "Redis filled to its 64 MB maxmemory"
    assert {r["accounted_bytes"] for r in rows} - {""}, "used_memory is the accounted bytes"
    assert all(r["pressure"] == "" for r in rows), "a cache at its own cap is not judged"
    assert float(rows[-1]["redis_used_memory"]) < 8 * 2**20, "flushed in the recovery stage"
    report = (run_dir / "stress_test_report.md").read_text()
    assert "redis_used_memory" in report, "the report shows the redis source's figures"
    # MEMORY STATS: where used_memory goes, the keys and values most of it once full
    dataset = [float(r["redis_dataset_bytes"]) for r in rows if r["redis_dataset_bytes"]]
    assert max(dataset) > 0.5 * max(used), (max(dataset), max(used))
    assert "redis_dataset_bytes" in report and "redis_overhead_bytes" in report
    recovery = doc["metrics"]["recovery"]
    assert recovery["measured"] is True, recovery
    assert recovery["recovered"] is not None
