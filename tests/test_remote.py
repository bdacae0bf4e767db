"""Remote targets: refused without the opt-in, accepted with it; all without network.

The checks are pure (no name lookup, no connection); the ``no_network`` fixture
makes any socket use in the test process an error, so a check that reached
for the network would fail here. The CLI cases refuse before any request and
use ``.invalid`` names (RFC 2606: they never resolve).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memstress.common.config import ConfigError, load_config, parse_config
from memstress.common.context import check_target
from memstress.common.target import (
    REMOTE_FLAG,
    TargetClient,
    check_host,
    check_target_pid,
    is_loopback,
    metrics_url,
    parse_labels,
    parse_metric_name,
)
from memstress.monitors.exporter import matching_values
from memstress.reports.markdown import render_run
from memstress.reports.synthetic import Synthetic, write_run
from memstress.scenarios.options import resolve_settings
from tests.conftest import ROOT
from tests.locust_helpers import config_copy, locust_env, run_cli

REMOTE = "http://staging-memory.invalid:8000"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a pure check touched the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.9.8.7", True),
        ("http://localhost:1", True),
        ("http://LOCALHOST:1", True),
        ("http://[::1]:8000", True),
        ("http://10.1.2.3:80", False),
        ("http://0.0.0.0:8000", False),
        ("http://127.example.com", False),  # a name, however it starts
        ("https://staging-memory:8443", False),
        ("http://[2001:db8::1]:80", False),
    ],
)
def test_loopback_is_this_machine_only(no_network: None, url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


def test_a_remote_host_without_the_opt_in_is_one_line_naming_host_and_flag(
    no_network: None,
) -> None:
    with pytest.raises(ValueError) as err:
        check_host(REMOTE)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("--host: staging-memory.invalid is not on this machine")
    assert REMOTE_FLAG in text and "safety.allow_remote_targets" in text


def test_other_schemes_are_judged_by_where_they_point(no_network: None) -> None:
    from memstress.common.target import check_remote_allowed

    check_remote_allowed("redis://127.0.0.1:6379", allow_remote=False)
    check_remote_allowed("unix:///run/redis.sock", allow_remote=False)  # a local socket
    with pytest.raises(ValueError, match=r"cache\.invalid is not on this machine"):
        check_remote_allowed("redis://cache.invalid:6379", allow_remote=False)
    check_remote_allowed("redis://cache.invalid:6379", allow_remote=True)


def test_with_the_opt_in_the_same_url_passes(no_network: None) -> None:
    assert check_host(REMOTE + "/", allow_remote=True) == REMOTE
    with pytest.raises(ValueError, match="is not a URL"):
        check_host("ftp://staging-memory.invalid", allow_remote=True)


class Options:
    """Parsed options as Locust hands them over: attributes, text where typed."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_the_opt_in_from_the_option_the_env_text_or_the_config(
    no_network: None, tmp_path: Path
) -> None:
    refused = resolve_settings(Options())
    with pytest.raises(ConfigError, match=REMOTE_FLAG):
        check_target(REMOTE, refused)
    for given in (True, "true", "1"):  # the flag, or its env var / web form text
        assert check_target(REMOTE, resolve_settings(Options(allow_remote_target=given))) == REMOTE
    cfg = config_copy(tmp_path / "remote.yml", safety__allow_remote_targets=True)
    assert check_target(REMOTE, resolve_settings(Options(memstress_config=str(cfg)))) == REMOTE
    assert check_target("http://127.0.0.1:8000", refused) == "http://127.0.0.1:8000"


def test_a_pid_goes_with_a_loopback_target_only(no_network: None) -> None:
    check_target_pid("http://127.0.0.1:8000", 1234)
    check_target_pid(REMOTE, None)
    with pytest.raises(ValueError) as err:
        check_target_pid(REMOTE, 1234)
    assert str(err.value).startswith("--target-pid: 1234 is a process on this machine")
    assert "--metrics-url" in str(err.value)


