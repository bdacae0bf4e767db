"""A target that answers badly must not kill the monitor or end the run.

Real Locust runs (baseline, scaled down) against a hostile target of the tests'
own (:mod:`tests.hostile_target`): the real reference service behind a proxy
that answers ``/metrics``, ``/memory/stats`` and ``/health`` badly, one way per
run, all runs at once. The monitor reads the proxy's process by PID
(``--target-pid``), as a user would pass it. Each run must end with its
verdict's code, keep about one ``memory_samples.csv`` row per slot of the
sampler's schedule with RSS from psutil, write one ``source_degraded`` event
per spoiled source, and its report must name them. One server is killed
mid-run: that is a lost target (exit 3), as before.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from memstress.common.config import Config, load_config
from memstress.reports.build import build_run_report
from memstress.reports.collect import read_run
from memstress.reports.degraded import DegradedSource, degraded_sources
from memstress.reports.markdown import render_run
from memstress.reports.results import aggregate, to_results
from memstress.runner.service import ManagedService, free_port
from tests.conftest import PYTHON, ROOT, start_service
from tests.hostile_target import MODES, spoiled_sources
from tests.locust_helpers import LocustRun, assert_no_traceback, config_copy, start_locust

# A sample's HTTP reads time out at 0.6 x the interval: at 1 s, a hostile server (a proxy
# in Python) answers its spoiled body in time on a loaded machine, so the reason each
# source is degraded for is the mode's, not "no answer within 0.3 s".
INTERVAL = 1.0
DURATION = 24
BAD_MODES = sorted(m for m in MODES if m != "good")
KILLED = "killed"  # a garbled_stats server, killed mid-run
RECOVERING = "error_500"  # this one's server turns good halfway through

REASONS = {
    "junk_prometheus": {"prometheus": "GET /metrics: not Prometheus text"},
    "garbled_stats": {"stats": "GET /memory/stats: not JSON"},
    "wrong_types": {
        "prometheus": "figures that cannot be true: prom_rss_bytes=",
        "stats": "GET /memory/stats: wrong types (rss_bytes='512 MB'",
    },
    "slow": {"prometheus": "no answer within", "stats": "no answer within"},
    "reset": {"prometheus": "GET /metrics: ConnectionError", "stats": "ConnectionError"},
    "error_500": {"prometheus": "GET /metrics: HTTP 500", "stats": "GET /memory/stats: HTTP 500"},
    "huge": {"prometheus": "GET /metrics: body over 4 MB", "stats": "body of 50.0 MB"},
}
"""What the source_degraded event of each spoiled source must say."""

COLUMN_OF = {"prometheus": "prom_rss_bytes", "stats": "budget_bytes"}


@dataclass
class Hostile:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        r = requests.put(f"{self.url}/_hostile/mode", data=mode, timeout=5)
        r.raise_for_status()


def start_hostile(upstream: str, mode: str, log_path: Path) -> Hostile:
    port = free_port()
    cmd = [PYTHON, "-m", "tests.hostile_target", "--upstream", upstream]
    cmd += ["--port", str(port), "--mode", mode]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Hostile(proc, port)
    deadline = time.monotonic() + 20
    while True:  # its control endpoint answers once it serves (bounded in time)
        try:
            server.set_mode(mode)
            return server
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"hostile target did not start: {log_path.read_text()}"
                ) from None
            time.sleep(0.1)


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def build_report(run_dir: Path, cfg: Config, charts: bool) -> tuple[dict[str, Any], str]:
    """The run's results document and Markdown report; charts (2-3 s of CPU each) only
    when asked: they play no part in what these tests read."""
    if charts:
        built = build_run_report(run_dir, cfg)
        return built.results, built.report_path.read_text()
    doc = to_results(aggregate(read_run(run_dir), cfg), cfg)
    return doc, render_run(doc)


@dataclass
class Done:
    mode: str
    run: LocustRun
    code: int
    report: tuple[dict[str, Any], str] | None  # results document, Markdown

    @property
    def samples(self) -> list[dict[str, str]]:
        return rows(self.run.run_dir / "memory_samples.csv")

    def details(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(e["detail"]) for e in self.run.events() if e["kind"] == kind]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Done]]:
    base = tmp_path_factory.mktemp("hostile")
    upstream: ManagedService = start_service(base / "upstream" / "data")
    servers: dict[str, Hostile] = {}
    started: dict[str, LocustRun] = {}
    config = config_copy(base / "health.yml", safety__system_health_check_interval=2.0)
    try:
        for name in [*BAD_MODES, KILLED]:
            mode = "garbled_stats" if name == KILLED else name
            servers[name] = start_hostile(upstream.url, mode, base / f"{name}-server.log")
        for name, server in servers.items():
            started[name] = start_locust(
                base / name,
                "--headless", "--scenario", "baseline", "--stress-level", "0",
                "--duration", str(DURATION), "--monitor-interval", str(INTERVAL),
                "--target-pid", str(server.proc.pid), "--memstress-config", str(config),
                host=server.url,
            )  # fmt: skip

        # Halfway on the monitor's own clock, one server turns good (its sources recover);
        # another is killed.
        waiting = {RECOVERING, KILLED}
        deadline = time.monotonic() + 60
        while waiting:
            assert time.monotonic() < deadline, started[KILLED].log()[-3000:]
            for name in list(waiting):
                sampled = rows(started[name].run_dir / "memory_samples.csv")
                if sampled and float(sampled[-1]["elapsed_s"]) >= DURATION / 2:
                    if name == KILLED:  # not reaped until teardown: a zombie, as a
                        # crashed target whose parent has not noticed yet
                        servers[name].proc.send_signal(signal.SIGKILL)
                    else:
                        servers[name].set_mode("good")
                    waiting.discard(name)
            time.sleep(0.2)

        cfg = load_config(str(config))
        done: dict[str, Done] = {}
        for name, run in started.items():
            code = run.wait(90)
            report = None if name == KILLED else build_report(run.run_dir, cfg, name == "huge")
            done[name] = Done(name, run, code, report)
        yield done
    finally:
        for run in started.values():
            run.kill()
        for server in servers.values():
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)
        upstream.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", BAD_MODES)
def test_a_target_answering_badly_degrades_its_sources_and_the_run_goes_on(
    runs: dict[str, Done], mode: str
) -> None:
    done = runs[mode]
    log = done.run.log()
    assert_no_traceback(log)

    # The verdict's exit code: never 2 (usage), nor 3 (lost) or 4 while the target lives.
    passed = "memstress verdict: passed" in log
    assert passed or "memstress verdict: FAILED" in log, log[-3000:]
    assert done.code == (0 if passed else 1), log[-3000:]
    kinds = {e["kind"] for e in done.run.events()}
    assert not kinds & {"target_lost", "emergency_stop", "source_disabled"}, kinds

    # About one row per slot of the sampler's schedule, each with RSS from psutil.
    match = re.search(r"memory monitor: (\d+) samples \((\d+) slots skipped\)", log)
    assert match, log[-3000:]
    taken, skipped = int(match.group(1)), int(match.group(2))
    samples = done.samples
    assert len(samples) == taken
    from_psutil = [s for s in samples if s["rss_source"] == "psutil" and s["rss_bytes"]]
    assert len(from_psutil) >= 0.9 * (taken + skipped), (len(from_psutil), taken, skipped)
    assert float(samples[-1]["elapsed_s"]) >= 0.8 * DURATION  # sampled to the end
    # the leak detector judges psutil's RSS even where /memory/stats never answered well
    assert {s["leak_state"] for s in samples} & {"clear", "leak"}, mode

    # One source_degraded event per spoiled source: the reason and what came back.
    degraded = done.details("source_degraded")
    spoiled = spoiled_sources(mode)
    assert spoiled and set(REASONS[mode]) == spoiled
    for source in spoiled:
        mine = [d for d in degraded if d["source"] == source]
        event = mine[0]
        assert REASONS[mode][source] in event["reason"], event
        # one for the spoiled answers (a good source may blip once on a loaded machine after
        # it recovered, which is another event, for another reason)
        assert [d for d in mine if REASONS[mode][source] in d["reason"]] == [event], mine
        assert len(mine) == 1 or mode == RECOVERING, mine
        if mode != "slow":  # a slow answer has nothing to show
            assert event["example"], event
        # its columns are empty while it is degraded; nothing it said is plotted
        column = COLUMN_OF[source]
        if mode != RECOVERING:
            assert all(s[column] == "" for s in samples), source
    # ... while a source the mode leaves alone goes on reading
    for source in set(COLUMN_OF) - spoiled:
        filled = [s for s in samples if s[COLUMN_OF[source]] != ""]
        assert len(filled) >= 0.5 * len(samples), source

    # The report names the degraded sources and for how long.
    assert done.report is not None
    results, markdown = done.report
    listed = {d["source"]: d for d in results["degraded_sources"]}
    assert spoiled <= set(listed), listed
    assert "## Degraded monitor sources" in markdown
    span = float(samples[-1]["elapsed_s"]) - float(samples[0]["elapsed_s"])
    for source in spoiled:
        entry = listed[source]
        assert REASONS[mode][source] in entry["reason"]
        assert entry["spells"] == 1 or mode == RECOVERING, entry
        assert f"| {source} | " in markdown
        if mode != RECOVERING:
            assert entry["degraded_s"] >= 0.9 * span and not entry["recovered"], entry


@pytest.mark.slow
def test_sources_recover_when_the_target_answers_well_again(runs: dict[str, Done]) -> None:
    done = runs[RECOVERING]
    recovered: dict[str, dict[str, Any]] = {}
    for d in done.details("source_recovered"):
        recovered.setdefault(d["source"], d)  # the first: from the spoiled answers
    assert set(recovered) == spoiled_sources(RECOVERING), recovered
    samples = done.samples
    for source, column in COLUMN_OF.items():
        assert recovered[source]["failed_reads"] >= 5
        assert samples[0][column] == "" and any(s[column] for s in samples[-5:]), source
    assert done.report is not None
    span = float(samples[-1]["elapsed_s"]) - float(samples[0]["elapsed_s"])
    for entry in done.report[0]["degraded_sources"]:
        # the spell ended at the recovery, half-way: well short of the whole run
        assert entry["recovered"] and 2 < entry["degraded_s"] < span - 3, (entry, span)


@pytest.mark.slow
def test_the_server_killed_mid_run_is_a_lost_target(runs: dict[str, Done]) -> None:
    done = runs[KILLED]
    log = done.run.log()
    assert done.code == 3, log[-3000:]
    assert "Shutting down (exit code 3)" in log
    lost = [e for e in done.run.events() if e["kind"] == "target_lost"]
    assert len(lost) == 1 and lost[0]["detail"].startswith(
        "target process gone on 5 consecutive samples"
    )
    # Counted in samples, not seconds: the run ended on the fifth failed sample after the
    # kill (one more may be taken while it stops), short of its plan's slots.
    samples = done.samples
    failed = len(samples) - max(i for i, s in enumerate(samples) if s["rss_bytes"]) - 1
    assert 5 <= failed <= 7, failed
    assert len(samples) < DURATION / INTERVAL


def test_degraded_spells_are_summed_per_source_until_recovery_or_the_end() -> None:
    def event(t: float, kind: str, **detail: Any) -> dict[str, Any]:
        return {"time": t, "kind": kind, "detail": json.dumps(detail)}

    events = pd.DataFrame(
        [
            event(10, "stage", index=0),
            event(11, "source_degraded", source="stats", reason="HTTP 500", example="oops"),
            event(15, "source_recovered", source="stats", degraded_s=4),
            event(20, "source_degraded", source="stats", reason="HTTP 502", example=""),
            event(21, "source_degraded", source="prometheus", reason="not JSON", example="<h"),
            event(25, "source_disabled", source="psi", error="ValueError: x"),
            {"time": 26, "kind": "source_degraded", "detail": "not json"},
        ]
    )
    assert degraded_sources(events, t_end=30) == [
        DegradedSource("prometheus", 9.0, 1, "not JSON", "<h"),
        DegradedSource("psi", 5.0, 1, "ValueError: x", "", disabled=True),
        DegradedSource("stats", 14.0, 2, "HTTP 500", "oops"),
    ]
