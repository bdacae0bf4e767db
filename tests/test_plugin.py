"""Plain Locust with one line: ``import memstress.plugin`` in a user's locustfile.

A real ``locust -f mine.py`` with its web UI (``--autostart --autoquit``), run from
a folder of the user's own, against the tests' small HTTP server. The locustfile
has a shape that marks its phases with ``memstress.phase`` and a memory source of
its own (``memstress.register_source``); the Memory tab and
the live chart are loaded in headless Chromium while it runs; at quit the run
folder holds the report and the exit code is the verdict's.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from memstress.runner.service import clean_env, free_port
from tests.locust_helpers import assert_no_traceback
from tests.test_own_load import start_server
from tests.test_webui import CHROMIUM, chromium_dom, text_of

pytestmark = pytest.mark.slow

MINE = """\
import itertools

from locust import HttpUser, LoadTestShape, constant, task

import memstress
import memstress.plugin  # noqa: F401  (the one line)


class Visitor(HttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        self.count = itertools.count()

    @task
    def page(self):
        # One request in 50 asks for a page the server lacks: a 2 % error rate,
        # on which plain Locust exits 1 and the verdict grades Good (exit 0).
        self.client.get("/missing" if next(self.count) % 50 == 49 else "/")


class Reads:
    # A memory source of the user's own, in a few lines: it counts its reads.

    name = "reads"
    figures = ("count",)

    def __init__(self, target):
        self.count = 0

    def read(self):
        self.count += 1
        return {"count": self.count}


memstress.register_source("reads", Reads)


class TwoPhases(LoadTestShape):
    current = ""

    def tick(self):
        t = self.get_run_time()
        if t >= 16:
            return None
        name = "warmup" if t < 5 else "stress"
        if name != self.current:
            self.current = name
            memstress.phase(self.runner.environment, name)
        return (2 if name == "warmup" else 4), 4
"""


@pytest.fixture
def target() -> Iterator[str]:
    port = free_port()
    proc = start_server(port)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait(10)


def test_one_import_line_gives_the_memory_view_the_run_folder_and_the_verdict(
    tmp_path: Path, target: str
) -> None:
    if CHROMIUM is None and os.environ.get("CI"):
        pytest.fail("no chromium in CI: make test installs it (make browser)")
    (tmp_path / "mine.py").write_text(MINE)
    run_dir = tmp_path / "run"
    port = free_port()
    log_path = tmp_path / "locust.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "mine.py",
                "--host",
                target,
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(port),
                "--autostart",
                "--autoquit",
                "1",
                "--recovery-s",
                "4",
                "--monitor-interval",
                "0.3",
                "--run-dir",
                str(run_dir),
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            start_new_session=True,
        )
    ui = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                if len(requests.get(f"{ui}/memstress/samples", timeout=5).json()["points"]) >= 8:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.3)
        if CHROMIUM is not None:
            dom = chromium_dom(f"{ui}/memstress/memory", tmp_path / "profile")
            assert re.fullmatch(r"\d+\.\d MB", text_of(dom, "rss-now")), dom[:3000]
            assert text_of(dom, "stage-now") in ("warmup", "stress")
            assert text_of(dom, "verdict-now") in ("warming up", "no leak")
            assert re.search(r'd="M[\d.]+,[\d.]+ L', dom), "the RSS line is drawn"
            tab = chromium_dom(f"{ui}/?tab=memstress_memory", tmp_path / "profile2")
            assert "Current RSS" in tab and "Leak verdict" in tab, tab[-3000:]
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(10)
    text = log_path.read_text()
    assert_no_traceback(text)
    doc = json.loads((run_dir / "stress_test_results.json").read_text())
    assert code == doc["exit_code"] == 0, text[-3000:]
    errors = doc["metrics"]["requests"]["error_rate_pct"]
    assert 1 < errors < 3, "2 % errors: plain Locust would have exited 1"
    assert doc["partial"] is False, doc["missing_inputs"]
    with open(run_dir / "stages.csv", newline="") as fh:
        stages = [(r["name"], json.loads(r["params"]).get("phase")) for r in csv.DictReader(fh)]
    assert stages == [("warmup", "warmup"), ("stress", "stress"), ("recovery", "recovery")]
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert meta["scenario"] == "mine" and meta["exit_code"] == 0
    for name in ("memory_samples.csv", "events.csv", "locust.json", "stress_test_report.md"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "memory_samples.csv", newline="") as fh:
        counts = [int(float(r["reads_count"])) for r in csv.DictReader(fh)]
    assert counts == list(range(1, len(counts) + 1)), "the user's source: a column of its own"
    assert "`reads_count`" in (run_dir / "stress_test_report.md").read_text()