def test_the_config_key_takes_true_or_false_only() -> None:
    import yaml

    data = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    assert load_config().safety.allow_remote_targets is False
    data["safety"]["allow_remote_targets"] = "yes"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value) == (
        "safety.allow_remote_targets: 'yes' has the wrong type (valid: true or false)"
    )


# --- --metrics-url: the metric, the labels, the page ----------------------------------------

CADVISOR = """\
# HELP container_memory_rss Size of RSS in bytes.
# TYPE container_memory_rss gauge
container_memory_rss{container="api",namespace="staging",pod="api-1"} 2.5e+08
container_memory_rss{container="sidecar",namespace="staging",pod="api-1"} 1.2e+07
container_memory_rss{container="api",namespace="prod",pod="api-7"} 9e+08
# HELP container_memory_rss_total_decoy Not this one.
# TYPE container_memory_rss_total_decoy gauge
container_memory_rss_total_decoy{container="api"} 1
"""


def test_a_label_selector_picks_one_series() -> None:
    labels = parse_labels('container=api, namespace="staging"')
    assert labels == (("container", "api"), ("namespace", "staging"))
    assert matching_values(CADVISOR, "container_memory_rss", labels) == ([2.5e8], 3)
    assert matching_values(CADVISOR, "container_memory_rss", (("container", "api"),)) == (
        [2.5e8, 9e8],
        3,
    )
    assert matching_values(CADVISOR, "process_resident_memory_bytes") == ([], 0)


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"url": "nope"}, "--metrics-url: 'nope' is not a URL"),
        ({"url": "http://127.0.0.1:9/m", "metric": "rss bytes"}, "--metrics-metric: 'rss bytes'"),
        ({"url": "http://127.0.0.1:9/m", "labels": "pod"}, "--metrics-labels: 'pod'"),
        ({"url": "http://127.0.0.1:9/m", "labels": "a=1,a=2"}, "--metrics-labels: 'a=2'"),
    ],
)
def test_bad_metrics_options_are_one_line(given: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        metrics_url(given["url"], given.get("metric"), given.get("labels"))
    assert str(err.value).startswith(needle) and "valid:" in str(err.value)
    assert metrics_url(None) is None
    spec = metrics_url("http://10.0.0.5:9100/metrics", "container_memory_rss", "pod=a")
    assert spec is not None and spec.labels == (("pod", "a"),)  # a scrape needs no opt-in
    assert parse_metric_name(" node:rss ") == "node:rss"


# --- refused before any request, through both CLIs -------------------------------------------

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]


def run_suite_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**locust_env(), **(env or {})},
        check=False,
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_the_cli_refuses_a_remote_host_before_any_request(tmp_path: Path) -> None:
    out = tmp_path / "results"
    line = one_error_line(
        run_suite_cli("--scenario", "baseline", "--host", REMOTE, "--out", str(out))
    )
    assert "staging-memory.invalid is not on this machine" in line and REMOTE_FLAG in line
    assert not out.exists(), "refused before a run folder (or anything else) was made"
    # With the opt-in (flag or env var) the host passes; the PID is what is refused then.
    pid = ("--scenario", "baseline", "--host", REMOTE, "--target-pid", "5", "--out", str(out))
    for extra, env in (([REMOTE_FLAG], None), ([], {"MEMSTRESS_ALLOW_REMOTE_TARGET": "true"})):
        line = one_error_line(run_suite_cli(*pid, *extra, env=env))
        assert line.startswith("run_stress_test.py: error: --target-pid: 5 is a process"), line
    assert not out.exists()


