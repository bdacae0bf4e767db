"""The locustfile as a user meets it: refusals on the command line, and the web UI."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from memstress.runner.service import ManagedService, spawn
from tests.conftest import free_port
from tests.locust_helpers import (
    LOCUSTFILE,
    ROOT,
    LocustRun,
    assert_no_traceback,
    config_copy,
    locust_env,
    run_cli,
    start_locust,
)

pytestmark = pytest.mark.slow

OPTIONS = (
    "scenario",
    "stress_level",
    "duration",
    "duration_scale",
    "memstress_config",
    "target_pid",
    "run_dir",
    "monitor_interval",
)


def error_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.mark.parametrize(
    ("args", "needle", "valid"),
    [
        (["--scenario", "nope"], "--scenario: unknown scenario 'nope'", "memory_leak, high_memory"),
        (["--stress-level", "9"], "--stress-level: 9 is out of range", "valid: 0 to 4"),
        (["--stress-level", "high"], "--stress-level: 'high' is not a whole number", "0 to 4"),
        (["--scenario", "memory_leak", "--duration", "3"], "too short for memory_leak", "6 s"),
        (["--duration-scale", "-1"], "--duration-scale: '-1' is not valid", "above 0"),
        (["--monitor-interval", "0.001"], "--monitor-interval", "0.05 to 3600"),
        (["--memstress-config", "/nonexistent.yml"], "config file not found", "existing"),
        (["--host", "http://example.com"], "--host: example.com is not on this machine", "127."),
    ],
)
def test_a_bad_option_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], needle: str, valid: str
) -> None:
    cli = run_cli("--headless", "--host", "http://127.0.0.1:9", *args, "--run-dir", str(tmp_path))
    out = cli.stdout + cli.stderr
    assert cli.returncode == 2, out
    assert_no_traceback(out)
    lines = error_lines(out, needle)
    assert len(lines) == 1, out
    assert valid in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written for a refused run"


def test_a_bad_scenario_from_the_environment_and_with_processes(tmp_path: Path) -> None:
    """MEMSTRESS_SCENARIO reaches the option; --processes children stay quiet."""
    # Locust binds the master's port before the init listener refuses: a port of this
    # test's own, not the default 5557 that any other run on the host may hold.
    port = str(free_port())
    cli = run_cli(
        "--headless",
        "--processes",
        "2",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        port,
        "--master-port",
        port,
        "--host",
        "http://127.0.0.1:9",
        "--run-dir",
        str(tmp_path),
        env={"MEMSTRESS_SCENARIO": "warp_drive"},
    )
    out = cli.stdout + cli.stderr
    assert cli.returncode == 2, out
    assert_no_traceback(out)
    assert len(error_lines(out, "unknown scenario 'warp_drive'")) == 1, out


def wait_for_page(url: str, run: LocustRun, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.log()[-3000:]
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return r.text
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the web UI did not answer at {url}: {run.log()[-3000:]}")


def template_args(html: str) -> dict[str, object]:
    match = re.search(r"templateArgs = (\{.*?\})\s*</script>", html, re.S)
    assert match, html[:2000]
    args: dict[str, object] = json.loads(match.group(1))
    return args


def test_web_ui_shows_the_options_and_plays_the_scenario_chosen_in_its_form(
    tmp_path: Path, service: ManagedService
) -> None:
    port = free_port()
    run = start_locust(
        tmp_path,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(port),
        "--scenario",
        "baseline",
        host=service.url,
    )
    try:
        html = wait_for_page(f"http://127.0.0.1:{port}/", run)
        extra = template_args(html)["extra_options"]
        assert isinstance(extra, dict)
        assert set(OPTIONS) <= set(extra)
        assert extra["scenario"]["default_value"] == "baseline"
        assert "memory_pressure_crisis" in extra["scenario"]["help_text"]
        assert template_args(html)["hide_common_options"], "the shape drives users, not the form"
        shapes = template_args(html)["available_shape_classes"]
        assert shapes == ["Default", "MemstressShape"], "exactly one shape reaches Locust"

        # Start from the form with another scenario: the shape plays that one's plan.
        form = {"host": service.url, "scenario": "vector_store", "duration": "6"}
        r = requests.post(f"http://127.0.0.1:{port}/swarm", data=form, timeout=10)
        assert r.status_code == 200 and r.json()["success"], r.text
        deadline = time.monotonic() + 40
        while (
            not (tmp_path / "events.csv").exists()
            or "run_end" not in (tmp_path / "events.csv").read_text()
        ):
            assert time.monotonic() < deadline, run.log()[-3000:]
            assert run.proc.poll() is None, run.log()[-3000:]
            time.sleep(0.3)
        stages = [row["name"] for row in run.stages()]
        assert stages == ["load", "mixed", "search_heavy", "cleanup"]
        names = {
            e["name"]
            for e in requests.get(f"http://127.0.0.1:{port}/stats/requests", timeout=5).json()[
                "stats"
            ]
        }
        assert {"POST /vectors/documents", "POST /vectors/search"} <= names
        assert run.proc.poll() is None, "in the web UI the run stops, the process stays"
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        code = run.wait(30)
    log = run.log()
    assert_no_traceback(log)
    assert code == 0, log[-3000:]


def test_max_test_duration_caps_the_run_and_the_master_cleans_up(
    tmp_path: Path, fresh_service: ManagedService
) -> None:
    config = tmp_path / "short.yml"
    text = (ROOT / "stress_test_config.yml").read_text()
    config.write_text(text.replace("max_test_duration: 3600", "max_test_duration: 4"))
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        "memory_leak",
        "--duration",
        "20",
        "--memstress-config",
        str(config),
        host=fresh_service.url,
    )
    code = run.wait(40)
    log = run.log()
    assert code == 4, log[-3000:]
    assert_no_traceback(log)
    events = run.events()
    # The shape's cap (run_end) or, when the memory monitor is wired in and samples
    # first, its safety guard (emergency_stop) ends the run; either says why.
    why = [e for e in events if e["kind"] in ("run_end", "emergency_stop")]
    assert why and "max_test_duration" in why[0]["detail"], events
    # In the run's own time, from its first stage: the 4 s cap, not the 20 s plan. (No
    # lower bound: the monitor's clock starts at test start, the first stage may come later.)
    ran_s = float(why[0]["time"]) - float(run.stages()[0]["time"])
    assert ran_s < 20, ran_s
    assert "cleanup" not in [r["name"] for r in run.stages()]

    # The plan never reached its cleanup stage, so the master deleted the data once.
    cleanup = [
        json.loads(e["detail"])
        for e in events
        if e["kind"] == "cleanup" and '"by": "master at test stop"' in e["detail"]
    ]
    assert len(cleanup) == 1, events
    done = cleanup[0]
    assert done["complete"] and done["faults_reset"] and done["agents"] >= 1
    for k in range(8):
        url = f"{fresh_service.url}/agents/{done['run_id']}-agent-{k}/messages"
        assert requests.get(url, timeout=5).json()["total"] == 0


def test_a_plain_headless_run_sets_the_verdicts_exit_code(
    tmp_path: Path, fresh_service: ManagedService
) -> None:
    """Graded at quit with the config's thresholds: a cycle-time bound no target meets fails."""
    strict = config_copy(
        tmp_path / "strict.yml",
        performance_thresholds__response_time={
            "excellent": 0.00001,
            "good": 0.00002,
            "acceptable": 0.00003,
            "poor": 0.00004,
        },
    )
    run = start_locust(
        tmp_path / "run",
        "--headless",
        "--scenario",
        "baseline",
        "--duration",
        "8",
        "--memstress-config",
        str(strict),
        host=fresh_service.url,
    )
    code = run.wait(60)
    log = run.log()
    assert_no_traceback(log)
    assert code == 1, log[-3000:]
    assert "memstress verdict: FAILED" in log
    assert "mean response time (POST /memory/cycle)" in log and "(Poor bound) -> Poor" in log


