"""Distributed runs: the shape on the master, the users on workers, stages broadcast.

Stage parameters reaching the workers is checked through what only they can
cause: the leak and the optimization requests are sent only while the stage
a worker holds says so (a worker without the stage sends none at all), and
they stop when the stage that turns them off arrives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import free_port, start_service
from tests.locust_helpers import LocustRun, assert_no_traceback, start_locust

pytestmark = pytest.mark.slow


@dataclass
class Distributed:
    processes: LocustRun  # --processes 2, memory_leak
    processes_code: int
    master: LocustRun  # --master, optimization_overload
    master_code: int
    worker: LocustRun  # --worker, told nothing but where the master is
    worker_code: int
    url: str  # the service both set-ups ran against (alive until the module ends)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    """Both distributed set-ups at once, against one service of their own."""
    base = tmp_path_factory.mktemp("distributed")
    svc = start_service(base / "service" / "data")
    started: list[LocustRun] = []
    try:
        processes = start_locust(
            base / "processes",
            "--headless",
            "--processes",
            "2",
            "--scenario",
            "memory_leak",
            "--duration",
            "12",
            host=svc.url,
        )
        started.append(processes)
        port = free_port()
        master = start_locust(
            base / "master",
            "--headless",
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            "1",
            "--scenario",
            "optimization_overload",
            "--duration",
            "12",
            host=svc.url,
        )
        started.append(master)
        # The worker names no scenario and no run folder: it learns both from the master.
        worker = start_locust(
            base / "worker",
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(port),
            outputs=False,
        )
        started.append(worker)
        yield Distributed(
            processes,
            processes.wait(60),
            master,
            master.wait(60),
            worker,
            worker.wait(30),
            svc.url,
        )
    finally:
        for run in started:
            run.kill()
        svc.stop()


def stage_seconds(run: LocustRun, name: str) -> float:
    rows = run.stages()
    i = next(i for i, r in enumerate(rows) if r["name"] == name)
    return float(rows[i + 1]["elapsed_s"]) - float(rows[i]["elapsed_s"])


def assert_clean_end(run: LocustRun, code: int, stages: list[str]) -> None:
    log = run.log()
    assert code == 0, log[-4000:]
    assert_no_traceback(log)
    assert [r["name"] for r in run.stages()] == stages
    assert run.failures() == 0, run.failure_rows()


def test_processes_2_runs_the_leak_on_a_worker_and_stops_it_with_the_stage(
    runs: Distributed,
) -> None:
    run = runs.processes
    assert_clean_end(run, runs.processes_code, ["baseline", "leak", "stop_leak", "cleanup"])
    assert "2 workers connected" in run.log()

    # One injector in all (fixed_count 1), leaking once a second only in "leak":
    # stage params reached a worker, and the next stage's stopped it.
    leaks = run.requests("POST /faults/leak")
    leak_s = stage_seconds(run, "leak")
    assert 1 <= leaks <= leak_s + 2, (leaks, leak_s)
    # stop_leak reset the faults from a worker. The 1 s cleanup stage may end
    # before its conductor is done; the master's sweep at test stop finishes it.
    (sweep,) = [
        json.loads(e["detail"])
        for e in run.events()
        if e["kind"] == "cleanup" and '"by": "master at test stop"' in e["detail"]
    ]
    assert sweep["complete"] and sweep["faults_reset"], sweep
    assert run.requests("POST /faults/reset") in (1, 2)
    # Every agent of the pool is gone from the target. (Counting deletions is racy:
    # a worker's last DELETE can land after its final stats report, and the
    # sweep counts a 404 as already gone, not as deleted.)
    (start,) = [json.loads(e["detail"]) for e in run.events() if e["kind"] == "run_start"]
    pool = json.loads(run.stages()[0]["params"])["agents"]
    assert pool >= 8 and run.requests("POST /agents/[id]/messages") > 0
    for k in range(pool):
        url = f"{runs.url}/agents/{start['run_id']}-agent-{k}/messages"
        assert requests.get(url, timeout=5).json()["total"] == 0, k


def test_master_and_a_separate_worker_follow_the_masters_scenario(runs: Distributed) -> None:
    master, worker = runs.master, runs.worker
    stages = ["warmup", "ramp", "overload", "cooldown", "cleanup"]
    assert_clean_end(master, runs.master_code, stages)
    assert runs.worker_code == 0, worker.log()[-3000:]
    assert_no_traceback(worker.log())
    assert not list(worker.run_dir.glob("*.csv")), "a worker writes no run files"
    assert not (worker.run_dir / "run_meta.json").exists()
    # A plain locust master records its run as the CLI does (host, opt-in, exit code).
    meta = json.loads((master.run_dir / "run_meta.json").read_text())
    assert meta["scenario"] == "optimization_overload" and meta["host"] == runs.url
    assert meta["exit_code"] == 0 and meta["ended"] >= meta["started"]
    assert meta["expect_workers"] == 1 and meta["remote_target"] is False

    spawned = re.findall(r"All users spawned: (\{[^}]*\})", master.log())
    assert spawned and all("OptimizationFlood" in s and "OverloadAgent" in s for s in spawned)
    # optimize_per_cycle comes only from the stage: 1, then 3, then 5 per cycle.
    optimize = master.requests("POST /memory/optimize")
    cycles = master.requests("POST /memory/cycle")
    assert optimize > cycles >= 5, (optimize, cycles)
