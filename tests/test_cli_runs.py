"""Real runs of run_stress_test.py: a quick session, interrupts, a crashed load generator."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]

RUN_FILES = (
    "run_meta.json",
    "stages.csv",
    "events.csv",
    "memory_samples.csv",
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust_failures.csv",
    "locust_exceptions.csv",
    "locust.json",
    "locust_report.html",
    "service.log",
    "stress_test_results.json",
    "stress_test_report.md",
)


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


BASELINE_60S = ("--scenario", "baseline", "--duration", "60", "--monitor-interval", "0.5")


def wait_for_samples(out: Path) -> Path:
    """The run folder of a baseline run under ``out``, once it holds a few samples."""
    run_dir: Path = wait_for(lambda: next(out.glob("*_baseline"), None), 30, "the run folder")
    wait_for(lambda: sample_rows(run_dir) >= 4, 60, "memory samples")
    return run_dir


def stop_cli(cli: subprocess.Popen[str]) -> None:
    """Kill the CLI if a test failed early, and close its pipes either way."""
    if cli.poll() is None:
        cli.kill()
    cli.communicate(timeout=30)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sample_rows(run_dir: Path) -> int:
    path = run_dir / "memory_samples.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "stress_test_results.json").read_text())
    return data


def child_running(cli: subprocess.Popen[str], module: str) -> psutil.Process | None:
    """The CLI's child started as ``python -m <module>``."""
    for child in psutil.Process(cli.pid).children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if any(a == "-m" and b == module for a, b in itertools.pairwise(args)):
            return child
    return None


@pytest.mark.slow
def test_quick_session_end_to_end(tmp_path: Path) -> None:
    cli = start_cli(
        "--quick", "--duration", "12", "--out", str(tmp_path), "--monitor-interval", "0.5"
    )
    out, err = cli.communicate(timeout=240)
    assert cli.returncode in (0, 1), out + err
    assert "Traceback" not in out + err
    (session,) = tmp_path.glob("*_quick")
    runs = sorted(p for p in session.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[1] for p in runs] == [
        "baseline",
        "memory_leak",
        "memory_pressure_crisis",
        "recovery",
    ]
    for run in runs:
        missing = [f for f in RUN_FILES if not (run / f).exists()]
        assert not missing, f"{run.name} lacks {missing}"
        assert list((run / "stress_test_charts").glob("*.png")), run
        assert sample_rows(run) >= 8
        res = results(run)
        assert res["partial"] is False, res["missing_inputs"]
        assert res["exit_code"] in (0, 1)
    session_json = json.loads((session / "stress_test_results.json").read_text())
    assert session_json["exit_code"] == cli.returncode
    assert (session / "stress_test_report.md").read_text().count("memory_pressure_crisis") >= 1
    assert (session / "memory_stress_test.log").exists() or (
        tmp_path / "memory_stress_test.log"
    ).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_everything_and_reports_interrupted(tmp_path: Path, sig: int) -> None:
    cli = start_cli(*BASELINE_60S, "--out", str(tmp_path))
    try:
        run_dir = wait_for_samples(tmp_path)
        cli.send_signal(sig)
        out, err = cli.communicate(timeout=90)
    finally:
        stop_cli(cli)
    assert cli.returncode == 130, out + err
    assert "Traceback" not in out + err
    res = results(run_dir)
    assert res["interrupted"] is True
    assert res["exit_code"] == 130
    assert "interrupted" in (run_dir / "stress_test_report.md").read_text().lower()
    # Locust was stopped gracefully: it wrote its exact totals and HTML report.
    assert (run_dir / "locust.json").exists()
    assert (run_dir / "locust_report.html").exists()
    assert sample_rows(run_dir) >= 4


@pytest.mark.slow
def test_locust_killed_mid_run_still_builds_a_partial_report(tmp_path: Path) -> None:
    cli = start_cli(*BASELINE_60S, "--out", str(tmp_path))
    try:
        run_dir = wait_for_samples(tmp_path)
        child = wait_for(lambda: child_running(cli, "locust"), 10, "the Locust process")
        kept = sample_rows(run_dir)
        child.kill()
        out, err = cli.communicate(timeout=90)
    finally:
        stop_cli(cli)
    assert cli.returncode != 0
    assert "Traceback" not in out + err
    assert sample_rows(run_dir) >= kept  # nothing written before the kill was lost
    assert not (run_dir / "locust.json").exists()  # Locust never got to write its totals
    # What is on disk rebuilds into a report marked partial, as often as asked.
    rebuilt = subprocess.run(
        [sys.executable, "-m", "reports", "build", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in rebuilt.stdout + rebuilt.stderr
    res = results(run_dir)
    assert res["partial"] is True
    assert any("locust.json" in m for m in res["missing_inputs"]), res["missing_inputs"]
    assert res["metrics"], "metrics from the samples were still computed"


@pytest.mark.slow
def test_target_killed_mid_run_exit_3_report_says_so(tmp_path: Path) -> None:
    cli = start_cli(*BASELINE_60S, "--out", str(tmp_path))
    try:
        run_dir = wait_for_samples(tmp_path)
        service = wait_for(lambda: child_running(cli, "service"), 10, "the service process")
        kept = sample_rows(run_dir)
        killed_at = time.time()
        service.kill()
        out, err = cli.communicate(timeout=90)
    finally:
        stop_cli(cli)
    assert cli.returncode == 3, out + err
    assert "Traceback" not in out + err
    assert sample_rows(run_dir) >= kept
    res = results(run_dir)
    assert res["exit_code"] == 3
    assert res["stop"]["kind"] == "target_lost"
    events = (run_dir / "events.csv").read_text().splitlines()
    lost = [e for e in events if ",target_lost," in e]
    assert lost, events
    assert float(lost[0].split(",")[0]) >= killed_at
    report = (run_dir / "stress_test_report.md").read_text()
    assert "target_lost" in report or "target lost" in report.lower()
