"""The state one Locust run shares between its shape, users and monitor.

The locustfile builds a :class:`RunContext` in its ``init`` listener and puts it
on the environment as ``environment.memstress``; nothing lives in module
globals. On the master (or a local runner) the context holds the run folder's
writers (:class:`common.runfiles.RunFolder`); on workers it has none, and its
stage is updated from the master's broadcast.

The settings it takes (:class:`RunSettings`) are read from the suite's Locust
options by :func:`scenarios.options.resolve_settings`.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memstress.common.checkout import identity
from memstress.common.config import Config, ConfigError, StressLevel
from memstress.common.runfiles import RunFolder, make_run_dir, write_meta
from memstress.common.target import MetricsUrl, check_host, check_target_pid, is_loopback

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
    """What the options ask for, checked against the config (see :mod:`scenarios.options`)."""

    scenario: str
    config: Config
    stress: StressLevel
    duration_s: float  # total seconds of the stage plan (scale applied)
    duration_scale: float
    target_pid: int | None
    monitor_interval: float
    allow_remote: bool = False  # --allow-remote-target or safety.allow_remote_targets
    metrics: MetricsUrl | None = None  # --metrics-url and what to read there
    adapter: str = "memstress"  # --adapter: how the users speak to the target
    adapter_config: str | None = None  # --adapter-config (http-map's YAML)


def check_target(
    host: str, settings: RunSettings, schemes: tuple[str, ...] = ("http", "https")
) -> str:
    """The target URL, checked against the opt-in; a remote one takes no --target-pid.
    ``schemes``: those the run's adapter speaks."""
    try:
        url = check_host(host, allow_remote=settings.allow_remote, schemes=schemes)
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
    folder: RunFolder | None = None  # the run folder's writers; None on workers
    target_pid: int | None = None
    monitor_interval: float = 1.0
    is_worker: bool = False
    stage: Stage = field(default_factory=Stage)
    started: float = field(default_factory=time.time)
    stop_reason: str = ""  # why the run ended early, if it did
    duration_scale: float = 1.0
    plan_complete: bool = False  # the shape played its last stage to the end
    adapter: Any = None
    """The run's target adapter (``scenarios.adapters``), set by the locustfile's ``init``."""
    user_slots: itertools.count[int] = field(default_factory=itertools.count)
    """This process's next user slot (see :meth:`scenarios.base.MemstressUser.claim_slot`)."""
    allow_remote: bool = False
    metrics: MetricsUrl | None = None
    owns_meta: bool = False  # this process wrote run_meta.json (no run_stress_test.py above it)

    @property
    def remote(self) -> bool:
        """The target is on another machine: this host's memory figures are not its."""
        return bool(self.host) and not is_loopback(self.host)

    @property
    def run_dir(self) -> Path | None:
        """The run folder (None on workers)."""
        return self.folder.path if self.folder is not None else None

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
            folder=RunFolder(run_dir) if run_dir is not None else None,
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
        if self.folder is not None:
            self.folder.write_stage(
                {
                    "time": now,
                    "elapsed_s": elapsed_s,
                    "index": index,
                    "name": name,
                    "users": users,
                    "spawn_rate": spawn_rate,
                    "duration_s": duration_s,
                    "params": params,
                }
            )
        self.record("stage", {"index": index, "name": name, "users": users})
        return stage

    def record(self, kind: str, detail: str | dict[str, Any] = "") -> None:
        """Write an event when this process keeps the run folder (master or local)."""
        if self.folder is not None:
            self.folder.record(kind, detail)

    def start_meta(self, options: Any, purpose: str, expected: list[str]) -> None:
        """Write ``run_meta.json`` for a run started with plain ``locust`` (master or local).

        Under ``run_stress_test.py`` the file is already there and stays the CLI's.
        """
        run_dir = self.run_dir
        if run_dir is None or (run_dir / "run_meta.json").exists():
            return
        master = bool(getattr(options, "master", False))
        write_meta(
            run_dir,
            schema=1,
            scenario=self.scenario,
            run_id=run_dir.name,
            host=self.host,
            stress_level=self.stress.level,
            duration_s=self.duration_s,
            started=self.started,
            ended=None,
            exit_code=None,
            stop_reason="",
            interrupted=False,
            config_path=self.config.source,
            purpose=purpose,
            expected=expected,
            budget_bytes=None,
            processes=getattr(options, "processes", None) or 1,
            expect_workers=getattr(options, "expect_workers", None) if master else None,
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
        if self.folder is not None:
            self.folder.close()


def new_run_id() -> str:
    """A short id for the run's data on the target (agent ids, namespaces start with it)."""
    return f"ms{uuid.uuid4().hex[:10]}"


def build_context(
    environment: Any, settings: RunSettings, schemes: tuple[str, ...] = ("http", "https")
) -> RunContext:
    """The run's context from the environment's parsed options (the locustfile's ``init``).

    On the master or a local runner this creates the run folder and a run id and
    writes both onto the parsed options, which Locust sends to every worker with
    each spawn message. A worker starts with its own options and learns the
    master's at ``test_start`` (see :func:`shapes.scenario.wire_stages`).
    """
    opts = environment.parsed_options
    host = environment.host or ""
    if host:
        host = check_target(host, settings, schemes)
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
            "remote_target": ctx.remote,
            "allow_remote_target": settings.allow_remote,
            "memstress": identity(),
        },
    )
    return ctx
