"""The memory monitor: a Locust listener object.

``MemoryMonitor(environment)`` subscribes its handlers in its constructor;
nothing is registered on import. The locustfile calls it once in its
``init`` listener, after it has put the :class:`common.context.RunContext`
on ``environment.memstress``.

On the master or a local runner, at ``test_start`` it spawns into the
runner's greenlet group (linked to Locust's exception handler, as Locust does
for its own CPU monitor):

- the **sampler**, every ``context.monitor_interval`` seconds: one row of
  ``memory_samples.csv`` (flushed), the online leak detector, the safety guard.
  Its sources are read concurrently and fail alone (:mod:`monitors.sampler`):
  an HTTP source times out below the interval (:func:`read_timeouts`), and a
  source that answers badly is degraded (``source_degraded`` /
  ``source_recovered`` events), never the end of sampling or of the run;
- the **health check** (``GET /health``) every ``system_health_check_interval``;
- the **cleanup cycle** (``POST /memory/cycle``) every ``memory_cleanup_interval``.

On a worker it adds its own RSS, CPU and user count to every report to the
master; the master writes them to ``worker_samples.csv``, stamped with its own
clock on arrival.

When the safety guard says stop, the monitor writes the event, sets
``context.stop_reason`` and ``environment.process_exit_code`` (3 or 4) and
quits the runner from a greenlet of its own. Locust 2.47's ``shutdown()``
uses ``process_exit_code`` as is when it is set (``main.py``); the
``quitting`` listener here sets it again, last word, in case another listener
changed it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import socket
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import gevent
import psutil
import requests
from locust.runners import WorkerRunner, locust_exception_handler

from memstress.common.config import ConfigError, LeakDetection
from memstress.common.context import RunContext
from memstress.common.exitcodes import ExitCode
from memstress.common.runfiles import SAMPLE_COLUMNS, WORKER_COLUMNS, CsvAppender
from memstress.common.target import DEFAULT_METRIC, TargetClient, TargetError
from memstress.common.units import MB
from memstress.monitors.allocations import MODES, AllocationProfiler
from memstress.monitors.exporter import MetricsUrlSource
from memstress.monitors.leak import (
    LEAK,
    VERDICT_FILE,
    WARMUP,
    LeakDetector,
    LeakEvent,
    LeakVerdict,
    TierReading,
    judged_bytes,
    on_run_clock,
    tier_readings,
)
from memstress.monitors.redis_source import REDIS_SCHEMES
from memstress.monitors.registry import REGISTRY, SourceTarget
from memstress.monitors.safety import SafetyGuard, Seen, Stop
from memstress.monitors.sampler import GreenletCpuMeter, Sampler, Source
from memstress.monitors.sources import (
    HTTP_SOURCES,
    SOURCE_NAMES,
    TIERS,
    SourceMissing,
    build_sources,
    find_listening_pid,
    host_scope_note,
    parse_source_names,
)
from memstress.scenarios.registry import get_scenario

if TYPE_CHECKING:
    from locust.env import Environment

log = logging.getLogger(__name__)

WORKER_KEY = "memstress_worker"
"""Key of the worker's self-report in Locust's report_to_master data."""

HISTORY = 20_000
"""Samples kept in memory for the live view (about 5.5 h at 1 s)."""

HTTP_SHARE = 0.6
"""An HTTP source's timeout, as a share of the interval (at most monitor.http_timeout)."""

DEADLINE_SHARE = 0.8
"""How long a sample waits for its sources, as a share of the interval."""


def read_timeouts(interval: float, http_timeout: float) -> tuple[float, float]:
    """(HTTP timeout of a source, deadline of a sample): both below the interval."""
    return min(http_timeout, HTTP_SHARE * interval), DEADLINE_SHARE * interval


