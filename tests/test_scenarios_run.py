"""Each of the ten scenarios headless against the real service, all at once.

One module fixture starts the services and ten Locust processes in parallel
(short plans, 7-14 s) and waits for them; the tests then read what each run
left in its folder. The pressure scenarios get services of their own with a
small budget (192 MB), so their ballast is small and nobody else feels it;
while they run, the fixture polls those services' pressure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from memstress.common.config import load_config
from memstress.runner.service import ManagedService
from memstress.scenarios.registry import get_scenario
from tests.conftest import start_service
from tests.locust_helpers import ROOT, LocustRun, assert_no_traceback, start_locust

pytestmark = pytest.mark.slow

# scenario -> (seconds of its plan, the service it runs against)
RUNS = {
    "baseline": (8, "shared"),
    "memory_leak": (8, "shared"),
    "vector_store": (7, "shared"),
    "concurrent_agents": (8, "shared"),
    "optimization_overload": (12, "shared"),
    "endurance": (8, "shared"),
    "rapid_growth": (9, "spikes"),
    "recovery": (8, "objects"),
    "high_memory": (14, "high"),
    "memory_pressure_crisis": (14, "crisis"),
}
BUDGETS_MB = {"shared": 512, "spikes": 512, "objects": 256, "high": 192, "crisis": 192}
POLLED = {"high": "high_memory", "crisis": "memory_pressure_crisis"}  # service: its scenario
TOLERANCE = 3.0


@dataclass
class Outcome:
    run: LocustRun
    code: int


@dataclass
class TenRuns:
    outcomes: dict[str, Outcome]
    pressure: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)  # service group -> base URL


def user_class_names() -> dict[str, list[str]]:
    """Each scenario's user class names, from ``python -m memstress.scenarios --json`` (Locust
    stays out of the pytest process)."""
    out = subprocess.run(
        [sys.executable, "-m", "memstress.scenarios", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {e["scenario"]: e["user_classes"] for e in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenRuns]:
    base = tmp_path_factory.mktemp("ten")
    services: dict[str, ManagedService] = {}
    runs: dict[str, LocustRun] = {}
    try:
        for group, budget in BUDGETS_MB.items():
            services[group] = start_service(base / f"svc-{group}" / "data", budget_mb=budget)
        for name, (seconds, group) in RUNS.items():
            runs[name] = start_locust(
                base / name,
                "--headless",
                "--scenario",
                name,
                "--duration",
                str(seconds),
                host=services[group].url,
            )
        result = TenRuns({}, {g: [] for g in POLLED}, user_class_names())
        result.urls = {group: svc.url for group, svc in services.items()}
        deadline = time.monotonic() + max(s for s, _ in RUNS.values()) + 60
        while any(r.proc.poll() is None for r in runs.values()):
            assert time.monotonic() < deadline, "the runs did not end by themselves"
            for group, scenario in POLLED.items():
                if runs[scenario].proc.poll() is None:
                    url = f"{services[group].url}/memory/stats"
                    try:
                        pressure = float(requests.get(url, timeout=2).json()["pressure"])
                    except requests.RequestException:
                        continue
                    result.pressure[group].append((time.time(), pressure))
            time.sleep(0.25)
        for name, run in runs.items():
            code = run.wait(5)
            result.outcomes[name] = Outcome(run, code)
        yield result
    finally:
        for run in runs.values():
            run.kill()
        for svc in services.values():
            svc.stop()


def planned_stage_names(name: str) -> list[str]:
    config = load_config()
    scenario = get_scenario(name)
    stress = config.stress(config.stress_levels.default_level)
    return [s.name for s in scenario.build_plan(config, stress, RUNS[name][0])]


@pytest.mark.parametrize("name", list(RUNS))
def test_scenario_runs_headless_and_ends_by_itself(ten: TenRuns, name: str) -> None:
    out = ten.outcomes[name]
    log = out.run.log()
    assert out.code == 0, log[-4000:]
    assert_no_traceback(log)
    # It ended by itself, after its last stage: the shape said so, in the run's own time.
    assert "Shape test completed" in log

    stages = out.run.stages()
    assert [s["name"] for s in stages] == planned_stage_names(name)
    events = out.run.events()
    assert [e["kind"] for e in events if e["kind"] == "stage"] == ["stage"] * len(stages)
    assert ("run_end", "stage plan complete") in [(e["kind"], e["detail"]) for e in events]


@pytest.mark.parametrize("name", list(RUNS))
def test_scenario_reaches_every_endpoint_it_declares_and_no_other(ten: TenRuns, name: str) -> None:
    run = ten.outcomes[name].run
    declared = {e.name for e in get_scenario(name).endpoints}
    stats = run.stats()
    missing = [n for n in declared if run.requests(n) == 0]
    assert not missing, f"no requests to {missing}"
    assert {n for (_method, n) in stats} <= declared
    assert run.failures() == 0, run.failure_rows()


@pytest.mark.parametrize("name", list(RUNS))
def test_only_the_chosen_scenarios_users_run(ten: TenRuns, name: str) -> None:
    log = ten.outcomes[name].run.log()
    spawned = re.findall(r"All users spawned: (\{[^}]*\})", log)
    assert spawned, log[-2000:]
    for counts in spawned:
        assert sorted(json.loads(counts)) == sorted(ten.classes[name])


def window(run: LocustRun, stage: str) -> tuple[float, float]:
    rows = run.stages()
    i = next(i for i, r in enumerate(rows) if r["name"] == stage)
    return float(rows[i]["time"]), float(rows[i + 1]["time"])


def test_the_pressure_controller_reaches_and_holds_its_target(ten: TenRuns) -> None:
    start, end = window(ten.outcomes["high_memory"].run, "hold")
    samples = [p for t, p in ten.pressure["high"] if start <= t < end]
    assert len(samples) >= 8, ten.pressure["high"]
    reached = next((i for i, p in enumerate(samples) if abs(p - 80) <= TOLERANCE), None)
    assert reached is not None and reached <= len(samples) // 2, samples
    assert all(abs(p - 80) <= TOLERANCE for p in samples[reached:]), samples


def test_the_crisis_reaches_its_target_and_recovers_below_90(ten: TenRuns) -> None:
    run = ten.outcomes["memory_pressure_crisis"].run
    start, end = window(run, "crisis")
    crisis = [p for t, p in ten.pressure["crisis"] if start <= t < end]
    assert crisis and max(crisis) >= 95 - TOLERANCE, ten.pressure["crisis"]
    r_start, r_end = window(run, "recovery")
    after = [p for t, p in ten.pressure["crisis"] if r_start + 1 <= t < r_end]
    assert after and max(after) < 90, ten.pressure["crisis"]


def test_writes_the_target_sheds_are_counted_as_shed_not_failed(ten: TenRuns) -> None:
    """Every 503 + Retry-After the crisis service sent is one SHED entry, none a failure."""
    run = ten.outcomes["memory_pressure_crisis"].run
    shed_by_target = requests.get(f"{ten.urls['crisis']}/memory/stats", timeout=5).json()
    shed = sum(int(e["num_requests"]) for (method, _), e in run.stats().items() if method == "SHED")
    assert shed_by_target["writes_shed"] > 0, "the crisis made the target shed writes"
    assert shed == shed_by_target["writes_shed"]
    assert run.failures() == 0, run.failure_rows()
    named = {name for (method, name) in run.stats() if method == "SHED"}
    assert named <= {"POST /agents/[id]/messages", "POST /vectors/documents"}
