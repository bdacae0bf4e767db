"""The state one Locust run shares between its shape, users and monitor.

The locustfile builds a :class:`RunContext` in its ``init`` listener and puts it
on the environment as ``environment.memstress``; nothing lives in module
globals. On workers the context has no run folder writers (only the master
writes files) and its stage is updated from the master's broadcast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import Config, StressLevel
from common.runfiles import EventLog

STAGE_MESSAGE = "memstress_stage"
"""Custom Locust message the master sends to workers on every stage change."""


@dataclass
class Stage:
    """The stage now playing: its place in the plan and its parameters."""

    index: int = -1
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0

    def to_message(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "params": self.params,
            "started": self.started,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Stage:
        return cls(
            int(data["index"]), str(data["name"]), dict(data["params"]), float(data["started"])
        )


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

    def set_stage(self, stage: Stage) -> None:
        self.stage = stage

    def record(self, kind: str, detail: str | dict[str, Any] = "") -> None:
        """Write an event when this process keeps the run folder (master or local)."""
        if self.events is not None:
            text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
            self.events.record(kind, text)
