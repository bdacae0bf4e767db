"""Pure tests of the monitor's parts: sources, the sampler, the safety guard, the CPU meter.

No Locust here (it would monkey-patch pytest's process); the real runs are in
``test_monitor_runs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import gevent
import psutil
import pytest

from memstress.common.cgroup import find_memory_cgroup
from memstress.common.config import load_config
from memstress.common.exitcodes import ExitCode
from memstress.common.target import TargetClient
from memstress.monitors.http_sources import Get
from memstress.monitors.leak import LeakVerdict
from memstress.monitors.safety import SafetyGuard, Seen
from memstress.monitors.sampler import GreenletCpuMeter, Sampler
from memstress.monitors.snapshot import History, Point
from memstress.monitors.sources import (
    SOURCE_NAMES,
    CgroupSource,
    HostSource,
    ProcessSource,
    PrometheusSource,
    PsiSource,
    SourceFailed,
    SourceMissing,
    TargetGone,
    junk_values,
    parse_prometheus_rss,
    parse_psi,
    parse_source_names,
    stats_row,
)
from memstress.runner.service import ManagedService, free_port

PROM_PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 458.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 6.7633152e+07
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 2.6370048e+08
"""


def test_prometheus_rss_is_parsed_from_its_own_lines() -> None:
    assert parse_prometheus_rss(PROM_PAGE) == 67633152.0
    assert parse_prometheus_rss("# nothing here\nup 1\n") is None
    with pytest.raises(SourceFailed, match="not Prometheus text") as junk:
        parse_prometheus_rss(f"{PROM_PAGE}process_resident_memory_bytes NaN-ish {{\n")
    assert junk.value.example == "process_resident_memory_bytes NaN-ish {"


def test_psi_some_and_full_avg10() -> None:
    text = (
        "some avg10=1.25 avg60=0.50 avg300=0.10 total=12345\n"
        "full avg10=0.75 avg60=0.20 avg300=0.00 total=678\n"
    )
    assert parse_psi(text) == {"psi_some_avg10": 1.25, "psi_full_avg10": 0.75}
    assert parse_psi("some avg10=2.00 avg60=0 avg300=0 total=1\n")["psi_full_avg10"] is None


def test_psi_missing_file_is_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="kernel without PSI"):
        PsiSource(tmp_path / "no-such-file").read()


def test_stats_row_maps_the_contract_fields() -> None:
    body = {
        "rss_bytes": 100,
        "budget_bytes": 1000,
        "pressure": 10.0,
        "strategy": "aggressive",
        "optimizations_total": 3,
        "optimizations_failed": 1,
        "bytes_freed_total": 4096,
        "leak_suspected": True,
        "unaccounted_bytes": 7,
        "tiers": {
            "conversations": {"items": 1, "bytes": 11, "limit_bytes": 1},
            "vectors": {"items": 1, "bytes": 22, "limit_bytes": 1},
            "embedding_cache": {"items": 1, "bytes": 33, "limit_bytes": 1},
            "ballast": {"items": 1, "bytes": 44, "limit_bytes": 1},
        },
    }
    row = stats_row(body)
    assert row["stats_rss_bytes"] == 100
    assert row["strategy"] == "aggressive"
    assert row["leak_suspected"] == 1
    assert [row[f"{t}_bytes"] for t in ("conversations", "vectors", "embedding_cache")] == [
        11,
        22,
        33,
    ]
    assert row["ballast_bytes"] == 44
    # Another platform's partial answer: what is missing or null stays empty ...
    partial = stats_row({"rss_bytes": None, "pressure": 50})
    assert partial["stats_rss_bytes"] is None and partial["pressure"] == 50
    assert partial["strategy"] is None and partial["vectors_bytes"] is None
    # ... but a figure of the wrong type makes the answer junk, named.
    with pytest.raises(SourceFailed, match=r"wrong types \(rss_bytes='lots', tiers.vectors"):
        stats_row({"rss_bytes": "lots", "tiers": {"vectors": {"bytes": True}}})
    with pytest.raises(SourceFailed, match="not a JSON object"):
        stats_row(["not", "an", "object"])


