"""Schemathesis fuzzes the running service through its own ``/openapi.json``.

Two bounded ``schemathesis run`` passes against one service with faults on
and a 256 MB budget: every operation but the fault instruments first, then the
fault instruments alone, so the memory they pin (pressure far over the budget,
writes shed with 503) cannot masquerade as a server error of the write paths.
Each pass runs the examples, coverage (boundary and invalid values) and
fuzzing phases, positive and negative data, with every check: no 5xx, every
status, content type, body and header as documented, invalid data refused and
valid data accepted. The fault pass also holds the service to its caps: the
kernel's peak-RSS mark may rise by at most 4 x budget, and a reset gives the
memory back.

The passes run the schemathesis CLI in a subprocess: its pytest loader for
schemas from fixtures (``schemathesis.pytest.from_fixture``) reads
``Node._nodeid``, which pytest 9.2 no longer has. The run is bounded by
``max-examples`` per operation, a fixed seed and a subprocess timeout; it
takes a few seconds on two cores.

What the fuzzer found once is pinned below as plain tests.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from memstress.common.units import MB
from memstress.runner.service import ManagedService
from tests.conftest import PYTHON, start_service

BUDGET_MB = 256
FAULT_CAP = 4 * BUDGET_MB * MB  # leak plus ballast, whatever the requests ask for
SLACK = 64 * MB  # allocator, SQLite and the fuzzed requests themselves
MAX_EXAMPLES = 100  # generated cases per operation in the fuzzing phase
RUN_TIMEOUT = 120  # seconds; a pass takes about 5
TIMEOUT = 10
FAULT_OPERATIONS = "^/faults/"

SCHEMATHESIS_CONFIG = f"""\
seed = 20240601
request-timeout = {TIMEOUT}

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

# A schema-valid size is still refused (422, naming bytes) once the fault
# memory already held would pass 4 x budget: that cap depends on state.
[[operations]]
include-path-regex = "^/faults/(leak|ballast)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"""


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM``), which no sampling can miss."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def rss(svc: ManagedService) -> int:
    r = requests.get(f"{svc.url}/memory/stats", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return int(r.json()["rss_bytes"])


def tail(text: str, lines: int = 80, width: int = 300) -> str:
    return "\n".join(line[:width] for line in text.splitlines()[-lines:])


def schemathesis_run(
    svc: ManagedService, workdir: Path, name: str, *filters: str, workers: int
) -> dict[str, Any]:
    """One ``schemathesis run`` pass; returns its JSON report after asserting it found nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    report = workdir / f"{name}.json"
    cmd = [
        PYTHON,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{svc.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        str(workers),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *filters,
    ]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, f"schemathesis ({name}) found problems:\n{tail(done.stdout)}"
    assert done.stderr.strip() == "", tail(done.stderr)
    data: dict[str, Any] = json.loads(report.read_text())
    assert data["failures"] == [] and data["errors"] == []
    ops = data["operations"]
    assert ops["selected"] > 0 and ops["tested"] == ops["selected"], ops
    assert data["test_cases"]["generated"] >= 10 * ops["selected"], data["test_cases"]
    assert data["phases"]["coverage"]["status"] == "success", data["phases"]
    assert data["phases"]["fuzzing"]["status"] == "success", data["phases"]
    return data


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    """The service the fuzzer talks to: faults on, a 256 MB budget."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc/<pid>/status (Linux only)")
    svc = start_service(tmp_path_factory.mktemp("fuzz") / "data", budget_mb=BUDGET_MB)
    yield svc
    svc.stop()


def schema(svc: ManagedService) -> dict[str, Any]:
    r = requests.get(f"{svc.url}/openapi.json", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    data: dict[str, Any] = r.json()
    return data


# --- the schema tells the truth ----------------------------------------------------


def test_the_schema_documents_errors_retry_after_and_the_fault_cap(fuzzed: ManagedService) -> None:
    paths = schema(fuzzed)["paths"]
    add = paths["/agents/{agent_id}/messages"]["post"]["responses"]
    assert {"201", "413", "422", "503"} <= set(add)
    assert add["503"]["headers"]["Retry-After"]["required"] is True
    assert "429" in paths["/memory/optimize"]["post"]["responses"]
    assert "404" in paths["/vectors/search"]["post"]["responses"]
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    components = schema(fuzzed)["components"]["schemas"]
    for body in ("LeakIn", "BallastIn"):
        assert components[body]["properties"]["bytes"]["maximum"] == 2 * BUDGET_MB * MB


# --- what the fuzzer found, pinned ---------------------------------------------------


def test_a_body_that_is_not_utf8_gets_422_naming_the_body(fuzzed: ManagedService) -> None:
    r = requests.post(
        f"{fuzzed.url}/vectors/search",
        data=b"\xff\xfe{",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body"


def test_a_405_allows_every_method_of_the_path(fuzzed: ManagedService) -> None:
    r = requests.put(f"{fuzzed.url}/agents/a1/messages", timeout=TIMEOUT)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, POST"
    assert r.json() == {"error": "Method Not Allowed"}


def test_a_context_query_of_the_documented_maximum_is_served(fuzzed: ManagedService) -> None:
    longest = "\U0010ffff" * 10_000  # 12 bytes a character once percent-encoded
    url = f"{fuzzed.url}/agents/a1/context"
    r = requests.get(url, params={"query": longest, "k": "3"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:200]
    r = requests.get(url, params={"query": longest + "x", "k": "3"}, timeout=TIMEOUT)
    assert r.status_code == 422 and r.json()["field"] == "query"


# --- the fuzz passes ----------------------------------------------------------------


def test_fuzzing_every_operation_finds_nothing(fuzzed: ManagedService, tmp_path: Path) -> None:
    report = schemathesis_run(
        fuzzed, tmp_path, "api", "--exclude-path-regex", FAULT_OPERATIONS, workers=2
    )
    assert report["operations"]["selected"] == 12
    assert fuzzed.proc.poll() is None
    log = fuzzed.log()
    assert "Traceback" not in log and "storage error" not in log


def test_fuzzing_the_fault_instruments_stays_within_their_caps(
    fuzzed: ManagedService, tmp_path: Path
) -> None:
    before_peak = peak_rss(fuzzed.pid)
    before = rss(fuzzed)
    report = schemathesis_run(
        fuzzed, tmp_path, "faults", "--include-path-regex", FAULT_OPERATIONS, workers=1
    )
    assert report["operations"]["selected"] == 3
    accepted = sum(
        rates["accepted"]
        for op in ("POST /faults/leak", "POST /faults/ballast")
        for rates in report["valid_rates"][op].values()
    )
    assert accepted > 0, "no fault memory was ever granted: the caps were not exercised"
    peak = peak_rss(fuzzed.pid)
    assert peak <= before_peak + FAULT_CAP + SLACK, (
        f"peak RSS rose by {(peak - before_peak) / MB:.0f} MB, over 4 x budget "
        f"({FAULT_CAP / MB:.0f} MB) + {SLACK / MB:.0f} MB"
    )
    r = requests.post(f"{fuzzed.url}/faults/reset", json={}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["strategy"] == "normal"
    assert rss(fuzzed) <= before + SLACK, "a reset did not give the fault memory back"
    log = fuzzed.log()
    assert "Traceback" not in log and "storage error" not in log
