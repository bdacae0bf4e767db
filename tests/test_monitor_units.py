"""Pure tests of the monitor's parts: sources, the sampler, the safety guard, the CPU meter.

No Locust here (it would monkey-patch pytest's process); the real runs are in
``test_monitor_runs.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from common.config import load_config
from common.exitcodes import ExitCode
from monitors.safety import SafetyGuard
from monitors.sampler import GreenletCpuMeter, Sampler
from monitors.sources import (
    SOURCE_NAMES,
    CgroupSource,
    HostSource,
    ProcessSource,
    PsiSource,
    SourceFailed,
    SourceMissing,
    find_memory_cgroup,
    parse_prometheus_rss,
    parse_psi,
    parse_source_names,
    stats_row,
)

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
    # Another platform's partial answer: what is missing or odd stays empty.
    partial = stats_row({"rss_bytes": "lots", "pressure": 50})
    assert partial["stats_rss_bytes"] is None and partial["pressure"] == 50
    assert partial["strategy"] is None and partial["vectors_bytes"] is None
    with pytest.raises(SourceFailed):
        stats_row(["not", "an", "object"])


def test_process_source_reads_a_live_process_and_fails_when_it_is_gone() -> None:
    row = ProcessSource(os.getpid()).read()
    assert row["proc_rss_bytes"] > 0 and row["num_threads"] >= 1 and row["open_files"] >= 3
    with pytest.raises(SourceMissing, match="no target PID"):
        ProcessSource(None).read()
    with pytest.raises(SourceFailed, match="is gone"):
        ProcessSource(2**22 + 12345).read()  # above pid_max: never a live process


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


def test_sampler_picks_the_best_rss_and_drops_a_missing_source_once() -> None:
    noted: list[tuple[str, str]] = []
    process = FakeSource("process", SourceMissing("no target PID"))
    prom = FakeSource("prometheus", {"prom_rss_bytes": 200.0})
    stats = FakeSource("stats", {"stats_rss_bytes": 300, "pressure": 5.0})
    sampler = Sampler([process, prom, stats], lambda n, r: noted.append((n, r)))
    for _ in range(3):
        s = sampler.take()
        assert s.row["rss_bytes"] == 200.0 and s.row["rss_source"] == "prometheus"
        assert s.target_ok is True
    assert noted == [("process", "no target PID")] and process.calls == 1
    assert sampler.missing == {"process": "no target PID"}


def test_sampler_target_reachability() -> None:
    down = SourceFailed("ConnectionError")
    # HTTP sources decide when there are any ...
    s = Sampler(
        [
            FakeSource("process", {"proc_rss_bytes": 1}),
            FakeSource("stats", down),
            FakeSource("prometheus", down),
        ]
    ).take()
    assert s.target_ok is False and s.row["rss_source"] == "psutil"
    assert s.failures == ["stats: ConnectionError", "prometheus: ConnectionError"]
    # ... else the process does; with neither there is nothing to judge.
    assert Sampler([FakeSource("process", down)]).take().target_ok is False
    assert Sampler([FakeSource("host", {"host_percent": 1.0})]).take().target_ok is None


CFG = load_config()


def test_safety_host_memory_stops_at_once() -> None:
    g = SafetyGuard(CFG.safety)
    assert g.check(0, 0, 98.9, None, True) is None
    stop = g.check(1, 1, 99.0, None, True)
    assert stop is not None and stop.exit_code == ExitCode.SAFETY and stop.kind == "emergency_stop"
    assert stop.reason == "host memory 99.0% >= emergency_shutdown_threshold 99%"


def test_safety_pressure_must_be_held() -> None:
    s = CFG.safety  # 99.5 for 15 s
    g = SafetyGuard(s)
    assert g.check(0, 0, 1, 99.9, True) is None
    assert g.check(10, 10, 1, 99.9, True) is None
    assert g.check(12, 12, 1, 99.0, True) is None  # a dip resets the clock
    assert g.check(13, 13, 1, 99.9, True) is None
    assert g.check(20, 20, 1, None, True) is None  # no reading: neither resets nor counts
    stop = g.check(28, 28, 1, 100.0, True)
    assert stop is not None and stop.exit_code == ExitCode.SAFETY
    assert "target pressure 100.0 > target_pressure_limit 99.5 for 15.0 s" in stop.reason


def test_safety_target_lost_after_consecutive_failures() -> None:
    g = SafetyGuard(CFG.safety)  # 5
    for i in range(4):
        assert g.check(i, i, 1, None, False) is None
    assert g.check(4, 4, 1, None, True) is None  # one answer resets the count
    for i in range(4):
        assert g.check(5 + i, 5 + i, 1, None, False) is None
    assert g.check(9, 9, 1, None, None) is None  # nothing to judge: no change
    stop = g.check(10, 10, 1, None, False)
    assert (
        stop is not None and stop.kind == "target_lost" and stop.exit_code == ExitCode.TARGET_LOST
    )


def test_safety_max_duration() -> None:
    g = SafetyGuard(CFG.safety)
    assert g.check(0, 3599, 1, 1, True) is None
    stop = g.check(0, 3600, 1, 1, True)
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