def test_a_get_prepared_once_answers_as_session_get(service: ManagedService) -> None:
    """The HTTP sources send a request prepared once on the session's adapter; what they
    read is what ``Session.get`` reads, a redirect is followed, a 404 is a missing source."""
    client = TargetClient(service.url, timeout=5)
    plain = client.session
    stats = Get(client, "/memory/stats")
    for _ in range(2):  # the same prepared request again, on the pooled connection
        assert json_keys(stats()) == json_keys(plain.get(f"{service.url}/memory/stats").text)
    slash = Get(client, "/memory/stats/")  # FastAPI answers 307 to /memory/stats
    assert plain.get(f"{service.url}/memory/stats/", allow_redirects=False).status_code == 307
    assert json_keys(slash()) == json_keys(stats())
    assert PrometheusSource(client).read()["prom_rss_bytes"] > 0
    with pytest.raises(SourceMissing, match="the target has no /nowhere"):
        Get(client, "/nowhere")()
    with pytest.raises(SourceFailed, match="GET /metrics: ConnectionError"):
        Get(TargetClient(f"http://127.0.0.1:{free_port()}", timeout=5), "/metrics")()


def json_keys(text: str) -> set[str]:
    return set(json.loads(text))


def test_process_source_reads_a_live_process_and_fails_when_it_is_gone() -> None:
    row = ProcessSource(os.getpid()).read()
    assert row["proc_rss_bytes"] > 0 and row["num_threads"] >= 1 and row["open_files"] >= 3
    with pytest.raises(SourceMissing, match="no target PID"):
        ProcessSource(None).read()
    with pytest.raises(SourceFailed, match="is gone"):
        ProcessSource(2**22 + 12345).read()  # above pid_max: never a live process


def test_a_killed_target_not_yet_reaped_is_gone_not_a_process_of_0_bytes() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        source = ProcessSource(child.pid)
        assert source.read()["proc_rss_bytes"] > 0
        child.kill()
        deadline = time.monotonic() + 5
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(TargetGone, match=f"target process {child.pid} is gone"):
            source.read()
    finally:
        child.kill()
        child.wait()


def test_host_source() -> None:
    row = HostSource().read()
    assert row["host_total_bytes"] > row["host_available_bytes"] > 0
    assert 0 <= row["host_percent"] <= 100


def _fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return tmp_path / "proc"


