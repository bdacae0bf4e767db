"""The ``chroma`` adapter against a real ``chroma run`` (PyPI chromadb in ``.venv-chroma``).

``make chroma`` makes that environment (``make test`` does, in CI); elsewhere the
test skips, saying so, unless ``.venv-chroma/bin/chroma`` or ``chroma`` on PATH is
there. One real run of ``vector_store`` on loopback; counts, not wall clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from memstress.runner.service import clean_env, free_port
from memstress.scenarios.adapters.chroma import COLLECTIONS, HEARTBEAT
from tests.conftest import ROOT
from tests.locust_helpers import assert_no_traceback, run_stress

pytestmark = pytest.mark.slow

_VENV_CHROMA = ROOT / ".venv-chroma" / "bin" / "chroma"
CHROMA = str(_VENV_CHROMA) if _VENV_CHROMA.exists() else shutil.which("chroma")


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    if CHROMA is None:
        message = "chroma is not installed (make chroma: PyPI chromadb in .venv-chroma)"
        if os.environ.get("CI"):
            pytest.fail(message + "; make test makes it in CI")
        pytest.skip(message)
    data = tmp_path_factory.mktemp("chroma")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMA, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120  # a loaded machine: chroma's start takes tens of seconds
        while True:
            assert proc.poll() is None, f"chroma run exited with {proc.returncode}"
            try:
                if requests.get(url + HEARTBEAT, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end, "chroma run did not answer its heartbeat"
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_vector_store_on_chroma_upserts_searches_and_drops_its_collections(
    tmp_path: Path, chroma: tuple[str, int]
) -> None:
    url, pid = chroma
    out = tmp_path / "out"
    r = run_stress(
        tmp_path,
        "--scenario",
        "vector_store",
        "--adapter",
        "chroma",
        "--host",
        url,
        "--target-pid",
        str(pid),
        "--duration",
        "30",
        "--out",
        str(out),
        timeout=400,
    )
    # Exit 0, and only 0: no request fails, every latency is far inside its bound, growth is
    # a few tens of MB (bound 200), the run is too short for the leak detector to judge (a
    # judged leak would be the one grade that can fail it), memory per stored vector is not
    # judged (Chroma reports no vector tier bytes; its RSS growth per vector is reported), and
    # memory that does not come back after the drop is a finding, never a grade.
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert_no_traceback(r.stderr)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    doc = json.loads((run_dir / "stress_test_results.json").read_text())
    assert doc["partial"] is False and doc["exit_code"] == 0
    stats = json.loads((run_dir / "locust.json").read_text())
    reqs = {e["name"]: (int(e["num_requests"]), int(e["num_failures"])) for e in stats}
    assert reqs["POST collections/[ns]/upsert"][0] >= 20, reqs
    assert reqs["POST collections/[ns]/query"][0] >= 10, reqs
    assert reqs["DELETE collections/[ns]"][0] >= 4, "the cleanup stage drops the collections"
    assert sum(f for _, f in reqs.values()) == 0, reqs
    left = requests.get(url + COLLECTIONS, timeout=5).json()
    assert left == [], "cleanup deletes every collection of the run"
    samples = (run_dir / "memory_samples.csv").read_text().splitlines()
    assert len(samples) > 10 and all(",psutil," in row for row in samples[1:])
    # The monitor counted the run's vectors on the server; the report divides by them.
    v = doc["metrics"]["vectors"]
    assert v["measured"] and v["most_stored"] >= 20, v
    # Growth per vector needs a sample before the first vector was stored: the monitor
    # takes its first at test_start, before any user is spawned, however loaded the machine.
    assert v["rss_empty_mb"] is not None and v["rss_per_vector_kb"] > 0, v
    assert v["rss_slope_kb_per_vector"] is not None, v
    assert v["accounted_per_vector_kb"] is None  # Chroma accounts for nothing itself
    d = v["drop"]
    assert d["measured"] and d["vectors_after"] == 0 and d["dropped"] == d["vectors_before"], d
    assert (
        d["dropped"] >= v["most_stored"]
        and d["drop_requests"] == reqs["DELETE collections/[ns]"][0]
    )
    assert isinstance(d["came_back"], bool) and d["rss_before_mb"] > 0 and d["rss_after_mb"] > 0
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["search_p95_max_s"]["status"] == "pass", checks  # the adapter's query requests
    assert "POST collections/[ns]/query p95" in checks["search_p95_max_s"]["message"]
    assert checks["memory_per_vector_max_kb"]["status"] == "not judged"
    report = (run_dir / "stress_test_report.md").read_text()
    came = "came back" if d["came_back"] else "did NOT come back"
    assert f"- **Cleanup drop:** memory {came}" in report, report[:3000]
    assert f"{d['dropped']} vectors dropped at cleanup" in report
    assert "| RSS growth per stored vector |" in report


def test_scenarios_needing_conversation_are_refused_on_chroma(tmp_path: Path) -> None:
    r = run_stress(
        tmp_path,
        "--scenario",
        "baseline",
        "--adapter",
        "chroma",
        "--host",
        f"http://127.0.0.1:{free_port()}",
        timeout=120,
    )
    assert r.returncode == 2 and "agent conversation memory" in r.stderr, r.stderr
    assert "would run on chroma: vector_store" in r.stderr
