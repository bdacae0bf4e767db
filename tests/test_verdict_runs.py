"""The verdict judges memory: real runs of run_stress_test.py against targets that leak or not.

The targets are ``tests/fixtures/target_api.py``: a plain HTTP server with the
target API that leaks in its own code (or fills a cache to a plateau) and
accounts none of it. Each run's exit code is the verdict's, and the report's
leak verdict must agree with what the monitor's detector said in events.csv.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]
TARGET = ROOT / "tests" / "fixtures" / "target_api.py"


@contextmanager
def target(*args: str) -> Iterator[tuple[str, int]]:
    """A target_api.py process on a free loopback port: (base URL, PID)."""
    proc = subprocess.Popen(
        [sys.executable, str(TARGET), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def compare(old: Path, new: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memstress.reports", "compare", str(old), str(new)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if (p / "run_meta.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "stress_test_results.json").read_text())
    return data


def leak_events(run_dir: Path) -> list[str]:
    with open(run_dir / "events.csv", encoding="utf-8", newline="") as f:
        return [r["kind"] for r in csv.DictReader(f) if r["kind"].startswith("leak_")]


def assert_headline_agrees_with_detector(run_dir: Path) -> dict[str, Any]:
    """The report's leak verdict is the detector's state at the end of the run, never
    a second opinion: 'leak' exactly when the last leak event is leak_detected."""
    doc = results(run_dir)
    lk = doc["metrics"]["leak"]
    kinds = [k for k in leak_events(run_dir) if k in ("leak_detected", "leak_cleared")]
    held = bool(kinds) and kinds[-1] == "leak_detected"
    if lk["verdict"] != "not judged":
        assert (lk["verdict"] == "leak") == held, (lk, kinds)
    md = (run_dir / "stress_test_report.md").read_text()
    assert ("**LEAK**" in md) == (lk["verdict"] == "leak")
    return doc


BASELINE = ("--scenario", "baseline", "--duration", "75", "--monitor-interval", "0.5")


@dataclass
class Finished:
    run: Path
    code: int
    out: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    """Two runs at once: a target that leaks 6 MB/min in its own code, and the same
    server without the leak filling a 24 MB cache to a plateau (time constant 8 s)."""
    root = tmp_path_factory.mktemp("verdict_runs")
    cases = {
        "leaky": ("--leak-mb-per-min", "6"),
        "plateau": ("--plateau-mb", "24", "--plateau-tau-s", "8"),
    }
    with target(*cases["leaky"]) as leaky, target(*cases["plateau"]) as plateau:
        started = {}
        for name, (host, pid) in (("leaky", leaky), ("plateau", plateau)):
            out = root / name
            started[name] = (
                out,
                subprocess.Popen(
                    [*CLI, "--out", str(out), *BASELINE, "--host", host, "--target-pid", str(pid)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    stdin=subprocess.DEVNULL,
                ),
            )
        done = {}
        try:
            for name, (out, proc) in started.items():
                text, _ = proc.communicate(timeout=300)
                done[name] = Finished(only_run(out), proc.returncode, text)
        finally:
            for _, proc in started.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=30)
    yield done


@pytest.mark.slow
def test_a_leaking_target_fails_the_run_and_the_verdict_names_the_leak(
    runs: dict[str, Finished],
) -> None:
    done = runs["leaky"]
    assert done.code == 1, done.out[-3000:]
    doc = assert_headline_agrees_with_detector(done.run)
    lk = doc["metrics"]["leak"]
    assert lk["verdict"] == "leak", lk
    assert lk["false_alarms"] == 0 and lk["injected_start_s"] is None
    # The slope the detector called is the leak's: within 30 % of the RSS growth measured
    # over the whole run (the nominal 6 MB/min plus the allocator's own overhead).
    measured = lk["whole_run_slope_mb_min"]
    assert 5.0 <= measured <= 9.0, lk
    assert lk["slope_mb_min"] == pytest.approx(measured, rel=0.3), lk
    reason = doc["verdict"]["reason"]
    assert f"leak {lk['slope_mb_min']:.2f} MB/min (CI " in reason, reason
    assert "false alarm" not in json.dumps(doc["verdict"]).lower()
    grade = next(g for g in doc["grades"] if g["metric"] == "leak")
    assert grade["grade"] in ("marginal", "poor"), grade


@pytest.mark.slow
def test_a_target_filling_a_cache_to_a_plateau_passes_with_no_leak(
    runs: dict[str, Finished],
) -> None:
    # The same server without the leak. (A target with flat memory is every other
    # baseline run of the suite.)
    done = runs["plateau"]
    doc = assert_headline_agrees_with_detector(done.run)
    lk = doc["metrics"]["leak"]
    assert lk["verdict"] == "no leak", (lk, done.out[-2000:])
    assert done.code == 0, doc["verdict"]["reason"] + done.out[-2000:]
    checks = {c["id"]: c for c in doc["checks"]}
    assert set(checks) == {
        "memory_growth_max_mb",
        "cycle_time_max_s",
        "stability_min",
        "cycles_every_stage",
    }
    assert all(c["status"] == "pass" for c in checks.values()), checks


@pytest.mark.slow
def test_compare_a_clean_run_with_a_leaking_one_names_the_new_leak_first(
    runs: dict[str, Finished],
) -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "reports",
            "compare",
            str(runs["plateau"].run),
            str(runs["leaky"].run),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [x for x in p.stdout.splitlines() if x.startswith("- ")]
    assert lines and "NEW LEAK: leak " in lines[0], p.stdout
    assert "MB/min (CI " in lines[0]
    # and in the other direction nothing got worse
    back = subprocess.run(
        [
            sys.executable,
            "-m",
            "reports",
            "compare",
            str(runs["leaky"].run),
            str(runs["plateau"].run),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "NEW LEAK" not in back.stdout