def add_monitor_options(parser: Any) -> None:
    """The monitor's own Locust option; call it from ``init_command_line_parser``."""
    parser.add_argument(
        "--monitor-sources",
        default="auto",
        type=_sources_option,
        env_var="MEMSTRESS_MONITOR_SOURCES",
        help="Memory sample sources: auto (every one that is there), or a comma-separated "
        "list of process, smaps, metrics_url, prometheus, stats, host, psi, cgroup. Default: auto.",
    )
    parser.add_argument(
        "--metrics-url",
        default=None,
        env_var="MEMSTRESS_METRICS_URL",
        help="Prometheus text with the target's RSS, for a target whose PID this machine "
        "cannot see: its /metrics on another port, a node exporter, cAdvisor. "
        "Default: none (RSS by PID, else the target's own /metrics or /memory/stats).",
    )
    parser.add_argument(
        "--metrics-metric",
        default=DEFAULT_METRIC,
        env_var="MEMSTRESS_METRICS_METRIC",
        help=f"The metric at --metrics-url that is the target's RSS in bytes, e.g. "
        f"container_memory_rss. Default: {DEFAULT_METRIC}.",
    )
    parser.add_argument(
        "--metrics-labels",
        default="",
        env_var="MEMSTRESS_METRICS_LABELS",
        help="Labels the one series at --metrics-url must have, comma-separated "
        "name=value (e.g. container=api,namespace=staging). Default: none.",
    )

    parser.add_argument(
        "--profile-leaks",
        nargs="?",
        const="on",
        default=None,
        choices=MODES,
        env_var="MEMSTRESS_PROFILE_LEAKS",
        help="Name the code holding leaked memory: capture the target's allocations with "
        "memray attach (a local Python target; needs gdb) when the detector calls a leak or "
        "at a stage the scenario marks (on), only at a marked stage (marked), or never "
        "(off). Alone: on. Default: the config's monitor.leak_profiling.mode, where auto "
        "means off for a target this run did not start.",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        default=False,
        env_var="MEMSTRESS_PROFILE_NATIVE",
        help="With --profile-leaks: capture native (C) frames too (slower capture).",
    )


def profile_mode(options: Any, config_mode: str) -> str:
    """``--profile-leaks`` as given, else the config's mode (auto is off: the target is
    not known to be the bundled service here; run_stress_test.py decides that)."""
    value = getattr(options, "profile_leaks", None)
    text = str(value).strip() if value is not None else ""
    if text in MODES:
        return text
    if text:
        log.error(
            "memory monitor: --profile-leaks %r is not valid (valid: %s); off",
            text,
            ", ".join(MODES),
        )
        return "off"
    return "on" if config_mode == "on" else "off"


def _sources_option(text: str) -> tuple[str, ...]:
    try:
        return parse_source_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--monitor-sources: ")) from None


def _option_sources(options: Any) -> tuple[str, ...]:
    """``--monitor-sources`` from parsed options (a tuple, or text from the web UI form)."""
    value = getattr(options, "monitor_sources", None)
    if isinstance(value, tuple | list):
        return tuple(value)
    try:
        return parse_source_names(value)
    except ValueError as exc:
        log.error("memory monitor: %s; using every source", exc)
        return parse_source_names(None)


@dataclass(frozen=True)
class TargetProfile:
    """What the monitor may assume about the target.

    The suite's own scenarios drive a target of the memstress API (the default).
    A user's own load test (``memstress.plugin``, ``run_stress_test.py
    --locustfile``) says ``api="auto"``: health checks and cleanup cycles run
    only once the target has answered ``/memory/stats`` (it speaks the API), or
    against the ``health_path`` the user gave, whose repeated failure is a lost
    target; pressure is judged only against a known budget; and the leak
    detector keeps the config's clock (there is no scenario length to scale by).
    """

    api: str = "memstress"  # memstress | auto
    health_path: str | None = None  # a user's health check: any 2xx is healthy
    budget_bytes: float | None = None  # a configured budget (pressure = 100 x RSS / budget)

    @property
    def own_load(self) -> bool:
        return self.api != "memstress"


@dataclass(frozen=True)
class Point:
    """One sample, as the live view shows it."""

    time: float
    elapsed_s: float
    stage: str
    rss_bytes: float | None
    pressure: float | None
    host_percent: float | None
    leak_slope_mb_min: float | None
    leak_state: str


@dataclass(frozen=True)
class Snapshot:
    """What the monitor knows now, for readers such as the live view: the last sample's
    figures, the peak, the leak verdict, the stage and why the run stopped (if it did)."""

    scenario: str
    stage: str
    samples: int
    interval_s: float
    rss_bytes: float | None
    peak_rss_bytes: float | None
    rss_source: str | None
    budget_bytes: float | None
    pressure: float | None
    strategy: str | None
    host_percent: float | None
    leak_slope_mb_min: float | None
    leak_state: str
    stop_reason: str
    samples_csv: Path | None
    """``memory_samples.csv`` of the run (None on a worker)."""


