"""The memory monitor in real Locust runs against the real reference service.

One module fixture starts the runs in parallel (each Locust process with its
own run folder, most with a service of their own) and the tests read what
they left: ``memory_samples.csv``, ``worker_samples.csv``, ``events.csv``, the
log and the exit code. Durations are short; the leak detector judges a
shortened run on a proportionally faster clock (``monitors.leak.on_run_clock``).
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memstress.common.config import load_config
from memstress.common.runfiles import SAMPLE_COLUMNS, WORKER_COLUMNS
from memstress.monitors.leak import VERDICT_FILE, replay
from memstress.monitors.sources import TIERS
from memstress.runner.service import ManagedService
from tests.conftest import ROOT, free_port, start_service
from tests.locust_helpers import (
    LocustRun,
    assert_no_traceback,
    assert_on_schedule,
    config_copy,
    start_locust,
)

pytestmark = pytest.mark.slow

INTERVAL = 0.2


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Done:
    run: LocustRun
    code: int

    @property
    def samples(self) -> list[dict[str, str]]:
        return rows(self.run.run_dir / "memory_samples.csv")

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.run.events()]


@dataclass
class Runs:
    leak: Done
    blind: Done
    blind_config: Path
    own_leak: Done
    baseline: Done
    host_limit: Done
    pressure_limit: Done
    lost: Done
    processes: Done


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("monitor_runs")
    services: list[ManagedService] = []
    started: list[LocustRun] = []
    targets: list[subprocess.Popen[str]] = []

    def service(name: str) -> ManagedService:
        svc = start_service(base / name / "data")
        services.append(svc)
        return svc

    def locust(name: str, svc: ManagedService, *args: str) -> LocustRun:
        if "--processes" in args:  # two at once: each its own master port
            port = str(free_port())
            args = (*args, "--master-bind-host", "127.0.0.1", "--master-bind-port", port)
            args = (*args, "--master-host", "127.0.0.1", "--master-port", port)
        run = start_locust(
            base / name,
            "--headless",
            "--monitor-interval",
            str(INTERVAL),
            *args,
            host=svc.url,
        )
        started.append(run)
        return run

    housekeeping = config_copy(
        base / "housekeeping.yml",
        safety__system_health_check_interval=1.0,
        safety__memory_cleanup_interval=1.5,
    )
    try:
        leaky, plain, doomed, shared, unseen = (
            service(n) for n in ("leaky", "plain", "doomed", "shared", "unseen")
        )
        leak = locust("leak", leaky, "--scenario", "memory_leak", "--duration", "30")
        # A detector that cannot call the leak: its minimum slope far above the injected rate.
        blind_config = config_copy(
            base / "blind.yml", monitor__leak_detection__min_slope_mb_per_min=1000
        )
        blind = locust(
            "blind", unseen, "--scenario", "memory_leak", "--duration", "30",
            "--memstress-config", str(blind_config),
        )  # fmt: skip
        # A target of the tests' own that leaks 12 MB/min in its own code (nothing injected).
        own = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fixtures" / "target_api.py"),
             "--leak-mb-per-min", "12"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        targets.append(own)
        assert own.stdout is not None
        own_url = f"http://127.0.0.1:{int(own.stdout.readline())}"
        own_leak = start_locust(
            base / "own_leak", "--headless", "--monitor-interval", str(INTERVAL),
            "--scenario", "baseline", "--duration", "30", "--target-pid", str(own.pid),
            host=own_url,
        )  # fmt: skip
        started.append(own_leak)
        baseline = locust(
            "baseline",
            plain,
            "--scenario",
            "baseline",
            "--duration",
            "30",
            "--memstress-config",
            str(housekeeping),
        )
        lost = locust("lost", doomed, "--scenario", "baseline", "--duration", "60")
        processes = locust(
            "processes", shared, "--scenario", "baseline", "--duration", "25", "--processes", "2"
        )
        host_cfg = config_copy(base / "host.yml", safety__emergency_shutdown_threshold=1)
        # the exit code of a --processes run is the master's: the stop must stick there too
        host_limit = locust(
            "host_limit", shared, "--scenario", "baseline", "--duration", "30",
            "--memstress-config", str(host_cfg), "--processes", "2",
        )  # fmt: skip
        pressure_cfg = config_copy(
            base / "pressure.yml",
            safety__target_pressure_limit=1,
            safety__target_pressure_limit_s=0.5,
        )
        pressure_limit = locust(
            "pressure_limit", shared, "--scenario", "baseline", "--duration", "30",
            "--memstress-config", str(pressure_cfg),
        )  # fmt: skip

        # Let the doomed run take samples, then kill its target outright.
        samples_csv = lost.run_dir / "memory_samples.csv"
        deadline = time.monotonic() + 30
        while not samples_csv.exists() or len(rows(samples_csv)) < 15:
            assert time.monotonic() < deadline, lost.log()[-3000:]
            time.sleep(0.2)
        doomed.stop(signal.SIGKILL)
        lost_code = lost.wait(30)

        yield Runs(
            leak=Done(leak, leak.wait(90)),
            blind=Done(blind, blind.wait(90)),
            blind_config=blind_config,
            own_leak=Done(own_leak, own_leak.wait(90)),
            baseline=Done(baseline, baseline.wait(90)),
            host_limit=Done(host_limit, host_limit.wait(60)),
            pressure_limit=Done(pressure_limit, pressure_limit.wait(60)),
            lost=Done(lost, lost_code),
            processes=Done(processes, processes.wait(90)),
        )
    finally:
        for proc in targets:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        for run in started:
            run.kill()
        for svc in services:
            svc.stop()


def test_samples_have_every_column_and_a_row_per_interval(runs: Runs) -> None:
    done = runs.baseline
    assert done.code == 0, done.run.log()[-3000:]
    assert_no_traceback(done.run.log())
    with open(done.run.run_dir / "memory_samples.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == SAMPLE_COLUMNS
    samples = done.samples
    assert_on_schedule(done.run.log(), samples, INTERVAL)
    # the first sample is taken at test_start, before Locust spawns a user: no user and,
    # when /memory/stats answered it, no message stored yet (the memory before any load)
    first = samples[0]
    assert first["users"] == "0" and first["stage"] == "warmup", first
    assert float(first["conversations_bytes"] or 0) == 0, first
    # the last row every source answered in time (at 0.2 s an HTTP source times out at
    # 0.12 s, so on a loaded machine one may miss a sample: its columns are then empty)
    answered = [i for i, s in enumerate(samples) if s["prom_rss_bytes"] and s["budget_bytes"]]
    assert len(answered) >= 0.8 * len(samples) and answered[-1] >= len(samples) - 10
    last = samples[answered[-1]]
    numeric = (
        "rss_bytes", "vms_bytes", "num_threads", "open_files", "prom_rss_bytes",
        "budget_bytes", "pressure", "host_percent", "sample_cost_ms", "sample_cpu_ms",
    )  # fmt: skip
    for col in numeric:
        assert float(last[col]) >= 0, col
    assert last["rss_source"] == "psutil" and last["strategy"] in ("normal", "aggressive")
    assert {s["stage"] for s in samples} >= {"warmup", "steady"}
    assert {s["leak_state"] for s in samples} <= {"warmup", "clear"}
    # the psutil and Prometheus readings of the same process agree
    assert abs(float(last["rss_bytes"]) - float(last["prom_rss_bytes"])) < 0.2 * float(
        last["rss_bytes"]
    )


def test_baseline_raises_no_leak_and_runs_health_checks_and_cleanup(runs: Runs) -> None:
    kinds = runs.baseline.kinds()
    assert "leak_detected" not in kinds
    assert "health_ok" in kinds and "health_failed" not in kinds
    cleanups = [e for e in runs.baseline.run.events() if e["kind"] == "cleanup"]
    assert any('"by": "monitor"' in e["detail"] for e in cleanups), cleanups


def test_memory_leak_scenario_raises_leak_detected(runs: Runs) -> None:
    done = runs.leak
    assert done.code == 0, done.run.log()[-3000:]
    events = done.run.events()
    stage_at = {e["detail"]: float(e["time"]) for e in events if e["kind"] == "stage"}
    leak_start = next(t for d, t in stage_at.items() if '"name": "leak"' in d)
    detected = [float(e["time"]) for e in events if e["kind"] == "leak_detected"]
    assert detected and detected[0] > leak_start, events
    assert "leak detected: rising" in done.run.log()
    assert "leak" in {s["leak_state"] for s in done.samples}
    detail = next(e["detail"] for e in events if e["kind"] == "leak_detected")
    assert '"slope_mb_min"' in detail and '"ci_low_mb_min"' in detail


@pytest.mark.parametrize("which", ["leak", "baseline"])
def test_the_leak_verdict_is_written_and_a_replay_of_the_samples_agrees(
    runs: Runs, which: str
) -> None:
    done: Done = getattr(runs, which)
    data = json.loads((done.run.run_dir / VERDICT_FILE).read_text())
    assert f"leak verdict: {data['verdict']}: {data['reason']}" in done.run.log()
    # the reference service reports every tier with its limit: all judged, none trusted
    assert set(data["tiers_judged"]) == set(TIERS) and data["tiers_trusted"] == []
    trends = [e for e in data["episodes"] if e["kind"] == "trend"]
    if which == "leak":
        assert trends and trends[0]["slope_mb_min"] > 0 and trends[0]["series"] == "memory"
        # memory_leak's cleanup stage resets the leak: given back, unless the run ended first
        if data["verdict"] == "leak":
            assert data["called_at"] == trends[-1]["called_at"]
        else:
            assert data["verdict"] == "no leak" and trends[-1]["ended"] == "released", data
    else:
        assert data["verdict"] == "no leak" and trends == [], data
    samples = done.samples
    assert all(s["conversations_limit_bytes"] != "" for s in samples if s["pressure"] != "")
    again = replay(samples, data["settings"])  # the run's own (on its shortened clock)
    assert again.verdict == data["verdict"]
    assert json.loads(json.dumps(again.as_dict())) == data


def test_memory_leak_report_verdict_is_the_detectors_and_checks_every_expectation(
    runs: Runs,
) -> None:
    from memstress.reports.build import build_run_report

    rep = build_run_report(runs.leak.run.run_dir, load_config())
    doc = rep.results
    lk = doc["metrics"]["leak"]
    kinds = [e["kind"] for e in runs.leak.run.events() if e["kind"].startswith("leak_")]
    assert lk["verdict"] == "leak", lk  # the headline is the detector's: it found the leak
    assert "leak_detected" in kinds
    assert (
        "leak " in doc["verdict"]["leak"] and "injected by the scenario" in doc["verdict"]["leak"]
    )
    # The leak stage's own slope is the injected rate (30 MB/min x factor 1.0), within 20 %.
    (stage,) = [s for s in doc["stages"] if s["name"] == "leak"]
    assert stage["leak"] and stage["params"]["injects"] == "leak"
    assert stage["leak_slope_mb_min"] == pytest.approx(30.0, rel=0.2), stage
    # Every expectation of the scenario is in the checks table with its result.
    assert [c["id"] for c in doc["checks"]] == [
        "leak_detected_within_s",
        "target_flagged",
        "memory_back_after_reset_pct",
    ]
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["leak_detected_within_s"]["status"] == "pass", checks
    assert all(
        c["status"] in ("pass", "fail", "not judged") and c["message"] for c in checks.values()
    )
    md = rep.report_path.read_text()
    assert "### Checks: what this scenario expects" in md
    for c in doc["checks"]:
        assert c["text"] in md


def test_a_plain_locust_run_fails_at_quit_on_a_leak_of_the_targets_own(runs: Runs) -> None:
    """The quit verdict (plain `locust --headless`) judges the leak as the report does."""
    done = runs.own_leak
    log = done.run.log()
    assert_no_traceback(log)
    assert done.code == 1, log[-3000:]
    assert "memstress verdict: FAILED" in log
    verdict = next(line for line in log.splitlines() if "memstress verdict: FAILED" in line)
    assert re.search(r"leak \d+\.\d\d MB/min \(CI [\d.]+–[\d.]+\) detected at \d+ s", verdict), (
        verdict
    )
    assert "false alarm" not in verdict


def test_a_detector_that_cannot_call_the_leak_fails_the_run_on_its_check(runs: Runs) -> None:
    from memstress.reports.build import build_run_report

    assert runs.blind.code == 0, runs.blind.run.log()[-3000:]  # the run itself played out
    kinds = [e["kind"] for e in runs.blind.run.events()]
    assert "leak_detected" not in kinds
    rep = build_run_report(runs.blind.run.run_dir, load_config(runs.blind_config))
    assert rep.exit_code == 1
    reason = rep.results["verdict"]["reason"]
    assert "check failed: the monitor detects the leak within 60 s of its injection" in reason
    assert rep.results["metrics"]["leak"]["verdict"] == "no leak"


@pytest.mark.parametrize("which", ["host_limit", "pressure_limit"])
def test_a_safety_limit_stops_the_run_with_exit_code_4(runs: Runs, which: str) -> None:
    done: Done = getattr(runs, which)
    log = done.run.log()
    assert done.code == 4, log[-3000:]
    assert_no_traceback(log)
    stops = [e for e in done.run.events() if e["kind"] == "emergency_stop"]
    assert len(stops) == 1
    reason = stops[0]["detail"]
    expected = "host memory" if which == "host_limit" else "target pressure"
    assert reason.startswith(expected), reason
    assert f"emergency_stop: {reason}" in log and "Shutting down (exit code 4)" in log
    assert len(done.samples) < 30 / INTERVAL / 2  # stopped early


def test_a_lost_target_ends_the_run_with_exit_code_3_and_keeps_every_sample(runs: Runs) -> None:
    done = runs.lost
    log = done.run.log()
    assert done.code == 3, log[-3000:]
    assert "Shutting down (exit code 3)" in log
    lost = [e for e in done.run.events() if e["kind"] == "target_lost"]
    assert len(lost) == 1 and "5 consecutive samples" in lost[0]["detail"]
    samples = done.samples
    assert_on_schedule(log, samples, INTERVAL)
    assert [s["elapsed_s"] for s in samples] == sorted(s["elapsed_s"] for s in samples)
    assert samples[-1]["rss_bytes"] == "" and samples[0]["rss_bytes"] != ""
    # Counted in samples, not seconds: the run ended on the fifth failed sample (one
    # more may be taken while it stops), far short of its 60 s plan.
    failed = len(samples) - max(i for i, s in enumerate(samples) if s["rss_bytes"]) - 1
    assert 5 <= failed <= 7, failed
    assert float(samples[-1]["elapsed_s"]) < 30


def test_workers_report_their_own_memory_to_the_master(runs: Runs) -> None:
    done = runs.processes
    assert done.code == 0, done.run.log()[-3000:]
    path = done.run.run_dir / "worker_samples.csv"
    with open(path, newline="") as fh:
        assert tuple(next(csv.reader(fh))) == WORKER_COLUMNS
    reports = rows(path)
    assert len({r["worker_id"] for r in reports}) == 2, reports
    for r in reports:
        assert int(r["rss_bytes"]) > 10 << 20 and float(r["cpu_percent"]) >= 0
    assert max(int(r["user_count"]) for r in reports) >= 1
    # the master samples the target itself; workers never write the run folder
    assert len(done.samples) > 10
