"""The seed's entry points, for real: ``MemoryStressTest`` and ``python memory_stress_test.py``.

A copy of the checkout gets the README's ``MemoryStressTest`` module (the code
block as written there) and one line in ``scenarios/registry.py``; the CLI lists
its ``test_write_read`` as the scenario ``write_read``, and a headless Locust run
of it against the reference service plays its stages and cleans up after itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from memstress.runner.service import ManagedService
from memstress.scenarios import api
from tests.locust_helpers import ROOT, locust_env, start_locust

MODULE = "cache_tests"
NAME = "write_read"
IGNORED = (".venv", ".git", "results", "tests", "bench", "docs", "__pycache__", "*_cache")


def readme_module() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "(MemoryStressTest)" in b
    ]
    assert len(blocks) == 1, "the README shows one MemoryStressTest module"
    return blocks[0]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("seedway") / "checkout"
    shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    (dst / "scenarios" / f"{MODULE}.py").write_text(readme_module())
    registry = dst / "scenarios" / "registry.py"
    before = registry.read_text().splitlines(keepends=True)
    at = before.index('    "endurance",\n') + 1
    registry.write_text("".join([*before[:at], f'    "{MODULE}",\n', *before[at:]]))
    return dst


def run_in(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        env=locust_env(),
        check=False,
    )


def test_a_test_method_is_listed_and_planned_as_a_scenario(checkout: Path) -> None:
    listed = run_in(checkout, "run_stress_test.py", "--list-scenarios")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if NAME in line)
    assert "60" in row and "Write one" in row, row
    plans = run_in(
        checkout, "-m", "memstress.scenarios", "--scenario", NAME, "--duration", "20", "--json"
    )
    assert plans.returncode == 0, plans.stderr
    (plan,) = json.loads(plans.stdout)
    assert [s["name"] for s in plan["stages"]] == ["warmup", "stress", "cleanup"]
    assert [s["users"] for s in plan["stages"]] == [1, 3, 0]
    assert plan["user_classes"] == ["WriteReadUser"]


def test_memory_stress_test_py_runs_the_comprehensive_test(checkout: Path) -> None:
    # Every registered scenario is planned (the added one too) before any load: too
    # short a --duration is refused naming the first, with exit code 2.
    out = run_in(checkout, "memory_stress_test.py", "--duration", "0.5")
    assert out.returncode == 2 and "too short for baseline" in out.stderr, out.stderr
    both = run_in(checkout, "memory_stress_test.py", "--scenario", "baseline")
    assert both.returncode == 2 and "--comprehensive" in both.stderr, both.stderr


@pytest.mark.slow
def test_the_seed_way_scenario_runs_headless_and_cleans_up(
    checkout: Path, service: ManagedService, tmp_path: Path
) -> None:
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        NAME,
        "--duration",
        "10",
        host=service.url,
        csv_files=False,
        locustfile=checkout / "locustfile.py",
    )
    assert run.wait(60) == 0, run.log()[-3000:]
    assert [s["name"] for s in run.stages()] == ["warmup", "stress", "cleanup"]
    assert run.requests(api.MESSAGE_ADD.name) > 0 and run.requests(api.CONTEXT.name) > 0
    assert run.failures() == 0, run.failure_rows()
    (start,) = [e for e in run.events() if e["kind"] == "run_start"]
    run_id = json.loads(start["detail"])["run_id"]
    for k in range(4):  # the README's agents
        r = requests.get(f"{service.url}/agents/{run_id}-agent-{k}/messages", timeout=5)
        assert r.json()["total"] == 0, (k, r.text[:200])


def test_an_async_test_method_is_refused_in_one_line() -> None:
    from memstress.scenarios.seed import MemoryStressTest, scenarios_of

    class Async(MemoryStressTest):
        async def test_x(self) -> None: ...

    with pytest.raises(TypeError, match=r"Async.test_x is async \(valid: a plain def"):
        scenarios_of(Async)
