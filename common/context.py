"""The state one Locust run shares between its shape, users and monitor.

The locustfile builds a :class:`RunContext` in its ``init`` listener and puts it
on the environment as ``environment.memstress``; nothing lives in module
globals. On workers the context has no run folder writers (only the master
writes files) and its stage is updated from the master's broadcast.

The run's settings come from the custom Locust options (``--scenario``,
``--stress-level``, ...). :func:`resolve_settings` turns parsed options into a
checked :class:`RunSettings`, or raises :class:`~common.config.ConfigError`
with one line that names the option and lists what is valid. It reads the
options by attribute and accepts strings, because the web UI hands values
back as typed text and a worker gets the master's options as plain data.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.checkout import identity
from common.config import (
    Config,
    ConfigError,
    StressLevel,
    load_config,
    scenario_name,
)
from common.runfiles import (
    STAGE_COLUMNS,
    CsvAppender,
    EventLog,
    is_writable_dir,
    new_run_dir,
    write_meta,
)
from common.target import check_host, check_target_pid, is_loopback

STAGE_MESSAGE = "memstress_stage"
"""Custom Locust message the master sends to workers on every stage change."""

RUN_ID_OPTION = "memstress_run_id"
"""Attribute the master sets on its parsed options; Locust copies it to workers."""

STAGE_OPTION = "memstress_stage"
"""Attribute holding the current stage message on the master's parsed options, so
every spawn message carries it too (a worker that joins late still learns it)."""


@dataclass
class Stage:
    """The stage now playing: its place in the plan and its parameters."""

    index: int = -1
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0  # Unix time on the master when the stage began
    duration_s: float = 0.0  # planned length
    users: int = 0

    def to_message(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "params": self.params,
            "started": self.started,
            "duration_s": self.duration_s,
            "users": self.users,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Stage:
        return cls(
            int(data["index"]),
            str(data["name"]),
            dict(data["params"]),
            float(data["started"]),
            float(data.get("duration_s", 0.0)),
            int(data.get("users", 0)),
        )

    def remaining_s(self, now: float | None = None) -> float:
        """Planned seconds left in this stage (0 when over or not started)."""
        if self.index < 0:
            return 0.0
        now = time.time() if now is None else now
        return max(0.0, self.started + self.duration_s - now)


@dataclass(frozen=True)
class RunSettings:
    """What the options ask for, checked against the config."""

    scenario: str
    config: Config
    stress: StressLevel
    duration_s: float  # total seconds of the stage plan (scale applied)
    duration_scale: float
    target_pid: int | None
    monitor_interval: float
    allow_remote: bool = False  # --allow-remote-target or safety.allow_remote_targets
    metrics: MetricsUrl | None = None  # --metrics-url and what to read there


@dataclass(frozen=True)
class MetricsUrl:
    """Where the target's RSS is exposed as Prometheus text, when not by PID."""

    url: str
    metric: str = "process_resident_memory_bytes"
    labels: tuple[tuple[str, str], ...] = ()  # every one must match the series


