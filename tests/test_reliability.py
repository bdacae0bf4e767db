"""The suite under real faults: a safety stop under real memory pressure, durability
during the crisis scenario, and the data a run created removed afterwards."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from memstress.runner.service import ManagedService
from tests.conftest import start_service
from tests.locust_helpers import assert_no_traceback, config_copy, start_locust


def stats(svc: ManagedService) -> dict[str, Any]:
    data: dict[str, Any] = requests.get(f"{svc.url}/memory/stats", timeout=5).json()
    return data


@pytest.fixture
def small_service(tmp_path: Path) -> Any:
    svc = start_service(tmp_path / "data", budget_mb=256)
    yield svc
    svc.stop()


@pytest.mark.slow
def test_emergency_stop_fires_just_above_the_current_pressure_and_leaves_faults_reset(
    tmp_path: Path, small_service: ManagedService
) -> None:
    before = stats(small_service)["pressure"]
    limit = round(before + 8, 1)  # just above where the target is now
    config = config_copy(
        tmp_path / "limit.yml",
        safety__target_pressure_limit=limit,
        safety__target_pressure_limit_s=1,
    )
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        "memory_pressure_crisis",
        "--duration",
        "40",
        "--monitor-interval",
        "0.25",
        "--memstress-config",
        str(config),
        host=small_service.url,
    )
    code = run.wait(90)
    log = run.log()
    assert code == 4, log[-3000:]
    assert_no_traceback(log)
    events = run.events()
    stop = [e for e in events if e["kind"] == "emergency_stop"]
    assert stop, events
    # on the run's own clock (its first stage to the stop), not from the process start,
    # which on a loaded machine can come seconds before the plan does
    started = next(float(e["time"]) for e in events if e["kind"] == "stage")
    assert float(stop[0]["time"]) - started < 40, "the guard stopped the run before its plan ended"
    assert f"{limit:g}" in stop[0]["detail"] and "pressure" in stop[0]["detail"]
    after = stats(small_service)
    # The run's cleanup reset the faults: no ballast is held once it has stopped.
    assert after["tiers"]["ballast"]["bytes"] == 0, after["tiers"]
    assert after["pressure"] < limit, after


@pytest.mark.slow
def test_every_message_acknowledged_during_the_crisis_scenario_is_listed_afterwards(
    tmp_path: Path, small_service: ManagedService
) -> None:
    """A probe writes to its own agent while memory_pressure_crisis drives the target
    into emergency; every write that got 201 must be listed afterwards."""
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        "memory_pressure_crisis",
        "--duration",
        "24",
        "--monitor-interval",
        "0.5",
        host=small_service.url,
    )
    acked: list[str] = []
    shed = 0
    strategies: set[str] = set()
    done = threading.Event()

    def probe() -> None:
        nonlocal shed
        session = requests.Session()
        deadline = time.monotonic() + 60
        for i in range(20000):  # bounded in count and time
            if done.is_set() or time.monotonic() > deadline:
                return
            text = f"probe message {i}"
            r = session.post(
                f"{small_service.url}/agents/durability-probe/messages",
                json={"role": "user", "content": text},
                timeout=5,
            )
            if r.status_code == 201:
                acked.append(text)
            elif r.status_code == 503 and "Retry-After" in r.headers:
                shed += 1
            else:
                raise AssertionError(f"unexpected {r.status_code}: {r.text[:200]}")
            if i % 20 == 0:
                strategies.add(stats(small_service)["strategy"])
            time.sleep(0.02)

    writer = threading.Thread(target=probe, daemon=True)
    writer.start()
    code = run.wait(90)
    done.set()
    writer.join(30)
    assert code == 0, run.log()[-3000:]
    assert "emergency" in strategies, strategies  # the probe wrote through the crisis
    assert shed > 0, "the emergency shed some of the probe's writes"
    listed: list[str] = []
    for offset in range(0, len(acked) + 1000, 500):
        page = requests.get(
            f"{small_service.url}/agents/durability-probe/messages",
            params={"offset": offset, "limit": 500},
            timeout=10,
        ).json()
        listed += [m["content"] for m in page["messages"]]
        if offset + 500 >= page["total"]:
            break
    assert len(acked) > 50
    assert listed == acked  # zero lost, nothing extra, in order


@pytest.mark.slow
def test_a_run_removes_the_agents_and_namespaces_it_created(
    tmp_path: Path, small_service: ManagedService
) -> None:
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        "vector_store",
        "--duration",
        "12",
        host=small_service.url,
    )
    # Bounded by the run itself (it ends after its 12 s plan) and by 60 s: on a loaded
    # machine Locust's start alone can take most of a fixed 10 s.
    deadline = time.monotonic() + 60
    starts: list[dict[str, str]] = []
    while not starts and run.proc.poll() is None and time.monotonic() < deadline:
        if (run.run_dir / "events.csv").exists():
            starts = [e for e in run.events() if e["kind"] == "run_start"]
        time.sleep(0.1)
    assert len(starts) == 1, run.log()[-3000:]
    run_id = json.loads(starts[0]["detail"])["run_id"]
    # While the run goes on, its first namespace is there to search ...
    found = 0
    while found != 200 and run.proc.poll() is None and time.monotonic() < deadline:
        found = requests.post(
            f"{small_service.url}/vectors/search",
            json={"namespace": f"{run_id}-ns-0", "query": "memory", "k": 1},
            timeout=5,
        ).status_code
        time.sleep(0.2)
    assert found == 200, "the run's namespace never appeared under its run id"
    assert run.wait(60) == 0, run.log()[-3000:]
    assert run.requests("POST /vectors/documents") > 0
    # ... and after it, none of its agents or namespaces is left.
    plan = run.stages()[0]["params"]
    assert json.loads(plan)["namespaces"] >= 2
    for k in range(8):
        r = requests.get(f"{small_service.url}/agents/{run_id}-agent-{k}/messages", timeout=5)
        assert r.json()["total"] == 0
        r = requests.post(
            f"{small_service.url}/vectors/search",
            json={"namespace": f"{run_id}-ns-{k}", "query": "memory", "k": 3},
            timeout=5,
        )
        assert r.status_code == 404, (k, r.status_code, r.text[:200])
    after = stats(small_service)
    assert after["tiers"]["ballast"]["bytes"] == 0
    assert after["tiers"]["vectors"]["items"] == 0, after["tiers"]["vectors"]
