"""Real runs of run_stress_test.py: a quick session, --processes, interrupts, crashes."""

from __future__ import annotations

import csv
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
import yaml

from tests.conftest import ROOT
from tests.locust_helpers import assert_no_traceback

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]
REPORTS = [sys.executable, "-m", "memstress.reports"]

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


def lenient_config(tmp_path: Path) -> Path:
    """The shipped config with every scenario check advisory (required: false): with
    ``--fail-on poor`` no figure of a short run can fail its verdict, so any exit code but 0
    is a fault of the run itself."""
    cfg = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    for checks in cfg["checks"].values():
        for setting in checks.values():
            setting["required"] = False
    path = tmp_path / "lenient.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def strict_config(tmp_path: Path) -> Path:
    """The shipped config with a memory-growth bound no run meets (a million MB of
    shrinkage for every grade); every run has memory samples, so every run is graded."""
    cfg = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    cfg["performance_thresholds"]["memory_growth"] = dict.fromkeys(
        ("excellent", "good", "acceptable", "poor"), -1_000_000
    )
    path = tmp_path / "strict.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_quick_session_end_to_end(tmp_path: Path) -> None:
    # Nothing in the figures can fail this verdict (see lenient_config); the failing
    # verdict is checked below, by grading the same runs against a strict config.
    out_dir = tmp_path / "out"
    cli = start_cli(
        "--config",
        str(lenient_config(tmp_path)),
        "--quick",
        "--duration",
        "12",
        "--out",
        str(out_dir),
        "--monitor-interval",
        "0.5",
        "--fail-on",
        "poor",
    )
    out, err = cli.communicate(timeout=240)
    assert cli.returncode == 0, out + err
    assert "Traceback" not in out + err
    (session,) = out_dir.glob("*_quick")
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
        assert res["exit_code"] == 0, res["verdict"]
    session_json = json.loads((session / "stress_test_results.json").read_text())
    assert session_json["exit_code"] == 0
    assert (session / "stress_test_report.md").read_text().count("memory_pressure_crisis") >= 1
    assert (session / "memory_stress_test.log").exists()

    # The same runs against a memory-growth bound none meets: every run and the session fail.
    strict = subprocess.run(
        [*REPORTS, "build", str(session), "--config", str(strict_config(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "Traceback" not in strict.stdout + strict.stderr
    for run in runs:
        res = results(run)
        assert res["exit_code"] == 1 and not res["verdict"]["passed"], res["verdict"]


@pytest.mark.slow
def test_processes_with_csv_through_the_cli(tmp_path: Path) -> None:
    """The README's --processes path: two forked workers, Locust's CSV files, one report."""
    cli = start_cli(
        "--config",
        str(lenient_config(tmp_path)),
        "--scenario",
        "baseline",
        "--duration",
        "10",
        "--processes",
        "2",
        "--monitor-interval",
        "0.5",
        "--fail-on",
        "poor",
        "--out",
        str(tmp_path),
    )
    out, err = cli.communicate(timeout=180)
    assert cli.returncode == 0, out + err
    (run,) = tmp_path.glob("*_baseline")
    # No traceback anywhere, Locust's log included: the --processes parent's CSV writer
    # used to run once more against its closed files at exit (common/locustfix.py).
    assert_no_traceback(out + err + (run / "locust.log").read_text())
    missing = [f for f in RUN_FILES if not (run / f).exists()]
    assert not missing, missing
    with open(run / "worker_samples.csv", newline="") as fh:
        assert len({row["worker_id"] for row in csv.DictReader(fh)}) == 2
    with open(run / "locust_stats.csv", newline="") as fh:
        total = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    res = results(run)
    assert res["exit_code"] == 0 and res["partial"] is False, res["missing_inputs"]


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
        [sys.executable, "-m", "memstress.reports", "build", str(run_dir)],
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
        service = wait_for(
            lambda: child_running(cli, "memstress.service"), 10, "the service process"
        )
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