def _text(value: Any) -> str | None:
    """None for an option left empty (None or a blank web-form field)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(option: str, value: Any, valid: str, *, lo: float, hi: float = math.inf) -> float:
    """A number in (lo, hi], or a one-line error."""
    text = _text(value)
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and lo < number <= hi):
        raise ConfigError(f"{option}: {value!r} is not valid (valid: {valid})")
    return number


def _whole(option: str, value: Any, valid: str) -> int:
    try:
        return int(_text(value) or "")
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not a whole number (valid: {valid})") from None


def _default_duration(scenario: str, config: Config) -> float:
    from scenarios.registry import get_scenario  # here: the registry imports every scenario

    return get_scenario(scenario).default_duration(config)


def resolve_settings(options: Any) -> RunSettings:
    """Check the custom options (``None`` options: all defaults) against the config."""

    def get(name: str) -> Any:
        return getattr(options, name, None)

    raw = get("scenario")
    try:
        scenario = scenario_name(_text(raw) or "baseline")
    except ConfigError as exc:
        raise ConfigError(f"--scenario: {exc}") from None
    config = load_config(_text(get("memstress_config")))
    levels = config.stress_levels
    level_raw = get("stress_level")
    level = (
        levels.default_level
        if _text(level_raw) is None
        else _whole("--stress-level", level_raw, f"0 to {levels.count() - 1}")
    )
    stress = config.stress(level)
    duration_raw = get("duration")
    base = (
        _default_duration(scenario, config)
        if _text(duration_raw) is None
        else _number("--duration", duration_raw, "seconds above 0, e.g. 60", lo=0)
    )
    scale_raw = get("duration_scale")
    scale = (
        1.0
        if _text(scale_raw) is None
        else _number("--duration-scale", scale_raw, "a number above 0, e.g. 0.2", lo=0)
    )
    pid_raw = get("target_pid")
    pid = None if _text(pid_raw) is None else _whole("--target-pid", pid_raw, "a process id")
    if pid is not None and pid <= 0:
        raise ConfigError(f"--target-pid: {pid_raw!r} is not valid (valid: a process id above 0)")
    interval_raw = get("monitor_interval")
    interval = (
        config.monitor.interval
        if _text(interval_raw) is None
        else _number("--monitor-interval", interval_raw, "0.05 to 3600 seconds", lo=0, hi=3600)
    )
    if interval < 0.05:
        raise ConfigError(
            f"--monitor-interval: {interval_raw!r} is not valid (valid: 0.05 to 3600 seconds)"
        )
    allow = config.safety.allow_remote_targets or _flag(get("allow_remote_target"))
    return RunSettings(
        scenario,
        config,
        stress,
        base * scale,
        scale,
        pid,
        interval,
        allow,
        metrics_url(get("metrics_url"), get("metrics_metric"), get("metrics_labels")),
    )


def _flag(value: Any) -> bool:
    """A store_true option: a bool, or text from an env var or the web UI form."""
    if isinstance(value, bool):
        return value
    return (_text(value) or "").lower() in ("1", "true", "yes", "on")


def metrics_url(url: Any, metric: Any = None, labels: Any = None) -> MetricsUrl | None:
    """``--metrics-url`` with its metric name and label selector, checked (None: not given)."""
    from monitors.exporter import DEFAULT_METRIC, parse_labels, parse_metric_name

    text = _text(url)
    if text is None:
        return None
    try:
        check_host(text, allow_remote=True)  # a scrape, not load: any host
    except ValueError:
        raise ConfigError(
            f"--metrics-url: {text!r} is not a URL (valid: http(s)://HOST:PORT/PATH, "
            "e.g. http://127.0.0.1:9100/metrics)"
        ) from None
    try:
        name = parse_metric_name(_text(metric) or DEFAULT_METRIC)
        selector = parse_labels(_text(labels))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return MetricsUrl(text, name, selector)


def check_target(host: str, settings: RunSettings) -> str:
    """The target URL, checked against the opt-in; a remote one takes no --target-pid."""
    try:
        url = check_host(host, allow_remote=settings.allow_remote)
        check_target_pid(url, settings.target_pid)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return url


@dataclass
class RunContext:
    config: Config
    scenario: str
    stress: StressLevel
    duration_s: float  # total seconds of the stage plan
    run_id: str  # namespaces test data on the target (agents, vector namespaces)
    host: str  # the target's base URL
    run_dir: Path | None = None  # None on workers
    events: EventLog | None = None  # None on workers
    target_pid: int | None = None
    monitor_interval: float = 1.0
    is_worker: bool = False
    stage: Stage = field(default_factory=Stage)
    started: float = field(default_factory=time.time)
    stop_reason: str = ""  # why the run ended early, if it did
    extras: dict[str, Any] = field(default_factory=dict)  # per-run scratch of a component
    duration_scale: float = 1.0
    plan_complete: bool = False  # the shape played its last stage to the end
    stage_log: CsvAppender | None = None  # stages.csv, opened at the first stage (master/local)
    allow_remote: bool = False
    metrics: MetricsUrl | None = None
    owns_meta: bool = False  # this process wrote run_meta.json (no run_stress_test.py above it)

    @property
    def remote(self) -> bool:
        """The target is on another machine: this host's memory figures are not its."""
        return bool(self.host) and not is_loopback(self.host)

    @classmethod
    def from_settings(
        cls,
        settings: RunSettings,
        *,
        run_id: str,
        host: str,
        run_dir: Path | None = None,
        is_worker: bool = False,
    ) -> RunContext:
        ctx = cls(
            config=settings.config,
            scenario=settings.scenario,
            stress=settings.stress,
            duration_s=settings.duration_s,
            run_id=run_id,
            host=host,
            run_dir=run_dir,
            events=EventLog(run_dir) if run_dir is not None else None,
            is_worker=is_worker,
        )
        ctx.apply(settings)
        return ctx

    def apply(self, settings: RunSettings) -> None:
        """Take new settings (a worker learning the master's, a new web UI swarm)."""
        self.config = settings.config
        self.scenario = settings.scenario
        self.stress = settings.stress
        self.duration_s = settings.duration_s
        self.duration_scale = settings.duration_scale
        self.target_pid = settings.target_pid
        self.monitor_interval = settings.monitor_interval
        self.allow_remote = settings.allow_remote
        self.metrics = settings.metrics

    def set_stage(self, stage: Stage) -> None:
        self.stage = stage

    def enter_stage(
        self,
        index: int,
        name: str,
        *,
        duration_s: float,
        users: int,
        spawn_rate: float,
        params: dict[str, Any],
        elapsed_s: float,
        now: float | None = None,
    ) -> Stage:
        """Make a stage current; where the run folder is, add a stages.csv row and an event."""
        now = time.time() if now is None else now
        stage = Stage(index, name, dict(params), now, duration_s, users)
        self.set_stage(stage)
        if self.run_dir is not None:
            if self.stage_log is None:
                self.stage_log = CsvAppender(Path(self.run_dir) / "stages.csv", STAGE_COLUMNS)
            self.stage_log.write(
                {
                    "time": now,
                    "elapsed_s": elapsed_s,
                    "index": index,
                    "name": name,
                    "users": users,
                    "spawn_rate": spawn_rate,
                    "duration_s": duration_s,
                    "params": json.dumps(params, sort_keys=True),
                }
            )
        self.record("stage", {"index": index, "name": name, "users": users})
        return stage

    def record(self, kind: str, detail: str | dict[str, Any] = "") -> None:
        """Write an event when this process keeps the run folder (master or local)."""
        if self.events is not None:
            text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
            self.events.record(kind, text)

    def start_meta(self, options: Any) -> None:
        """Write ``run_meta.json`` for a run started with plain ``locust`` (master or local).

        Under ``run_stress_test.py`` the file is already there and stays the CLI's.
        """
        if self.run_dir is None or (Path(self.run_dir) / "run_meta.json").exists():
            return
        from scenarios.registry import get_scenario  # here: the registry imports every scenario

        info = get_scenario(self.scenario)
        write_meta(
            self.run_dir,
            schema=1,
            scenario=self.scenario,
            run_id=Path(self.run_dir).name,
            host=self.host,
            stress_level=self.stress.level,
            duration_s=self.duration_s,
            started=self.started,
            ended=None,
            exit_code=None,
            stop_reason="",
            interrupted=False,
            config_path=self.config.source,
            purpose=info.purpose,
            expected=list(info.expected),
            budget_bytes=None,
            processes=getattr(options, "processes", None) or 1,
            expect_workers=getattr(options, "expect_workers", None)
            if getattr(options, "master", False)
            else None,
            remote_target=self.remote,
            allow_remote_target=self.allow_remote,
            metrics_url=self.metrics.url if self.metrics else None,
            memstress=identity(),
            runner="locust",
        )
        self.owns_meta = True

    def end_meta(self, exit_code: int | None) -> None:
        """Record the end and exit code in the ``run_meta.json`` this process wrote."""
        if self.owns_meta and self.run_dir is not None:
            write_meta(
                self.run_dir, ended=time.time(), exit_code=exit_code, stop_reason=self.stop_reason
            )

    def close(self) -> None:
        """Close the run folder files this context opened."""
        for f in (self.stage_log, self.events):
            if f is not None:
                f.close()