def test_loading_the_locustfile_imports_no_pandas_or_matplotlib() -> None:
    """Every Locust process (master and each worker) loads locustfile.py: it stays lean.
    The quit verdict needs neither; only the report (python -m memstress.reports) does.
    Nor does loading it import the master's monitor (its detector's numpy, scipy,
    ruptures; the redis source): that waits for the init of a master or local runner."""
    code = (
        "import locust, sys, runpy\n"
        "sys.path.insert(0, 'tests/fixtures')\n"
        "from worker_modules import HEAVY\n"
        "runpy.run_path('locustfile.py')\n"
        "heavy = [m for m in HEAVY if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "none", p.stdout


WORKER_MODULES = ROOT / "tests" / "fixtures" / "worker_modules.py"

PLUGIN_USER = """\
from locust import HttpUser, constant, task

import memstress.plugin  # noqa: F401


class Reader(HttpUser):
    wait_time = constant(0.1)

    @task
    def health(self):
        self.client.get("/health")
"""


@pytest.mark.parametrize("entry", ["locustfile", "plugin"])
def test_a_worker_loads_none_of_the_masters_monitor(
    tmp_path: Path, service: ManagedService, entry: str
) -> None:
    """A real master and worker (issue 18: a worker held 2.7x a plain worker's RSS):
    after init and its users' requests, the worker has loaded nothing of HEAVY; the
    master, which samples and judges, has."""
    if entry == "locustfile":
        files, extra = [LOCUSTFILE], ["--scenario", "baseline", "--duration", "8"]
    else:
        mine = tmp_path / "mine.py"
        mine.write_text(PLUGIN_USER)
        files, extra = [mine], ["-u", "2", "-r", "2", "--duration", "5"]
    port = free_port()
    out = {role: tmp_path / f"{role}.modules" for role in ("master", "worker")}
    runs = []
    try:
        for role, args in (
            (
                "master",
                [
                    "--headless",
                    "--master",
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(port),
                    "--expect-workers",
                    "1",
                    *extra,
                ],
            ),
            ("worker", ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]),
        ):
            locustfiles = ",".join(str(f) for f in (*files, WORKER_MODULES))
            cmd = [sys.executable, "-m", "locust", "-f", locustfiles, *args, "--host", service.url]
            if role == "master":
                cmd += ["--run-dir", str(tmp_path / "run")]
            env = {**locust_env(), "MEMSTRESS_TEST_MODULES_OUT": str(out[role])}
            log = tmp_path / f"{role}.log"
            runs.append((role, log, spawn(cmd, log, env=env, mode="w", cwd=tmp_path)))
        for role, log, proc in runs:
            code = proc.wait(90)
            text = log.read_text(errors="replace")
            assert code == 0, f"{role}: exit {code}\n{text[-3000:]}"
            assert_no_traceback(text)
    finally:
        for _, _, proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert out["worker"].read_text().strip() == "WorkerRunner:none"
    master = out["master"].read_text().strip()
    assert master.startswith("MasterRunner:") and "memstress.monitors.monitor" in master
