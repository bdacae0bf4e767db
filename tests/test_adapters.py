"""Target adapters: the scenarios against a real Redis and a differently shaped HTTP API.

Pure checks first (what each scenario needs, the http-map file's errors), then
refusals that must come before any load, then one module fixture that starts
Debian's ``redis-server`` and the tests' own sessions server
(``tests/own/sessions_server.py``, mapped by ``tests/own/sessions_map.yml``, the
README's example) and runs ``run_stress_test.py`` four times at once: baseline
and concurrent_agents on each. Assertions count requests and samples, never
wall-clock time.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memstress.common.config import ConfigError
from memstress.runner.service import clean_env, free_port
from memstress.scenarios.adapters import capability_table, check_scenario, load_adapter, runnable
from memstress.scenarios.adapters.http_map import Operation, load_mapping
from memstress.scenarios.registry import get_scenario, names
from tests.conftest import ROOT, start_redis
from tests.locust_helpers import assert_no_traceback, run_cli, run_stress

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]
OWN = ROOT / "tests" / "own"
SESSIONS_MAP = OWN / "sessions_map.yml"


# --- what runs where (pure) ----------------------------------------------------------------


def test_memstress_runs_every_scenario_and_redis_refuses_those_needing_what_it_lacks() -> None:
    assert runnable(load_adapter("memstress")) == list(names())
    redis = load_adapter("redis")
    assert runnable(redis) == [
        "baseline",
        "high_memory",
        "concurrent_agents",
        "optimization_overload",
        "memory_pressure_crisis",
        "recovery",
        "endurance",
    ]
    with pytest.raises(ConfigError) as err:
        check_scenario(get_scenario("memory_leak"), redis)
    line = str(err.value)
    assert "\n" not in line and "fault injection" in line and "(faults)" in line
    assert "would run on redis: baseline, high_memory, concurrent_agents" in line
    with pytest.raises(ConfigError, match="vector store"):
        check_scenario(get_scenario("vector_store"), redis)


def test_the_sessions_mapping_gives_conversation_and_stats_and_fills_its_templates() -> None:
    m = load_mapping(SESSIONS_MAP)
    assert m.capabilities == {"conversation", "stats"}
    runs_on = runnable(load_adapter("http-map", str(SESSIONS_MAP)))
    assert runs_on == ["baseline", "concurrent_agents", "endurance"]
    remember = m.operations["remember"]
    assert remember.name == "POST /v1/sessions/[agent]/turns"
    assert remember.url({"agent": "ms1-agent-0/x"}) == "/v1/sessions/ms1-agent-0%2Fx/turns"
    assert remember.body_of({"role": "user", "content": "hi"}) == {"speaker": "user", "text": "hi"}
    context = m.operations["context"]
    assert context.name == "GET /v1/sessions/[agent]/recall"  # no query string in the name
    assert context.url({"agent": "a", "query": "x y", "k": 5}).endswith("?q=x%20y&n=5")
    assert context.pick({"recall": {"items": [1, 2]}}) == [1, 2]
    with pytest.raises(KeyError, match=r"recall\.items"):
        context.pick({"recall": {}})
    stats = m.operations["stats"].pick({"memory": {"percent_used": 3.5, "limit_bytes": 9}})
    assert stats == {"pressure": 3.5, "budget_bytes": 9}
    typed = Operation("search", "POST", "/s", {"k": "{k}", "q": "about {query}"})
    assert typed.body_of({"k": 5, "query": "x"}) == {"k": 5, "q": "about x"}


def test_a_mapping_with_ballast_and_reset_but_no_leak_gives_pressure_not_faults(
    tmp_path: Path,
) -> None:
    text = SESSIONS_MAP.read_text() + (
        "  ballast: {method: POST, path: /v1/fill, body: {bytes: '{bytes}', ttl: '{ttl_s}'}}\n"
        "  reset_faults: {method: POST, path: /v1/fill/reset}\n"
    )
    path = tmp_path / "fill.yml"
    path.write_text(text)
    assert load_mapping(path).capabilities == {"conversation", "stats", "pressure"}
    runs_on = runnable(load_adapter("http-map", str(path)))
    assert "high_memory" in runs_on and "memory_leak" not in runs_on
    path.write_text(SESSIONS_MAP.read_text() + "  leak: {method: POST, path: /v1/leak}\n")
    with pytest.raises(ConfigError, match=r"faults takes leak, ballast, reset_faults"):
        load_mapping(path)


BAD_MAPS = {
    "operations.remember.method": "operations:\n  remember: {method: FETCH, path: /a}\n",
    "operations.remmber": "operations:\n  remmber: {method: POST, path: /a}\n",
    "operations.forget.path": "operations:\n  forget: {method: DELETE, path: '/s/{agnt}'}\n",
    "operations.remember.body": "operations:\n  remember: {method: POST, path: /a, "
    "body: {t: '{text}'}}\n",
    "operations.context.result": "operations:\n  context: {method: GET, path: /a, "
    "result: 'a..b'}\n",
    "operations.remember.headers": "operations:\n  remember: {method: POST, path: /a, "
    "headers: 1}\n",
    "operations: conversation": "operations:\n  remember: {method: POST, path: '/a/{agent}'}\n",
    "health": "health: healthz\noperations: {}\n",
}


@pytest.mark.parametrize("key", list(BAD_MAPS))
def test_a_bad_mapping_is_one_line_naming_the_key(tmp_path: Path, key: str) -> None:
    text = BAD_MAPS[key]
    if not text.startswith("health"):
        text = "health: /healthz\n" + text
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    line = str(err.value)
    assert line.startswith(f"bad.yml: {key}"), line
    assert "\n" not in line and ("valid" in line or "missing" in line), line


# --- refused before any load (CLI) -----------------------------------------------------------


def test_cli_refuses_memory_leak_on_redis_before_any_load(tmp_path: Path) -> None:
    # No Redis listens here: the refusal must come before anything is asked of it.
    host = f"redis://127.0.0.1:{free_port()}/0"
    out = tmp_path / "out"
    r = run_stress(
        tmp_path,
        "--scenario",
        "memory_leak",
        "--adapter",
        "redis",
        "--host",
        host,
        "--out",
        str(out),
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "fault injection" in lines[0] and "memory_leak" in lines[0], lines
    assert "baseline" in lines[0]
    assert not out.exists() or not any(out.iterdir()), "no run folder before a refusal"


def test_cli_refuses_a_bad_mapping_and_an_adapter_without_host(tmp_path: Path) -> None:
    bad = tmp_path / "mine.yml"
    bad.write_text("health: /healthz\noperations:\n  remember: {method: POST, path: '/t/{who}'}\n")
    r = run_stress(
        tmp_path,
        "--scenario",
        "baseline",
        "--adapter",
        "http-map",
        "--adapter-config",
        str(bad),
        "--host",
        "http://127.0.0.1:9",
        "--out",
        str(tmp_path / "o"),
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "mine.yml: operations.remember.path: unknown placeholder {who}" in r.stderr
    r = run_stress(tmp_path, "--scenario", "baseline", "--adapter", "redis", timeout=120)
    assert r.returncode == 2 and "--adapter redis needs --host" in r.stderr, r.stderr
    r = run_stress(
        tmp_path,
        "--locustfile",
        str(ROOT / "examples" / "http_locustfile.py"),
        "--adapter",
        "redis",
        timeout=120,
    )
    assert r.returncode == 2 and "--adapter goes with --scenario" in r.stderr, r.stderr
    r = run_stress(tmp_path, "--scenario", "baseline", "--adapter", "mongo", timeout=120)
    assert r.returncode == 2 and "memstress" in r.stderr and "http-map" in r.stderr, r.stderr


def test_plain_locust_takes_the_adapter_from_its_env_var_and_refuses_before_load(
    tmp_path: Path,
) -> None:
    r = run_cli(
        "--headless",
        "--host",
        f"redis://127.0.0.1:{free_port()}",
        "--scenario",
        "memory_leak",
        "--run-dir",
        str(tmp_path / "run"),
        env={"MEMSTRESS_ADAPTER": "redis"},
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "scenario memory_leak needs fault injection" in r.stderr
    assert_no_traceback(r.stderr)


# --- real runs ------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    proc: subprocess.Popen[str]
    out: Path
    code: int = -1
    stdout: str = ""
    stderr: str = ""

    @property
    def run_dir(self) -> Path:
        (d,) = [p for p in self.out.iterdir() if p.is_dir()]
        return d

    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "stress_test_results.json").read_text())
        return data

    def requests(self) -> dict[str, tuple[int, int]]:
        data = json.loads((self.run_dir / "locust.json").read_text())
        return {e["name"]: (int(e["num_requests"]), int(e["num_failures"])) for e in data}

    def rows(self, name: str) -> list[dict[str, str]]:
        with open(self.run_dir / name, newline="") as fh:
            return list(csv.DictReader(fh))


@dataclass
class Targets:
    redis_url: str
    redis_pid: int
    http_url: str
    http_pid: int


def wait_until(ready: Any, what: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not ready():
        assert time.monotonic() < end, f"{what} did not answer within {deadline_s:g} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Targets, dict[str, Run]]]:
    import redis
    import requests

    base = tmp_path_factory.mktemp("adapters")
    redis_proc, redis_url = start_redis(base)
    http_port = free_port()
    http_proc = subprocess.Popen(
        [sys.executable, str(OWN / "sessions_server.py"), "--port", str(http_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    http_url = f"http://127.0.0.1:{http_port}"
    started: dict[str, Run] = {}
    try:
        db = redis.Redis.from_url(redis_url)

        def redis_up() -> bool:
            try:
                return bool(db.ping())
            except redis.ConnectionError:
                return False

        def http_up() -> bool:
            try:
                return requests.get(f"{http_url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(redis_up, "redis-server")
        wait_until(http_up, "sessions_server.py")
        targets = Targets(redis_url, redis_proc.pid, http_url, http_proc.pid)
        redis_args = [
            "--adapter",
            "redis",
            "--host",
            redis_url,
            "--target-pid",
            str(redis_proc.pid),
        ]
        http_args = [
            "--adapter",
            "http-map",
            "--adapter-config",
            str(SESSIONS_MAP),
            "--host",
            http_url,
            "--target-pid",
            str(http_proc.pid),
        ]
        plans = {
            # stress level 3: ten agents, so a short baseline sends hundreds of requests
            "redis_baseline": [
                "--scenario",
                "baseline",
                "--stress-level",
                "3",
                "--duration",
                "30",
                *redis_args,
            ],
            "redis_agents": ["--scenario", "concurrent_agents", "--duration", "20", *redis_args],
            # stress level 0: one more user per step, five steps
            "redis_endurance": [
                "--scenario",
                "endurance",
                "--stress-level",
                "0",
                "--duration",
                "25",
                *redis_args,
            ],
            "http_baseline": ["--scenario", "baseline", "--duration", "25", *http_args],
            "http_agents": ["--scenario", "concurrent_agents", "--duration", "20", *http_args],
        }
        for name, args in plans.items():
            out = base / name
            proc = subprocess.Popen(
                [*CLI, *args, "--out", str(out)],
                cwd=base,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            started[name] = Run(name, proc, out)
        for run in started.values():
            run.stdout, run.stderr = run.proc.communicate(timeout=400)
            run.code = run.proc.returncode
        db.close()
        yield targets, started
    finally:
        for run in started.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
                run.proc.wait(30)
        servers: list[subprocess.Popen[Any]] = [redis_proc, http_proc]
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


@pytest.mark.slow
def test_baseline_on_redis_is_a_complete_report_with_memory_from_redis(
    runs: tuple[Targets, dict[str, Run]],
) -> None:
    _, all_runs = runs
    run = all_runs["redis_baseline"]
    assert run.code == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert_no_traceback(run.stderr)
    res = run.results()
    assert res["partial"] is False
    reqs = run.requests()
    sent = sum(n for n, _ in reqs.values())
    assert sent >= 200, reqs
    assert sum(f for _, f in reqs.values()) == 0, reqs
    assert {
        "LPUSH+LTRIM memstress:[agent]",
        "LRANGE memstress:[agent] (context)",
        "LRANGE memstress:[agent] (history)",
        "DEL memstress:[agent]",
    } <= set(reqs)
    samples = run.rows("memory_samples.csv")
    assert len(samples) >= 10
    assert all(r["rss_source"] == "psutil" for r in samples), "RSS of the Redis process by PID"
    used = [float(r["redis_used_memory"]) for r in samples if r["redis_used_memory"]]
    assert len(used) >= 10 and max(used) > min(used), "INFO memory, read through the run"
    skipped = [e["detail"] for e in run.rows("events.csv") if e["kind"] == "capability_skipped"]
    assert sorted(d.split(":")[0] for d in skipped) == ["cycle", "vectors"], skipped
    meta = json.loads((run.run_dir / "run_meta.json").read_text())
    assert meta["adapter"] == "redis"


@pytest.mark.slow
def test_redis_runs_leave_none_of_their_keys(runs: tuple[Targets, dict[str, Run]]) -> None:
    import redis

    targets, all_runs = runs
    assert all_runs["redis_agents"].code == 0, all_runs["redis_agents"].stderr[-2000:]
    reqs = all_runs["redis_agents"].requests()
    assert reqs["LPUSH+LTRIM memstress:[agent]"][0] > 20 and reqs["INFO memory"][0] >= 3, reqs
    db = redis.Redis.from_url(targets.redis_url)
    try:
        assert db.keys("memstress:*") == [], "cleanup deletes every key of the runs"
    finally:
        db.close()


@pytest.mark.slow
def test_a_short_endurance_runs_on_redis_through_its_five_steps(
    runs: tuple[Targets, dict[str, Run]],
) -> None:
    run = runs[1]["redis_endurance"]
    res = run.results()
    assert res["partial"] is False
    # Redis's lists fill for the whole short run, so its memory may still rise at the end:
    # the verdict may fail on that slope (a finding about a short run), on nothing else.
    failed = res["verdict"]["failed"]
    assert run.code == (1 if failed else 0), run.stdout[-2000:] + run.stderr[-2000:]
    assert all("memory slope over the last half" in f for f in failed), failed
    steps = [r["name"] for r in run.rows("stages.csv")]
    assert steps == ["step_1", "step_2", "step_3", "step_4", "step_5", "cleanup"], steps
    reqs = run.requests()
    assert reqs["LPUSH+LTRIM memstress:[agent]"][0] > 20, reqs
    assert sum(f for _, f in reqs.values()) == 0, reqs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["http_baseline", "http_agents"])
def test_http_map_runs_baseline_and_concurrent_agents_on_another_api(
    runs: tuple[Targets, dict[str, Run]], name: str
) -> None:
    import requests

    targets, all_runs = runs
    run = all_runs[name]
    assert run.code == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.results()["partial"] is False
    reqs = run.requests()
    assert reqs["POST /v1/sessions/[agent]/turns"][0] > 20, reqs
    assert reqs["GET /v1/sessions/[agent]/recall"][0] > 10, reqs
    assert reqs["DELETE /v1/sessions/[agent]"][0] >= 1, reqs
    assert sum(f for _, f in reqs.values()) == 0, reqs
    if name == "http_agents":
        assert reqs["GET /v1/usage"][0] >= 3, reqs
    assert not any(n.startswith(("POST /agents", "GET /memory")) for n in reqs), reqs
    usage = requests.get(f"{targets.http_url}/v1/usage", timeout=5).json()
    assert usage["memory"]["sessions"] == 0, "cleanup forgot every session of the runs"


def test_readme_shows_the_adapter_table_and_the_mapping_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    assert capability_table() in readme
    assert SESSIONS_MAP.read_text().strip() in readme