def new_run_id() -> str:
    """A short id for the run's data on the target (agent ids, namespaces start with it)."""
    return f"ms{uuid.uuid4().hex[:10]}"


def make_run_dir(given: Any, scenario: str) -> Path:
    """``--run-dir`` as given (created if missing), else a new folder under ``results/``."""
    text = _text(given)
    if text is None:
        try:
            return new_run_dir(scenario)
        except OSError as exc:
            raise ConfigError(
                f"--run-dir: cannot create a run folder under results/ ({exc})"
            ) from None
    path = Path(text).expanduser()
    if not is_writable_dir(path):
        raise ConfigError(
            f"--run-dir: {text} is not a folder this user can write (valid: a writable path)"
        )
    return path


def build_context(environment: Any, settings: RunSettings | None = None) -> RunContext:
    """The run's context from the environment's parsed options (the locustfile's ``init``).

    On the master or a local runner this creates the run folder and a run id and
    writes both onto the parsed options, which Locust sends to every worker with
    each spawn message. A worker starts with its own options and learns the
    master's at ``test_start`` (see :func:`shapes.scenario.wire_stages`).
    """
    opts = environment.parsed_options
    settings = settings or resolve_settings(opts)
    host = environment.host or ""
    if host:
        host = check_target(host, settings)
    if getattr(opts, "worker", False):
        run_id = getattr(opts, RUN_ID_OPTION, None) or ""
        return RunContext.from_settings(settings, run_id=run_id, host=host, is_worker=True)
    run_dir = make_run_dir(getattr(opts, "run_dir", None), settings.scenario)
    run_id = new_run_id()
    if opts is not None:
        opts.run_dir = str(run_dir)
        setattr(opts, RUN_ID_OPTION, run_id)
    ctx = RunContext.from_settings(settings, run_id=run_id, host=host, run_dir=run_dir)
    # The id every agent and namespace of this run starts with, for whoever checks the target.
    ctx.record(
        "run_start",
        {
            "run_id": run_id,
            "scenario": settings.scenario,
            "host": host,
            "remote_target": bool(host) and not is_loopback(host),
            "allow_remote_target": settings.allow_remote,
            "memstress": identity(),
        },
    )
    return ctx