class MemoryMonitor:
    """Samples the target's memory, detects leaks, stops unsafe runs; see the module doc.

    :param environment: the Locust environment, with ``environment.memstress``
        (a :class:`RunContext`) already set.
    :param sources: source names to use (see :mod:`monitors.sources`); default
        the ``--monitor-sources`` option when the locustfile defines it, else
        every source (``auto``), each one dropped when it is not there.
    :param interval: seconds between samples; default ``context.monitor_interval``.
    """

    def __init__(
        self,
        environment: Environment,
        *,
        sources: Sequence[str] | None = None,
        interval: float | None = None,
        profile: TargetProfile | None = None,
    ) -> None:
        self.environment = environment
        self.profile = profile or TargetProfile()
        context = getattr(environment, "memstress", None)
        if not isinstance(context, RunContext):
            raise RuntimeError(
                "MemoryMonitor needs environment.memstress (a RunContext) set before it"
            )
        self.context: RunContext = context
        self._sources_override = None if sources is None else parse_source_names(",".join(sources))
        self.source_names = self._sources_override or _option_sources(environment.parsed_options)
        self._interval_override = interval
        self.interval = float(interval if interval is not None else context.monitor_interval)
        if self.interval <= 0:
            raise ValueError(f"monitor interval: {self.interval!r} (valid: above 0 seconds)")
        # Made again at the first test_start, from the settings of that swarm.
        self.detector = LeakDetector(context.config.monitor.leak_detection)
        self.guard = SafetyGuard(context.config.safety)
        self.history: deque[Point] = deque(maxlen=HISTORY)
        self._first_rss: list[float] = []  # the first few RSS samples: start memory
        self._last_rss: deque[float] = deque(maxlen=5)  # the last few: end memory
        self._injected_leak = False  # a stage declared injects: leak
        self._t0 = 0.0  # Unix time the monitor started (elapsed_s 0)
        self.latest: dict[str, Any] = {}
        self.peak_rss: float | None = None
        self.stop: Stop | None = None
        self.started: float | None = None  # time.time() of the first sample
        self.samples_taken = 0
        self.slots_skipped = 0  # sampling slots a slow sample overran
        self.cpu_seconds = 0.0  # spent in the sampler greenlet, over all samples
        self.wall_seconds = 0.0
        self.sampler: Sampler | None = None
        self.profiler: AllocationProfiler | None = None
        self.target_pid: int | None = None  # the PID the process sources read, when known
        self._samples_csv: CsvAppender | None = None
        self._workers_csv: CsvAppender | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._process = psutil.Process()
        self._closed = False
        self._stopping = False
        self._speaks_api = False  # the target answered /memory/stats (auto profile)
        self._accounting = False  # a registered source reports accounted bytes
        self._health_failures = 0  # consecutive failures of a user-given health check
        self.extra_columns: tuple[str, ...] = ()  # registered sources' figures
        self.host = context.host

        events = environment.events
        if isinstance(environment.runner, WorkerRunner) or context.is_worker:
            self._process.cpu_percent(None)
            events.report_to_master.add_listener(self.on_report_to_master)
        else:
            events.test_start.add_listener(self.on_test_start)
            events.worker_report.add_listener(self.on_worker_report)
            events.quitting.add_listener(self.on_quitting)
            web_ui = getattr(environment, "web_ui", None)
            if web_ui is not None:
                from memstress.monitors.webui import (
                    MemoryView,  # Flask bits only where there is a UI
                )

                MemoryView(web_ui, self)

    # --- what readers see --------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The monitor's figures now, as one frozen value."""
        row, verdict, ctx = self.latest, self.detector.verdict, self.context
        run_dir = ctx.run_dir
        return Snapshot(
            scenario=ctx.scenario,
            stage=ctx.stage.name,
            samples=self.samples_taken,
            interval_s=self.interval,
            rss_bytes=row.get("rss_bytes"),
            peak_rss_bytes=self.peak_rss,
            rss_source=row.get("rss_source"),
            budget_bytes=row.get("budget_bytes"),
            pressure=row.get("pressure"),
            strategy=row.get("strategy"),
            host_percent=row.get("host_percent"),
            leak_slope_mb_min=verdict.slope_mb_min,
            leak_state=verdict.state,
            stop_reason=ctx.stop_reason,
            samples_csv=None if run_dir is None else Path(run_dir) / "memory_samples.csv",
        )

    def points(self) -> list[Point]:
        """The samples kept for the live view (the last :data:`HISTORY`), oldest first."""
        return list(self.history)

    # --- Locust event handlers ------------------------------------------------------

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        """Start sampling (once; a later swarm in the web UI goes on in the same files)."""
        self._stopping = False  # a new swarm in the web UI may be stopped again
        if self._greenlets or self._closed:
            return
        runner = environment.runner
        assert runner is not None
        ctx = self.context
        cfg = ctx.config
        if self._interval_override is None:
            self.interval = ctx.monitor_interval
        if self._sources_override is None:
            self.source_names = _option_sources(environment.parsed_options)
        self.detector = LeakDetector(self._leak_settings())
        # The settings the detector judges with (scaled for a short run): the report
        # replays the detector with them to say whether the run was long enough to judge.
        self.context.record(
            "leak_settings",
            {**dataclasses.asdict(self.detector.settings), "interval_s": self.interval},
        )
        self.guard = SafetyGuard(cfg.safety)
        self.host = (environment.host or ctx.host).rstrip("/")
        self.sampler = self._make_sampler()
        self.started = time.time()
        if ctx.run_dir is not None:
            self._samples_csv = CsvAppender(
                Path(ctx.run_dir) / "memory_samples.csv", SAMPLE_COLUMNS + self.extra_columns
            )
        self.profiler = self._make_profiler(runner)
        if self.profiler is not None:
            self.profiler.check()
        loops = [
            (self._sample_loop, ()),
            (self._health_loop, (cfg.safety.system_health_check_interval,)),
            (self._cleanup_loop, (cfg.safety.memory_cleanup_interval,)),
        ]
        for fn, args in loops:
            g = runner.greenlet.spawn(fn, *args)
            g.link_exception(locust_exception_handler(environment))
            self._greenlets.append(g)
        log.info(
            "memory monitor: sampling %s every %g s (sources: %s; HTTP timeout %g s)",
            self.host,
            self.interval,
            ", ".join(s.name for s in self.sampler.sources) or "none",
            read_timeouts(self.interval, cfg.monitor.http_timeout)[0],
        )

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        """Stop the greenlets, close the files, and make a stop's exit code stick."""
        gevent.killall(self._greenlets, block=True)
        self._greenlets.clear()
        if self.profiler is not None:
            self.profiler.close()
        if self.sampler is not None:
            self.sampler.close()
        if not self._closed and self.samples_taken:
            self._write_verdict()
        self._closed = True
        for f in (self._samples_csv, self._workers_csv):
            if f is not None:
                f.close()
        if self.samples_taken:
            log.info(
                "memory monitor: %d samples (%d slots skipped), %.2f ms wall and %.2f ms CPU "
                "per sample",
                self.samples_taken,
                self.slots_skipped,
                1000 * self.wall_seconds / self.samples_taken,
                1000 * self.cpu_seconds / self.samples_taken,
            )
        if self.stop is not None:
            environment.process_exit_code = self.stop.exit_code

    def verdict_inputs(self) -> dict[str, Any] | None:
        """What the verdict at quit needs from the monitor (``reports.quit_verdict``):
        memory growth (MB) and the leak the detector holds now, as the report judges it."""
        if not self._first_rss:
            return None
        growth = (statistics.median(self._last_rss) - statistics.median(self._first_rss)) / MB
        v = self.detector.verdict
        tr = v.trend
        if v.state == WARMUP:
            slope, note, headline = None, "run too short for the leak detector", ""
        elif v.state == LEAK and tr is not None:
            called = (self.detector.detected_at or 0.0) - self._t0
            headline = (
                f"leak {tr.slope:.2f} MB/min (CI {tr.ci_low:.2f}–{tr.ci_high:.2f}) "
                f"detected at {called:.0f} s"
            )
            slope, note = tr.slope, ""
        else:
            slope, note, headline = 0.0, "", "no leak"
        if self._injected_leak:
            slope, note = None, "the scenario injects its leak: its checks judge it"
        return {
            "growth_mb": growth,
            "leak_slope_mb_min": slope,
            "leak_note": note,
            "leak_headline": headline,
        }

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        """On a worker: add this process's RSS, CPU and user count to the report."""
        runner = self.environment.runner
        data[WORKER_KEY] = {
            "time": time.time(),
            "rss_bytes": self._process.memory_info().rss,
            "cpu_percent": self._process.cpu_percent(None),
            "user_count": runner.user_count if runner is not None else 0,
        }

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        """On the master: one row of ``worker_samples.csv`` per worker report."""
        report = data.get(WORKER_KEY)
        if not isinstance(report, dict) or self.context.run_dir is None or self._closed:
            return
        clients = getattr(self.environment.runner, "clients", None)
        if clients is not None and client_id not in clients:
            return  # a worker the master refused (another version) or no longer counts
        if self._workers_csv is None:
            self._workers_csv = CsvAppender(
                Path(self.context.run_dir) / "worker_samples.csv", WORKER_COLUMNS
            )
        # Stamped on arrival by the master's clock, as every other file of the run is:
        # the clocks of other machines may be seconds apart.
        self._workers_csv.write({**report, "worker_id": client_id, "time": time.time()})

    # --- the loops --------------------------------------------------------------------

    def _leak_settings(self) -> LeakDetection:
        """The config's leak settings, on a faster clock for a shortened run."""
        ctx = self.context
        settings = ctx.config.monitor.leak_detection
        if self.profile.own_load:
            return settings
        try:
            planned = get_scenario(ctx.scenario).default_duration(ctx.config)
        except (ConfigError, KeyError):
            return settings
        factor = ctx.duration_s / planned if planned > 0 else 1.0
        scaled = on_run_clock(settings, factor, self.interval)
        if scaled != settings:
            log.info(
                "memory monitor: a %.2gx run: leak detector warm-up %.3g s, window %.3g s, "
                "lookback %.3g s, minimum slope %.2g MB/min",
                factor,
                scaled.warmup_s,
                scaled.window_s,
                scaled.lookback_s,
                scaled.min_slope_mb_per_min,
            )
        return scaled

    def _judged_value(
        self, row: dict[str, Any]
    ) -> tuple[float | None, dict[str, TierReading] | None]:
        """What the leak detector judges: RSS less each tier's bytes up to its limit, and the tiers.

        A cache that fills to its limit is memory the target knows about; a leak
        is memory it does not, or a tier past its limit (``monitors.leak``). When
        the target's /memory/stats is not there (another platform) or has not
        answered well yet (junk from the start), plain RSS; when it has answered
        but missed this sample, nothing (switching back to plain RSS would look
        like growth by the cache bytes).
        """
        rss = row.get("rss_bytes")
        if rss is None:
            return None, None
        assert self.sampler is not None
        if row.get("accounted_bytes") is not None:
            self._accounting = True
        if self._accounting:  # a registered source (redis ...) says what it holds on purpose
            accounted = row.get("accounted_bytes")
            return (None if accounted is None else float(rss) - float(accounted)), None
        if not self.sampler.answered("stats"):
            return float(rss), None
        if "stats_rss_bytes" not in row:  # the stats source did not answer this time
            return None, None
        tiers = tier_readings(row, TIERS)
        return judged_bytes(float(rss), tiers), tiers

    def _make_sampler(self) -> Sampler:
        ctx = self.context
        pid = ctx.target_pid
        # A PID is looked for only on loopback and when no --metrics-url says where the
        # memory is: on another host, the local process on the same port is not the target.
        look = pid is None and not ctx.remote and ctx.metrics is None
        if look and {"process", "smaps", "cgroup"} & set(self.source_names):
            pid = find_listening_pid(self.host) if self.host else None
            if pid == os.getpid():
                pid = None
            if pid is not None:
                log.info("memory monitor: target PID %d found listening at %s", pid, self.host)
        timeout, deadline = read_timeouts(self.interval, ctx.config.monitor.http_timeout)
        names = list(self.source_names)
        scheme = urlsplit(self.host).scheme if self.host else ""
        auto = set(names) >= set(SOURCE_NAMES)
        if auto:  # every source a user registered; redis for a redis:// host
            names += [n for n in REGISTRY.users() if n not in names]
            if self.profile.own_load and scheme in REDIS_SCHEMES:
                names.append("redis")
        skipped = []
        if scheme not in ("http", "https"):  # redis://..., or no --host at all
            skipped = [n for n in names if n in HTTP_SOURCES]
            names = [n for n in names if n not in HTTP_SOURCES]
        metrics = ctx.metrics
        sources: list[Source] = build_sources(
            [n for n in names if n in SOURCE_NAMES],
            pid,
            lambda: TargetClient(self.host, timeout=timeout),
            (lambda: MetricsUrlSource(metrics, timeout)) if metrics is not None else None,
        )
        self.target_pid = pid
        note = host_scope_note(names, self.host, ctx.remote, socket.gethostname())
        if note is not None:
            log.warning("memory monitor: %s", note)
            self.context.record("source_scope", note)
        registered = []
        for name in names:
            if name in SOURCE_NAMES:
                continue
            try:
                registered.append(REGISTRY.make(name, SourceTarget(self.host, pid, timeout)))
            except SourceMissing as exc:
                self._source_event("source_missing", name, {"reason": str(exc)})
        self.extra_columns = tuple(c for src in registered for c in src.columns)
        # Another machine's RSS is not bounded by this host's memory (junk_values' check).
        bound = math.inf if ctx.remote else None
        sampler = Sampler(
            [*sources, *registered], self._source_event, deadline=deadline, host_total_bytes=bound
        )
        for name in skipped:  # noted once, never a lost target
            sampler.missing[name] = f"--host {self.host or '(none)'} is not an HTTP URL"
            self._source_event("source_missing", name, {"reason": sampler.missing[name]})
        return sampler

    def _make_profiler(self, runner: Any) -> AllocationProfiler | None:
        ctx = self.context
        settings = ctx.config.monitor.leak_profiling
        options = self.environment.parsed_options
        mode = profile_mode(options, settings.mode)
        if mode == "off" or ctx.run_dir is None:
            return None

        def spawn(fn: Any, *args: Any) -> gevent.Greenlet:
            g = runner.greenlet.spawn(fn, *args)
            g.link_exception(locust_exception_handler(self.environment))
            self._greenlets.append(g)
            return g

        return AllocationProfiler(
            run_dir=Path(ctx.run_dir),
            pid=self.target_pid,
            mode=mode,
            window_s=settings.window_s,
            top=settings.top_sites,
            native=bool(getattr(options, "profile_native", False)),
            spawn=spawn,
            record=self.context.record,
        )

    def _source_event(self, kind: str, name: str, detail: dict[str, Any]) -> None:
        """A source_* event from the sampler: the log and events.csv."""
        if kind == "source_missing":
            log.warning("memory monitor: source %s is not available: %s", name, detail["reason"])
            self.context.record(kind, f"{name}: {detail['reason']}")
            return
        if kind == "source_degraded":
            got = f" (got: {detail['example']})" if detail.get("example") else ""
            log.warning("memory monitor: source %s degraded: %s%s", name, detail["reason"], got)
        elif kind == "source_recovered":
            log.info("memory monitor: source %s recovered after %.1f s", name, detail["degraded_s"])
        self.context.record(kind, {"source": name, **detail})

    def _sample_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self.sample_once()
            next_at += self.interval
            now = time.monotonic()
            if next_at <= now:  # a slow sample: skip the slots it overran
                skipped = 1 + int((now - next_at) // self.interval)
                self.slots_skipped += skipped
                next_at += self.interval * skipped
            gevent.sleep(next_at - now)

    def sample_once(self) -> dict[str, Any]:
        """Take, record and judge one sample; returns its row."""
        assert self.sampler is not None
        now = round(time.time(), 6)  # as memory_samples.csv keeps it: a replay sees these times
        if self.started is None:
            self.started = now
        t0 = time.perf_counter()
        with GreenletCpuMeter() as cpu:
            sample = self.sampler.take(cpu)
            row = sample.row
            if self.profile.own_load:
                self._judge_budget(row)
            value, tiers = self._judged_value(row)
            verdict = self.detector.add(now, value, tiers)
            runner = self.environment.runner
            row.update(
                time=now,
                elapsed_s=now - self.started,
                stage=self.context.stage.name,
                users=runner.user_count if runner is not None else 0,
                judged_bytes=value,
                leak_slope_mb_min=verdict.slope_mb_min,
                leak_state=verdict.state,
            )
        row["sample_cost_ms"] = 1000 * (time.perf_counter() - t0)
        row["sample_cpu_ms"] = 1000 * cpu.seconds
        self.samples_taken += 1
        self.cpu_seconds += cpu.seconds
        self.wall_seconds += row["sample_cost_ms"] / 1000
        if self._samples_csv is not None:
            self._samples_csv.write(row)
        self._remember(row, verdict)
        for event in verdict.events:
            self._leak_event(event)
        if self.profiler is not None:
            stage = self.context.stage
            run_left = self.context.started + self.context.duration_s - now
            called = any(e.kind == "leak_detected" for e in verdict.events)
            self.profiler.consider(stage.params, stage.remaining_s(now), called, run_left)
        if not self._stopping:
            stop = self.guard.check(
                now,
                row["elapsed_s"],
                row.get("host_percent"),
                row.get("pressure"),
                Seen(sample.process_alive, sample.memory_read),
            )
            if stop is not None:
                self.stop_run(stop)
        return row

    def _judge_budget(self, row: dict[str, Any]) -> None:
        """A user's target: pressure only against a known budget, never its own cap.

        A source's own pressure stands. Otherwise pressure is RSS against the
        configured budget, else the cgroup limit, else a budget a source reported
        that the target does not enforce itself. A budget the target enforces (an
        LRU cache at ``maxmemory``) is shown, not judged: a full cache is normal.
        """
        if "stats_rss_bytes" in row:
            self._speaks_api = True  # it answered /memory/stats: the memstress API
        enforced = bool(row.pop("budget_enforced", False))
        if row.get("pressure") is not None:
            return
        rss = row.get("rss_bytes")
        budget = self.profile.budget_bytes or row.get("cgroup_max_bytes")
        if budget is None and not enforced:
            budget = row.get("budget_bytes")
        if row.get("budget_bytes") is None and budget is not None:
            row["budget_bytes"] = budget
        if rss is not None and budget:
            row["pressure"] = 100.0 * float(rss) / float(budget)

    def _remember(self, row: dict[str, Any], verdict: LeakVerdict) -> None:
        self.latest = row
        rss = row.get("rss_bytes")
        if not self._first_rss and not self.history:
            self._t0 = float(row["time"]) - float(row["elapsed_s"])
        if rss is not None:
            if len(self._first_rss) < 5:
                self._first_rss.append(float(rss))
            self._last_rss.append(float(rss))
        if self.context.stage.params.get("injects") == "leak":
            self._injected_leak = True
        if rss is not None and (self.peak_rss is None or rss > self.peak_rss):
            self.peak_rss = float(rss)
        self.history.append(
            Point(
                row["time"],
                row["elapsed_s"],
                row["stage"],
                rss,
                row.get("pressure"),
                row.get("host_percent"),
                verdict.slope_mb_min,
                verdict.state,
            )
        )

    def _leak_event(self, event: LeakEvent) -> None:
        detail: dict[str, Any] = {"reason": event.reason, "series": event.series}
        text = event.reason
        tr = event.trend
        if tr is not None:
            detail.update(tr.as_detail())
            text += (
                f" (slope {tr.slope:.2f} MB/min, {100 * tr.confidence:.1f}% CI "
                f"{tr.ci_low:.2f} to {tr.ci_high:.2f}, p={tr.p_value:.2g})"
            )
        if event.kind == "leak_detected":
            log.warning("memory monitor: leak detected: %s", text)
        else:
            log.info("memory monitor: leak cleared: %s", text)
        self.context.record(event.kind, detail)

    def _write_verdict(self) -> None:
        """The detector's final verdict and episodes, as ``leak_verdict.json`` in the run folder."""
        final = self.detector.final_verdict()
        log.info("memory monitor: leak verdict: %s: %s", final.verdict, final.reason)
        if self.context.run_dir is None:
            return
        path = Path(self.context.run_dir) / VERDICT_FILE
        try:
            path.write_text(json.dumps(final.as_dict(), indent=2, allow_nan=False) + "\n")
        except (OSError, ValueError) as exc:
            log.error("memory monitor: cannot write %s: %s", path, exc)

    def _health_loop(self, every: float) -> None:
        if self.profile.health_path:
            self._user_health_loop(every, self.profile.health_path)
            return
        if urlsplit(self.host).scheme not in ("http", "https"):
            return  # only an HTTP target has a /health to ask
        client = TargetClient(self.host, timeout=self.context.config.monitor.http_timeout)
        try:
            while True:
                gevent.sleep(every)
                if self.profile.own_load and not self._speaks_api:
                    continue  # not (yet) seen speaking the memstress API: no /health to ask
                answered = True
                try:
                    h = client.health()
                    status, code = h.get("status"), h.get("http_status")
                    ok = code == 200 and status in ("ok", "degraded")
                    detail = f"status {status!r:.40}, HTTP {code}"
                except requests.RequestException as exc:
                    answered, ok, detail = False, False, f"no answer ({type(exc).__name__})"
                except ValueError:
                    ok, detail = False, "an answer that is not JSON"
                if not ok:
                    log.warning("memory monitor: health check failed: %s", detail)
                self.context.record("health_ok" if ok else "health_failed", detail)
                stop = None if self._stopping else self.guard.health(answered)
                if stop is not None:
                    self.stop_run(stop)
        finally:
            client.close()

    def _user_health_loop(self, every: float, path: str) -> None:
        """GET the user's health path; ``target_lost_after`` failures in a row lose the target."""
        client = TargetClient(self.host, timeout=self.context.config.monitor.http_timeout)
        limit = self.context.config.safety.target_lost_after
        try:
            while True:
                gevent.sleep(every)
                try:
                    r = client.session.get(f"{client.base_url}{path}", timeout=client.timeout)
                    ok, detail = 200 <= r.status_code < 300, f"GET {path}: HTTP {r.status_code}"
                except requests.RequestException as exc:
                    ok, detail = False, f"GET {path}: no answer ({type(exc).__name__})"
                self._health_failures = 0 if ok else self._health_failures + 1
                if not ok:
                    log.warning("memory monitor: health check failed: %s", detail)
                self.context.record("health_ok" if ok else "health_failed", detail)
                if self._health_failures >= limit and not self._stopping:
                    self.stop_run(
                        Stop(
                            "target_lost",
                            f"health check {path} failed {self._health_failures} times in a "
                            f"row (target_lost_after {limit}): {detail}",
                            ExitCode.TARGET_LOST,
                        )
                    )
        finally:
            client.close()

    def _cleanup_loop(self, every: float) -> None:
        if urlsplit(self.host).scheme not in ("http", "https"):
            return
        client = TargetClient(self.host, timeout=self.context.config.monitor.http_timeout)
        try:
            while True:
                gevent.sleep(every)
                if self.profile.own_load and not self._speaks_api:
                    continue  # a cleanup cycle is the memstress API's; this target lacks it
                try:
                    r = client.cycle()
                    if not isinstance(r, dict):
                        raise TargetError(f"POST /memory/cycle: not a JSON object: {r!r:.100}")
                    detail: dict[str, Any] = {
                        k: r.get(k) for k in ("freed_bytes", "duration_ms", "strategy", "pressure")
                    }
                except (requests.RequestException, TargetError, ValueError) as exc:
                    log.warning("memory monitor: cleanup cycle failed: %s", exc)
                    detail = {"error": str(exc)[:200]}
                detail["by"] = "monitor"
                self.context.record("cleanup", detail)
        finally:
            client.close()

    # --- stopping ---------------------------------------------------------------------

    def stop_run(self, stop: Stop) -> None:
        """Stop the run for ``stop``: event, log, exit code, then quit from a new greenlet."""
        if self._stopping:
            return
        self._stopping = True
        self.stop = stop
        self.context.stop_reason = stop.reason
        self.environment.process_exit_code = stop.exit_code
        self.context.record(stop.kind, stop.reason)
        log.error(
            "memory monitor: %s: %s; stopping the run (exit code %d)",
            stop.kind,
            stop.reason,
            stop.exit_code,
        )
        # Not in the runner's group: quit() kills that group, this greenlet included.
        gevent.spawn(self._quit).link_exception(locust_exception_handler(self.environment))

    def _quit(self) -> None:
        runner = self.environment.runner
        if runner is None:
            return
        options = self.environment.parsed_options
        if options is None or getattr(options, "headless", True):
            runner.quit()
        else:  # the web UI stays up, showing why the run stopped
            runner.stop()