def test_locust_refuses_a_remote_host_in_init(tmp_path: Path) -> None:
    cli = run_cli("--headless", "--host", REMOTE, "--run-dir", str(tmp_path))
    text = cli.stdout + cli.stderr
    assert cli.returncode == 2, text
    lines = [ln for ln in text.splitlines() if "is not on this machine" in ln]
    assert len(lines) == 1 and REMOTE_FLAG in lines[0], text
    assert not list(tmp_path.iterdir()), "nothing is written for a refused run"
    opted = run_cli(
        "--headless", "--host", REMOTE, "--target-pid", "5", "--run-dir", str(tmp_path),
        env={"MEMSTRESS_ALLOW_REMOTE_TARGET": "true"},
    )  # fmt: skip
    text = opted.stdout + opted.stderr
    assert opted.returncode == 2 and "--target-pid: 5 is a process on this machine" in text, text
    assert not list(tmp_path.iterdir())


# --- the report says where the target was --------------------------------------------------


def test_the_report_records_a_remote_target_and_its_opt_in(tmp_path: Path) -> None:
    from memstress.reports import build_run_report

    run = write_run(tmp_path / "run", Synthetic(duration_s=120))
    meta = json.loads((run / "run_meta.json").read_text())
    meta.update(host="http://staging-memory:8000", remote_target=True, allow_remote_target=True)
    (run / "run_meta.json").write_text(json.dumps(meta))
    rep = build_run_report(run, load_config())
    assert rep.results["run"]["allow_remote_target"] is True
    md = rep.report_path.read_text()
    assert "| host | http://staging-memory:8000 |" in md
    assert "| remote target | yes (opted in by --allow-remote-target" in md
    assert "host memory, PSI and cgroup figures are this load generator's" in md
    meta.update(host="http://127.0.0.1:8000", remote_target=False, allow_remote_target=False)
    (run / "run_meta.json").write_text(json.dumps(meta))
    local = render_run(build_run_report(run, load_config()).results)
    assert "| remote target | no (loopback) |" in local and "load generator's" not in local


