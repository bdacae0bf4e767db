"""rapid_growth: ballast in spikes, each followed by a management cycle.

Each spike is ``scenarios.rapid_growth_mb_per_cycle`` times the stress level's
memory factor (50 MB at the default level), with a ttl of two spike intervals;
the cycle right after shows whether and how fast the target responds. A spike
is skipped while the last cycle reported the pressure at or above
``pressure_ceiling``, so the load generator never pushes the target past its
emergency threshold on its own.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from memstress.common.config import Config, StressLevel
from memstress.common.units import MB
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, staged_plan, with_params
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.common.context import Stage

SPIKES = 12
"""Spikes in the spike stage (fewer when that would be more than one a second)."""


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    spike = int(config.scenarios.rapid_growth_mb_per_cycle * stress.memory_factor * MB)
    common = {"agents": 8, "namespaces": 1, "document_bytes": 2048, "pressure_ceiling": 90}
    stages = staged_plan(
        total_s,
        [
            Part("baseline", 1.5, 3, {"spike_bytes": 0}, phase="warmup"),
            Part("spikes", 6, 3, {"spike_bytes": spike}),
            Part("settle", 2, 3, {"spike_bytes": 0}, phase="recovery"),
        ],
        common=common,
        faults=True,
    )
    interval = round(min(10.0, max(1.0, stages[1].duration_s / SPIKES)), 3)
    return [s if s.params.get("cleanup") else with_params(s, interval_s=interval) for s in stages]


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class GrowthSpiker(ConductorUser):
        """One spike of ballast, then one management cycle, every ``interval_s``."""

        def on_start(self) -> None:
            super().on_start()
            self._pressure = 0.0

        def step(self, stage: Stage) -> float:
            spike = int(stage.params.get("spike_bytes", 0))
            interval = float(stage.params.get("interval_s", 1.0))
            if spike and self._pressure < float(stage.params.get("pressure_ceiling", 90)):
                self.target.ballast(spike, round(2 * interval, 1))
            reply = self.target.cycle()
            if reply.ok and isinstance(reply.data, dict):
                self._pressure = float(reply.data.get("pressure") or 0.0)
            return interval

    class GrowthAgent(AgentTrafficUser):
        """Agent traffic, so the spikes' effect on latency shows."""

    return GrowthSpiker, GrowthAgent


SCENARIO = Scenario(
    name="rapid_growth",
    seed_key="rapid_memory_growth",
    purpose="Ballast in spikes (50 MB times the stress factor), each followed by a "
    "management cycle.",
    expected=(
        Expect("optimization_after_spike_s", "an optimization follows each spike within {bound} s"),
        Expect("target_stays_up", "the target stays up (no target lost)"),
    ),
    endpoints=(api.BALLAST, api.CYCLE, api.RESET, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    optional=frozenset({target.VECTORS}),
)
