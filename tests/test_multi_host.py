"""Beyond one machine, rehearsed on loopback: memory from --metrics-url, hand-started workers.

Two real set-ups run at once from one module fixture:

- ``metrics``: ``run_stress_test.py`` against the reference service with no PID,
  the service's RSS readable only through an exporter on a second loopback
  port (``tests/fixtures/rss_exporter.py``, cAdvisor's metric and labels), and
  the service leaking 8 MB/min in ``memory_leak``'s leak stage;
- ``workers``: ``run_stress_test.py --expect-workers 2`` as the master, a worker
  from a copy of the checkout with one edited file (refused), then two workers
  started with ``locust -f locustfile.py --worker --master-host``.

Every process talks to 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from memstress.runner.service import ManagedService
from tests.conftest import ROOT, free_port, start_service
from tests.locust_helpers import (
    LocustRun,
    assert_no_traceback,
    assert_on_schedule,
    config_copy,
    locust_env,
    start_locust,
)

pytestmark = pytest.mark.slow

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]
LEAK_MB_PER_MIN = 8.0
IGNORED = (".venv", ".git", "results", "tests", "bench", "docs", "__pycache__", "*_cache")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Cli:
    proc: subprocess.Popen[str]
    out_dir: Path
    code: int = -1
    output: str = ""

    def finish(self, timeout: float) -> None:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the CLI did not end in {timeout:g} s:\n{out}{err}") from None
        self.code, self.output = self.proc.returncode, out + err

    @property
    def run_dir(self) -> Path:
        (run,) = [p for p in self.out_dir.iterdir() if p.is_dir()]
        return run

    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "stress_test_results.json").read_text())
        return data


def start_cli(out_dir: Path, *args: str) -> Cli:
    proc = subprocess.Popen(
        [*CLI, *args, "--out", str(out_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=locust_env(),
    )
    return Cli(proc, out_dir)


@dataclass
class Runs:
    metrics: Cli
    service: ManagedService
    exporter_url: str
    workers: Cli
    refused: LocustRun
    refused_code: int
    good: list[LocustRun]
    good_codes: list[int]


def other_version(base: Path) -> Path:
    """A copy of the checkout with one edited module: another version of memstress."""
    dst = base / "other-checkout"
    shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    module = dst / "scenarios" / "baseline.py"
    module.write_text(module.read_text() + "\n# an edit the master does not have\n")
    return dst


def wait_exporter(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the exporter exited"
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the exporter at {url} did not answer in 20 s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("multi_host")
    services: list[ManagedService] = []
    procs: list[subprocess.Popen[Any]] = []
    workers: list[LocustRun] = []
    try:
        leaky = start_service(base / "leaky" / "data")
        plain = start_service(base / "plain" / "data")
        services += [leaky, plain]
        port = free_port()
        exporter_cmd = ["-m", "tests.fixtures.rss_exporter", "--pid", str(leaky.pid)]
        exporter_cmd += ["--port", str(port), "--lifetime", "300"]
        exporter = subprocess.Popen([sys.executable, *exporter_cmd], cwd=ROOT, env=locust_env())
        procs.append(exporter)
        exporter_url = f"http://127.0.0.1:{port}/metrics"
        wait_exporter(exporter_url, exporter)

        leak_cfg = config_copy(base / "leak.yml", scenarios__leak_rate_mb_per_min=LEAK_MB_PER_MIN)
        metrics = start_cli(
            base / "metrics_out",
            "--scenario", "memory_leak", "--duration", "80", "--monitor-interval", "0.5",
            "--host", leaky.url, "--config", str(leak_cfg),
            "--metrics-url", exporter_url, "--metrics-metric", "container_memory_rss",
            "--metrics-labels", "container=target",
        )  # fmt: skip
        procs.append(metrics.proc)

        master_port = free_port()
        master = start_cli(
            base / "workers_out",
            # 30 s (beside the 80 s run above, so no longer in all): hand-started workers
            # on a loaded machine still cycle in its warm-up stage (cycles_every_stage)
            "--scenario", "baseline", "--duration", "30", "--monitor-interval", "0.5",
            "--host", plain.url, "--expect-workers", "2",
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
        )  # fmt: skip
        procs.append(master.proc)
        join = ("--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port))
        refused = start_locust(
            base / "refused", *join, outputs=False, locustfile=other_version(base) / "locustfile.py"
        )
        workers.append(refused)
        refused_code = refused.wait(90)  # refused at its first message, before any load
        good = [start_locust(base / f"worker{i}", *join, outputs=False) for i in (1, 2)]
        workers += good
        master.finish(180)
        good_codes = [w.wait(60) for w in good]
        metrics.finish(300)
        yield Runs(metrics, leaky, exporter_url, master, refused, refused_code, good, good_codes)
    finally:
        for w in workers:
            w.kill()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for svc in services:
            svc.stop()


def test_rss_comes_from_the_metrics_url_and_the_report_is_complete(runs: Runs) -> None:
    cli = runs.metrics
    assert cli.code == 0, cli.output[-4000:]
    assert "Traceback" not in cli.output
    run = cli.run_dir
    samples = rows(run / "memory_samples.csv")
    # every slot of the sampler's schedule sampled or counted skipped, to the plan's end
    assert_on_schedule((run / "locust.log").read_text(), samples, 0.5)
    assert float(samples[-1]["elapsed_s"]) >= 0.9 * 80, samples[-1]
    measured = [s for s in samples if s["rss_bytes"]]
    assert len(measured) >= 0.9 * len(samples), (len(measured), len(samples))
    assert {s["rss_source"] for s in measured} == {"metrics_url"}
    assert not any(s["vms_bytes"] for s in samples), "no PID: psutil read nothing"
    # the exporter's series is the service's own RSS: its /metrics agrees (the decoy is 12 MB)
    last = measured[-1]
    assert abs(float(last["rss_bytes"]) - float(last["prom_rss_bytes"])) < 0.1 * float(
        last["prom_rss_bytes"]
    )
    res = cli.results()
    assert res["partial"] is False, res["missing_inputs"]
    assert res["metrics"]["memory"]["rss_source"] == "metrics_url"
    assert res["run"]["metrics_url"] == runs.exporter_url
    assert res["run"]["remote_target"] is False and res["run"]["allow_remote_target"] is False
    assert res["exit_code"] == cli.code
    report = (run / "stress_test_report.md").read_text()
    assert "| remote target | no (loopback) |" in report
    kinds = [e["kind"] for e in rows(run / "events.csv")]
    missing = [e["detail"] for e in rows(run / "events.csv") if e["kind"] == "source_missing"]
    assert any(m.startswith("process: no target PID") for m in missing), missing
    assert "source_scope" not in kinds  # a loopback target: host figures are its host's


def test_a_leak_of_a_few_mb_per_min_seen_only_through_the_metrics_url_is_flagged(
    runs: Runs,
) -> None:
    events = rows(runs.metrics.run_dir / "events.csv")
    stage_at = {
        json.loads(e["detail"])["name"]: float(e["time"]) for e in events if e["kind"] == "stage"
    }
    detected = [e for e in events if e["kind"] == "leak_detected"]
    assert detected, [(e["kind"], e["detail"][:80]) for e in events]
    at = float(detected[0]["time"])
    assert stage_at["leak"] < at < stage_at["cleanup"], (stage_at, at)
    slope = json.loads(detected[0]["detail"])["slope_mb_min"]
    assert 0.5 * LEAK_MB_PER_MIN < slope < 2 * LEAK_MB_PER_MIN, slope
    assert runs.metrics.results()["metrics"]["leak"]["verdict"] == "leak"


def test_a_master_and_two_hand_started_workers_run_the_scenario_to_its_end(runs: Runs) -> None:
    cli = runs.workers
    assert cli.code == 0, cli.output[-4000:]
    assert "Traceback" not in cli.output
    run = cli.run_dir
    assert [r["name"] for r in rows(run / "stages.csv")] == ["warmup", "steady", "cleanup"]
    for w, code in zip(runs.good, runs.good_codes, strict=True):
        assert code == 0, w.log()[-3000:]
        assert_no_traceback(w.log())
        assert not list(w.run_dir.glob("*.csv")), "a worker writes no run files"
    reports = rows(run / "worker_samples.csv")
    ids = {r["worker_id"] for r in reports}
    assert len(ids) == 2, ids
    assert all(int(r["rss_bytes"]) > 10 << 20 for r in reports)
    assert max(int(r["user_count"]) for r in reports) >= 1
    # the workers named no scenario: the master's baseline traffic is theirs
    stats = {e["name"]: e for e in json.loads((run / "locust.json").read_text())}
    assert stats["POST /agents/[id]/messages"]["num_requests"] > 0
    # one report, on the master
    res = cli.results()
    assert res["partial"] is False and res["run"]["expect_workers"] == 2
    assert (run / "stress_test_report.md").exists()
    assert res["metrics"]["workers"]["workers"] == 2, res["metrics"]["workers"]


def test_a_worker_of_another_version_is_refused_in_one_line(runs: Runs) -> None:
    log = runs.refused.log()
    assert runs.refused_code == 2, log[-3000:]
    assert_no_traceback(log)
    lines = [ln for ln in log.splitlines() if "refused: it runs memstress" in ln]
    assert len(lines) == 1, log[-3000:]
    match = re.search(r"worker (\S+) refused: it runs memstress \S+ \(code (\w+)", lines[0])
    assert match and "valid: every worker on the master's checkout" in lines[0], lines[0]
    worker_id, code = match.groups()
    master_log = (runs.workers.run_dir / "locust.log").read_text()
    assert f"worker {worker_id} refused" in master_log
    assert f"(code {code}," in master_log
    assert worker_id not in {
        r["worker_id"] for r in rows(runs.workers.run_dir / "worker_samples.csv")
    }