def test_cgroup_v2_of_the_target(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    d = root / "system.slice" / "svc.service"
    d.mkdir(parents=True)
    (d / "memory.current").write_text("123456\n")
    (d / "memory.max").write_text("1048576\n")
    (d / "memory.events").write_text("low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\n")
    mountinfo = f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw\n"
    proc = _fake_proc(tmp_path, "0::/system.slice/svc.service\n", mountinfo)
    row = CgroupSource(4242, proc).read()
    assert row == {
        "cgroup_current_bytes": 123456,
        "cgroup_max_bytes": 1048576,
        "cgroup_events": "max=5;oom=1;oom_kill=1",
    }
    (d / "memory.max").write_text("max\n")
    assert CgroupSource(4242, proc).read()["cgroup_max_bytes"] is None
    # The slice above it caps it: the target's limit is the tightest of its ancestors.
    (d.parent / "memory.max").write_text("2097152\n")
    assert CgroupSource(4242, proc).read()["cgroup_max_bytes"] == 2097152


def test_cgroup_v1_inside_a_container_mount(tmp_path: Path) -> None:
    # The container sees its own cgroup as the mount's root: the path is relative to it.
    root = tmp_path / "memory"
    root.mkdir()
    (root / "memory.usage_in_bytes").write_text("736210944\n")
    (root / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (root / "memory.failcnt").write_text("3\n")
    mountinfo = (
        f"35 31 0:32 /docker/abc {root} rw,relatime - cgroup cgroup rw,memory\n"
        f"36 31 0:33 / {tmp_path / 'pids'} rw,relatime - cgroup cgroup rw,pids\n"
    )
    proc = _fake_proc(tmp_path, "9:pids:/docker/abc\n4:memory:/docker/abc\n", mountinfo)
    row = CgroupSource(4242, proc).read()
    assert row == {
        "cgroup_current_bytes": 736210944,
        "cgroup_max_bytes": None,  # v1's "no limit" number
        "cgroup_events": "failcnt=3",
    }


def test_cgroup_unreadable_is_missing(tmp_path: Path) -> None:
    assert find_memory_cgroup("0::/x\n", "") is None
    proc = _fake_proc(tmp_path, "0::/nowhere\n", f"1 2 0:1 / {tmp_path} rw - cgroup2 c rw\n")
    with pytest.raises(SourceMissing, match="no readable memory cgroup"):
        CgroupSource(4242, proc).read()
    with pytest.raises(SourceMissing, match="cannot read"):
        CgroupSource(99, proc).read()


def test_source_names_option() -> None:
    assert parse_source_names("auto") == SOURCE_NAMES
    assert parse_source_names(None) == SOURCE_NAMES
    assert parse_source_names(" process , host ") == ("process", "host")
    with pytest.raises(ValueError, match=r"unknown source 'rss' \(valid: auto, or a comma"):
        parse_source_names("process,rss")


class FakeSource:
    def __init__(self, name: str, *results: Any) -> None:
        self.name = name
        self.results = list(results)
        self.calls = 0

    def read(self) -> dict[str, Any]:
        self.calls += 1
        r = self.results[min(self.calls, len(self.results)) - 1]
        if isinstance(r, Exception):
            raise r
        return dict(r)


Events = list[tuple[str, str, dict[str, Any]]]


def _sampler(*sources: Any, deadline: float | None = None) -> tuple[Sampler, Events]:
    events: Events = []
    sampler = Sampler(
        sources,
        lambda kind, name, detail: events.append((kind, name, detail)),
        deadline=deadline,
        host_total_bytes=16 << 30,
    )
    return sampler, events


def test_sampler_picks_the_best_rss_and_drops_a_missing_source_once() -> None:
    process = FakeSource("process", SourceMissing("no target PID"))
    prom = FakeSource("prometheus", {"prom_rss_bytes": 200.0})
    stats = FakeSource("stats", {"stats_rss_bytes": 300, "pressure": 5.0})
    sampler, events = _sampler(process, prom, stats)
    for _ in range(3):
        s = sampler.take()
        assert s.row["rss_bytes"] == 200.0 and s.row["rss_source"] == "prometheus"
        assert s.process_alive is None and s.memory_read is True
    assert events == [("source_missing", "process", {"reason": "no target PID"})]
    assert process.calls == 1 and sampler.missing == {"process": "no target PID"}
    assert sampler.answered("stats") and not sampler.answered("process")


def test_sampler_what_it_saw_of_the_target() -> None:
    down = SourceFailed("GET /memory/stats: ConnectionError")
    s, _ = _sampler(
        FakeSource("process", {"proc_rss_bytes": 1}),
        FakeSource("stats", down),
        FakeSource("prometheus", down),
    )
    sample = s.take()
    # HTTP sources down, the process there: alive, its memory read (by psutil)
    assert sample.process_alive is True and sample.memory_read is True
    assert sample.row["rss_source"] == "psutil" and sample.failures == ["stats", "prometheus"]
    gone, _ = _sampler(FakeSource("process", TargetGone("target process 7 is gone")))
    assert gone.take().process_alive is False
    blind, _ = _sampler(FakeSource("stats", down))
    assert blind.take().memory_read is False and blind.take().process_alive is None
    host, _ = _sampler(FakeSource("host", {"host_percent": 1.0}))
    assert host.take().memory_read is None  # no source reads the target: nothing to judge


def test_a_source_failing_alone_is_degraded_once_then_recovers() -> None:
    bad = SourceFailed("GET /metrics: HTTP 500", "Internal Server Error")
    prom = FakeSource("prometheus", bad, bad, bad, {"prom_rss_bytes": 5.0}, {"prom_rss_bytes": 6.0})
    process = FakeSource("process", {"proc_rss_bytes": 10})
    sampler, events = _sampler(process, prom)
    rows = [sampler.take().row for _ in range(5)]
    assert [r["rss_bytes"] for r in rows] == [10] * 5  # the other source's figures go on
    assert [r.get("prom_rss_bytes") for r in rows] == [None, None, None, 5.0, 6.0]
    (kind, name, detail), (kind2, name2, detail2) = events
    assert (kind, name) == ("source_degraded", "prometheus")
    assert detail == {"reason": "GET /metrics: HTTP 500", "example": "Internal Server Error"}
    assert (kind2, name2) == ("source_recovered", "prometheus")
    assert detail2["failed_reads"] == 3 and detail2["degraded_s"] >= 0


@pytest.mark.parametrize(
    ("reading", "why"),
    [
        ({"prom_rss_bytes": float("nan")}, "prom_rss_bytes=nan (not a number)"),
        ({"proc_rss_bytes": -1}, "proc_rss_bytes=-1 (negative)"),
        ({"stats_rss_bytes": 32 << 30}, "stats_rss_bytes=3.436e+10 (above the host's 16.0 GiB)"),
        ({"pressure": 100.5, "stats_rss_bytes": 5, "budget_bytes": 10}, "pressure=100.5"),
        ({"host_percent": 101.0}, "host_percent=101 (valid: 0-100)"),
        ({"psi_some_avg10": float("inf")}, "psi_some_avg10=inf (not a number)"),
    ],
)
def test_figures_that_cannot_be_true_are_junk(reading: dict[str, Any], why: str) -> None:
    assert junk_values(reading, 16 << 30)[0].startswith(why)
    sampler, events = _sampler(FakeSource("stats", reading))
    assert not any(sampler.take().row.get(k) for k in reading)  # not plotted, not graded
    assert events[0][0] == "source_degraded" and why in events[0][2]["reason"]


def test_pressure_above_100_is_sound_when_the_same_answer_is_over_budget() -> None:
    over = {"pressure": 120.0, "stats_rss_bytes": 12, "budget_bytes": 10}
    assert junk_values(over, 16 << 30) == []
    assert junk_values({"pressure": 0.0, "cpu_percent": 350.0, "strategy": "normal"}, None) == []


def test_missing_after_good_answers_is_a_failure_not_a_drop() -> None:
    gone = SourceMissing("the target has no /metrics (HTTP 404)")
    sampler, events = _sampler(FakeSource("prometheus", {"prom_rss_bytes": 1.0}, gone))
    sampler.take()
    sampler.take()
    assert [s.name for s in sampler.sources] == ["prometheus"] and sampler.missing == {}
    assert [e[0] for e in events] == ["source_degraded"]


class BuggySource:
    name = "stats"

    def __init__(self) -> None:
        self.calls = 0

    def read(self) -> dict[str, Any]:
        self.calls += 1
        return {"stats_rss_bytes": 1 / 0}


def test_a_bug_in_a_source_disables_it_and_the_sample_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buggy = BuggySource()
    sampler, events = _sampler(FakeSource("process", {"proc_rss_bytes": 7}), buggy)
    for _ in range(3):
        assert sampler.take().row["rss_bytes"] == 7
    assert buggy.calls == 1 and [s.name for s in sampler.sources] == ["process"]
    assert events == [
        ("source_disabled", "stats", {"error": "ZeroDivisionError: division by zero"})
    ]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "stats" in tracebacks[0].getMessage()


class SlowSource:
    name = "stats"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def read(self) -> dict[str, Any]:
        gevent.sleep(self.seconds)
        return {"stats_rss_bytes": 1}


def _reads_ended(sampler: Sampler) -> None:
    """Wait for the reads a sample left running: a late read reports ``source_degraded``
    from its own greenlet when its timer fires, which on a loaded machine can come after
    the sample has returned (a fresh-clone run saw no event yet)."""
    busy = [f.busy for f in sampler.feeds if f.busy is not None]
    assert set(gevent.joinall(busy, timeout=5)) == set(busy)


def test_a_slow_source_does_not_hold_the_sample_past_its_deadline() -> None:
    process = FakeSource("process", {"proc_rss_bytes": 3})
    sampler, events = _sampler(process, SlowSource(5.0), deadline=0.1)

    def take() -> tuple[float, Any]:
        t0 = time.monotonic()
        sample = sampler.take()
        return time.monotonic() - t0, sample

    spent, sample = gevent.spawn(take).get()
    assert spent < 0.5 and sample.row["rss_bytes"] == 3 and "stats_rss_bytes" not in sample.row
    _reads_ended(sampler)
    assert events == [
        ("source_degraded", "stats", {"reason": "no answer within 0.1 s", "example": ""})
    ]


class WhereSource(FakeSource):
    """Records the greenlet each read ran in."""

    def __init__(self, name: str, reading: dict[str, Any], *, local: bool) -> None:
        super().__init__(name, reading)
        self.local = local
        self.ran_in: list[Any] = []

    def read(self) -> dict[str, Any]:
        self.ran_in.append(gevent.getcurrent())
        return super().read()


def test_local_sources_are_read_in_the_samplers_greenlet_network_ones_apart() -> None:
    """A /proc read gets no greenlet and no timer of its own (gevent could not time it
    out): the sampler reads it while the network reads wait on their sockets."""
    local = WhereSource("process", {"proc_rss_bytes": 3}, local=True)
    remote = WhereSource("prometheus", {"prom_rss_bytes": 4}, local=False)
    sampler, events = _sampler(remote, local, SlowSource(5.0), deadline=0.1)

    def take() -> tuple[Any, Any]:
        return gevent.getcurrent(), sampler.take()

    me, sample = gevent.spawn(take).get()
    assert local.ran_in == [me] and remote.ran_in and remote.ran_in[0] is not me
    assert sample.row["rss_source"] == "psutil" and sample.row["prom_rss_bytes"] == 4
    assert sample.late == ["stats"] and sample.failures == ["stats"]
    _reads_ended(sampler)
    assert [e[0] for e in events] == ["source_degraded"]


class StubbornSource:
    """A read the deadline cannot interrupt (as one blocked outside gevent would be)."""

    name = "stats"

    def read(self) -> dict[str, Any]:
        try:
            gevent.sleep(5)
        except gevent.Timeout:
            gevent.sleep(5)
        return {"stats_rss_bytes": 1}


def test_closing_the_sampler_stops_a_read_still_running() -> None:
    sampler, events = _sampler(StubbornSource(), deadline=0.05)
    sample = gevent.spawn(sampler.take).get()
    busy = sampler.feeds[0].busy
    assert sample.late == ["stats"] and busy is not None and not busy.dead
    assert gevent.spawn(sampler.take).get().late == ["stats"]  # not asked again meanwhile
    sampler.close()  # nothing of it reports after the run
    assert busy.dead and events == []


CFG = load_config()
UP = Seen(process=True, memory=True)


def test_safety_host_memory_stops_at_once() -> None:
    g = SafetyGuard(CFG.safety)
    assert g.check(0, 0, 98.9, None, UP) is None
    stop = g.check(1, 1, 99.0, None, UP)
    assert stop is not None and stop.exit_code == ExitCode.SAFETY and stop.kind == "emergency_stop"
    assert stop.reason == "host memory 99.0% >= emergency_shutdown_threshold 99%"


def test_safety_pressure_must_be_held() -> None:
    s = CFG.safety  # 99.5 for 15 s
    g = SafetyGuard(s)
    assert g.check(0, 0, 1, 99.9, UP) is None
    assert g.check(10, 10, 1, 99.9, UP) is None
    assert g.check(12, 12, 1, 99.0, UP) is None  # a dip resets the clock
    assert g.check(13, 13, 1, 99.9, UP) is None
    assert g.check(20, 20, 1, None, UP) is None  # no reading: neither resets nor counts
    stop = g.check(28, 28, 1, 100.0, UP)
    assert stop is not None and stop.exit_code == ExitCode.SAFETY
    assert "target pressure 100.0 > target_pressure_limit 99.5 for 15.0 s" in stop.reason


def test_safety_target_lost_after_consecutive_failures() -> None:
    g = SafetyGuard(CFG.safety)  # 5
    blind = Seen(memory=False)  # no PID: no source read the target's memory
    for i in range(4):
        assert g.check(i, i, 1, None, blind) is None
    assert g.check(4, 4, 1, None, Seen(memory=True)) is None  # one reading resets the count
    for i in range(4):
        assert g.check(5 + i, 5 + i, 1, None, blind) is None
    assert g.check(9, 9, 1, None, Seen()) is None  # nothing to judge: no change
    stop = g.check(10, 10, 1, None, blind)
    assert (
        stop is not None and stop.kind == "target_lost" and stop.exit_code == ExitCode.TARGET_LOST
    )
    assert stop.reason == (
        "no source could read the target's memory on 5 consecutive samples (target_lost_after 5)"
    )


def test_with_a_pid_only_the_process_going_means_lost() -> None:
    g = SafetyGuard(CFG.safety)
    for i in range(20):  # every memory source junk or silent, the process there: degraded
        assert g.check(i, i, 1, None, Seen(process=True, memory=False)) is None
        assert g.health(answered=False) is None  # nor does a silent /health count
    for i in range(4):
        assert g.check(20 + i, 20 + i, 1, None, Seen(process=False, memory=False)) is None
    stop = g.check(24, 24, 1, None, Seen(process=False, memory=False))
    assert stop is not None and stop.exit_code == ExitCode.TARGET_LOST
    assert stop.reason.startswith("target process gone on 5 consecutive samples")


def test_without_a_pid_a_silent_health_check_means_lost() -> None:
    g = SafetyGuard(CFG.safety)
    g.check(0, 0, 1, None, Seen(memory=True))
    for _ in range(4):
        assert g.health(answered=False) is None
    assert g.health(answered=True) is None  # any answer, even a 500, resets the count
    for _ in range(4):
        assert g.health(answered=False) is None
    stop = g.health(answered=False)
    assert stop is not None and stop.kind == "target_lost"
    assert stop.reason == "no answer to /health on 5 consecutive checks (target_lost_after 5)"


def test_safety_max_duration() -> None:
    g = SafetyGuard(CFG.safety)
    assert g.check(0, 3599, 1, 1, UP) is None
    stop = g.check(0, 3600, 1, 1, UP)
    assert stop is not None and stop.exit_code == ExitCode.SAFETY
    assert stop.reason == "run time 3600 s reached max_test_duration 3600 s"


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_meter_counts_only_its_own_greenlet() -> None:
    def other() -> None:
        _burn(0.15)

    def sample() -> float:
        with GreenletCpuMeter() as cpu:
            _burn(0.05)
            g = gevent.spawn(other)
            g.join()  # switches away while `other` burns
            _burn(0.05)
        return cpu.seconds

    spent = gevent.spawn(sample).get()
    assert 0.09 <= spent < 0.14


def _history_row(i: int) -> dict[str, Any]:
    return {
        "time": 1.7e9 + i,
        "elapsed_s": float(i),
        "stage": f"step_{i // 100}",
        "rss_bytes": None if i % 7 == 0 else 50e6 + 1000 * i,
        "pressure": 10.0 + i % 3,
        "host_percent": None,
    }


def test_history_keeps_the_last_samples_as_points_with_none_where_none_was_read() -> None:
    history = History(keep=50)
    for i in range(120):
        verdict = LeakVerdict("leak" if i > 100 else "warmup", None if i < 30 else 0.5 * i)
        history.add(_history_row(i), verdict, injects_leak=False)
    points = history.points
    # at most 50 kept, the oldest dropped in chunks of a tenth: between 45 and 50, in order
    assert 45 <= len(points) <= 50 and len(history) == len(points) and history.added == 120
    assert [p.elapsed_s for p in points] == [float(i) for i in range(120 - len(points), 120)]
    by_i = {int(p.elapsed_s): p for p in points}
    expected = Point(1.7e9 + 118, 118.0, "step_1", 50e6 + 118_000, 11.0, None, 59.0, "leak")
    assert by_i[118] == expected
    assert by_i[119].rss_bytes is None and by_i[119].pressure == 12.0
    assert by_i[100].leak_state == "warmup"
    # what the growth and the peak are judged from is kept whole, dropped points or not
    assert history.first_rss == [50e6 + 1000 * i for i in (1, 2, 3, 4, 5)]
    assert history.peak_rss == 50e6 + 118_000 and history.t0 == 1.7e9
    with pytest.raises(ValueError, match="valid: 1 or more"):
        History(keep=0)


def test_history_holds_no_object_per_sample() -> None:
    """An hour of 1 s samples costs the master well under 0.2 MB (an object per sample held
    about 250 B each, ~0.9 MB an hour: bench self_rss_slope_mb_per_hour)."""
    history = History()
    verdict = LeakVerdict("clear", 0.1)
    history.add(_history_row(1), verdict, injects_leak=False)  # its first row stays as latest
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2, 3602):
            history.add(_history_row(i), verdict, injects_leak=False)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(history) == 3601
    assert held / 3600 < 100, f"{held / 3600:.0f} B per sample"
