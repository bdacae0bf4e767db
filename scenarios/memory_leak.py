"""memory_leak: agent traffic while the target leaks at a set rate, then reset.

The leak is ``scenarios.leak_rate_mb_per_min`` times the stress level's memory
factor, injected through ``POST /faults/leak`` by one user (so the rate is the
rate, however many workers run). The stage after the leak stops leaking and
resets the faults, so the report can see whether memory comes back.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from memstress.common.config import Config, StressLevel
from memstress.monitors.allocations import CAPTURE_PARAM
from memstress.scenarios import api, target
from memstress.scenarios.control import leak_bytes
from memstress.scenarios.spec import Expect, Part, Scenario, staged_plan
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.common.context import Stage

LEAK_INTERVAL_S = 1.0


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    rate = config.scenarios.leak_rate_mb_per_min * stress.memory_factor
    common = {"agents": 8, "namespaces": 1, "document_bytes": 2048}
    return staged_plan(
        total_s,
        [
            Part("baseline", 2, 3, {"leak_mb_per_min": 0}, phase="warmup"),
            Part("leak", 5, 3, {"leak_mb_per_min": rate, CAPTURE_PARAM: True}, injects="leak"),
            Part("stop_leak", 3, 3, {"leak_mb_per_min": 0, "reset_faults": True}, phase="recovery"),
        ],
        common=common,
        faults=True,
    )


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class LeakInjector(ConductorUser):
        """Leaks the stage's ``leak_mb_per_min``, one request a second."""

        def on_stage(self, stage: Stage) -> None:
            super().on_stage(stage)  # resets faults when the stage says so
            self._last = time.monotonic() - LEAK_INTERVAL_S

        def step(self, stage: Stage) -> float:
            now = time.monotonic()
            n = leak_bytes(float(stage.params.get("leak_mb_per_min", 0)), now - self._last)
            self._last = now
            if n:
                self.target.leak(n)
            return LEAK_INTERVAL_S

    class LeakAgent(AgentTrafficUser):
        """Everyday agent traffic while the target leaks."""

    return LeakInjector, LeakAgent


SCENARIO = Scenario(
    name="memory_leak",
    seed_key="memory_leak_simulation",
    purpose="Agent traffic while the target leaks at a configured rate; the last stage stops "
    "leaking and resets.",
    expected=(
        Expect(
            "leak_detected_within_s",
            "the monitor detects the leak within {bound} s of its injection",
        ),
        Expect("target_flagged", "the target flags the leak (leak_suspected)"),
        Expect(
            "memory_back_after_reset_pct",
            "memory comes back within {bound} % of its pre-leak level after the reset",
        ),
    ),
    endpoints=(api.LEAK, api.RESET, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    optional=frozenset({target.VECTORS}),
)