# --- the metrics_url source, against a real exporter on loopback -----------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """tests/fixtures/rss_exporter.py serving this test process's own RSS."""
    import os
    import time

    import requests

    from tests.conftest import free_port

    port = free_port()
    args = ["--pid", str(os.getpid()), "--port", str(port), "--lifetime", "120"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.rss_exporter", *args], cwd=ROOT, env=locust_env()
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the exporter did not start"
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def test_the_source_reads_the_one_matching_series(exporter: str) -> None:
    import os

    import psutil

    from memstress.monitors.exporter import MetricsUrlSource
    from memstress.monitors.sampler import Sampler
    from memstress.monitors.sources import SourceFailed, SourceMissing
    from tests.conftest import free_port

    spec = metrics_url(exporter, "container_memory_rss", "container=target")
    assert spec is not None
    row = MetricsUrlSource(spec, timeout=2).read()
    own = psutil.Process(os.getpid()).memory_info().rss
    assert abs(row["metrics_rss_bytes"] - own) < 0.2 * own
    # no selector: both series match, which is refused at the first reading
    both = metrics_url(exporter, "container_memory_rss")
    assert both is not None
    with pytest.raises(SourceMissing, match=r"2 series match container_memory_rss \(valid"):
        MetricsUrlSource(both, timeout=2).read()
    wrong = metrics_url(exporter, "container_memory_rss", "container=api")
    assert wrong is not None
    with pytest.raises(SourceMissing, match=r'no container_memory_rss\{container="api"\} \(2 '):
        MetricsUrlSource(wrong, timeout=2).read()
    # An exporter that does not answer fails this time (it may come back).
    closed = metrics_url(f"http://127.0.0.1:{free_port()}/metrics")
    assert closed is not None
    with pytest.raises(SourceFailed, match="ConnectionError"):
        MetricsUrlSource(closed, timeout=2).read()
    # A page that answered well and then lacks the series degrades the source (the
    # sampler's rule for a source that was there), with its reason.
    events: list[tuple[str, str, dict[str, Any]]] = []
    source = MetricsUrlSource(spec, timeout=2)
    sampler = Sampler([source], lambda *e: events.append(e), deadline=5)
    assert sampler.take().row["rss_source"] == "metrics_url"
    source.spec = wrong
    assert sampler.take().row["rss_bytes"] is None
    (kind, name, detail), *_ = events
    assert (kind, name) == ("source_degraded", "metrics_url")
    assert 'no container_memory_rss{container="api"}' in detail["reason"]


class Fixed:
    """A source that answers the same row every time (the sampler's ordering is under test)."""

    def __init__(self, name: str, row: dict[str, Any] | Exception) -> None:
        self.name, self.row = name, row

    def read(self) -> dict[str, Any]:
        if isinstance(self.row, Exception):
            raise self.row
        return dict(self.row)


def test_metrics_url_rss_ranks_after_a_pid_and_before_the_targets_own_figures() -> None:
    from memstress.monitors.sampler import Sampler
    from memstress.monitors.sources import SourceFailed

    exporter = Fixed("metrics_url", {"metrics_rss_bytes": 150.0})
    own = [Fixed("prometheus", {"prom_rss_bytes": 200.0}), Fixed("stats", {"stats_rss_bytes": 3})]
    s = Sampler([exporter, *own]).take()
    assert (s.row["rss_bytes"], s.row["rss_source"], s.memory_read) == (150.0, "metrics_url", True)
    pid = Fixed("process", {"proc_rss_bytes": 100})
    assert Sampler([pid, exporter, *own]).take().row["rss_source"] == "psutil"
    # an exporter that fails is not the target failing: its own sources say how it is
    down = Fixed("metrics_url", SourceFailed("ConnectionError"))
    s = Sampler([down, *own]).take()
    assert s.memory_read is True and s.row["rss_source"] == "prometheus"
    assert s.failures == ["metrics_url"]
    # a remote target's RSS is not bounded by this host's memory
    big = Fixed("metrics_url", {"metrics_rss_bytes": 5e12})
    s = Sampler([big], host_total_bytes=float("inf")).take()
    assert s.row["rss_bytes"] == 5e12


def test_host_psi_and_cgroup_are_marked_as_the_load_generators_for_a_remote_target() -> None:
    from memstress.monitors.sources import SOURCE_NAMES, host_scope_note

    note = host_scope_note(SOURCE_NAMES, REMOTE, remote=True, here="loadgen-1")
    assert note == (
        "cgroup, host, psi: not this target's host: they read the load generator loadgen-1, "
        f"and the target {REMOTE} is on another machine"
    )
    assert host_scope_note(SOURCE_NAMES, "http://127.0.0.1:8000", False, "loadgen-1") is None
    assert host_scope_note(("stats", "metrics_url"), REMOTE, True, "loadgen-1") is None


def test_your_own_locustfile_takes_a_remote_host_only_with_the_opt_in(tmp_path: Path) -> None:
    own = tmp_path / "mine.py"
    own.write_text(
        "from locust import User, task\n\n\nclass U(User):\n    @task\n    def t(self): ...\n"
    )
    out = tmp_path / "results"
    args = ("--locustfile", str(own), "--host", "redis://cache.invalid:6379", "--out", str(out))
    line = one_error_line(run_suite_cli(*args))
    assert "cache.invalid is not on this machine" in line and REMOTE_FLAG in line
    assert not out.exists(), "refused before a run folder was made"


def test_the_target_client_takes_the_environments_proxy_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote target behind a proxy still goes through it; the environment is read when
    the client is made, not again on every one of the monitor's requests."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    client = TargetClient("http://staging.example:8000")
    assert client.session.proxies.get("http") == "http://proxy.example:3128"
    assert client.session.trust_env is False
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,staging.example")
    assert TargetClient("http://staging.example:8000").session.proxies == {}
    assert TargetClient("http://127.0.0.1:9").session.proxies == {}
