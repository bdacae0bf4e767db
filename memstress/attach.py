"""Attach memstress to any locustfile: options, run folder, monitor, stages, verdict.

:func:`attach` subscribes two listeners to Locust's ``events``: the suite's
options (``init_command_line_parser``) and :class:`OwnLoad` (``init``). It is
what ``import memstress.plugin`` calls, the user's explicit opt-in; calling it
again (the plugin imported twice, or also given as a second ``-f`` file) does
nothing more. A locustfile that wires memstress itself (the suite's own
``locustfile.py``) is left alone: :class:`OwnLoad` steps aside when
``environment.memstress`` is already set.

:class:`OwnLoad`, on the master or a local runner:

- makes the run folder (``--run-dir`` or ``results/<stamp>_<locustfile>``) and
  writes ``run_meta.json``, ``events.csv``, ``stages.csv``;
- starts the :class:`~monitors.monitor.MemoryMonitor` with a
  :class:`~monitors.options.TargetProfile` for a target that may not speak the
  memstress API (``--host`` of any scheme);
- turns the run into stages: a ``LoadTestShape``'s ticks (each new user count is
  a stage ``step_N``), or one ``load`` stage (``--duration S`` plays it for S
  seconds and ends the run), or the phases the user marks with
  :func:`memstress.phase`; ``--recovery-s N`` adds a ``recovery`` stage with no
  users, in which memory is watched N seconds;
- at quit, unless ``--report-at-quit no`` (``run_stress_test.py`` builds the
  report itself), writes Locust's stats into the run folder, builds the report
  and sets the exit code from its verdict (a stop code, 3 or 4, stands).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events as locust_events
from locust.runners import WorkerRunner, locust_exception_handler

from memstress.common.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from memstress.common.context import RunContext, new_run_id
from memstress.common.exitcodes import ExitCode
from memstress.common.runfiles import RunFolder, make_run_dir
from memstress.common.units import MB
from memstress.monitors.options import TargetProfile, add_monitor_options
from memstress.monitors.worker import attach_monitor
from memstress.shapes.plan import PlanError, StageSpec
from memstress.shapes.staged import StagedShape, TickResult

log = logging.getLogger("memstress")

PHASES = ("warmup", "stress", "recovery")
RECOVERY_SPAWN_RATE = 1000.0
"""Users stopped per second when the load ends for the recovery stage."""


def attach(events: Any = locust_events) -> None:
    """Subscribe the suite's options and the ``init`` listener once per ``events``."""
    if getattr(events, "_memstress_attached", False):
        return
    events._memstress_attached = True
    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(on_init)


def add_options(parser: Any, **_: Any) -> None:
    parser.add_argument(
        "--memstress-config",
        default=str(DEFAULT_CONFIG_PATH),
        env_var="MEMSTRESS_CONFIG",
        help="The suite's YAML config (thresholds, safety, monitor). "
        "Default: the shipped stress_test_config.yml.",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        env_var="MEMSTRESS_RUN_DIR",
        help="Folder for the run's files. Default: a new folder under results/.",
    )
    parser.add_argument(
        "--duration",
        default=None,
        env_var="MEMSTRESS_DURATION",
        help="Seconds of load when the locustfile has no LoadTestShape: one 'load' stage, "
        "then the run ends. Default: until Locust stops (-t, Ctrl-C, the web UI).",
    )
    parser.add_argument(
        "--recovery-s",
        default="0",
        env_var="MEMSTRESS_RECOVERY_S",
        help="After the load, stop every user and watch memory this many seconds "
        "(a 'recovery' stage). Needs --duration or a LoadTestShape. Default: 0.",
    )
    parser.add_argument(
        "--health-path",
        default=None,
        env_var="MEMSTRESS_HEALTH_PATH",
        help="A path on the HTTP --host that answers 2xx while the target is healthy; "
        "failing target_lost_after times in a row ends the run (exit 3). Default: none "
        "(/health only when the target speaks the memstress API).",
    )
    parser.add_argument(
        "--budget-mb",
        default=None,
        env_var="MEMSTRESS_BUDGET_MB",
        help="The target's memory budget in MB; pressure is RSS against it. Default: the "
        "cgroup limit, or a budget a source reports.",
    )
    parser.add_argument(
        "--report-at-quit",
        default="yes",
        choices=("yes", "no"),
        env_var="MEMSTRESS_REPORT_AT_QUIT",
        help="Build the report and set the exit code from its verdict when Locust quits "
        "(run_stress_test.py says no: it builds the report itself). Default: yes.",
    )
    add_monitor_options(parser)


