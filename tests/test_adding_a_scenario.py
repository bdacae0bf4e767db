"""Adding a scenario is one new module plus one line in the registry, for real.

A copy of the checkout gets the walk-through's module from
``docs/adding-a-scenario.md`` (the code block as written there) and one line in
``scenarios/registry.py``; the CLI lists it and a headless Locust run of it
against the reference service plays its stages and cleans up after itself.
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

NAME = "cache_churn"
IGNORED = (".venv", ".git", "results", "tests", "bench", "docs", "__pycache__", "*_cache")


def walkthrough_module() -> str:
    """The ``python`` block of the walk-through that defines ``SCENARIO``."""
    text = (ROOT / "docs" / "adding-a-scenario.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "SCENARIO =" in b]
    assert len(blocks) == 1, "the walk-through shows one scenario module"
    return blocks[0]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("added") / "checkout"
    shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    (dst / "scenarios" / f"{NAME}.py").write_text(walkthrough_module())
    registry = dst / "scenarios" / "registry.py"
    before = registry.read_text().splitlines(keepends=True)
    at = before.index('    "endurance",\n') + 1
    after = [*before[:at], f'    "{NAME}",\n', *before[at:]]
    registry.write_text("".join(after))
    assert len(after) == len(before) + 1
    return dst


def run_in(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        env=locust_env(),
    )


def test_the_cli_lists_and_plans_the_added_scenario(checkout: Path) -> None:
    listed = run_in(checkout, "run_stress_test.py", "--list-scenarios")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if NAME in line)
    assert "120" in row, row  # its own default_s: no config key needed
    plans = run_in(
        checkout, "-m", "memstress.scenarios", "--scenario", NAME, "--duration", "20", "--json"
    )
    assert plans.returncode == 0, plans.stderr
    (plan,) = json.loads(plans.stdout)
    assert [s["name"] for s in plan["stages"]] == ["warm", "churn", "cleanup"]
    assert plan["seed_key"] is None and plan["duration_s"] == 20
    assert plan["user_classes"] == ["ChurnCycler", "ChurnAgent"]
    # The original checkout does not know it: the copy's module is what made it.
    unknown = run_in(ROOT, "-m", "memstress.scenarios", "--scenario", NAME)
    assert unknown.returncode == 2 and f"unknown scenario '{NAME}'" in unknown.stderr


@pytest.mark.slow
def test_the_added_scenario_runs_headless_and_cleans_up(
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
    assert [s["name"] for s in run.stages()] == ["warm", "churn", "cleanup"]
    for endpoint in (api.CYCLE, api.MESSAGE_ADD, api.AGENT_DELETE):
        assert run.requests(endpoint.name) > 0, (endpoint.name, run.stats().keys())
    declared = {e.name for e in (api.CYCLE, *api.AGENT_TRAFFIC, *api.CLEANUP)}
    assert {name for _, name in run.stats()} <= declared
    assert run.failures() == 0, run.failure_rows()
    (start,) = [e for e in run.events() if e["kind"] == "run_start"]
    run_id = json.loads(start["detail"])["run_id"]
    for k in range(8):  # the walk-through's agents pool
        r = requests.get(f"{service.url}/agents/{run_id}-agent-{k}/messages", timeout=5)
        assert r.json()["total"] == 0, (k, r.text[:200])
