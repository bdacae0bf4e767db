"""The memory monitor: a Locust listener object.

``MemoryMonitor(environment)`` subscribes its handlers in its constructor;
nothing is registered on import. The locustfile calls it once in its
``init`` listener, after it has put the :class:`common.context.RunContext`
on ``environment.memstress``.

On the master or a local runner, at ``test_start`` it takes a first sample
there and then (before any user is spawned), then spawns into the runner's
greenlet group (linked to Locust's exception handler, as Locust does for its
own CPU monitor):

- the **sampler**, every ``context.monitor_interval`` seconds: one row of
  ``memory_samples.csv`` (flushed), the online leak detector, the safety guard.
  Its sources are read concurrently and fail alone (:mod:`monitors.sampler`):
  an HTTP source times out below the interval (:func:`monitors.assembly.read_timeouts`), and a
  source that answers badly is degraded (``source_degraded`` /
  ``source_recovered`` events), never the end of sampling or of the run;
- the **health check** (``GET /health``) every ``system_health_check_interval``;
- the **cleanup cycle** (``POST /memory/cycle``) every ``memory_cleanup_interval``.

Its parts, each a module of its own: the options and the target profile
(:mod:`monitors.options`), the sampler's sources and time budget
(:mod:`monitors.assembly`), health checks and cleanup cycles
(:mod:`monitors.upkeep`), and what it remembers for its readers
(:mod:`monitors.snapshot`). This module wires them to Locust's events.

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

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import WorkerRunner, locust_exception_handler

from memstress.common.config import ConfigError, LeakDetection
from memstress.common.context import RunContext
from memstress.common.runfiles import SAMPLE_COLUMNS, WORKER_COLUMNS, CsvAppender
from memstress.monitors.allocations import AllocationProfiler
from memstress.monitors.assembly import assemble_sampler, read_timeouts
from memstress.monitors.http_sources import TIERS
from memstress.monitors.leak import (
    VERDICT_FILE,
    LeakDetector,
    LeakEvent,
    TierReading,
    judged_bytes,
    on_run_clock,
    tier_readings,
)
from memstress.monitors.options import TargetProfile, option_sources, profile_mode
from memstress.monitors.safety import SafetyGuard, Seen, Stop
from memstress.monitors.sampler import GreenletCpuMeter, Sampler
from memstress.monitors.snapshot import History, Point, Snapshot, verdict_inputs
from memstress.monitors.sources import parse_source_names
from memstress.monitors.upkeep import Upkeep
from memstress.monitors.worker import WORKER_KEY, WorkerReport
from memstress.scenarios.registry import get_scenario
from memstress.scenarios.target import PRESSURE

if TYPE_CHECKING:
    from locust.env import Environment

log = logging.getLogger(__name__)


@functools.cache
def drives_pressure(scenario: str) -> bool:
    """Whether ``scenario`` drives the target's pressure on purpose (it needs ``pressure``);
    False for a name that is no scenario of ours (a user's own load)."""
    try:
        return PRESSURE in get_scenario(scenario).required
    except (ConfigError, KeyError, ValueError):
        return False


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
        self.source_names = self._sources_override or option_sources(environment.parsed_options)
        self._interval_override = interval
        self.interval = float(interval if interval is not None else context.monitor_interval)
        if self.interval <= 0:
            raise ValueError(f"monitor interval: {self.interval!r} (valid: above 0 seconds)")
        # Made again at the first test_start, from the settings of that swarm.
        self.detector = LeakDetector(context.config.monitor.leak_detection)
        self.guard = SafetyGuard(context.config.safety)
        self.history = History()
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
        self._closed = False
        self._stopping = False
        self._speaks_api = False  # the target answered /memory/stats (auto profile)
        self._accounting = False  # a registered source reports accounted bytes
        self.extra_columns: tuple[str, ...] = ()  # registered sources' figures
        self.host = context.host

        events = environment.events
        self.worker: WorkerReport | None = None  # on a worker: its own figures, nothing more
        if isinstance(environment.runner, WorkerRunner) or context.is_worker:
            self.worker = WorkerReport(environment)
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
        row, verdict, ctx = self.history.latest, self.detector.verdict, self.context
        run_dir = ctx.run_dir
        return Snapshot(
            scenario=ctx.scenario,
            stage=ctx.stage.name,
            samples=self.samples_taken,
            interval_s=self.interval,
            rss_bytes=row.get("rss_bytes"),
            peak_rss_bytes=self.history.peak_rss,
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
        """The samples kept for the live view (the last ``HISTORY``), oldest first."""
        return self.history.points

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
            self.source_names = option_sources(environment.parsed_options)
        self.detector = LeakDetector(self._leak_settings())
        # The settings the detector judges with (scaled for a short run): the report
        # replays the detector with them to say whether the run was long enough to judge.
        self.context.record(
            "leak_settings",
            {**dataclasses.asdict(self.detector.settings), "interval_s": self.interval},
        )
        self.guard = SafetyGuard(cfg.safety)
        self.host = (environment.host or ctx.host).rstrip("/")
        made = assemble_sampler(
            ctx, self.host, self.source_names, self.profile, self.interval, self._source_event
        )
        self.sampler, self.target_pid, self.extra_columns = (
            made.sampler,
            made.pid,
            made.extra_columns,
        )
        self.started = time.time()
        if ctx.run_dir is not None:
            self._samples_csv = CsvAppender(
                Path(ctx.run_dir) / "memory_samples.csv", SAMPLE_COLUMNS + self.extra_columns
            )
        self.profiler = self._make_profiler(runner)
        if self.profiler is not None:
            self.profiler.check()
        upkeep = Upkeep(
            self.host,
            ctx,
            self.profile,
            self.guard,
            speaks_api=lambda: self._speaks_api,
            stopping=lambda: self._stopping,
            stop_run=self.stop_run,
        )
        # The first sample here, before test_start returns: Locust spawns no user (and a
        # master sends no spawn message) until its test_start listeners are done, so the
        # target's memory before any load is on record (growth per stored vector needs it).
        first_at = time.monotonic()
        self.sample_once()
        loops = [
            (self._sample_loop, (first_at + self.interval,)),
            (upkeep.health_loop, (cfg.safety.system_health_check_interval,)),
            (upkeep.cleanup_loop, (cfg.safety.memory_cleanup_interval,)),
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
        return verdict_inputs(self.history, self.detector)

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

    def _sample_loop(self, next_at: float) -> None:
        """A sample every interval from ``next_at`` (``time.monotonic()``), the slot after the
        first sample's (taken at test_start)."""
        while True:
            now = time.monotonic()
            if next_at <= now:  # a slow sample: skip the slots it overran
                skipped = 1 + int((now - next_at) // self.interval)
                self.slots_skipped += skipped
                next_at += self.interval * skipped
            gevent.sleep(next_at - now)
            self.sample_once()
            next_at += self.interval

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
            enforced = self._enforced_pressure(row)
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
        self.history.add(row, verdict, self.context.stage.params.get("injects") == "leak")
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
                None if enforced else row.get("pressure"),  # a full LRU cache is normal
                Seen(sample.process_alive, sample.memory_read),
            )
            if stop is not None:
                self.stop_run(stop)
        return row

    def _enforced_pressure(self, row: dict[str, Any]) -> bool:
        """Whether the row's budget is one the target enforces itself (Redis evicting at
        ``maxmemory``). Its pressure is kept only in a run that drives pressure on purpose
        (its scenario needs ``pressure``: high_memory, memory_pressure_crisis); elsewhere a
        full cache is normal and shown as such. The safety guard never judges it."""
        enforced = bool(row.get("budget_enforced", False))
        if enforced and not drives_pressure(self.context.scenario):
            row.pop("pressure", None)
        return enforced

    def _judge_budget(self, row: dict[str, Any]) -> None:
        """A user's target: pressure only against a known budget, never its own cap.

        A source's own pressure stands. Otherwise pressure is RSS against the
        configured budget, else the cgroup limit, else a budget a source reported
        that the target does not enforce itself. A budget the target enforces (an
        LRU cache at ``maxmemory``) is shown, not judged: a full cache is normal
        (see :meth:`_enforced_pressure`).
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