def on_init(environment: Any, runner: Any, web_ui: Any = None, **_: Any) -> None:
    if getattr(environment, "memstress", None) is not None:
        return  # the suite's own locustfile wired it already
    try:
        OwnLoad(environment)
    except (ConfigError, PlanError) as exc:
        opts = environment.parsed_options
        if not (getattr(opts, "worker", False) and getattr(opts, "processes", None)):
            log.error("%s", exc)
        sys.exit(ExitCode.USAGE)


def _opt(options: Any, name: str) -> str | None:
    value = getattr(options, name, None)
    text = "" if value is None else str(value).strip()
    return text or None


def _seconds(option: str, text: str | None, *, zero_ok: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        valid = "0 or more seconds" if zero_ok else "seconds above 0, e.g. 60"
        raise ConfigError(f"{option}: {text!r} is not valid (valid: {valid})")
    return value


class OwnLoad:
    """memstress around a user's own locustfile; see the module doc."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        opts = environment.parsed_options
        self.config: Config = load_config(_opt(opts, "memstress_config"))
        self.duration = _seconds("--duration", _opt(opts, "duration"))
        self.recovery_s = _seconds("--recovery-s", _opt(opts, "recovery_s"), zero_ok=True) or 0.0
        interval = _seconds("--monitor-interval", _opt(opts, "monitor_interval"))
        if interval is not None and not 0.05 <= interval <= 3600:
            raise ConfigError(
                f"--monitor-interval: {interval:g} is not valid (valid: 0.05 to 3600 seconds)"
            )
        pid_text = _opt(opts, "target_pid")
        pid = None
        if pid_text is not None:
            if not pid_text.isdigit() or int(pid_text) <= 0:
                raise ConfigError(
                    f"--target-pid: {pid_text!r} is not valid (valid: a process id above 0)"
                )
            pid = int(pid_text)
        budget_mb = _seconds("--budget-mb", _opt(opts, "budget_mb"))
        health = _opt(opts, "health_path")
        if health is not None and not health.startswith("/"):
            raise ConfigError(
                f"--health-path: {health!r} is not valid (valid: a path such as /healthz)"
            )
        shape = environment.shape_class
        if self.recovery_s and shape is None and self.duration is None:
            raise ConfigError(
                "--recovery-s: the load must end before recovery (valid with --duration S, "
                "or with a LoadTestShape in the locustfile)"
            )
        self.name = Path(getattr(environment, "locustfile", None) or "locustfile").stem
        self.is_worker = bool(getattr(opts, "worker", False)) or isinstance(
            environment.runner, WorkerRunner
        )
        self.profile = TargetProfile(
            api="auto",
            health_path=health,
            budget_bytes=budget_mb * MB if budget_mb else None,
        )
        stress = self.config.stress(self.config.stress_levels.default_level)
        host = (environment.host or "").rstrip("/")
        self.run_dir: Path | None = None
        if not self.is_worker:
            self.run_dir = make_run_dir(_opt(opts, "run_dir"), self.name)
            if opts is not None:
                opts.run_dir = str(self.run_dir)
        self.context = RunContext(
            config=self.config,
            scenario=self.name,
            stress=stress,
            duration_s=(self.duration or 0.0) + self.recovery_s,
            run_id=new_run_id(),
            host=host,
            folder=RunFolder(self.run_dir) if self.run_dir is not None else None,
            target_pid=pid,
            monitor_interval=interval or self.config.monitor.interval,
            is_worker=self.is_worker,
        )
        environment.memstress = self.context
        self._csv_writer: Any = None
        self._csv_greenlet: gevent.Greenlet | None = None
        self.report_at_quit = _opt(opts, "report_at_quit") != "no"
        if not self.is_worker:
            self._start_files(opts, host, pid)
            # Registered before the monitor: quitting fires in reverse, so this runs after
            # the monitor has closed its files and set a stop's exit code.
            environment.events.quitting.add_listener(self.on_quitting)
            environment.events.test_start.add_listener(self.on_test_start)
            self.stages = Stages(environment, self.context, self.recovery_s)
            environment.memstress_stages = self.stages  # for memstress.phase
            if shape is not None:
                if self.duration is not None:
                    log.warning("memstress: --duration is ignored: the locustfile's shape sets it")
                self.stages.follow(shape)
            elif self.duration is not None:
                self.stages.play_load(self.duration, opts)
        environment.events.quit.add_listener(lambda **_kw: self.context.close())
        attach_monitor(environment, self.profile)  # a worker's: its own figures only

    # --- the run folder -------------------------------------------------------------

    def _start_files(self, opts: Any, host: str, pid: int | None) -> None:
        from memstress.runner.session import write_meta

        assert self.run_dir is not None
        ctx = self.context
        write_meta(
            self.run_dir,
            schema=1,
            scenario=self.name,
            kind="locustfile",
            locustfile=_first_locustfile(opts),
            run_id=self.run_dir.name,
            host=host,
            stress_level=ctx.stress.level,
            duration_s=ctx.duration_s or None,
            started=time.time(),
            ended=None,
            exit_code=None,
            stop_reason="",
            interrupted=False,
            config_path=str(self.config.source),
            purpose=f"Your own load test ({self.name}) with the memory monitor",
            expected=[],
            budget_bytes=self.profile.budget_bytes,
            processes=getattr(opts, "processes", None) or 1,
            target_pid=pid,
        )
        ctx.record("run_start", {"run_id": ctx.run_id, "scenario": self.name, "host": host})
        prefix = str(self.run_dir / "locust")
        if self.report_at_quit and getattr(opts, "csv_prefix", None) != prefix:
            # Locust writes its CSVs only where --csv says; the report needs them here.
            from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

            self._csv_writer = StatsCSVFileWriter(
                self.environment, PERCENTILES_TO_REPORT, prefix, full_history=True
            )
            g = gevent.spawn(self._csv_writer.stats_writer)
            g.link_exception(locust_exception_handler(self.environment))
            self._csv_greenlet = g

    def on_test_start(self, environment: Any, **_: Any) -> None:
        if environment.shape_class is None and self.context.stage.index < 0:
            self.stages.enter("load", users=_users(environment.parsed_options))

    def on_quitting(self, environment: Any, **_: Any) -> None:
        from memstress.runner.session import write_meta

        assert self.run_dir is not None
        ctx = self.context
        stop_code = environment.process_exit_code
        write_meta(
            self.run_dir,
            ended=time.time(),
            exit_code=stop_code if stop_code is not None else 0,
            stop_reason=ctx.stop_reason,
        )
        if not self.report_at_quit:
            return
        self._write_stats(environment)
        from memstress.reports import build_run_report

        try:
            rep = build_run_report(self.run_dir, self.config)
        except Exception:
            log.exception("memstress: building the report of %s failed", self.run_dir)
            environment.process_exit_code = stop_code or ExitCode.FAILED
            return
        if stop_code is None or stop_code == 0:
            environment.process_exit_code = rep.exit_code
        log.info(
            "memstress: grade %s, exit code %s; report %s",
            rep.overall_grade,
            environment.process_exit_code,
            rep.report_path,
        )

    def _write_stats(self, environment: Any) -> None:
        """Locust's totals into the run folder now (Locust itself writes them after quitting)."""
        assert self.run_dir is not None
        stats = environment.stats
        # Locust's save_stats_json clears the entries it writes; serialize() does not.
        entries = [
            e.serialize() for e in stats.entries.values() if e.num_requests or e.num_failures
        ]
        (self.run_dir / "locust.json").write_text(json.dumps(entries, indent=1))
        w = self._csv_writer
        if w is None:
            return
        if self._csv_greenlet is not None:
            self._csv_greenlet.kill(block=True)
        # One last pass of Locust's own writer over the final totals.
        w.requests_csv_filehandle.seek(0)
        w.requests_csv_filehandle.truncate()
        w.requests_csv_writer.writerow(w.requests_csv_columns)
        w._requests_data_rows(w.requests_csv_writer)
        w._stats_history_data_rows(w.stats_history_csv_writer, time.time())
        w.failures_csv_filehandle.seek(0)
        w.failures_csv_filehandle.truncate()
        w.failures_csv_writer.writerow(w.failures_columns)
        w._failures_data_rows(w.failures_csv_writer)
        w.exceptions_csv_filehandle.seek(0)
        w.exceptions_csv_filehandle.truncate()
        w.exceptions_csv_writer.writerow(w.exceptions_columns)
        w._exceptions_data_rows(w.exceptions_csv_writer)
        w.close_files()
        self._csv_writer = None


def _first_locustfile(options: Any) -> str:
    """The first ``-f`` file, as an absolute path (the user's, when the plugin is second)."""
    first = str(getattr(options, "locustfile", "") or "").split(",")[0].strip()
    return str(Path(first).resolve()) if first else ""


def _users(options: Any) -> int:
    n = getattr(options, "num_users", None)
    return int(n) if n else 1


class Stages:
    """The run's stages on the master: a shape's ticks, one load stage, marked phases."""

    def __init__(self, environment: Any, context: RunContext, recovery_s: float) -> None:
        self.environment = environment
        self.context = context
        self.recovery_s = recovery_s
        self.marked = False  # the user marks phases: ticks no longer make stages
        self._original: Any = None
        self._last: tuple[int, float] | None = None
        self._steps = 0
        self._recovery_until: float | None = None
        self._ended = False

    def enter(
        self,
        name: str,
        *,
        users: int = 0,
        spawn_rate: float = 0.0,
        duration_s: float = 0.0,
        params: dict[str, Any] | None = None,
    ) -> None:
        ctx = self.context
        params = dict(params or {})
        if name in PHASES:
            params.setdefault("phase", name)
        ctx.enter_stage(
            ctx.stage.index + 1,
            name,
            duration_s=duration_s,
            users=users,
            spawn_rate=spawn_rate,
            params=params,
            elapsed_s=time.time() - ctx.started,
        )

    def mark(self, name: str, params: dict[str, Any] | None = None) -> None:
        runner = self.environment.runner
        self.marked = True
        self.enter(name, users=runner.user_count if runner is not None else 0, params=params)

    # --- a user's shape -------------------------------------------------------------

    def follow(self, shape: Any) -> None:
        """Wrap the shape's ``tick`` (this instance only) to record its stages."""
        self._original = shape.tick
        shape.tick = self._tick

    def _tick(self) -> TickResult | None:
        if self._recovery_until is not None:
            return self._recovery_tick()
        result = self._original()
        if result is None:
            return self._end_of_load()
        users, rate = int(result[0]), float(result[1])
        if (users, rate) != self._last and not self.marked:
            self._steps += 1
            self.enter(f"step_{self._steps}", users=users, spawn_rate=rate)
        self._last = (users, rate)
        return result

    def _end_of_load(self) -> TickResult | None:
        if self.recovery_s > 0:
            self.enter(
                "recovery",
                users=0,
                spawn_rate=RECOVERY_SPAWN_RATE,
                duration_s=self.recovery_s,
                params={"traffic": False},
            )
            self._recovery_until = time.monotonic() + self.recovery_s
            return 0, RECOVERY_SPAWN_RATE
        self._finish()
        return None

    def _recovery_tick(self) -> TickResult | None:
        assert self._recovery_until is not None
        if time.monotonic() >= self._recovery_until:
            self._finish()
            return None
        return 0, RECOVERY_SPAWN_RATE

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            self.context.plan_complete = True
            what = "the load and its recovery are over" if self.recovery_s else "the load is over"
            self.context.record("run_end", what)
        return None

    # --- no shape: --duration -------------------------------------------------------

    def play_load(self, duration_s: float, options: Any) -> None:
        """One ``load`` stage of ``-u`` users for ``duration_s``, then recovery, then the end."""
        users = _users(options)
        rate = float(getattr(options, "spawn_rate", None) or users)
        plan = [StageSpec("load", duration_s, users, rate)]
        if self.recovery_s > 0:
            plan.append(
                StageSpec(
                    "recovery",
                    self.recovery_s,
                    0,
                    RECOVERY_SPAWN_RATE,
                    {"phase": "recovery", "traffic": False},
                )
            )
        shape = _PlanShape(plan, self)
        shape.runner = self.environment.runner
        self.environment.shape_class = shape


class _PlanShape(StagedShape):
    """The stage plan of a locustfile without a shape, given ``--duration``."""

    abstract = True  # never picked up by Locust from a module's names

    def __init__(self, plan: list[StageSpec], stages: Stages) -> None:
        super().__init__(plan)
        self.stages = stages

    def on_stage(self, index: int, spec: StageSpec, elapsed_s: float) -> None:
        if not self.stages.marked or spec.name == "recovery":
            self.stages.enter(
                spec.name,
                users=spec.users,
                spawn_rate=spec.spawn_rate,
                duration_s=spec.duration_s,
                params=dict(spec.params),
            )

    def on_end(self, reason: str, elapsed_s: float) -> None:
        self.stages._finish()


def phase(environment: Any, name: str, **params: Any) -> None:
    """Mark a phase of the run from user code: a new stage named ``name`` begins now.

    ``warmup``, ``stress`` and ``recovery`` are read as those phases by the report
    (any other name is a stress stage). Call it where the master runs (a shape's
    ``tick``, a ``test_start`` listener, or any code of a local run); on a worker it
    does nothing, since the master keeps the run folder. Once called, a shape's
    ticks no longer start stages of their own.
    """
    ctx = getattr(environment, "memstress", None)
    if not isinstance(ctx, RunContext) or ctx.run_dir is None:
        return
    stages = getattr(environment, "memstress_stages", None)
    if isinstance(stages, Stages):
        stages.mark(name, params)
    else:
        runner = environment.runner
        ctx.enter_stage(
            ctx.stage.index + 1,
            name,
            duration_s=0.0,
            users=runner.user_count if runner is not None else 0,
            spawn_rate=0.0,
            params={"phase": name, **params} if name in PHASES else dict(params),
            elapsed_s=time.time() - ctx.started,
        )


__all__ = ["OwnLoad", "attach", "phase"]
